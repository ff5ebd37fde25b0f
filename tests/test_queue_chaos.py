"""The render queue meeting dropped connections: no false poison, no work for nobody, quiet logs.

Against the real RabbitMQ; every forced close happens in a virtual host of the test's own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest
from yarl import URL

from lipcast.logs import QuietTransportDrops
from pipeline.jobs.queue import JobQueue
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue
from pipeline.jobs.wire import RenderResult
from pipeline.jobs.worker import SleepHandler
from tests.queue_support.amqp_proxy import QUEUE_DECLARE, AmqpProxy
from tests.queue_support.harness import (
    BACKENDS,
    ROOT,
    make_job,
    open_transport,
    rabbitmqctl,
    running_worker,
)

pytestmark = pytest.mark.broker


async def _close_vhost_connections(vhost: str, why: str) -> None:
    await rabbitmqctl("close_all_connections", "--vhost", vhost, why)


async def _dropped_unawaited(queue: JobQueue, count: int, within_s: float = 20.0) -> None:
    """Wait until ``queue``'s consumers have dropped ``count`` jobs nobody awaited."""
    assert isinstance(queue, RabbitJobQueue)
    async with asyncio.timeout(within_s):
        while queue.dropped_unawaited < count:  # noqa: ASYNC110 - a counter, no event
            await asyncio.sleep(0.05)


async def _messages_in(url: str, name: str) -> int:
    """Ready messages in queue ``name``, read over a connection of its own."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


# -- attempts count only what can be the job's fault ---------------------------------------


async def test_an_answered_job_that_comes_back_after_a_lost_ack_is_dropped_not_poisoned(
    vhost_url: tuple[str, str],
) -> None:
    vhost, url = vhost_url
    # One attempt allowed: under the old counting the redelivery alone made it poison.
    async with open_transport("rabbitmq", url=url, max_attempts=1) as t:
        consumer = await t.worker_queue.consumer()
        stream = await t.requester.submit(make_job())
        delivery = await consumer.next()
        assert delivery is not None
        await delivery.reply(RenderResult(job_id=stream.job_id, part=0, last=True, media=b"x"))
        parts = await stream.collect()
        # The worker published the result; its acknowledgement is lost with the connection.
        await _close_vhost_connections(vhost, "lipcast test: ack lost")
        taking = asyncio.create_task(consumer.next(), name="test-take-next")
        await _dropped_unawaited(t.worker_queue, 1)
        dead = await _messages_in(url, t.options.dead_letter_queue)
        waiting = await _messages_in(url, t.options.name)
        await consumer.stop()
        assert await taking is None  # nothing was left to render
    assert parts[-1].last and parts[-1].media == b"x"
    assert dead == 0 and waiting == 0


async def test_copies_queued_before_a_drop_are_not_rendered_once_requeued(
    vhost_url: tuple[str, str],
) -> None:
    vhost, url = vhost_url
    handler = SleepHandler(seconds=0.05)
    async with open_transport("rabbitmq", url=url) as t:
        streams = [await t.requester.submit(make_job(f"sentence {i}", seq=i)) for i in range(3)]
        # Nobody consumes yet: the three originals wait, bound to a reply address that the
        # drop makes useless; the requester queues all three again once reconnected.
        await _close_vhost_connections(vhost, "lipcast test: requester dropped")
        async with running_worker(t.worker_queue, handler):
            results = [await stream.collect() for stream in streams]
            await _dropped_unawaited(t.worker_queue, 3)
    assert all(parts[-1].last for parts in results)
    assert sorted(handler.started) == sorted(stream.job_id for stream in streams)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_job_tried_again_goes_ahead_of_new_work_of_its_priority(backend: str) -> None:
    async with open_transport(backend) as t:
        consumer = await t.worker_queue.consumer()
        first = await t.requester.submit(make_job("first", priority=3))
        delivery = await consumer.next()
        assert delivery is not None and delivery.job.job_id == first.job_id
        newer = [await t.requester.submit(make_job(f"newer {i}", priority=3)) for i in range(2)]
        assert await delivery.retry("simulated crash")
        again = await consumer.next()
        assert again is not None
        order = [again.job.job_id]
        await again.ack()
        for _ in newer:
            following = await consumer.next()
            assert following is not None
            order.append(following.job.job_id)
            await following.ack()
        await consumer.stop()
        for stream in (first, *newer):
            stream.close()
    assert order == [first.job_id, *(stream.job_id for stream in newer)]
    assert again.attempt == 2


# -- processes that meet a forced close -------------------------------------------------

_WORKER_COMMAND = """
import sys
import lipcast.wiring
from pipeline.jobs.worker import SleepHandler
lipcast.wiring.build_job_handler = lambda settings, secrets: SleepHandler(seconds=0.3, parts=2)
from lipcast.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def _lipcast_worker(url: str, queue: str, tmp_path: Path) -> asyncio.subprocess.Process:
    """``lipcast -v worker`` (its renderer standing in as a 0.3 s sleep) on ``queue``."""
    config = tmp_path / "bot.toml"
    config.write_text(
        f'[queue]\nbackend = "rabbitmq"\nname = "{queue}"\nreconnect_interval_s = 0.5\n'
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _WORKER_COMMAND,
        "-v",
        "-c",
        str(config),
        "worker",
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "LIPCAST_AMQP_URL": url, "PYTHONPATH": ROOT},
    )


async def _line_with(stream: asyncio.StreamReader, text: str, seen: list[str]) -> str:
    async with asyncio.timeout(60):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"the process ended before printing {text!r}: {seen}")
            line = raw.decode().rstrip()
            seen.append(line)
            if text in line:
                return line


async def _stop(process: asyncio.subprocess.Process, seen: list[str]) -> int:
    process.send_signal(signal.SIGTERM)
    assert process.stderr is not None
    rest = await asyncio.wait_for(process.stderr.read(), 30)
    seen.extend(rest.decode().splitlines())
    return await asyncio.wait_for(process.wait(), 30)


async def test_a_worker_whose_connection_closes_while_it_declares_reconnects_and_serves(
    vhost_url: tuple[str, str], tmp_path: Path
) -> None:
    vhost, url = vhost_url
    broker = URL(url)

    async def close_the_worker_connection() -> None:
        # Only the worker is connected to this vhost yet: the close hits it mid-declaration.
        await _close_vhost_connections(vhost, "lipcast test: dropped while declaring")

    async with AmqpProxy(
        broker_host=broker.host or "127.0.0.1",
        broker_port=broker.port or 5672,
        method=QUEUE_DECLARE,
        on_method=close_the_worker_connection,
    ) as proxy:
        queue = "lipcast.test.declare-drop"
        process = await _lipcast_worker(str(broker.with_port(proxy.port)), queue, tmp_path)
        assert process.stderr is not None
        lines: list[str] = []
        try:
            await _line_with(process.stderr, "serving", lines)
            assert proxy.fired.is_set()
            async with open_transport("rabbitmq", url=url, name=queue) as t:
                parts = await (await t.requester.submit(make_job())).collect()
                await _line_with(process.stderr, "done in", lines)
            code = await _stop(process, lines)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = "\n".join(lines)
    assert parts[-1].last and code == 0
    assert "the connection dropped while declaring the queues" in log
    assert "CONNECTION_FORCED" in log
    assert "Traceback" not in log
    assert "jobs: 1 done" in log


async def test_worker_and_requester_logs_during_a_forced_close_have_no_traceback(
    vhost_url: tuple[str, str], tmp_path: Path
) -> None:
    vhost, url = vhost_url
    queue = "lipcast.test.forced-close"
    worker = await _lipcast_worker(url, queue, tmp_path)
    requester: asyncio.subprocess.Process | None = None
    worker_lines: list[str] = []
    try:
        assert worker.stderr is not None
        await _line_with(worker.stderr, "serving", worker_lines)
        requester = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.queue_support.requester_process",
            "--queue",
            queue,
            "--jobs",
            "12",
            "--interval",
            "0.15",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "LIPCAST_AMQP_URL": url, "PYTHONPATH": ROOT},
        )
        assert requester.stdout is not None and requester.stderr is not None
        out: list[str] = []
        await _line_with(requester.stdout, "delivered", out)  # jobs are flowing
        await _close_vhost_connections(vhost, "lipcast test: forced close")
        summary = await _line_with(requester.stdout, "finished", out)
        requester_log = (await requester.stderr.read()).decode()
        assert await asyncio.wait_for(requester.wait(), 30) == 0
        assert await _stop(worker, worker_lines) == 0
    finally:
        for process in (worker, requester):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    worker_log = "\n".join(worker_lines)
    assert summary == "finished 12 0", out
    for log in (worker_log, requester_log):
        assert "Traceback" not in log
        assert " ERROR " not in log
        assert log.count("lost the connection to RabbitMQ") == 1, log
        assert log.count("reconnected to RabbitMQ after") == 1, log
    # One INFO line per job on the worker: id, turn, seq, attempt, seconds.
    assert "(turn turn-0, seq 0, attempt 1): done in" in worker_log


async def test_a_redelivered_job_still_awaited_counts_one_attempt(
    vhost_url: tuple[str, str],
) -> None:
    """The other side of the first test: a job nobody answered is tried again, counted."""
    _vhost, url = vhost_url
    async with open_transport("rabbitmq", url=url) as t:
        taker = RabbitJobQueue(t.options)
        await taker.start()
        consumer = await taker.consumer()
        stream = await t.requester.submit(make_job())
        assert await consumer.next() is not None  # taken, never answered
        await taker.close()  # its worker is gone; the requester still waits
        async with running_worker(t.worker_queue, SleepHandler(seconds=0.0)):
            parts = await stream.collect()
    assert parts[-1].last and parts[-1].attempt == 2


async def test_a_worker_that_cannot_reach_the_broker_exits_with_one_line(
    tmp_path: Path, refused_url: str
) -> None:
    port = URL(refused_url).port
    url = f"amqp://lipcast:hunter22@127.0.0.1:{port}/"
    process = await _lipcast_worker(url, "lipcast.test.unreachable", tmp_path)
    assert process.stderr is not None
    output = (await asyncio.wait_for(process.stderr.read(), 60)).decode()
    code = await asyncio.wait_for(process.wait(), 30)
    lines = output.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("lipcast: error: cannot reach RabbitMQ at ")
    assert "hunter22" not in output


def test_the_transport_log_filter_drops_drop_reports_and_keeps_other_errors_in_one_line() -> None:
    quiet = QuietTransportDrops()

    def record(
        name: str, level: int, message: str, error: BaseException | None = None
    ) -> logging.LogRecord:
        exc_info = (type(error), error, None) if error is not None else None
        return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)

    forced = ConnectionError("CONNECTION_FORCED")
    assert not quiet.filter(record("aiormq.connection", logging.ERROR, "Unexpected close", forced))
    assert not quiet.filter(record("aio_pika.robust_connection", logging.INFO, "Reconnecting"))
    blocked = record("aiormq.connection", logging.WARNING, "Connection was blocked by: 'memory'")
    assert quiet.filter(blocked)
    other = record("aiormq.channel", logging.ERROR, "Consumer callback failed", ValueError("x"))
    assert quiet.filter(other) and other.exc_info is None
    ours = record("pipeline.jobs.worker", logging.ERROR, "job crashed", ValueError("x"))
    assert quiet.filter(ours) and ours.exc_info is not None
