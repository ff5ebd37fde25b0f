"""Building blocks for platform-core tests: a router over real conversations, and adapters
that record what lipcast sends back.

The router, the conversations, the memory queue, the render worker, the sinks and their
queues are the real ones; :class:`RecordingAdapter` implements the real adapter interface
(``bots.base.ChatAdapter``) at the edge, where a real one would talk to Twitch or Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from bots.base import ChatAdapter, Listener
from personas import Persona, load_persona
from pipeline.clips import Clip, Reply
from pipeline.conversation.filters import ChatFilter
from pipeline.conversation.memory import ViewerMemory
from pipeline.conversation.safety import SafetyGuard
from pipeline.conversation.turns import ClipSink, Conversation, ConversationOptions
from pipeline.jobs.queue.base import JobQueue, QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.worker import JobHandler, RenderWorker, WorkerStats
from pipeline.routing import Route, Router, Stage
from pipeline.services.llm import LLM
from pipeline.sinks.queued import QueuedSink
from pipeline.sinks.replies import ReplySink
from pipeline.utterance import Utterance
from tests.conversation_support import OPEN_RULES, RecordingHandler


class RecordingAdapter(ChatAdapter):
    """A platform's adapter at the edge: what it would post, it records."""

    platform: ClassVar[str] = "twitch"

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.played: list[Clip] = []
        self.replying_to: list[Utterance] = []
        self.listener: Listener | None = None
        self._arrived = asyncio.Event()
        self._stopped = asyncio.Event()

    async def run(self, listener: Listener) -> None:
        self.listener = listener
        await self._stopped.wait()

    async def stop(self) -> None:
        self._stopped.set()

    async def replying(self, utterance: Utterance) -> None:
        self.replying_to.append(utterance)

    async def play(self, clip: Clip) -> None:
        self.played.append(clip)

    async def deliver(self, reply: Reply) -> None:
        self.replies.append(reply)
        self._arrived.set()

    async def wait_replies(self, count: int, within_s: float = 20.0) -> list[Reply]:
        """The replies once ``count`` have arrived."""
        async with asyncio.timeout(within_s):
            while len(self.replies) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.replies


class TwitchLike(RecordingAdapter):
    platform: ClassVar[str] = "twitch"


class DiscordLike(RecordingAdapter):
    platform: ClassVar[str] = "discord"
    takes_video: ClassVar[bool] = True
    takes_clips: ClassVar[bool] = True


def message(platform: str, channel: str, user: str, text: str, **fields: object) -> Utterance:
    """A viewer's message as an adapter would hand it over."""
    return Utterance(
        platform=platform,
        channel=channel,
        user=user,
        user_name=user,
        text=text,
        message_id=f"m-{user}-{abs(hash(text)) % 10**8}",
        **fields,  # type: ignore[arg-type]
    )


@dataclass(kw_only=True)
class Platform:
    router: Router
    queue: JobQueue
    reply_sinks: list[QueuedSink]
    conversations: list[tuple[Persona, Stage, Conversation]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_router(
    routes: Sequence[Route],
    adapters: Sequence[ChatAdapter],
    *,
    handler: JobHandler | None = None,
    llm: LLM | None = None,
    queue: JobQueue | None = None,
    stream_sinks: Callable[[], list[ClipSink]] = list,
    options: ConversationOptions | None = None,
    concurrency: int = 2,
    memory: ViewerMemory | None = None,
) -> AsyncIterator[Platform]:
    """The router over real conversations; jobs go to ``queue`` (default: a memory queue
    served by an in-process worker running ``handler``)."""
    worker_task: asyncio.Task[WorkerStats] | None = None
    worker: RenderWorker | None = None
    own_queue = queue is None
    if queue is None:
        queue = MemoryJobQueue(QueueOptions(result_timeout_s=10.0))
        await queue.start()
        worker = RenderWorker(queue, handler or RecordingHandler(), concurrency=concurrency)
        worker_task = asyncio.create_task(worker.run(), name="test-worker")
    reply_sinks = [QueuedSink(ReplySink(adapter)) for adapter in adapters]

    def safety(persona: Persona, place: Utterance | None = None) -> SafetyGuard:
        return SafetyGuard.build(phrases=persona.spec.safety.blocked_phrases)

    platform = Platform(router=None, queue=queue, reply_sinks=reply_sinks)  # type: ignore[arg-type]

    def make_conversation(persona: Persona, stage: Stage, place: Utterance) -> Conversation:
        sinks: list[ClipSink] = list(reply_sinks)
        if stage == "stream":
            sinks += stream_sinks()
        conversation = Conversation(
            persona=persona,
            queue=queue,
            chat_filter=ChatFilter(OPEN_RULES),
            safety=safety(persona),
            sinks=sinks,
            llm=llm,
            memory=memory,
            options=options or ConversationOptions(),
        )
        platform.conversations.append((persona, stage, conversation))
        return conversation

    platform.router = Router(
        routes=routes,
        load_persona=lambda name, language: load_persona(name, language=language),
        make_conversation=make_conversation,
        make_safety=safety,
    )
    try:
        yield platform
    finally:
        await platform.router.close()
        for sink in reply_sinks:
            await sink.aclose()
        if worker is not None and worker_task is not None:
            worker.stop()
            await asyncio.wait_for(worker_task, 5)
        if own_queue:
            await queue.close()


def echo_reply(messages: list[dict[str, object]]) -> str:
    """A stand-in model that answers in two sentences naming what it was asked, so every
    reply shows which message it answers."""
    from tests.openai_stub import last_user_text

    asked = last_user_text(messages).split(":", 1)[-1].strip().rstrip(".!?")
    return f"You asked about {asked}. That is all I know about {asked}."


def stub_llm(base_url: str) -> LLM:
    from pipeline.services.llm import OpenAIChatLLM, RetryPolicy

    return OpenAIChatLLM(
        base_url=base_url, model="stub-model", timeout_s=5.0, retry=RetryPolicy(retries=1)
    )
