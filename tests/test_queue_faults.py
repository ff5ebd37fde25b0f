"""Faults against the real RabbitMQ: dead workers, poison jobs, dropped connections, topology.

These need the broker on 127.0.0.1:5672 (or LIPCAST_AMQP_URL). Outside CI they skip when it
is unreachable; with CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.jobs.queue import JobFailedError, QueueOptions, QueueUnavailableError
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue, safe_url
from pipeline.jobs.wire import ATTEMPT_HEADER, ERROR_EXPIRED, ERROR_POISON, RenderJob
from pipeline.jobs.worker import ResultChunk, SleepHandler
from tests.queue_support.harness import (
    ROOT,
    WorkerProcess,
    make_job,
    open_transport,
    rabbitmqctl,
    running_worker,
    worker_processes,
)

pytestmark = pytest.mark.broker


async def test_a_worker_killed_mid_job_is_replaced_and_the_result_arrives_once(
    broker: str,
) -> None:
    async with open_transport("rabbitmq") as t:
        args = ("--seconds", "0.9", "--parts", "3")
        async with worker_processes(2, t.options.name, *args) as workers:
            stream = await t.requester.submit(make_job())
            first = await anext(stream)  # one part is out: the worker is mid-job
            (doomed,) = [w for w in workers if f"started {stream.job_id}" in w.lines]
            doomed.kill()
            assert await doomed.wait() == -signal.SIGKILL
            rest = [part async for part in stream]
            survivor = next(w for w in workers if w is not doomed)
            assert await survivor.wait_for(f"started {stream.job_id}")
    parts = [first, *rest]
    assert [part.part for part in parts] == [0, 1, 2]
    assert [part.last for part in parts] == [False, False, True]
    assert parts[-1].attempt == 2 and parts[-1].worker.endswith(f":{survivor.pid}")
    assert stream.duplicates == 1  # the second attempt's part 0, dropped


async def test_a_job_that_kills_three_workers_is_dead_lettered_and_others_flow(
    broker: str,
) -> None:
    async with (
        open_transport("rabbitmq") as t,
        worker_processes(4, t.options.name, "--kill-on", "poison") as workers,
    ):
        poison = await t.requester.submit(make_job("poison pill"))
        with pytest.raises(JobFailedError, match="never finished") as caught:
            await poison.collect()
        later = await (await t.requester.submit(make_job("a normal sentence"))).collect()
        dead = await t.dead_letters()
        # The job is dead-lettered the moment the third worker dies, which can be before
        # that process is reaped: read exit codes only once three workers are.
        exit_codes = await _first_exits(workers, 3)
        alive = [w for w in workers if w.process.returncode is None]
    assert caught.value.reason == ERROR_POISON
    assert later[-1].last
    assert exit_codes == [-signal.SIGKILL] * 3
    assert len(alive) == 1  # the fourth served the normal sentence
    assert dead[0].reason == ERROR_POISON and dead[0].job_id == poison.job_id
    assert dead[0].headers[ATTEMPT_HEADER] == 3


async def _first_exits(workers: list[WorkerProcess], count: int) -> list[int]:
    """The exit codes of the first ``count`` workers to end, each waited for (reaped)."""
    waits = [asyncio.ensure_future(worker.wait(within_s=30.0)) for worker in workers]
    codes: list[int] = []
    try:
        for finished in asyncio.as_completed(waits):
            codes.append(await finished)
            if len(codes) == count:
                break
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return codes


async def test_sigterm_finishes_the_job_in_progress_and_hands_back_the_rest(
    broker: str,
) -> None:
    async with open_transport("rabbitmq") as t:
        args = ("--seconds", "0.6", "--parts", "2", "--prefetch", "2")
        async with worker_processes(1, t.options.name, *args) as (worker,):
            current = await t.requester.submit(make_job("current"))
            queued = await t.requester.submit(make_job("queued"))
            await worker.wait_for(f"started {current.job_id}")
            worker.terminate()
            parts = await current.collect()
            assert await worker.wait() == 0
            assert f"started {queued.job_id}" not in worker.lines
        assert parts[-1].last
        # The job it held but had not started goes back uncounted, to the next worker.
        async with running_worker(t.worker_queue, SleepHandler(seconds=0.0)):
            handed_back = await queued.collect()
    assert handed_back[-1].attempt == 1


async def test_both_sides_reconnect_after_the_broker_drops_them_and_no_job_is_lost(
    vhost_url: tuple[str, str],
) -> None:
    vhost, url = vhost_url
    started = asyncio.Event()

    class Announcing(SleepHandler):
        async def handle(self, job: RenderJob):  # type: ignore[no-untyped-def]
            started.set()
            async for chunk in super().handle(job):
                yield chunk

    handler = Announcing(seconds=0.2)
    async with (
        open_transport("rabbitmq", url=url) as t,
        running_worker(t.worker_queue, handler) as worker,
    ):
        before = [await t.requester.submit(make_job(f"before {i}")) for i in range(4)]
        await started.wait()
        await rabbitmqctl("close_all_connections", "--vhost", vhost, "lipcast test drop")
        results = [await stream.collect() for stream in before]
        after = await (await t.requester.submit(make_job("after"))).collect()
    assert all(parts[-1].last and parts[-1].error is None for parts in results)
    assert after[-1].last
    assert worker.stats.lost + worker.stats.done >= 5


async def test_a_job_nobody_takes_expires_into_the_dead_letters(broker: str) -> None:
    async with open_transport("rabbitmq") as t:
        stream = await t.requester.submit(make_job(ttl_s=0.2))
        dead = await t.dead_letters()
        stream.close()
    assert dead[0].reason == ERROR_EXPIRED and dead[0].job_id == stream.job_id


async def test_declaring_the_topology_is_idempotent_and_a_mismatch_explains_itself(
    broker: str,
) -> None:
    async with open_transport("rabbitmq") as t:
        again = RabbitJobQueue(t.options)
        await again.start()  # same arguments: fine
        await again.close()
        different = RabbitJobQueue(QueueOptions(url=broker, name=t.options.name, max_length=7))
        with pytest.raises(ConfigError, match="delete_queue"):
            await different.start()


async def test_an_unreachable_broker_fails_fast_without_showing_the_password() -> None:
    queue = RabbitJobQueue(
        QueueOptions(url="amqp://lipcast:hunter22@127.0.0.1:1/", connect_timeout_s=3)
    )
    with pytest.raises(QueueUnavailableError) as caught:
        await queue.start()
    assert "hunter22" not in str(caught.value) and "127.0.0.1:1" in str(caught.value)
    assert safe_url("amqp://u:p@h:5672/v") == "amqp://u@h:5672/v"


async def test_results_are_streamed_while_the_worker_loop_stays_responsive(broker: str) -> None:
    """A handler doing blocking work in an executor leaves the loop (and heartbeats) free."""

    class BlockingInExecutor:
        async def handle(self, job: RenderJob):  # type: ignore[no-untyped-def]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, time.sleep, 0.5)
            yield ResultChunk(media=b"done", last=True)

        async def aclose(self) -> None:
            return None

    async with (
        open_transport("rabbitmq") as t,
        running_worker(t.worker_queue, BlockingInExecutor()),
    ):
        stream = await t.requester.submit(make_job())
        ticks = 0
        collecting = asyncio.ensure_future(stream.collect())
        while not collecting.done():
            await asyncio.sleep(0.05)
            ticks += 1
        parts = collecting.result()
    assert parts[-1].media == b"done" and ticks >= 8


_WORKER_COMMAND = """
import sys
import lipcast.wiring
from pipeline.jobs.worker import SleepHandler
lipcast.wiring.build_job_handler = lambda settings, secrets: SleepHandler(seconds=0.6, parts=2)
from lipcast.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_the_lipcast_worker_command_serves_and_exits_0_on_sigterm(
    broker: str, tmp_path: Path
) -> None:
    async with open_transport("rabbitmq") as t:
        config = tmp_path / "bot.toml"
        config.write_text(f'[queue]\nbackend = "rabbitmq"\nname = "{t.options.name}"\n')
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER_COMMAND,
            "-c",
            str(config),
            "worker",
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env={**os.environ, "LIPCAST_AMQP_URL": broker, "PYTHONPATH": ROOT},
        )
        assert process.stderr is not None
        banner = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        assert "serving" in banner and t.options.name in banner
        assert ":guest@" not in banner  # the password never shows
        stream = await t.requester.submit(make_job())
        await anext(stream)
        process.send_signal(signal.SIGTERM)
        rest = [part async for part in stream]
        assert await asyncio.wait_for(process.wait(), 20) == 0
        tail = (await process.stderr.read()).decode()
    assert rest[-1].last
    assert "jobs: 1 done" in tail
