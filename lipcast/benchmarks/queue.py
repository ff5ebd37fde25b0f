"""``lipcast bench queue``: what the RabbitMQ job transport costs, how it scales, what it loses.

Three measurements against the broker of ``[queue] url`` / LIPCAST_AMQP_URL (whatever
``[queue] backend`` says), each on a work queue of its own that is deleted afterwards:

1. **Round-trip overhead**: one job at a time, submit to last result part, with a no-op
   renderer answering 200 KB; the memory backend (worker in-process) against RabbitMQ (worker
   in another process). The overhead is the difference of the p50s and of the p95s.
2. **Worker scaling**: the same batch of fixed-duration jobs (a sleep standing in for GPU
   time) served by 1, 2, 4 and 8 worker processes; throughput as a ratio to one worker.
3. **Conversations**: 50 concurrent conversations of 4 sentence jobs each, results read back in
   sentence order, every part checked: delivered, lost, duplicated and out of order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.jobs.queue import JobQueue, QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue, safe_url
from pipeline.jobs.wire import RenderJob
from pipeline.jobs.worker import (
    JobHandler,
    NoopHandler,
    RenderWorker,
    ResultChunk,
    SleepHandler,
    serve,
)

if TYPE_CHECKING:
    from lipcast.cli import Context

HELP = "job queue: RabbitMQ overhead vs memory, scaling over 1-8 workers, 200 jobs checked"

RESULT_BYTES = 200_000
OVERHEAD_TARGET_MS = 5.0
SCALING_TARGET = 7.0
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="fewer round trips and shorter jobs (a smoke test)"
    )
    parser.add_argument("--round-trips", type=int, help="timed round trips per backend (300)")
    parser.add_argument("--job-s", type=float, help="duration of a scaling job in seconds (0.2)")
    parser.add_argument("--scaling-jobs", type=int, help="jobs per scaling run (48)")
    parser.add_argument("--conversations", type=int, default=50, help="concurrent conversations")
    parser.add_argument("--sentences", type=int, default=4, help="sentence jobs per conversation")


def run(args: argparse.Namespace, context: Context) -> dict[str, Any]:
    url = context.settings.queue.broker_url(context.secrets)
    return asyncio.run(_bench(args, url))


async def _bench(args: argparse.Namespace, url: str) -> dict[str, Any]:
    round_trips = args.round_trips or (60 if args.quick else 300)
    job_s = args.job_s or (0.05 if args.quick else 0.2)
    scaling_jobs = args.scaling_jobs or (24 if args.quick else 48)
    options = QueueOptions(
        url=url,
        name=f"lipcast.bench.{uuid.uuid4().hex[:10]}",
        max_length=10_000,
        result_timeout_s=60,
        connection_name="lipcast bench queue",
    )
    started = time.monotonic()
    try:
        overhead = await _overhead(options, round_trips)
        scaling = await _scaling(options, job_s, scaling_jobs)
        conversations = await _conversations(options, args.conversations, args.sentences)
    finally:
        await delete_topology(options)
    return {
        "broker": safe_url(url),
        "quick": args.quick,
        "round_trip": overhead,
        "worker_scaling": scaling,
        "conversations": conversations,
        "seconds": round(time.monotonic() - started, 1),
    }


# -- 1. round-trip overhead --------------------------------------------------------------


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered) * 1000, 3), "p95": round(p95 * 1000, 3)}


def _job(text: str = "Hello chat!", *, turn_id: str = "bench", seq: int = 0) -> RenderJob:
    now = time.time()
    return RenderJob(
        job_id=uuid.uuid4().hex,
        turn_id=turn_id,
        seq=seq,
        text=text,
        persona="bench",
        created_at=now,
        deadline=now + 60,
    )


async def _round_trips(queue: JobQueue, count: int) -> list[float]:
    for _ in range(max(10, count // 10)):  # warm up connections, caches and the JIT-less path
        await (await queue.submit(_job())).collect()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        parts = await (await queue.submit(_job())).collect()
        samples.append(time.perf_counter() - started)
        if len(parts[-1].media) != RESULT_BYTES:
            raise RuntimeError("the no-op worker answered with the wrong size")
    return samples


async def _overhead(options: QueueOptions, count: int) -> dict[str, Any]:
    memory = MemoryJobQueue(options)
    worker = RenderWorker(memory, NoopHandler(size=RESULT_BYTES))
    task = asyncio.create_task(worker.run(), name="bench-memory-worker")
    try:
        memory_samples = await _round_trips(memory, count)
    finally:
        worker.stop()
        await task
    async with _rabbit(options) as rabbit, _worker_processes(options, 1, "noop"):
        rabbit_samples = await _round_trips(rabbit, count)
    memory_ms = _percentiles(memory_samples)
    rabbit_ms = _percentiles(rabbit_samples)
    overhead = {key: round(rabbit_ms[key] - memory_ms[key], 3) for key in ("p50", "p95")}
    return {
        "round_trips": count,
        "result_bytes": RESULT_BYTES,
        "memory_ms": memory_ms,
        "rabbitmq_ms": rabbit_ms,
        "overhead_ms": overhead,
        "target_overhead_p50_ms": OVERHEAD_TARGET_MS,
        "meets_target": overhead["p50"] <= OVERHEAD_TARGET_MS,
    }


# -- 2. worker scaling -------------------------------------------------------------------


async def _scaling(options: QueueOptions, job_s: float, jobs: int) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    async with _rabbit(options) as rabbit:
        for workers in (1, 2, 4, 8):
            async with _worker_processes(options, workers, "sleep", job_s):
                started = time.perf_counter()
                streams = [await rabbit.submit(_job(f"job {i}")) for i in range(jobs)]
                await asyncio.gather(*(stream.collect() for stream in streams))
                seconds = time.perf_counter() - started
            runs.append({"workers": workers, "seconds": round(seconds, 3)})
    base = jobs / runs[0]["seconds"]
    for entry in runs:
        entry["jobs_per_s"] = round(jobs / entry["seconds"], 2)
        entry["ratio"] = round(entry["jobs_per_s"] / base, 2)
    return {
        "job_s": job_s,
        "jobs": jobs,
        "runs": runs,
        "target_ratio_8": SCALING_TARGET,
        "meets_target": runs[-1]["ratio"] >= SCALING_TARGET,
    }


# -- 3. conversations --------------------------------------------------------------------


async def _conversations(options: QueueOptions, count: int, sentences: int) -> dict[str, Any]:
    tally = {"delivered": 0, "lost": 0, "duplicated": 0, "out_of_order": 0}
    dropped = 0

    async def conversation(rabbit: JobQueue, index: int) -> None:
        nonlocal dropped
        turn = f"turn-{index}"
        streams = []
        collected = []
        for seq in range(sentences):  # sentences come out of the LLM one by one
            stream = await rabbit.submit(_job(f"sentence {seq}", turn_id=turn, seq=seq))
            streams.append(stream)
            collected.append(asyncio.ensure_future(stream.collect()))
            await asyncio.sleep(random.uniform(0, 0.01))
        seen: set[tuple[str, int]] = set()
        for seq, (stream, parts) in enumerate(zip(streams, collected, strict=True)):
            try:
                results = await parts
            except Exception:  # noqa: BLE001 - a lost job is what this counts
                tally["lost"] += 1
                continue
            ok = True
            for number, result in enumerate(results):
                key = (result.job_id, result.part)
                if key in seen:
                    tally["duplicated"] += 1
                    ok = False
                seen.add(key)
                expected = f"{turn}/{seq}/{number}".encode()
                if result.part != number or result.job_id != stream.job_id:
                    ok = False
                if result.media and result.media != expected:
                    ok = False
            if not ok or not results or not results[-1].last:
                tally["out_of_order"] += 1
            else:
                tally["delivered"] += 1
            dropped += stream.duplicates

    async with _rabbit(options) as rabbit, _worker_processes(options, 4, "conversation"):
        started = time.perf_counter()
        await asyncio.gather(*(conversation(rabbit, index) for index in range(count)))
    seconds = time.perf_counter() - started
    return {
        "conversations": count,
        "sentences_each": sentences,
        "jobs": count * sentences,
        **tally,
        "duplicate_parts_dropped": dropped,
        "seconds": round(seconds, 2),
        "meets_target": tally["delivered"] == count * sentences,
    }


# -- plumbing ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _rabbit(options: QueueOptions) -> AsyncIterator[RabbitJobQueue]:
    queue = RabbitJobQueue(options)
    await queue.start()
    try:
        yield queue
    finally:
        await queue.close()


@contextlib.asynccontextmanager
async def _worker_processes(
    options: QueueOptions, count: int, handler: str, job_s: float = 0.0
) -> AsyncIterator[None]:
    """``count`` worker processes consuming the bench queue, stopped (SIGTERM) afterwards."""
    spec = json.dumps(
        {"name": options.name, "max_length": options.max_length, "handler": handler, "job_s": job_s}
    )
    env = {**os.environ, "LIPCAST_AMQP_URL": options.url, "PYTHONPATH": str(_PACKAGE_ROOT)}
    code = "import sys; from lipcast.benchmarks.queue import worker_main; worker_main(sys.argv[1])"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, spec, stdout=asyncio.subprocess.PIPE, env=env
        )
        for _ in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            if not line.startswith(b"ready"):
                raise RuntimeError(f"a bench worker did not start: {line!r}")
        yield
    finally:
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            await process.wait()


async def delete_topology(options: QueueOptions) -> None:
    """Delete a bench queue, its dead-letter queue and exchange (whatever is left of them)."""
    import aio_pika

    with contextlib.suppress(Exception):
        async with await aio_pika.connect(options.url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(options.name)
            await channel.queue_delete(options.dead_letter_queue)
            await channel.queue_delete(options.suspect_queue)
            await channel.exchange_delete(options.dead_letter_exchange)
            await channel.exchange_delete(options.awaiting_exchange)


class _ConversationHandler:
    """Two parts per job after a random 5-30 ms, each naming its turn, sentence and part."""

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        await asyncio.sleep(random.uniform(0.005, 0.03))
        yield ResultChunk(media=f"{job.turn_id}/{job.seq}/0".encode())
        yield ResultChunk(media=f"{job.turn_id}/{job.seq}/1".encode(), last=True)

    async def aclose(self) -> None:
        return None


def worker_main(spec_json: str) -> None:
    """Entry point of a bench worker process (see :func:`_worker_processes`)."""
    spec = json.loads(spec_json)
    handlers: dict[str, Callable[[], JobHandler]] = {
        "noop": lambda: NoopHandler(size=RESULT_BYTES),
        "sleep": lambda: SleepHandler(seconds=float(spec["job_s"])),
        "conversation": _ConversationHandler,
    }
    options = replace(
        QueueOptions(),
        url=os.environ["LIPCAST_AMQP_URL"],
        name=spec["name"],
        max_length=spec["max_length"],
        connection_name=f"lipcast bench worker {os.getpid()}",
    )

    async def main() -> None:
        queue = RabbitJobQueue(options)
        await queue.start()
        try:
            await serve(queue, handlers[spec["handler"]](), on_ready=_announce)
        finally:
            await queue.close()

    asyncio.run(main())


def _announce() -> None:
    print("ready", flush=True)
