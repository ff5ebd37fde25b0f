"""The job-queue seam: requesters submit render jobs, workers take them, results stream back.

One :class:`JobQueue` interface, one backend per module (``memory``, ``rabbitmq``). Both
backends share the pieces that decide behaviour, so a test suite written against this
interface holds for either:

* :class:`ResultStream` puts a job's result parts back in order, drops duplicates and turns a
  missing part into :class:`ResultTimeoutError` (or :class:`JobExpiredError` once the job's
  deadline has passed), so a requester never hangs.
* A worker gets each job as a :class:`Delivery` and settles it exactly once: ``ack`` after the
  results are published, ``retry`` when the attempt failed in a way another attempt may not
  (at most ``max_attempts`` in all, then the job is dead-lettered as poison), or
  ``dead_letter`` with a reason.

Kinds of job: a queue carries one :class:`JobKind`, render jobs (:data:`RENDER_JOBS`, the
default) or transcribe jobs (:data:`TRANSCRIBE_JOBS`, on their own work queue, by convention
``<[queue] name>.stt``); everything above holds for both. A transcribe job's result is a
single part.

Semantics are at-least-once: a job may be rendered twice (a worker dies after publishing and
before acknowledging), and the :class:`ResultStream` hides the duplicate parts.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Generic, Self, cast

from typing_extensions import TypeVar

from pipeline.errors import LipcastError
from pipeline.jobs.wire import (
    ERROR_EXPIRED,
    Job,
    JobResult,
    RenderJob,
    RenderResult,
    TranscribeJob,
    TranscribeResult,
)

log = logging.getLogger(__name__)

J = TypeVar("J", bound=Job, default=RenderJob)
R = TypeVar("R", bound=JobResult, default=RenderResult)


@dataclass(frozen=True)
class JobKind(Generic[J, R]):
    """Which messages a queue carries: its job and result types, and a noun for messages."""

    job: type[J]
    result: type[R]
    noun: str  # "render", "transcribe": "the render queue is full"


RENDER_JOBS: JobKind[RenderJob, RenderResult] = JobKind(RenderJob, RenderResult, "render")
TRANSCRIBE_JOBS: JobKind[TranscribeJob, TranscribeResult] = JobKind(
    TranscribeJob, TranscribeResult, "transcribe"
)


class QueueError(LipcastError):
    """Root of the job queue's errors."""


class QueueFullError(QueueError):
    """The work queue holds as many jobs as it may: the render farm is busy right now."""

    transient = True


class QueueUnavailableError(QueueError):
    """The broker cannot be reached (or the work queue is gone); retrying later may help."""

    transient = True


class ResultTimeoutError(QueueError):
    """A result part did not arrive in time; the job's output is incomplete."""

    transient = True


class JobFailedError(QueueError):
    """A worker reported that the job failed; ``reason`` is one of ``wire.ERROR_REASONS``."""

    def __init__(self, message: str, *, job_id: str, reason: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.reason = reason


class JobExpiredError(JobFailedError):
    """The job's deadline passed before its result could be shown; it was dropped."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message, job_id=job_id, reason=ERROR_EXPIRED)


class DeliveryLostError(QueueError):
    """A worker lost the connection a job came on; the broker hands the job out again."""

    transient = True


@dataclass(frozen=True, kw_only=True)
class QueueOptions:
    """How a job queue is set up; ``lipcast.config.QueueSettings`` documents each field."""

    url: str = field(default="amqp://guest@127.0.0.1:5672/", repr=False)  # may hold a password
    name: str = "lipcast.render"  # the work queue; dead letters go to "<name>.dead"
    max_length: int = 100  # jobs waiting (not in progress) before submit raises QueueFullError
    max_priority: int = 9  # RabbitMQ x-max-priority
    max_attempts: int = 3  # deliveries of one job before it is dead-lettered as poison
    result_timeout_s: float = 30.0  # longest wait for the next result part
    dead_letter_max_length: int = 10_000  # oldest dead letters are dropped beyond this
    reconnect_interval_s: float = 1.0  # RabbitMQ only
    connect_timeout_s: float = 10.0  # RabbitMQ only
    connection_name: str = "lipcast"  # RabbitMQ only: shown by rabbitmqctl list_connections

    @property
    def dead_letter_queue(self) -> str:
        """The queue that keeps rejected, expired and poison jobs."""
        return f"{self.name}.dead"

    @property
    def dead_letter_exchange(self) -> str:
        """The exchange the work queue dead-letters into."""
        return f"{self.name}.dead-letter"

    @property
    def suspect_queue(self) -> str:
        """RabbitMQ only: where a job that workers died holding waits before its next try."""
        return f"{self.name}.suspect"

    @property
    def awaiting_exchange(self) -> str:
        """RabbitMQ only: where requesters bind the jobs they still await (see rabbitmq)."""
        return f"{self.name}.awaiting"


# A job handed out again (its worker died, failed or lost its connection, or its requester
# queued it once more after reconnecting) goes back this much higher, so it stays ahead of
# the new work of its own priority; capped at the top priority, 9.
REQUEUE_PRIORITY_BUMP = 1


def requeue_priority(priority: int, max_priority: int) -> int:
    """The priority a job gets when it is queued again (see REQUEUE_PRIORITY_BUMP)."""
    return max(0, min(priority + REQUEUE_PRIORITY_BUMP, max_priority, 9))


class ResultStream(Generic[J, R]):
    """The results of one submitted job: an async iterator of parts, in part order.

    Iteration ends after the part marked ``last``. A part carrying an error raises
    :class:`JobFailedError` (:class:`JobExpiredError` for a missed deadline); waiting more than
    ``timeout_s`` for the next part raises :class:`ResultTimeoutError`, and waiting for the
    first part past the job's deadline raises :class:`JobExpiredError`. Parts that arrive
    twice (a job rendered again after a worker died) are counted in ``duplicates`` and dropped.
    """

    def __init__(
        self,
        job: J,
        *,
        timeout_s: float,
        on_close: Callable[[ResultStream[J, R]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job = job
        self.duplicates = 0
        self._timeout_s = timeout_s
        self._on_close = on_close
        self._clock = clock
        self._parts: dict[int, R] = {}
        self._next = 0
        self._finished = False
        self._have_last = False
        self._failure: BaseException | None = None
        self._arrived = asyncio.Event()
        self._first: R | None = None  # part 0, kept from its arrival on (see ``first``)
        self._first_came = asyncio.Event()

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def finished(self) -> bool:
        """True once the last part was handed out, an error raised, or the stream closed."""
        return self._finished

    @property
    def awaiting_results(self) -> bool:
        """True while the last part (or an error) has yet to arrive."""
        return not (self._finished or self._have_last or self._failure is not None)

    @property
    def parts_received(self) -> int:
        """Parts handed out so far."""
        return self._next

    # -- the backend's side -------------------------------------------------------------

    def deliver(self, result: R) -> None:
        """Take one arriving part (any order, possibly twice).

        An error part ends the stream whatever its number: a job retried after a crash may
        fail with fewer parts than an earlier attempt had already sent.
        """
        if result.error is not None and not self._finished:
            self.fail(self._error_for(result))
            return
        if self._finished or result.part < self._next or result.part in self._parts:
            self.duplicates += 1
            return
        self._parts[result.part] = result
        self._have_last = self._have_last or result.last
        if result.part == 0:
            self._first = result
            self._first_came.set()
        self._arrived.set()

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error`` once the parts already in order are handed out."""
        if self._failure is None and not self._finished:
            self._failure = error
            self._arrived.set()
            self._first_came.set()

    # -- the requester's side -----------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[R]:
        return self

    async def __anext__(self) -> R:
        while True:
            if self._finished:
                raise StopAsyncIteration
            result = self._parts.pop(self._next, None)
            if result is not None:
                self._next += 1
                if result.last:
                    self._finish()
                return result
            if self._failure is not None:
                self._finish()
                raise self._failure
            self._arrived.clear()
            await self._wait()

    async def _wait(self) -> None:
        timeout = self._timeout_s
        before_deadline = self.job.deadline - self._clock()
        first_part = self._next == 0
        if first_part:
            timeout = min(timeout, max(0.0, before_deadline))
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            self._finish()
            if first_part and self.job.deadline - self._clock() <= 0:
                raise JobExpiredError(
                    f"job {self.job_id}: no result before its deadline; dropped",
                    job_id=self.job_id,
                ) from None
            raise ResultTimeoutError(
                f"job {self.job_id}: result part {self._next} did not arrive within "
                f"{self._timeout_s:g} s (result_timeout_s)"
            ) from None

    def _error_for(self, result: R) -> JobFailedError:
        message = f"job {self.job_id} failed: {result.error}"
        if result.error_reason == ERROR_EXPIRED:
            return JobExpiredError(message, job_id=self.job_id)
        return JobFailedError(message, job_id=self.job_id, reason=result.error_reason or "failed")

    @property
    def first(self) -> R | None:
        """Part 0 once it has arrived (whether handed out yet or not), else None."""
        return self._first

    async def wait_first(self) -> R | None:
        """Part 0, waiting for it without taking it from the order; None if the stream ends
        (fails, closes) without it. The caller bounds the wait."""
        while self._first is None and self._failure is None and not self._finished:
            self._first_came.clear()
            await self._first_came.wait()
        return self._first

    async def collect(self) -> list[R]:
        """All parts, in order (raises as iteration does)."""
        return [part async for part in self]

    def close(self) -> None:
        """Stop waiting for this job; parts that still arrive are ignored."""
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._parts.clear()
        self._first_came.set()
        if self._on_close is not None:
            self._on_close(self)


class Delivery(abc.ABC, Generic[J, R]):
    """One job handed to a worker; settle it exactly once (ack, retry or dead_letter)."""

    job: J
    attempt: int  # 1 for the first delivery

    @abc.abstractmethod
    async def reply(self, result: R) -> bool:
        """Send one result part to the requester; False when the requester is gone.

        Returns once the part is handed to the transport (confirmed by the broker). Raises
        :class:`DeliveryLostError` when the job's connection is gone.
        """

    @abc.abstractmethod
    async def ack(self) -> None:
        """The job is done and its results are published: remove it from the queue."""

    @abc.abstractmethod
    async def retry(self, reason: str) -> bool:
        """Queue the job again for another attempt; True if queued.

        After ``max_attempts`` deliveries the job is dead-lettered as poison instead and
        False is returned (the caller then tells the requester).
        """

    @abc.abstractmethod
    async def dead_letter(self, reason: str, detail: str) -> None:
        """Move the job to the dead-letter queue with ``reason`` (one of ERROR_REASONS)."""


class JobConsumer(abc.ABC, Generic[J, R]):
    """A worker's view of the work queue."""

    @abc.abstractmethod
    async def next(self) -> Delivery[J, R] | None:
        """The next valid job; None once :meth:`stop` was called.

        Invalid messages never reach the caller: they are dead-lettered here with the reason,
        and so are jobs past ``max_attempts`` that come back after killing a worker.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Take no more jobs; jobs received but not yet handed out go back to the queue."""


class JobQueue(abc.ABC, Generic[J, R]):
    """Submit jobs of one kind and read their results; or, as a worker, consume them."""

    name: ClassVar[str]

    def __init__(self, options: QueueOptions, kind: JobKind[J, R] | None = None) -> None:
        self.options = options
        # render jobs unless told otherwise: J and R default to RenderJob and RenderResult
        self.kind: JobKind[J, R] = kind or cast(JobKind[J, R], RENDER_JOBS)

    async def start(self) -> None:
        """Connect and declare what the backend needs; idempotent."""

    async def close(self) -> None:
        """Release connections; results still awaited fail."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def submit(self, job: J) -> ResultStream[J, R]:
        """Queue ``job`` and return the stream its results arrive on.

        Raises :class:`QueueFullError` at once when the queue is full,
        :class:`JobExpiredError` when the deadline has already passed and
        :class:`QueueUnavailableError` when the broker cannot be reached.

        Read the stream to its end, or ``close()`` it when its results are no longer wanted:
        an open stream is remembered (and on RabbitMQ queued again after a reconnect).
        """

    @abc.abstractmethod
    async def consumer(self, *, prefetch: int = 1) -> JobConsumer[J, R]:
        """Start consuming jobs, holding at most ``prefetch`` unsettled ones."""


def check_not_expired(job: Job, now: float) -> None:
    """Refuse a job whose deadline has passed before it was even queued."""
    if job.deadline <= now:
        raise JobExpiredError(
            f"job {job.job_id}: its deadline passed {now - job.deadline:.2f} s before it "
            "was submitted",
            job_id=job.job_id,
        )
