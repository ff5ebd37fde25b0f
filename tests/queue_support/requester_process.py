"""A requester process for the fault tests: ``python -m tests.queue_support.requester_process``.

It logs the way ``lipcast`` does (:func:`lipcast.logs.setup_logging` at ``-v``) to standard
error, submits ``--jobs`` render jobs to a RabbitMQ work queue one every ``--interval``
seconds, reads every job's results to the end, and reports on standard output, one line
each: ``ready`` once connected, ``delivered <job id> <parts>`` or ``failed <job id> <error>``
per job, then ``finished <delivered> <failed>``. The broker URL comes from LIPCAST_AMQP_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from dataclasses import replace

from lipcast.logs import setup_logging
from pipeline.errors import LipcastError
from pipeline.jobs.queue import QueueOptions, ResultStream
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue
from pipeline.jobs.wire import RenderJob


def _say(line: str) -> None:
    print(line, flush=True)


async def _read(stream: ResultStream) -> bool:
    try:
        parts = await stream.collect()
    except LipcastError as err:
        _say(f"failed {stream.job_id} {err}")
        return False
    _say(f"delivered {stream.job_id} {len(parts)}")
    return True


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", required=True)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args(argv)
    setup_logging(1, [])
    options = replace(
        QueueOptions(),
        url=os.environ["LIPCAST_AMQP_URL"],
        name=args.queue,
        reconnect_interval_s=0.5,
        result_timeout_s=15.0,
        connection_name=f"lipcast tests requester {os.getpid()}",
    )
    async with RabbitJobQueue(options) as queue:
        _say("ready")
        readers = []
        for index in range(args.jobs):
            now = time.time()
            job = RenderJob(
                job_id=uuid.uuid4().hex,
                turn_id=f"turn-{index // 4}",
                seq=index % 4,
                text=f"sentence {index}",
                persona="cohost",
                created_at=now,
                deadline=now + 30,
            )
            stream = await queue.submit(job)
            readers.append(asyncio.create_task(_read(stream), name=f"read-{job.job_id}"))
            await asyncio.sleep(args.interval)
        outcomes = await asyncio.gather(*readers)
    _say(f"finished {outcomes.count(True)} {outcomes.count(False)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
