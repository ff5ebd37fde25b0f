"""Replies go back where the message came from: one sink per platform adapter.

:class:`ReplySink` watches every turn and acts only on those whose utterance came from its
platform: it tells the platform a reply is coming (a typing indicator), hands each clip on as
it is released when the platform speaks them (a voice channel), and, when the turn is over,
delivers a :class:`~pipeline.clips.Reply` with the released text (never a blocked sentence)
and, for platforms that post video, the clips. Wrapped in a
:class:`~pipeline.sinks.queued.QueuedSink`, a slow platform never holds up another.
"""

from __future__ import annotations

import logging
from typing import Protocol

from pipeline.clips import Clip, Reply, TurnInfo
from pipeline.conversation.turns import ClipSink, TurnReport
from pipeline.utterance import Utterance

log = logging.getLogger(__name__)

# Outcomes whose released text is posted: a reply cut short still says what it said.
_POSTED = frozenset({"completed", "partial", "skipped", "fallback", "neutral"})


class ReplyTarget(Protocol):
    """What a reply sink needs of a platform adapter (``bots.base.ChatAdapter`` has it)."""

    @property
    def platform(self) -> str: ...

    @property
    def takes_video(self) -> bool: ...

    @property
    def takes_clips(self) -> bool: ...

    async def replying(self, utterance: Utterance) -> None: ...

    async def play(self, clip: Clip) -> None: ...

    async def deliver(self, reply: Reply) -> None: ...


class ReplySink(ClipSink):
    """Sends the turns of one platform back to it."""

    def __init__(self, target: ReplyTarget) -> None:
        self.target = target
        self._clips: dict[str, list[Clip]] = {}

    @property
    def needs_mp4(self) -> bool:
        """Only platforms that post the video need the file."""
        return self.target.takes_video

    def _ours(self, turn: TurnInfo) -> bool:
        return turn.utterance.platform == self.target.platform

    def _posts(self, turn: TurnInfo) -> bool:
        """Whether this turn's reply is posted: answers always; a message read aloud only
        where the platform shows the video (the chat already shows the words)."""
        return turn.mode == "reply" or self.target.takes_video

    async def turn_started(self, turn: TurnInfo) -> None:
        if self._ours(turn) and self._posts(turn):
            if self.target.takes_video:
                self._clips[turn.turn_id] = []
            await self.target.replying(turn.utterance)

    async def clip_ready(self, clip: Clip) -> bool:
        if not self._ours(clip.turn):
            return True
        collected = self._clips.get(clip.turn.turn_id)
        if collected is not None:
            collected.append(clip)
        if self.target.takes_clips:
            await self.target.play(clip)
        return True

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        if not self._ours(turn):
            return
        clips = tuple(self._clips.pop(turn.turn_id, ()))
        if report.outcome not in _POSTED or not report.spoken_text:
            return
        if not self._posts(turn):
            return
        reply = Reply(
            utterance=turn.utterance,
            turn_id=turn.turn_id,
            text=report.spoken_text,
            persona_name=turn.persona_name,
            outcome=report.outcome,
            clips=clips,
        )
        await self.target.deliver(reply)
