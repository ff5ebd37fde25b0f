"""Workers: take jobs from a :class:`JobQueue`, run them, stream the results back.

:class:`JobWorker` is the loop every kind of job shares; :class:`RenderWorker` runs render jobs
through a :class:`JobHandler`, and :class:`pipeline.jobs.transcribe.TranscribeWorker` runs
transcribe jobs through a speech-to-text backend. For each job the worker

1. drops it without rendering when its deadline has passed (the requester gets an
   ``expired`` error part, the job goes to the dead letters with reason ``expired``);
2. runs the :class:`JobHandler`, publishing each :class:`ResultChunk` as a
   :class:`~pipeline.jobs.wire.RenderResult` part as soon as it is made;
3. acknowledges the job only after its last part is published.

A handler that raises a permanent :class:`~pipeline.errors.LipcastError` fails the job (error
part, dead letter ``failed``); any other exception counts as a failed attempt and the job is
queued again, until ``max_attempts`` makes it ``poison``. One job's trouble never stops the
worker. :meth:`RenderWorker.stop` (SIGTERM in ``lipcast worker``) stops taking jobs, lets the
jobs in progress finish and hands back the ones received but not started.

The handler does the rendering; it is async and runs its CPU or GPU work in an executor, so
the event loop, and with it the broker connection's heartbeats, stays free during long jobs.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol

from pipeline.errors import LipcastError, RenderError
from pipeline.jobs.queue.base import Delivery, DeliveryLostError, J, JobConsumer, JobQueue, R
from pipeline.jobs.wire import ERROR_EXPIRED, ERROR_FAILED, ERROR_POISON, RenderJob, RenderResult

log = logging.getLogger(__name__)

_RETRY_TAKE_S = 0.5


@dataclass(frozen=True, kw_only=True)
class ResultChunk:
    """One piece of a job's output, as a handler yields it."""

    media: bytes
    content_type: str = "video/mp4"
    duration_s: float = 0.0  # playing time of this piece
    timings: Mapping[str, float] = field(default_factory=dict)  # stage -> seconds
    last: bool = False  # set when known, to spare the worker a separate end marker


class JobHandler(Protocol):
    """What a render worker runs for each job (the real one: TTS, lip-sync, H.264 encode)."""

    def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        """Yield the job's output piece by piece, as soon as each piece is ready."""
        ...

    async def aclose(self) -> None:
        """Release engines and connections the handler holds."""
        ...


@dataclass(kw_only=True)
class WorkerStats:
    """What a worker did, for logs and tests."""

    done: int = 0  # all parts published and acknowledged
    expired: int = 0  # dropped unrendered: the deadline had passed
    failed: int = 0  # permanent error, dead-lettered
    retried: int = 0  # failed attempt, queued again
    poisoned: int = 0  # failed on its last attempt, dead-lettered
    abandoned: int = 0  # the requester was gone; rendering stopped
    lost: int = 0  # connection lost mid-job; the broker hands it out again


def default_worker_id() -> str:
    """``host:pid``, the name a worker puts on its results."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobWorker(abc.ABC, Generic[J, R]):
    """Consume jobs from ``queue`` and run each with :meth:`_run_job`; subclasses say how."""

    def __init__(
        self,
        queue: JobQueue[J, R],
        *,
        prefetch: int = 1,
        concurrency: int = 1,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if prefetch < 1 or concurrency < 1:
            raise ValueError("prefetch and concurrency must be at least 1")
        self.stats = WorkerStats()
        self.worker_id = worker_id or default_worker_id()
        self._queue = queue
        self._prefetch = max(prefetch, concurrency)
        self._concurrency = concurrency
        self._clock = clock
        self._stop_requested = asyncio.Event()
        self._running = False

    def stop(self) -> None:
        """Take no more jobs; :meth:`run` returns once the jobs in progress are settled."""
        if not self._stop_requested.is_set():
            log.info("worker %s stopping: finishing the jobs in progress", self.worker_id)
        self._stop_requested.set()

    async def run(self, *, on_ready: Callable[[], None] | None = None) -> WorkerStats:
        """Serve jobs until :meth:`stop`; ``on_ready`` is called once jobs can arrive."""
        if self._running:
            raise RuntimeError("this worker is already running")
        self._running = True
        consumer = await self._queue.consumer(prefetch=self._prefetch)
        stopper = asyncio.create_task(
            self._stop_when_asked(consumer), name=f"{self._noun}-worker-stop"
        )
        servers = [
            asyncio.create_task(self._serve(consumer), name=f"{self._noun}-worker-{index}")
            for index in range(self._concurrency)
        ]
        if on_ready is not None:
            on_ready()
        try:
            await asyncio.gather(*servers)
        finally:
            for task in servers:
                task.cancel()
            await asyncio.gather(*servers, return_exceptions=True)
            await consumer.stop()
            stopper.cancel()
            await asyncio.gather(stopper, return_exceptions=True)
            self._running = False
        return self.stats

    async def _stop_when_asked(self, consumer: JobConsumer[J, R]) -> None:
        await self._stop_requested.wait()
        await consumer.stop()

    async def _serve(self, consumer: JobConsumer[J, R]) -> None:
        while not self._stop_requested.is_set():
            try:
                delivery = await consumer.next()
            except Exception:
                log.exception("taking the next job failed; trying again shortly")
                await asyncio.sleep(_RETRY_TAKE_S)  # no event to wait for: a bug or a broker fault
                continue
            if delivery is None:
                return
            try:
                await self._process(delivery)
            except DeliveryLostError as err:
                # The drop itself is one WARNING from the queue; this is its cost, per job.
                self.stats.lost += 1
                log.info("job %s: %s; the broker hands it out again", delivery.job.job_id, err)
            except Exception:
                log.exception("job %s: unexpected error in the worker", delivery.job.job_id)

    async def _process(self, delivery: Delivery[J, R]) -> None:
        job = delivery.job
        started = self._clock()
        if job.deadline <= started:
            self.stats.expired += 1
            detail = f"deadline passed {started - job.deadline:.2f} s before a worker took it"
            await self._send_failure(delivery, ERROR_EXPIRED, detail)
            await delivery.dead_letter(ERROR_EXPIRED, detail)
            return
        try:
            finished = await self._run_job(delivery, started)
        except (DeliveryLostError, asyncio.CancelledError):
            raise
        except Exception as err:  # noqa: BLE001 - any failure of the handler is handled there
            await self._on_failure(delivery, err)
            return
        await delivery.ack()
        seconds = self._clock() - started
        if finished:
            self.stats.done += 1
            outcome = "done"
        else:
            self.stats.abandoned += 1
            outcome = "the requester is gone; stopped rendering"
        log.info(
            "job %s (%s, attempt %d): %s in %.2f s",
            job.job_id,
            job.label(),
            delivery.attempt,
            outcome,
            seconds,
        )

    @property
    def _noun(self) -> str:
        return self._queue.kind.noun

    @abc.abstractmethod
    async def _run_job(self, delivery: Delivery[J, R], started: float) -> bool:
        """Run the job and publish its results; False if the requester went away.

        Raise to fail the attempt (see the module docstring for what each error leads to).
        """

    async def _on_failure(self, delivery: Delivery[J, R], err: Exception) -> None:
        job = delivery.job
        if isinstance(err, LipcastError) and not err.transient:
            self.stats.failed += 1
            log.warning("job %s failed: %s", job.job_id, err)
            await self._send_failure(delivery, ERROR_FAILED, str(err))
            await delivery.dead_letter(ERROR_FAILED, str(err))
            return
        reason = f"{type(err).__name__}: {err}"
        if isinstance(err, LipcastError):
            log.warning("job %s: attempt %d failed: %s", job.job_id, delivery.attempt, err)
        else:
            log.error("job %s: attempt %d crashed", job.job_id, delivery.attempt, exc_info=err)
        if await delivery.retry(reason):
            self.stats.retried += 1
            return
        self.stats.poisoned += 1
        await self._send_failure(
            delivery, ERROR_POISON, f"failed on all {delivery.attempt} attempts; last: {reason}"
        )

    async def _send_failure(self, delivery: Delivery[J, R], reason: str, error: str) -> None:
        failure = self._queue.kind.result.failure(
            delivery.job.job_id,
            part=0,
            reason=reason,
            error=error,
            worker=self.worker_id,
            attempt=delivery.attempt,
        )
        try:
            await delivery.reply(failure)
        except DeliveryLostError as err:
            log.debug("job %s: could not tell the requester: %s", delivery.job.job_id, err)


class RenderWorker(JobWorker[RenderJob, RenderResult]):
    """Consume render jobs from ``queue`` and run ``handler`` on each."""

    def __init__(
        self,
        queue: JobQueue,
        handler: JobHandler,
        *,
        prefetch: int = 1,
        concurrency: int = 1,
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            queue, prefetch=prefetch, concurrency=concurrency, worker_id=worker_id, clock=clock
        )
        self._handler = handler

    async def _run_job(self, delivery: Delivery, started: float) -> bool:
        """Run the handler and publish its parts; False if the requester went away."""
        job = delivery.job
        base_timings = {"queue_wait": max(0.0, started - job.created_at)}
        part = 0
        chunks = self._handler.handle(job)
        try:
            async for chunk in chunks:
                result = RenderResult(
                    job_id=job.job_id,
                    part=part,
                    last=chunk.last,
                    content_type=chunk.content_type,
                    media=chunk.media,
                    duration_s=chunk.duration_s,
                    timings={**base_timings, **chunk.timings},
                    worker=self.worker_id,
                    attempt=delivery.attempt,
                )
                if not await delivery.reply(result):
                    return False
                part += 1
                if chunk.last:
                    return True
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        if part == 0:
            raise RenderError(f"job {job.job_id}: the renderer produced no output")
        end = RenderResult(
            job_id=job.job_id,
            part=part,
            last=True,
            content_type="application/octet-stream",
            timings={**base_timings, "worker_total": self._clock() - started},
            worker=self.worker_id,
            attempt=delivery.attempt,
        )
        return await delivery.reply(end)


async def serve_until_signalled(
    worker: JobWorker[J, R], *, on_ready: Callable[[], None] | None = None
) -> WorkerStats:
    """Run ``worker`` until SIGTERM or SIGINT, then finish the jobs in progress and return."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, worker.stop)
    try:
        return await worker.run(on_ready=on_ready)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def serve(
    queue: JobQueue,
    handler: JobHandler,
    *,
    prefetch: int = 1,
    concurrency: int = 1,
    worker_id: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> WorkerStats:
    """Run a render worker until SIGTERM or SIGINT, then finish the jobs in progress."""
    worker = RenderWorker(
        queue, handler, prefetch=prefetch, concurrency=concurrency, worker_id=worker_id
    )
    return await serve_until_signalled(worker, on_ready=on_ready)


# -- stand-in handlers: the transport without rendering (tests, `lipcast bench queue`) -----


class NoopHandler:
    """Answers every job at once with ``size`` bytes of dummy media in one part."""

    def __init__(self, *, size: int = 200_000) -> None:
        self._media = bytes(size)

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        yield ResultChunk(media=self._media, last=True)

    async def aclose(self) -> None:
        return None


class SleepHandler:
    """Sleeps ``seconds`` per job (standing in for GPU time), then yields ``parts`` parts."""

    def __init__(self, *, seconds: float, parts: int = 1, size: int = 1000) -> None:
        self._seconds = seconds
        self._parts = parts
        self._media = bytes(size)
        self.started: list[str] = []  # job ids, in the order handling began

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        self.started.append(job.job_id)
        for part in range(self._parts):
            await asyncio.sleep(self._seconds / self._parts)
            yield ResultChunk(
                media=self._media,
                duration_s=self._seconds / self._parts,
                timings={"render": self._seconds / self._parts},
                last=part == self._parts - 1,
            )

    async def aclose(self) -> None:
        return None


class FailingHandler:
    """Raises ``error()`` for the first ``times`` jobs it sees (all, when None), then no-ops."""

    def __init__(
        self,
        *,
        error: Callable[[], Exception] = lambda: RuntimeError("simulated renderer crash"),
        times: int | None = None,
        size: int = 1000,
    ) -> None:
        self._error = error
        self._times = times
        self._media = bytes(size)
        self.calls = 0

    async def handle(self, job: RenderJob) -> AsyncIterator[ResultChunk]:
        self.calls += 1
        if self._times is None or self.calls <= self._times:
            raise self._error()
        yield ResultChunk(media=self._media, last=True)

    async def aclose(self) -> None:
        return None
