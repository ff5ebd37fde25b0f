"""Building blocks for conversation tests: the real queue, worker and conversation, with a
render handler that records what would have been spoken instead of rendering it.

The handler implements the worker's real :class:`~pipeline.jobs.worker.JobHandler` interface; the
job queue (memory backend), the worker loop, the conversation, the filters, the safety checks
and (when given) the openai client against :mod:`tests.openai_stub` are all the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from personas import Persona, load_persona
from pipeline.clips import Clip, TurnInfo
from pipeline.conversation.filters import ChatFilter, FilterRules
from pipeline.conversation.memory import ViewerMemory
from pipeline.conversation.safety import SafetyGuard
from pipeline.conversation.turns import (
    ClipSink,
    Conversation,
    ConversationOptions,
    TurnReport,
)
from pipeline.jobs.queue.base import QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.wire import RenderJob
from pipeline.jobs.worker import RenderWorker, ResultChunk
from pipeline.services.llm import LLM
from pipeline.utterance import Utterance

OPEN_RULES = FilterRules(
    max_chars=300, user_cooldown_s=0, global_per_minute=1000, duplicate_window_s=0
)


class RecordingHandler:
    """Stands in for TTS + lip-sync + encode: records each job's text ("reached TTS")."""

    def __init__(self, *, seconds: float = 0.0, fail_texts: Sequence[str] = ()) -> None:
        self.seconds = seconds
        self.fail_texts = set(fail_texts)
        self.spoken: list[str] = []
        self.jobs: list[RenderJob] = []

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        self.jobs.append(job)
        self.spoken.append(job.text)
        if self.seconds:
            await asyncio.sleep(self.seconds)
        if job.text in self.fail_texts:
            from pipeline.errors import RenderError

            raise RenderError(f"cannot render {job.text!r}")
        yield ResultChunk(
            media=b"MP4:" + job.text.encode(),
            duration_s=len(job.text) / 15,
            timings={"tts": 0.001, "render": self.seconds, "encode": 0.001},
            last=True,
        )

    async def aclose(self) -> None:
        return None


@dataclass(kw_only=True)
class RecordingSink(ClipSink):
    """Collects what the sinks would show, in the order it came."""

    clips: list[Clip] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    stop_after: int | None = None  # return False after this many clips (like a skip)
    clip_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def turn_started(self, turn: TurnInfo) -> None:
        self.events.append(f"start {turn.turn_id}")

    async def clip_ready(self, clip: Clip) -> bool:
        self.clips.append(clip)
        self.clip_arrived.set()
        self.events.append(f"clip {clip.turn.turn_id} {clip.seq}")
        return self.stop_after is None or len(self.clips) < self.stop_after

    async def turn_ended(self, turn: TurnInfo, report: TurnReport) -> None:
        self.events.append(f"end {turn.turn_id} {report.outcome}")

    @property
    def texts(self) -> list[str]:
        return [clip.text for clip in self.clips]


def cohost() -> Persona:
    return load_persona("cohost")


def say(text: str, *, user: str = "ada", **fields: object) -> Utterance:
    return Utterance(platform="test", channel="main", user=user, text=text, **fields)  # type: ignore[arg-type]


@dataclass(kw_only=True)
class Pipeline:
    conversation: Conversation
    handler: RecordingHandler
    sink: RecordingSink
    queue: MemoryJobQueue
    worker: RenderWorker


@contextlib.asynccontextmanager
async def running_pipeline(
    *,
    llm: LLM | None = None,
    persona: Persona | None = None,
    rules: FilterRules = OPEN_RULES,
    safety: SafetyGuard | None = None,
    memory: ViewerMemory | None = None,
    options: ConversationOptions | None = None,
    handler: RecordingHandler | None = None,
    sink: RecordingSink | None = None,
    concurrency: int = 1,
) -> AsyncIterator[Pipeline]:
    """A conversation over a real memory queue and a real worker running ``handler``."""
    persona = persona or cohost()
    handler = handler or RecordingHandler()
    sink = sink or RecordingSink()
    queue = MemoryJobQueue(QueueOptions(result_timeout_s=5.0))
    worker = RenderWorker(queue, handler, concurrency=concurrency, worker_id="test-worker")
    worker_task = asyncio.create_task(worker.run(), name="test-worker")
    conversation = Conversation(
        persona=persona,
        queue=queue,
        chat_filter=ChatFilter(rules),
        safety=safety or SafetyGuard.build(phrases=persona.spec.safety.blocked_phrases),
        sinks=[sink],
        llm=llm,
        memory=memory,
        options=options or ConversationOptions(),
    )
    try:
        yield Pipeline(
            conversation=conversation, handler=handler, sink=sink, queue=queue, worker=worker
        )
    finally:
        await conversation.close()
        worker.stop()
        await asyncio.wait_for(worker_task, 5)
        await queue.close()
        if llm is not None:
            await llm.aclose()
