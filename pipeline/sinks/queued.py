"""A sink on its own bounded queue and task: the conversation never waits on it.

:class:`QueuedSink` takes the conversation's calls (``turn_started``, ``clip_ready``,
``turn_ended``) at once, queues them, and replays them to the sink it wraps, in order, on its
own named task. Control overtakes data: :meth:`QueuedSink.drop_turn` removes a skipped turn's
waiting clips before the sink sees them (the sink still hears that the turn ended, so it can
tidy up). When the queue is full (the sink stalled), the oldest waiting clip is dropped with a
warning; turn starts and ends are never dropped, so the sink's view of turns stays whole.

A wrapped sink that returns False from ``clip_ready`` (the overlay skipped the turn) has
``on_stop(turn_id)`` called, so the conversation can stop producing that turn.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pipeline.clips import Clip, TurnInfo
from pipeline.conversation.turns import ClipSink, TurnReport

log = logging.getLogger(__name__)

_CLOSE_GRACE_S = 5.0  # how long a closing sink gets to finish what it was handed


@dataclass(frozen=True)
class _Event:
    kind: Literal["started", "clip", "ended"]
    turn: TurnInfo
    clip: Clip | None = None
    report: TurnReport | None = None


class QueuedSink(ClipSink):
    """``sink`` behind a bounded queue and a task of its own."""

    def __init__(
        self,
        sink: ClipSink,
        *,
        max_clips: int = 32,
        on_stop: Callable[[str], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.sink = sink
        self.name = name or type(sink).__name__
        self._max_clips = max_clips
        self._on_stop = on_stop
        self._events: collections.deque[_Event] = collections.deque()
        self._ready = asyncio.Event()
        self._dropped_turns: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped_clips = 0  # clips dropped because the sink fell behind

    # -- the conversation's side: never waits --------------------------------------------

    async def turn_started(self, turn: TurnInfo) -> None:
        self._put(_Event("started", turn))

    async def clip_ready(self, clip: Clip) -> bool:
        if clip.turn.turn_id in self._dropped_turns:
            return True  # dropped here only; other sinks may still want it
        self._put(_Event("clip", clip.turn, clip=clip))
        return True

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        self._put(_Event("ended", turn, report=report))

    @property
    def needs_mp4(self) -> bool:
        return self.sink.needs_mp4

    @property
    def shows_clips(self) -> bool:
        return self.sink.shows_clips

    def on_air_turn(self) -> str | None:
        return self.sink.on_air_turn()

    async def skip_on_air(self) -> str | None:
        return await self.sink.skip_on_air()

    async def clear_waiting(self) -> int:
        return await self.sink.clear_waiting()

    def drop_turn(self, turn_id: str) -> int:
        """Drop ``turn_id``'s clips still waiting here (skip overtakes data); how many."""
        self._dropped_turns[turn_id] = None
        while len(self._dropped_turns) > 1000:
            self._dropped_turns.popitem(last=False)
        before = len(self._events)
        self._events = collections.deque(
            e for e in self._events if not (e.kind == "clip" and e.turn.turn_id == turn_id)
        )
        return before - len(self._events)

    @property
    def waiting(self) -> int:
        """Calls queued and not yet handed to the sink."""
        return len(self._events)

    def _put(self, event: _Event) -> None:
        if self._closing:
            return
        self._events.append(event)
        clips = [e for e in self._events if e.kind == "clip"]
        if len(clips) > self._max_clips:
            oldest = clips[0]
            self._events.remove(oldest)
            self.dropped_clips += 1
            log.warning(
                "sink %s is %d clips behind; dropped clip %d of turn %s",
                self.name,
                len(clips) - 1,
                oldest.clip.seq if oldest.clip else -1,
                oldest.turn.turn_id,
            )
        self._ready.set()
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"sink-{self.name}")

    # -- the sink's side --------------------------------------------------------------------

    async def _drain(self) -> None:
        while True:
            if not self._events:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            event = self._events.popleft()
            await self._deliver(event)

    async def _deliver(self, event: _Event) -> None:
        try:
            if event.kind == "started":
                await self.sink.turn_started(event.turn)
            elif event.kind == "clip":
                assert event.clip is not None
                keep = await self.sink.clip_ready(event.clip)
                if keep is False:
                    self.drop_turn(event.turn.turn_id)
                    if self._on_stop is not None:
                        self._on_stop(event.turn.turn_id)
            else:
                assert event.report is not None
                await self.sink.turn_ended(event.turn, event.report)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sink %s failed in %s", self.name, event.kind)

    async def aclose(self) -> None:
        """Hand the sink what it was given (within a grace period), then close it."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(_CLOSE_GRACE_S):
                    await asyncio.shield(self._task)
            except TimeoutError:
                log.warning("sink %s did not finish in %.0f s; stopped", self.name, _CLOSE_GRACE_S)
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sink.aclose()
