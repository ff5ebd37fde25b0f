"""The extension point of the Discord adapter: features that share its client (voice).

A feature is handed the adapter's client, command tree and listener once, before the client
connects and before the commands are synced, so it registers its own slash commands (``/join``,
``/leave``) and event handlers there. The adapter then forwards every clip of a Discord reply
to each feature's :meth:`DiscordFeature.play`, in order, as soon as it is next in line; a
feature plays the clips that belong to it (a voice channel's) and ignores the rest.

A feature is passed to :class:`~bots.discord.adapter.DiscordAdapter` as ``features=[...]``;
the adapter's own files need no change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import discord
    from discord import app_commands

    from bots.base import Readiness
    from pipeline.clips import Clip
    from pipeline.utterance import Listener


class DiscordFeature(Protocol):
    """Something more the Discord adapter does with its client (voice channels, say)."""

    async def setup(
        self,
        client: discord.Client,
        tree: app_commands.CommandTree[discord.Client],
        listener: Listener,
    ) -> None:
        """Register commands on ``tree`` and handlers on ``client``; called once, while the
        client logs in and before the commands are synced. Raise
        :class:`~bots.base.AdapterUnavailable` if the feature cannot work at all."""
        ...

    async def play(self, clip: Clip) -> None:
        """A clip of a reply to Discord, in order, as soon as it is next in line; a feature
        ignores the clips that are not for it."""
        ...

    async def close(self) -> None:
        """The client is closing: leave voice channels, stop tasks."""
        ...

    async def check(self) -> list[Readiness]:
        """Doctor lines about the feature (read-only)."""
        ...
