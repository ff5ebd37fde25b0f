"""Platform adapters (Twitch, Discord, console): each turns platform events into utterances.

Adapters are chosen by name, like every other backend: :data:`ADAPTERS` says where each one's
class lives and which optional package it needs; ``lipcast.wiring`` builds the enabled ones
from their bot.toml sections (``[console]``, ``[twitch]``, ``[discord]``).
"""

from __future__ import annotations

from pipeline.backends import BackendSpec

ADAPTERS: dict[str, BackendSpec] = {
    "console": BackendSpec(
        target="bots.console:ConsoleAdapter",
        description="chat typed in the terminal that runs lipcast",
    ),
    "discord": BackendSpec(
        target="bots.discord.adapter:DiscordAdapter",
        requires=("discord", "nacl", "davey"),
        package="discord.py[voice]",
        extra="discord",
        description="Discord: slash commands, mentions, replies and DMs; answers with a clip",
    ),
    "twitch": BackendSpec(
        target="bots.twitch.adapter:TwitchAdapter",
        requires=("twitchio", "platformdirs"),
        package="twitchio",
        extra="twitch",
        description="Twitch chat through EventSub (lipcast twitch auth)",
    ),
}
