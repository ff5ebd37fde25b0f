"""What a platform adapter hands the pipeline: one viewer saying one thing, somewhere.

Adapters (``bots/``) build an :class:`Utterance` from a platform event and know nothing of what
happens next. Everything in it is untrusted viewer input: the pipeline bounds and cleans the
text (:mod:`pipeline.conversation.filters`) before any of it reaches a language model or a voice.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

_ids = itertools.count(1)


def _next_id() -> str:
    return f"u{next(_ids)}"


@dataclass(frozen=True, kw_only=True)
class ViewerKey:
    """Who a viewer is, for history and cooldowns: the same name on another platform or
    channel is another viewer."""

    platform: str
    channel: str
    user: str  # the platform's stable user id (a login name where there is none)

    def __str__(self) -> str:
        return f"{self.user}@{self.platform}/{self.channel}"


@dataclass(frozen=True, kw_only=True)
class Utterance:
    """One chat message or one stretch of speech from a viewer."""

    platform: str  # "console", "twitch", "discord"
    channel: str  # channel name or id on that platform
    user: str  # stable user id (see ViewerKey)
    user_name: str = ""  # how to address the viewer; the user id when empty
    text: str | None = None  # chat text, or the transcript once speech was transcribed
    audio: bytes | None = field(default=None, repr=False)  # speech, for STT
    audio_content_type: str = "audio/wav"
    priority: int = 0  # 0-9; 9 is answered first
    moderator: bool = False
    subscriber: bool = False
    bits: int = 0  # cheered bits (or another platform's paid highlight), 0 when none
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
        return ViewerKey(platform=self.platform, channel=self.channel, user=self.user)

    @property
    def display_name(self) -> str:
        return self.user_name or self.user
