"""``lipcast worker``: render (or, with ``--stt``, transcribe) jobs from the shared RabbitMQ.

Run one per render machine (or per GPU). It takes jobs from ``[queue] name`` on the broker,
renders them with the configured TTS and renderer, and streams each clip back to whichever
``lipcast run`` asked for it. ``lipcast worker --stt`` instead takes transcribe jobs from
``<[queue] name>.stt`` and answers each with the transcript of the ``[stt]`` backend (with
``[stt] backend = "queue"``, the one ``[stt.queue] backend`` names); a machine that does both
runs both commands. SIGTERM or Ctrl-C stops taking jobs, finishes the job in progress and
exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from lipcast.wiring import job_queue_options
from pipeline.errors import ConfigError
from pipeline.jobs.queue import open_job_queue
from pipeline.jobs.queue.rabbitmq import safe_url
from pipeline.jobs.worker import (
    JobHandler,
    WorkerStats,
    default_worker_id,
    serve,
    serve_until_signalled,
)

if TYPE_CHECKING:
    from lipcast.cli import Context
    from pipeline.services.stt import STT

HELP = "render (or with --stt transcribe) jobs from the shared RabbitMQ queue"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefetch", type=int, help="jobs held unacknowledged at once (default: [worker] prefetch)"
    )
    parser.add_argument(
        "--concurrency", type=int, help="jobs rendered at once (default: [worker] concurrency)"
    )
    parser.add_argument(
        "--queue", help="work queue to serve (default: [queue] name, or <[queue] name>.stt)"
    )
    parser.add_argument(
        "--stt",
        action="store_true",
        help='transcribe speech for [stt] backend = "queue" requesters instead of rendering',
    )


def _check_positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{flag} = {value}: expected a whole number of at least 1")


def run(args: argparse.Namespace, context: Context) -> int:
    settings = context.settings
    if settings.queue.backend != "rabbitmq":
        raise ConfigError(
            f'[queue] backend = "{settings.queue.backend}": lipcast worker serves a shared '
            'RabbitMQ queue. Set backend = "rabbitmq" in bot.toml on this machine and on the one '
            "running the adapters (broker URL in [queue] url, or LIPCAST_AMQP_URL with password)"
        )
    _check_positive(args.prefetch, "--prefetch")
    _check_positive(args.concurrency, "--concurrency")
    if args.stt:
        return _run_stt(args, context)
    from lipcast.wiring import build_job_handler

    handler: JobHandler = build_job_handler(settings, context.secrets)
    return asyncio.run(_work(args, context, handler))


async def _work(args: argparse.Namespace, context: Context, handler: JobHandler) -> int:
    settings = context.settings
    worker_id = default_worker_id()
    options = job_queue_options(
        settings, context.secrets, connection_name=f"lipcast worker {worker_id}", name=args.queue
    )
    prefetch = args.prefetch or settings.worker.prefetch
    concurrency = args.concurrency or settings.worker.concurrency
    queue = open_job_queue("rabbitmq", options)
    try:
        await queue.start()

        def ready() -> None:
            print(
                f"lipcast worker {worker_id}: serving {options.name!r} at "
                f"{safe_url(options.url)} (prefetch {prefetch}, concurrency {concurrency}); "
                "SIGTERM or Ctrl-C stops after the job in progress",
                file=sys.stderr,
                flush=True,
            )

        stats = await serve(
            queue,
            handler,
            prefetch=prefetch,
            concurrency=concurrency,
            worker_id=worker_id,
            on_ready=ready,
        )
    finally:
        await queue.close()
        await handler.aclose()
    print(f"lipcast worker {worker_id}: stopped; {_summary(stats)}", file=sys.stderr)
    return 0


def _run_stt(args: argparse.Namespace, context: Context) -> int:
    from lipcast.wiring import build_stt

    settings = context.settings
    backend = settings.stt.backend
    if backend == "queue":
        backend = settings.stt.queue.backend  # this machine is the one the requesters wait on
    stt = build_stt(settings, context.secrets, backend=backend)
    return asyncio.run(_transcribe(args, context, stt, backend))


async def _transcribe(args: argparse.Namespace, context: Context, stt: STT, backend: str) -> int:
    from lipcast.wiring import build_stt_queue
    from pipeline.jobs.transcribe import TranscribeWorker

    settings = context.settings
    worker_id = default_worker_id()
    queue = build_stt_queue(
        settings,
        context.secrets,
        connection_name=f"lipcast stt worker {worker_id}",
        name=args.queue,
    )
    prefetch = args.prefetch or settings.worker.prefetch
    concurrency = args.concurrency or settings.worker.concurrency
    try:
        await stt.warm_up()  # load the model before taking the first job
        await queue.start()
        worker = TranscribeWorker(
            queue, stt, prefetch=prefetch, concurrency=concurrency, worker_id=worker_id
        )

        def ready() -> None:
            print(
                f"lipcast worker {worker_id}: transcribing with {backend} on "
                f"{queue.options.name!r} at {safe_url(queue.options.url)} (prefetch {prefetch}, "
                f"concurrency {concurrency}); SIGTERM or Ctrl-C stops after the job in progress",
                file=sys.stderr,
                flush=True,
            )

        stats = await serve_until_signalled(worker, on_ready=ready)
    finally:
        await queue.close()
        await stt.aclose()
    print(f"lipcast worker {worker_id}: stopped; {_summary(stats)}", file=sys.stderr)
    return 0


def _summary(stats: WorkerStats) -> str:
    return (
        f"jobs: {stats.done} done, {stats.expired} expired, {stats.failed} failed, "
        f"{stats.retried} retried, {stats.poisoned} poison, {stats.abandoned} abandoned, "
        f"{stats.lost} cut off by a lost connection"
    )
