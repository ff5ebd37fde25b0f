"""The ``memory`` job queue: one process, workers as tasks (the embedded default).

Jobs and results still travel as wire envelopes (:mod:`pipeline.jobs.wire`), encoded on submit and
validated when a worker takes them, so this backend behaves like the broker one: the same
priorities, length bound, attempt counting and dead-lettering, minus the network.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from pipeline.jobs.queue.base import (
    Delivery,
    J,
    JobConsumer,
    JobKind,
    JobQueue,
    QueueFullError,
    QueueOptions,
    QueueUnavailableError,
    R,
    ResultStream,
    check_not_expired,
    requeue_priority,
)
from pipeline.jobs.wire import (
    ERROR_INVALID,
    ERROR_POISON,
    Envelope,
    WireError,
    decode,
    encode,
    valid_id,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A job the queue gave up on, with the reason (one of ``pipeline.jobs.wire.ERROR_REASONS``)."""

    envelope: Envelope
    reason: str
    detail: str
    at: float = field(default_factory=time.time)


@dataclass(kw_only=True)
class _Queued:
    envelope: Envelope
    attempt: int = 1


class MemoryJobQueue(JobQueue[J, R]):
    """An in-process priority queue with the broker backend's semantics."""

    name = "memory"

    def __init__(
        self, options: QueueOptions | None = None, kind: JobKind[J, R] | None = None
    ) -> None:
        super().__init__(options or QueueOptions(), kind)
        # the newest dead letters, bounded like the broker's dead-letter queue
        self.dead_letters: deque[DeadLetter] = deque(maxlen=self.options.dead_letter_max_length)
        self._ready: list[tuple[int, int, _Queued]] = []  # (-priority, arrival, job)
        self._arrival = itertools.count()
        self._streams: dict[str, ResultStream[J, R]] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        """Jobs waiting for a worker."""
        return len(self._ready)

    async def submit(self, job: J) -> ResultStream[J, R]:
        check_not_expired(job, time.time())
        if len(self._ready) >= self.options.max_length:
            raise QueueFullError(
                f"the {self.kind.noun} queue is full ({self.options.max_length} jobs waiting); "
                "try again in a moment"
            )
        if job.job_id in self._streams:
            raise ValueError(f"job {job.job_id} is already in flight")
        stream: ResultStream[J, R] = ResultStream(
            job, timeout_s=self.options.result_timeout_s, on_close=self._forget
        )
        self._streams[job.job_id] = stream
        self._push(_Queued(envelope=encode(job)), job.priority)
        return stream

    def inject(self, envelope: Envelope, *, priority: int = 0) -> None:
        """Queue a raw wire message as another process might send it (tests use this)."""
        self._push(_Queued(envelope=envelope), priority)

    async def consumer(self, *, prefetch: int = 1) -> JobConsumer[J, R]:
        return _MemoryConsumer(self)

    async def close(self) -> None:
        for stream in list(self._streams.values()):
            stream.fail(QueueUnavailableError(f"job {stream.job_id}: the job queue was closed"))

    # -- internals ----------------------------------------------------------------------

    def _push(self, queued: _Queued, priority: int) -> None:
        priority = max(0, min(priority, self.options.max_priority))
        heapq.heappush(self._ready, (-priority, next(self._arrival), queued))
        self._changed.set()

    def _pop(self) -> _Queued | None:
        if not self._ready:
            return None
        return heapq.heappop(self._ready)[2]

    def _forget(self, stream: ResultStream[J, R]) -> None:
        if self._streams.get(stream.job_id) is stream:
            del self._streams[stream.job_id]

    def _route_reply(self, result: R) -> bool:
        stream = self._streams.get(result.job_id)
        if stream is None:
            return False
        # Results go through the wire format too, so both backends validate the same way.
        stream.deliver(decode(encode(result), self.kind.result))
        return True

    def _dead_letter(self, envelope: Envelope, reason: str, detail: str) -> None:
        log.warning("dead-lettered a job (%s): %s", reason, detail)
        self.dead_letters.append(DeadLetter(envelope=envelope, reason=reason, detail=detail))

    async def _wait_for_jobs(self, stopped: asyncio.Event) -> None:
        self._changed.clear()
        changed = asyncio.ensure_future(self._changed.wait())
        stopping = asyncio.ensure_future(stopped.wait())
        try:
            await asyncio.wait({changed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            stopping.cancel()


class _MemoryConsumer(JobConsumer[J, R]):
    def __init__(self, queue: MemoryJobQueue[J, R]) -> None:
        self._queue = queue
        self._stopped = asyncio.Event()

    async def next(self) -> Delivery[J, R] | None:
        while not self._stopped.is_set():
            queued = self._queue._pop()
            if queued is None:
                await self._queue._wait_for_jobs(self._stopped)
                continue
            try:
                job = decode(queued.envelope, self._queue.kind.job)
            except WireError as err:
                self._queue._dead_letter(queued.envelope, ERROR_INVALID, str(err))
                job_id = queued.envelope.headers.get("job_id")
                if isinstance(job_id, str) and valid_id(job_id):
                    self._queue._route_reply(
                        self._queue.kind.result.failure(
                            job_id, part=0, reason=ERROR_INVALID, error=str(err)
                        )
                    )
                continue
            return _MemoryDelivery(self._queue, queued, job)
        return None

    async def stop(self) -> None:
        self._stopped.set()


class _MemoryDelivery(Delivery[J, R]):
    def __init__(self, queue: MemoryJobQueue[J, R], queued: _Queued, job: J) -> None:
        self._queue = queue
        self._queued = queued
        self.job = job
        self.attempt = queued.attempt
        self._settled = False

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError(f"job {self.job.job_id} was already settled")
        self._settled = True

    async def reply(self, result: R) -> bool:
        await asyncio.sleep(0)  # a transport hands over control; so does this one
        return self._queue._route_reply(result)

    async def ack(self) -> None:
        self._settle()

    async def retry(self, reason: str) -> bool:
        self._settle()
        if self.attempt >= self._queue.options.max_attempts:
            self._queue._dead_letter(
                self._queued.envelope,
                ERROR_POISON,
                f"failed on all {self.attempt} attempts; last: {reason}",
            )
            return False
        log.info(
            "job %s: attempt %d failed (%s); queued again", self.job.job_id, self.attempt, reason
        )
        self._queue._push(
            _Queued(envelope=self._queued.envelope, attempt=self.attempt + 1),
            requeue_priority(self.job.priority, self._queue.options.max_priority),
        )
        return True

    async def dead_letter(self, reason: str, detail: str) -> None:
        self._settle()
        self._queue._dead_letter(self._queued.envelope, reason, detail)
