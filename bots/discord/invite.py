"""What lipcast asks of a Discord server: the OAuth2 scopes and the bot's permissions.

``lipcast discord invite`` prints the URL that adds the bot with exactly these; the README
explains each.
"""

from __future__ import annotations

import discord

SCOPES = ("bot", "applications.commands")

# Each permission and what lipcast does with it.
PERMISSION_USES: dict[str, str] = {
    "view_channel": "see the channels it is asked in",
    "send_messages": "answer in text",
    "send_messages_in_threads": "answer in threads",
    "attach_files": "post the video clip",
    "read_message_history": "reply to the viewer's message",
    "add_reactions": "mark a message it will not answer (cooldown, busy)",
    "connect": "join a voice channel",
    "speak": "speak in a voice channel",
}


def permissions() -> discord.Permissions:
    """The bot's permissions, exactly those :data:`PERMISSION_USES` lists."""
    return discord.Permissions(**dict.fromkeys(PERMISSION_USES, True))


def invite_url(application_id: int, *, guild_id: int | None = None) -> str:
    """The URL that adds the bot to a server (pre-selected when ``guild_id`` is given)."""
    guild = discord.Object(id=guild_id) if guild_id is not None else discord.utils.MISSING
    return discord.utils.oauth_url(
        application_id, permissions=permissions(), guild=guild, scopes=SCOPES
    )


async def application_id(token: str) -> int:
    """The application id of the bot whose token this is, read over REST (nothing changes).

    Raises :class:`~bots.base.AdapterUnavailable` when Discord refuses the token or cannot be
    reached."""
    import aiohttp

    from bots.base import AdapterUnavailable

    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(token)
    except discord.LoginFailure as err:
        raise AdapterUnavailable(
            "Discord refused DISCORD_TOKEN: copy a fresh token from the Developer Portal "
            "(your application -> Bot -> Reset Token) into .env"
        ) from err
    except (aiohttp.ClientError, OSError, discord.HTTPException) as err:
        raise AdapterUnavailable(
            f"Discord cannot be reached ({type(err).__name__}); try again, or pass --client-id"
        ) from err
    finally:
        await client.close()
    if client.application_id is None:
        raise AdapterUnavailable("Discord did not say which application this token belongs to")
    return client.application_id
