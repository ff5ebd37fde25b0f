"""A render worker process for the fault tests: ``python -m tests.queue_support.worker_process``.

It serves a RabbitMQ work queue with a stand-in handler through the same ``serve`` that
``lipcast worker`` runs, and tells the test what it does on standard output, one line each:
``ready <pid>`` once it consumes, ``started <job id>`` when a job's handling begins. With
``--kill-on TEXT`` it SIGKILLs itself on any job whose text starts with TEXT (a worker dying
mid-job, the hard way). The broker URL comes from LIPCAST_AMQP_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import replace

from pipeline.jobs.queue import QueueOptions
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue
from pipeline.jobs.wire import RenderJob
from pipeline.jobs.worker import ResultChunk, SleepHandler, serve


def _say(line: str) -> None:
    print(line, flush=True)


class ReportingHandler:
    """Announces each job, dies on the poison text, otherwise sleeps like :class:`SleepHandler`."""

    def __init__(self, inner: SleepHandler, kill_on: str | None) -> None:
        self._inner = inner
        self._kill_on = kill_on

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        _say(f"started {job.job_id}")
        if self._kill_on and job.text.startswith(self._kill_on):
            os.kill(os.getpid(), signal.SIGKILL)
        async for chunk in self._inner.handle(job):
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", required=True)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=1)
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--kill-on", default=None)
    args = parser.parse_args(argv)
    options = replace(
        QueueOptions(),
        url=os.environ["LIPCAST_AMQP_URL"],
        name=args.queue,
        max_attempts=args.max_attempts,
        reconnect_interval_s=0.2,
        connection_name=f"lipcast tests worker {os.getpid()}",
    )
    handler = ReportingHandler(SleepHandler(seconds=args.seconds, parts=args.parts), args.kill_on)
    queue = RabbitJobQueue(options)
    await queue.start()
    try:
        await serve(
            queue, handler, prefetch=args.prefetch, on_ready=lambda: _say(f"ready {os.getpid()}")
        )
    finally:
        await queue.close()
    _say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
