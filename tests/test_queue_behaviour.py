"""The job queue's behaviour, the same suite against the memory backend and the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.errors import RenderError
from pipeline.jobs.queue import (
    JobExpiredError,
    JobFailedError,
    QueueFullError,
    ResultTimeoutError,
)
from pipeline.jobs.wire import (
    ERROR_EXPIRED,
    ERROR_FAILED,
    ERROR_INVALID,
    ERROR_POISON,
    RenderJob,
    encode,
)
from pipeline.jobs.worker import FailingHandler, NoopHandler, ResultChunk, SleepHandler
from tests.queue_support.harness import BACKENDS, make_job, open_transport, running_worker

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


async def test_a_job_round_trips_with_its_media_and_timings(backend: str) -> None:
    async with open_transport(backend) as t, running_worker(t.worker_queue, NoopHandler()):
        stream = await t.requester.submit(make_job())
        parts = await stream.collect()
    assert len(parts) == 1
    assert parts[0].last and parts[0].part == 0
    assert len(parts[0].media) == 200_000
    assert parts[0].error is None and parts[0].attempt == 1
    assert "queue_wait" in parts[0].timings


async def test_parts_stream_in_order_with_the_last_one_marked(backend: str) -> None:
    handler = SleepHandler(seconds=0.06, parts=3)
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler):
        stream = await t.requester.submit(make_job())
        first = await anext(stream)
        assert first.part == 0 and not first.last  # streamed before the rest is made
        rest = [part async for part in stream]
    assert [part.part for part in rest] == [1, 2]
    assert rest[-1].last and stream.duplicates == 0


async def test_a_handler_without_a_last_flag_gets_an_end_marker(backend: str) -> None:
    class TwoChunks:
        async def handle(self, job: RenderJob):  # type: ignore[no-untyped-def]
            yield ResultChunk(media=b"a")
            yield ResultChunk(media=b"b")

        async def aclose(self) -> None:
            return None

    async with open_transport(backend) as t, running_worker(t.worker_queue, TwoChunks()):
        parts = await (await t.requester.submit(make_job())).collect()
    assert [(p.part, p.media, p.last) for p in parts] == [
        (0, b"a", False),
        (1, b"b", False),
        (2, b"", True),
    ]


async def test_higher_priority_jobs_are_served_first(backend: str) -> None:
    async with open_transport(backend) as t:
        low = [await t.requester.submit(make_job(f"low {i}", priority=1)) for i in range(3)]
        high = await t.requester.submit(make_job("high", priority=9))
        handler = SleepHandler(seconds=0.0)
        async with running_worker(t.worker_queue, handler):
            for stream in [high, *low]:
                await stream.collect()
    assert handler.started[0] == high.job_id
    assert handler.started[1:] == [stream.job_id for stream in low]


async def test_a_full_queue_refuses_at_once(backend: str) -> None:
    async with open_transport(backend, max_length=2) as t:
        for _ in range(2):
            await t.requester.submit(make_job())
        started = time.monotonic()
        with pytest.raises(QueueFullError, match="full"):
            await t.requester.submit(make_job())
        assert time.monotonic() - started < 2.0  # refused at once, not after a timeout
        assert QueueFullError.transient


async def test_a_job_past_its_deadline_is_refused_before_queueing(backend: str) -> None:
    async with open_transport(backend) as t:
        job = make_job(created_at=time.time() - 10, ttl_s=5)
        with pytest.raises(JobExpiredError):
            await t.requester.submit(job)


async def test_a_worker_drops_a_job_whose_deadline_passed_without_rendering(backend: str) -> None:
    handler = SleepHandler(seconds=0.0)
    late_clock = lambda: time.time() + 60  # noqa: E731 - the worker sees the deadline as passed
    async with open_transport(backend) as t:
        async with running_worker(t.worker_queue, handler, clock=late_clock):
            stream = await t.requester.submit(make_job(ttl_s=30))
            with pytest.raises(JobExpiredError, match="deadline passed"):
                await stream.collect()
        dead = await t.dead_letters()
    assert handler.started == []
    assert dead[0].reason == ERROR_EXPIRED and dead[0].job_id == stream.job_id


async def test_the_requester_gives_up_at_the_deadline_when_no_worker_runs(backend: str) -> None:
    async with open_transport(backend) as t:
        stream = await t.requester.submit(make_job(ttl_s=0.3))
        started = time.monotonic()
        with pytest.raises(JobExpiredError):
            await stream.collect()
        assert 0.2 < time.monotonic() - started < 5


async def test_a_missing_part_becomes_a_timeout_not_a_hang(backend: str) -> None:
    release = asyncio.Event()

    class Stalls:
        async def handle(self, job: RenderJob):  # type: ignore[no-untyped-def]
            yield ResultChunk(media=b"first")
            await release.wait()
            yield ResultChunk(media=b"late", last=True)

        async def aclose(self) -> None:
            return None

    async with (
        open_transport(backend, result_timeout_s=0.3) as t,
        running_worker(t.worker_queue, Stalls()),
    ):
        stream = await t.requester.submit(make_job())
        assert (await anext(stream)).media == b"first"
        started = time.monotonic()
        with pytest.raises(ResultTimeoutError, match="part 1"):
            await anext(stream)
        assert time.monotonic() - started < 3
        release.set()  # the late part then finds nobody waiting


async def test_a_permanent_render_error_fails_the_job_and_the_worker_goes_on(backend: str) -> None:
    handler = FailingHandler(error=lambda: RenderError("avatar image is unreadable"), times=1)
    async with open_transport(backend) as t:
        async with running_worker(t.worker_queue, handler) as worker:
            bad = await t.requester.submit(make_job())
            with pytest.raises(JobFailedError, match="avatar image is unreadable") as caught:
                await bad.collect()
            good = await (await t.requester.submit(make_job())).collect()
        dead = await t.dead_letters()
    assert caught.value.reason == ERROR_FAILED
    assert good[-1].last and handler.calls == 2
    assert dead[0].reason == ERROR_FAILED and "avatar" in dead[0].detail
    assert worker.stats.failed == 1 and worker.stats.done == 1


async def test_a_crash_is_retried_and_the_next_attempt_succeeds(backend: str) -> None:
    handler = FailingHandler(times=1)
    async with open_transport(backend) as t, running_worker(t.worker_queue, handler) as worker:
        parts = await (await t.requester.submit(make_job())).collect()
    assert parts[-1].last and parts[-1].attempt == 2
    assert worker.stats.retried == 1 and worker.stats.done == 1


async def test_a_job_that_crashes_every_attempt_is_dead_lettered_as_poison(backend: str) -> None:
    handler = FailingHandler(times=3)  # crashes on every one of the 3 attempts
    async with open_transport(backend, max_attempts=3) as t:
        async with running_worker(t.worker_queue, handler) as worker:
            poison = await t.requester.submit(make_job("poison"))
            with pytest.raises(JobFailedError, match="3 attempts") as caught:
                await poison.collect()
            later = await (await t.requester.submit(make_job("fine"))).collect()
        dead = await t.dead_letters()
    assert caught.value.reason == ERROR_POISON
    assert handler.calls == 4 and later[-1].last
    assert dead[0].reason == ERROR_POISON and "simulated renderer crash" in dead[0].detail
    assert worker.stats.poisoned == 1


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"version": 2, "job_id": "j-future"}, b"hi", "unsupported_version"),
        ({"version": 1, "job_id": "j-broken", "seq": "first"}, b"hi", "malformed"),
        ({"version": 1, "job_id": "j-binary"}, b"\xff\xfe", "malformed"),
        ({"version": 1, "job_id": "not an id"}, b"hi", "malformed"),
    ],
)
async def test_an_invalid_message_is_dead_lettered_and_the_worker_stays_up(
    backend: str, headers: dict[str, object], body: bytes, expected: str
) -> None:
    valid = encode(make_job())
    broken = type(valid)(
        kind=valid.kind,
        headers={**valid.headers, **headers},  # type: ignore[dict-item]
        body=body,
        content_type=valid.content_type,
    )
    async with open_transport(backend) as t, running_worker(t.worker_queue, NoopHandler()):
        await t.inject(broken)
        dead = await t.dead_letters()
        after = await (await t.requester.submit(make_job())).collect()
    assert dead[0].reason == ERROR_INVALID and expected in dead[0].detail
    assert after[-1].last


async def test_several_workers_share_the_queue_and_each_job_is_done_once(backend: str) -> None:
    handlers = [SleepHandler(seconds=0.02) for _ in range(3)]
    async with open_transport(backend) as t:
        queues = [t.worker_queue, await t.another_worker_queue(), await t.another_worker_queue()]
        async with (
            running_worker(queues[0], handlers[0]),
            running_worker(queues[1], handlers[1]),
            running_worker(queues[2], handlers[2]),
        ):
            streams = [await t.requester.submit(make_job(f"job {i}")) for i in range(12)]
            results = [await stream.collect() for stream in streams]
    started = [job for handler in handlers for job in handler.started]
    assert sorted(started) == sorted(stream.job_id for stream in streams)
    assert all(parts[-1].last for parts in results)
    assert sum(1 for handler in handlers if handler.started) >= 2


async def test_stop_finishes_the_job_in_progress_and_takes_no_more(backend: str) -> None:
    handler = SleepHandler(seconds=0.3, parts=2)
    async with open_transport(backend) as t:
        worker_block = running_worker(t.worker_queue, handler)
        async with worker_block as worker:
            first = await t.requester.submit(make_job("first"))
            await anext(first)  # the job is in progress
            worker.stop()
            second = await t.requester.submit(make_job("second"))
            parts = await first.collect()
        assert parts[-1].last  # the job in progress was finished
        assert handler.started == [first.job_id]
        assert await t.waiting() == 1  # the second job waits for another worker
        second.close()
