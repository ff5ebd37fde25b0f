"""``lipcast bench conversations``: many personal conversations at once on shared workers.

For 10 and then 50 simultaneous personal conversations, each viewer asks one question at the
same moment; a local stand-in model (:mod:`lipcast.benchmarks.standin_llm`) answers each in two
sentences of its own at 30 tokens a second. The real router, conversations, safety checks and
RabbitMQ job queue carry the sentences to two real ``lipcast worker`` processes (eSpeak, the
sprite renderer, x264), and the replies come back to the adapter each question came from.

Per run: ``delivered`` (conversations whose reply arrived whole), ``lost``, ``duplicated`` and
``out_of_order`` clips, ``crossed`` (a clip or reply that reached the wrong conversation), and
the 50th/95th percentile times from the question to its first and last clip. First sentences
are scheduled before later ones (a higher job priority), so ``first_clip_p95_s`` should stay
at or under half of ``last_clip_p95_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bots.base import ChatAdapter, Listener
from lipcast.benchmarks.queue import delete_topology
from lipcast.benchmarks.standin_llm import Messages, StandInChatServer, last_user_text
from lipcast.wiring import (
    build_conversation,
    build_llm,
    build_safety,
    job_queue_options,
    persona_from_settings,
)
from personas import Persona
from pipeline.clips import Clip, Reply
from pipeline.conversation.turns import Conversation
from pipeline.jobs.queue import open_job_queue
from pipeline.jobs.queue.rabbitmq import safe_url
from pipeline.routing import Route, Router, Stage
from pipeline.sinks.queued import QueuedSink
from pipeline.sinks.replies import ReplySink
from pipeline.utterance import Utterance

if TYPE_CHECKING:
    from lipcast.cli import Context
    from lipcast.config import Secrets, Settings

HELP = "10 and 50 simultaneous personal conversations on 2 RabbitMQ workers (JSON)"
TARGET_FIRST_TO_LAST = 0.5  # first_clip_p95_s <= 0.5 x last_clip_p95_s at 50 conversations
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_TAG = re.compile(r"\b(q\d+)\b")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--conversations", default="10,50", help="simultaneous conversations per run (10,50)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="model speed (30)")


@dataclass(frozen=True, kw_only=True)
class Group:
    """Where a share of the conversations come from, and who answers them."""

    platform: str
    persona: str
    language: str | None = None


@dataclass(kw_only=True)
class Asked:
    """One conversation's question and what came back for it."""

    tag: str
    utterance: Utterance
    asked_at: float
    clips: list[tuple[float, Clip]] = field(default_factory=list)
    reply: Reply | None = None
    reply_at: float | None = None


def standin_reply(messages: Messages) -> str:
    """Two sentences naming the question's tag: a short first one, a longer second."""
    found = _TAG.search(last_user_text(messages))
    tag = found.group(1) if found else "q?"
    return (
        f"Thanks for asking, {tag}. Here is the longer part of my answer for {tag}, "
        "with a few more words so that it takes a moment to say."
    )


class Collector(ChatAdapter):
    """An adapter at the edge of the benchmark: records clips and replies as they arrive."""

    platform: ClassVar[str] = "bench"
    takes_clips: ClassVar[bool] = True
    takes_video: ClassVar[bool] = True

    def __init__(self, asked: dict[str, Asked]) -> None:
        self.asked = asked
        self.crossed = 0

    async def run(self, listener: Listener) -> None:
        await asyncio.Event().wait()

    def _find(self, utterance: Utterance) -> Asked | None:
        found = _TAG.search(utterance.text or "")
        return self.asked.get(found.group(1)) if found else None

    async def play(self, clip: Clip) -> None:
        asked = self._find(clip.turn.utterance)
        if asked is None or asked.utterance.id != clip.turn.utterance.id:
            self.crossed += 1
            return
        asked.clips.append((time.monotonic(), clip))

    async def deliver(self, reply: Reply) -> None:
        asked = self._find(reply.utterance)
        if asked is None or asked.tag not in reply.text or asked.reply is not None:
            self.crossed += 1
            return
        asked.reply, asked.reply_at = reply, time.monotonic()


def collector_for(platform: str, asked: dict[str, Asked]) -> Collector:
    """A :class:`Collector` registered under ``platform``."""
    cls = type(f"Collector_{platform}", (Collector,), {"platform": platform})
    collector: Collector = cls(asked)
    return collector


def bench_settings(settings: Settings, *, url: str, queue: str, deadline_s: float) -> Settings:
    """``settings`` for many viewers at once: eSpeak, sprite, RabbitMQ, no chat limits."""
    return settings.model_copy(
        update={
            "tts": settings.tts.model_copy(update={"backend": "espeak"}),
            "render": settings.render.model_copy(update={"renderer": "sprite"}),
            "queue": settings.queue.model_copy(
                update={
                    "backend": "rabbitmq",
                    "url": url,
                    "name": queue,
                    "max_length": 1000,
                    # a job may wait behind a hundred others: its turn's deadline bounds it
                    "result_timeout_s": deadline_s,
                }
            ),
            "chat": settings.chat.model_copy(
                update={
                    "global_per_minute": 1000,
                    "user_cooldown_s": 0.0,
                    "duplicate_window_s": 0.0,
                    "deadline_s": deadline_s,
                    "max_pending": 100,
                }
            ),
            "memory": settings.memory.model_copy(update={"enabled": False}),
        }
    )


@contextlib.asynccontextmanager
async def worker_processes(
    settings: Settings, secrets: Secrets, count: int
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """``count`` real ``lipcast worker`` processes serving ``settings``' queue."""
    queue = settings.queue
    with tempfile.TemporaryDirectory(prefix="lipcast-bench-") as folder:
        config = Path(folder) / "bot.toml"
        config.write_text(
            "[queue]\n"
            'backend = "rabbitmq"\n'
            f'url = "{safe_url(queue.url)}"\n'
            f'name = "{queue.name}"\n'
            f"max_length = {queue.max_length}\n"
            "[render]\n"
            f"size = {settings.render.size}\n"
            f"fps = {settings.render.fps}\n",
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": str(_PACKAGE_ROOT)}
        if secrets.amqp_url is not None:
            env["LIPCAST_AMQP_URL"] = secrets.amqp_url.get_secret_value()
        command = [sys.executable, "-m", "lipcast", "-c", str(config), "worker"]
        processes = [
            await asyncio.create_subprocess_exec(
                *command, stderr=asyncio.subprocess.PIPE, cwd=folder, env=env
            )
            for _ in range(count)
        ]
        logs: list[asyncio.Task[None]] = []
        try:
            for process in processes:
                assert process.stderr is not None
                async with asyncio.timeout(90):
                    while b"serving" not in (line := await process.stderr.readline()):
                        if not line:
                            raise RuntimeError("a lipcast worker exited before serving")
                logs.append(asyncio.create_task(_drain(process.stderr), name="worker-log"))
            yield processes
        finally:
            for process in processes:
                if process.returncode is None:
                    process.terminate()
            for process in processes:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            await asyncio.gather(*logs, return_exceptions=True)


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def converse(
    settings: Settings,
    secrets: Secrets,
    *,
    count: int,
    groups: Sequence[Group],
    llm_url: str,
    within_s: float,
) -> tuple[list[Asked], int]:
    """``count`` simultaneous personal conversations, spread over ``groups``; returns each
    conversation's record and how many clips or replies were crossed. The workers serving
    ``settings``' queue must be running."""
    settings = settings.model_copy(
        update={"llm": settings.llm.model_copy(update={"backend": "openai", "base_url": llm_url})}
    )
    asked: dict[str, Asked] = {}
    platforms = sorted({group.platform for group in groups})
    collectors = {platform: collector_for(platform, asked) for platform in platforms}
    sinks = [QueuedSink(ReplySink(c), name=f"replies-{p}") for p, c in collectors.items()]
    options = job_queue_options(settings, secrets, connection_name="lipcast bench conversations")
    queue = open_job_queue("rabbitmq", options)
    llm = build_llm(settings, secrets)
    personas: dict[tuple[str, str | None], Persona] = {}

    def load(name: str, language: str | None) -> Persona:
        if (name, language) not in personas:
            personas[name, language] = persona_from_settings(settings, name, language)
        return personas[name, language]

    def make_conversation(persona: Persona, stage: Stage, place: Utterance) -> Conversation:
        return build_conversation(
            settings, secrets, persona=persona, queue=queue, sinks=sinks, llm=llm, memory=None
        )

    routes = [
        Route(
            platform=group.platform,
            persona=group.persona,
            language=group.language,
            stage="personal",
            per="viewer",
        )
        for group in groups
    ]
    router = Router(
        routes=routes,
        load_persona=load,
        make_conversation=make_conversation,
        make_safety=lambda persona, place: build_safety(settings, secrets, persona),
        max_personal=count + 10,
    )
    await queue.start()
    try:
        for index in range(count):
            group = groups[index % len(groups)]
            tag = f"q{index}"
            utterance = Utterance(
                platform=group.platform,
                channel=f"dm-{index}",
                user=f"viewer{index}",
                user_name=f"viewer{index}",
                direct=True,
                text=f"Hello, this is question {tag}. What do you think?",
                message_id=f"m{index}",
            )
            asked[tag] = Asked(tag=tag, utterance=utterance, asked_at=time.monotonic())
        admissions = await asyncio.gather(*(router.hear(a.utterance) for a in asked.values()))
        refused = [a for a in admissions if not a.accepted]
        if refused:
            raise RuntimeError(f"{len(refused)} questions refused: {refused[0]}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                await router.wait_idle()
                await asyncio.gather(*(sink.aclose() for sink in sinks))  # hand on the rest
    finally:
        await router.close()
        for sink in sinks:
            await sink.aclose()
        await queue.close()
        if llm is not None:
            await llm.aclose()
        await delete_topology(options)
    return list(asked.values()), sum(c.crossed for c in collectors.values())


def tally(asked: Sequence[Asked], *, sentences: int) -> dict[str, Any]:
    """delivered, lost, duplicated, out_of_order and the clip time percentiles."""
    delivered = lost = duplicated = out_of_order = 0
    first: list[float] = []
    last: list[float] = []
    for item in asked:
        seqs = [clip.seq for _, clip in item.clips]
        duplicated += len(seqs) - len(set(seqs))
        out_of_order += sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        lost += len(set(range(sentences)) - set(seqs))
        whole = item.reply is not None and sorted(set(seqs)) == list(range(sentences))
        delivered += int(whole)
        if item.clips:
            first.append(item.clips[0][0] - item.asked_at)
            last.append(item.clips[-1][0] - item.asked_at)
    return {
        "delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "out_of_order": out_of_order,
        "first_clip_p50_s": _percentile(first, 50),
        "first_clip_p95_s": _percentile(first, 95),
        "last_clip_p95_s": _percentile(last, 95),
    }


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 3)


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    counts = [int(part) for part in str(args.conversations).split(",") if part.strip()]
    return asyncio.run(_bench(context, counts, args.workers, args.tokens_per_s))


async def _bench(
    context: Context, counts: list[int], workers: int, tokens_per_s: float
) -> dict[str, Any]:
    url = context.settings.queue.broker_url(context.secrets)
    name = f"lipcast.bench.{uuid.uuid4().hex[:10]}"
    settings = bench_settings(context.settings, url=url, queue=name, deadline_s=300.0)
    server = StandInChatServer(standin_reply, tokens_per_s=tokens_per_s)
    llm_url = await server.start()
    runs = []
    try:
        async with worker_processes(settings, context.secrets, workers):
            for count in counts:
                asked, crossed = await converse(
                    settings,
                    context.secrets,
                    count=count,
                    groups=[Group(platform="bench", persona=settings.persona.default)],
                    llm_url=llm_url,
                    within_s=300.0,
                )
                runs.append(
                    {"conversations": count, "workers": workers, **tally(asked, sentences=2)}
                    | {"crossed": crossed}
                )
    finally:
        await server.close()
    largest = max(runs, key=lambda run: run["conversations"])
    first_p95, last_p95 = largest["first_clip_p95_s"], largest["last_clip_p95_s"]
    return {
        "sentences_per_reply": 2,
        "tokens_per_s": tokens_per_s,
        "tts": "espeak",
        "renderer": "sprite",
        "size": settings.render.size,
        "broker": safe_url(url),
        "runs": runs,
        "targets": {
            "first_clip_p95_over_last_clip_p95": TARGET_FIRST_TO_LAST,
            "met": all(
                run["lost"] == run["duplicated"] == run["out_of_order"] == run["crossed"] == 0
                for run in runs
            )
            and first_p95 is not None
            and last_p95 is not None
            and first_p95 <= TARGET_FIRST_TO_LAST * last_p95,
        },
    }
