"""Discord messages and interactions as utterances; replies cut to Discord's message length.

Which messages are questions: every direct message, an @mention of the bot, and a reply to one
of the bot's messages. Messages of bots (the persona's own included) and webhooks never are.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Literal

import discord

from pipeline.utterance import Utterance

MESSAGE_LIMIT = 2000  # characters in one Discord message

Trigger = Literal["mention", "reply", "direct", "slash", "voice"]


def question_trigger(
    message: discord.Message,
    me: discord.ClientUser,
    *,
    own_messages: Container[int],
    mentions: bool,
    replies: bool,
    direct_messages: bool,
) -> Trigger | None:
    """How ``message`` asks the persona a question, or None when it does not."""
    if message.author.bot or message.webhook_id is not None or message.author.id == me.id:
        return None
    if message.guild is None:
        return "direct" if direct_messages else None
    if replies and _replies_to(message, me, own_messages):
        return "reply"
    if mentions and me.id in message.raw_mentions:
        return "mention"
    return None


def _replies_to(message: discord.Message, me: discord.ClientUser, own: Container[int]) -> bool:
    reference = message.reference
    if reference is None or reference.message_id is None:
        return False
    resolved = reference.resolved
    if isinstance(resolved, discord.Message):
        return resolved.author.id == me.id
    return reference.message_id in own


def question_text(message: discord.Message, me: discord.ClientUser) -> str:
    """The message's text without the bot's own @mention; other user mentions become names."""
    text = re.sub(rf"<@!?{me.id}>", " ", message.content)
    names = {user.id: user.display_name for user in message.mentions}

    def name(match: re.Match[str]) -> str:
        found = names.get(int(match.group(1)))
        return f"@{found}" if found else ""

    text = re.sub(r"<@!?(\d{15,21})>", name, text)
    return " ".join(text.split())


def is_moderator(permissions: discord.Permissions) -> bool:
    """Discord's moderators: whoever may manage messages (or administer the server)."""
    return permissions.manage_messages or permissions.administrator


def message_utterance(
    message: discord.Message, me: discord.ClientUser, trigger: Trigger, text: str | None = None
) -> Utterance | None:
    """The utterance a question message makes (``text``: what a voice message said); None
    when nothing is left to answer."""
    text = question_text(message, me) if text is None else text.strip()
    if not text:
        return None
    author = message.author
    guild = message.guild
    moderator = broadcaster = False
    if guild is not None and isinstance(author, discord.Member):
        channel = message.channel
        permissions = (
            channel.permissions_for(author)
            if isinstance(channel, discord.abc.GuildChannel | discord.Thread)
            else author.guild_permissions
        )
        moderator = is_moderator(permissions)
        broadcaster = guild.owner_id == author.id
    return Utterance(
        platform="discord",
        channel=str(message.channel.id),
        guild=str(guild.id) if guild is not None else None,
        direct=guild is None,
        channel_name=channel_name(message.channel, author),
        viewer_scope=str(guild.id) if guild is not None else None,
        user=str(author.id),
        user_name=author.display_name,
        text=text,
        message_id=str(message.id),
        trigger=trigger,
        moderator=moderator,
        broadcaster=broadcaster,
    )


def interaction_utterance(interaction: discord.Interaction[discord.Client], text: str) -> Utterance:
    """The utterance of a slash command (``/ask``, or the origin of a ``/skip``)."""
    user = interaction.user
    guild_id = interaction.guild_id
    moderator = guild_id is not None and is_moderator(interaction.permissions)
    guild = interaction.guild
    return Utterance(
        platform="discord",
        channel=str(interaction.channel_id or user.id),
        guild=str(guild_id) if guild_id is not None else None,
        direct=guild_id is None,
        channel_name=channel_name(interaction.channel, user),
        viewer_scope=str(guild_id) if guild_id is not None else None,
        user=str(user.id),
        user_name=user.display_name,
        text=text,
        trigger="slash",
        moderator=moderator,
        broadcaster=guild is not None and guild.owner_id == user.id,
    )


def channel_name(channel: object, user: discord.abc.User) -> str:
    """``#general`` for a server channel, ``DM with NAME`` for a direct message."""
    name = getattr(channel, "name", None)
    if isinstance(name, str) and name:
        return f"#{name}"
    return f"DM with {user.display_name}"


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at a line break, else after a
    sentence, else at a space, else anywhere."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            sentence = max(window.rfind(". "), window.rfind("! "), window.rfind("? "))
            cut = sentence + 1 if sentence >= limit // 2 else window.rfind(" ")
        if cut <= 0:
            cut = limit
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces
