"""What a platform adapter hands the pipeline, and what it gets back.

Adapters (``bots/``) build an :class:`Utterance` from a platform event and hand it to a
:class:`Listener` (the pipeline's router), which answers with an :class:`Admission`. Moderator
commands arrive as a :class:`Control`. Adapters fill in *who* and *where* and the viewer's flags
(moderator, subscriber, bits, ...); what those flags are worth is the pipeline's one priority
policy (:mod:`pipeline.conversation.priority`), never the adapter's.

Everything in an utterance is untrusted viewer input: the pipeline bounds and cleans the text
(:mod:`pipeline.conversation.filters`) before any of it reaches a language model or a voice.
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

_ids = itertools.count(1)


def _next_id() -> str:
    return f"u{next(_ids)}"


@dataclass(frozen=True, kw_only=True)
class ViewerKey:
    """Who a viewer is, for history, language and cooldowns: the same name on another
    platform or channel is another viewer, unless the platform gives the viewer a wider scope
    (a Discord server: its text channels and voice channels share one history per viewer)."""

    platform: str
    channel: str  # the channel, or the viewer's scope (Utterance.viewer_scope) when it has one
    user: str  # the platform's stable user id (a login name where there is none)

    def __str__(self) -> str:
        return f"{self.user}@{self.platform}/{self.channel}"


# How a message reached the persona: it decides nothing in the pipeline but is logged, and a
# platform may answer differently (a slash command is answered ephemerally, for instance).
Trigger = Literal[
    "message",  # a chat line in a channel that answers every message (read-aloud, console)
    "command",  # a prefix command: "!ask ..."
    "mention",  # an @mention of the bot
    "reply",  # a reply to one of the bot's messages
    "direct",  # a direct message to the bot
    "slash",  # a Discord slash command
    "redemption",  # a channel-points reward
    "cheer",  # a cheer of bits
    "voice",  # speech in a voice channel (or a voice message)
]


@dataclass(frozen=True, kw_only=True)
class Utterance:
    """One chat message or one stretch of speech from a viewer."""

    platform: str  # "console", "twitch", "discord"
    channel: str  # channel id on that platform (a name where it has no ids)
    user: str  # stable user id (see ViewerKey)
    user_name: str = ""  # how to address the viewer; the user id when empty
    text: str | None = None  # chat text, or the transcript once speech was transcribed
    audio: bytes | None = field(default=None, repr=False)  # speech, for STT
    audio_content_type: str = "audio/wav"
    # where, beyond the channel: for routes and for replying
    guild: str | None = None  # a Discord server id; None elsewhere
    direct: bool = False  # a direct message: its conversation is the viewer's own
    channel_name: str = ""  # the channel as people know it ("#general", a Twitch login)
    # where the viewer is one person across channels, for history, language and cooldowns (a
    # Discord server's id: what a viewer said in text is remembered when they speak in voice);
    # None: the channel alone
    viewer_scope: str | None = None
    message_id: str | None = None  # the platform's id of the message, to reply to it
    trigger: Trigger = "message"
    # the viewer's flags, as the platform reports them; pipeline.conversation.priority turns
    # them into ``priority``
    priority: int = 0  # 0-9; 9 is answered first (set by the pipeline's priority policy)
    moderator: bool = False  # a moderator of the channel (or its broadcaster / server admin)
    broadcaster: bool = False  # the channel's owner
    subscriber: bool = False
    vip: bool = False
    first_time: bool = False  # the viewer's first message in the channel
    bits: int = 0  # cheered bits (or another platform's paid highlight), 0 when none
    redemption: str | None = None  # the channel-points reward's title, when redeemed
    language: str | None = None  # the language the viewer wrote in, when the platform knows
    received_at: float = field(default_factory=time.time)  # unix seconds
    id: str = field(default_factory=_next_id)

    def __post_init__(self) -> None:
        if self.text is None and self.audio is None:
            raise ValueError("an utterance needs text or audio")
        if not 0 <= self.priority <= 9:
            raise ValueError(f"priority {self.priority} is outside 0-9")
        if self.bits < 0:
            raise ValueError("bits cannot be negative")

    @property
    def viewer(self) -> ViewerKey:
        channel = self.viewer_scope or self.channel
        return ViewerKey(platform=self.platform, channel=channel, user=self.user)

    @property
    def display_name(self) -> str:
        return self.user_name or self.user


@dataclass(frozen=True, kw_only=True)
class Admission:
    """What the listener did with a message: taken for an answer, or why not."""

    accepted: bool
    # "accepted", a filter reason ("cooldown", "rate", "too_long", ...), "blocked_phrase",
    # "secret", "busy", "paused", "no_route", "command", "closed"
    reason: str
    detail: str = ""  # for the viewer or the log; never holds a secret
    text: str = ""  # the cleaned, bounded text that will be answered


ControlName = Literal["skip", "clear", "pause", "resume", "persona", "language", "forget"]
MODERATOR_CONTROLS: frozenset[str] = frozenset({"skip", "clear", "pause", "resume", "persona"})


@dataclass(frozen=True, kw_only=True)
class Control:
    """A command to the persona: a moderator's ``!skip``, a viewer's ``/language de``.

    ``origin`` says who asked and where (platform, channel, the viewer's flags): the listener
    applies the command to that place's conversation, and refuses the moderator-only ones
    (:data:`MODERATOR_CONTROLS`) to anyone who is not a moderator or the broadcaster.
    """

    name: ControlName
    origin: Utterance
    argument: str = ""  # "persona": "NAME [LANGUAGE]"; "language": a code; "forget": a user
    # The origin owns the conversation it acts on (a viewer's own DM conversation): every
    # command is theirs to give there. Set by the router, never by an adapter.
    owner: bool = False


_CONTROL_TEXT = re.compile(
    r"^!(skip|clear|pause|resume|persona|lang|language|forget)\b[ \t]*(.{0,100}?)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_CONTROL_ALIASES: dict[str, ControlName] = {
    "skip": "skip",
    "clear": "clear",
    "pause": "pause",
    "resume": "resume",
    "persona": "persona",
    "lang": "language",
    "language": "language",
    "forget": "forget",
}


def parse_control(utterance: Utterance) -> Control | None:
    """The :class:`Control` a chat line such as ``!skip`` or ``!persona teacher de`` gives, or
    None when the line is not a command."""
    if utterance.text is None:
        return None
    match = _CONTROL_TEXT.match(utterance.text.strip())
    if match is None:
        return None
    name = _CONTROL_ALIASES[match.group(1).lower()]
    return Control(name=name, origin=utterance, argument=match.group(2).strip())


def may_control(command: Control) -> bool:
    """Whether ``command``'s origin may give it: moderator commands need a moderator."""
    origin = command.origin
    return (
        command.name not in MODERATOR_CONTROLS
        or command.owner
        or origin.moderator
        or origin.broadcaster
    )


class Listener(Protocol):
    """What an adapter talks to: the pipeline's router."""

    async def hear(self, utterance: Utterance) -> Admission:
        """Take a viewer's message; say whether it will be answered, and why not.

        Text that starts with ``!`` and names a control (``!skip``, ``!persona NAME``,
        ``!lang de``, ``!forget``) is run as that :class:`Control` instead (reason
        ``"command"``, the answer in ``detail``)."""
        ...

    async def control(self, command: Control) -> Admission:
        """Run a command; reason ``"command"`` with the answer in ``detail``, or
        ``"not_allowed"`` when the origin may not give it."""
        ...
