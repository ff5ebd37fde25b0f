"""One harness over both job-queue backends, so a test reads the same for either.

``open_transport(backend)`` gives a requester queue and a worker queue (for RabbitMQ: two
connections to a work queue with a name of its own, deleted afterwards), a way to read the
dead letters with their reasons, and a way to inject a raw message as a foreign process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from yarl import URL

from pipeline.jobs.queue import JobKind, JobQueue, QueueOptions
from pipeline.jobs.queue.memory import MemoryJobQueue
from pipeline.jobs.queue.rabbitmq import RabbitJobQueue
from pipeline.jobs.wire import DEAD_DETAIL_HEADER, DEAD_REASON_HEADER, Envelope, RenderJob
from pipeline.jobs.worker import JobHandler, RenderWorker

AMQP_URL = os.environ.get("LIPCAST_AMQP_URL") or "amqp://guest:guest@127.0.0.1:5672/"
BACKENDS = ("memory", "rabbitmq")


def broker_problem(url: str = AMQP_URL) -> str | None:
    """Why the broker cannot be reached, or None when a TCP connection succeeds."""
    parsed = URL(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5672), 2):
            return None
    except OSError as err:
        return str(err)


def require_broker() -> str:
    """The broker URL; skips the test when unreachable, or fails it under CI=true."""
    problem = broker_problem()
    if problem is not None:
        message = f"RabbitMQ at {URL(AMQP_URL).with_password(None)} is unreachable: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the broker tests must run)")
        pytest.skip(message)
    return AMQP_URL


def make_job(
    text: str = "Hello chat!",
    *,
    job_id: str | None = None,
    turn_id: str = "turn-1",
    seq: int = 0,
    priority: int = 0,
    ttl_s: float = 30.0,
    created_at: float | None = None,
) -> RenderJob:
    """A valid render job; ``ttl_s`` seconds to its deadline."""
    now = time.time() if created_at is None else created_at
    return RenderJob(
        job_id=job_id or uuid.uuid4().hex,
        turn_id=turn_id,
        seq=seq,
        text=text,
        persona="cohost",
        priority=priority,
        created_at=now,
        deadline=now + ttl_s,
    )


async def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` (the test skips when it is not installed); its output."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not on PATH")
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


@contextlib.asynccontextmanager
async def own_vhost(broker: str) -> AsyncIterator[tuple[str, str]]:
    """A virtual host of the test's own, so closing its connections touches nobody else's.

    Yields the vhost's name and the broker URL pointing into it; the vhost is deleted after.
    """
    vhost = f"lipcast-test-{uuid.uuid4().hex[:10]}"
    user = URL(broker).user or "guest"
    await rabbitmqctl("add_vhost", vhost)
    try:
        await rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield vhost, str(URL(broker).with_path("/" + vhost))
    finally:
        await rabbitmqctl("delete_vhost", vhost)


@dataclass(frozen=True, kw_only=True)
class DeadRecord:
    """A dead-lettered job as the test sees it."""

    reason: str
    detail: str
    headers: dict[str, Any]
    body: bytes

    @property
    def job_id(self) -> str | None:
        value = self.headers.get("job_id")
        return value if isinstance(value, str) else None


@dataclass(kw_only=True)
class Transport:
    """Requester and worker ends of one backend, plus test-only views of its insides."""

    backend: str
    options: QueueOptions
    requester: JobQueue[Any, Any]
    worker_queue: JobQueue[Any, Any]
    _dead: list[DeadRecord] = field(default_factory=list)
    _dead_changed: asyncio.Event = field(default_factory=asyncio.Event)
    _extra: list[JobQueue[Any, Any]] = field(default_factory=list)
    _raw: aio_pika.abc.AbstractConnection | None = None

    async def another_worker_queue(self) -> JobQueue[Any, Any]:
        """A further worker's queue (its own connection on RabbitMQ)."""
        if self.backend == "memory":
            return self.requester
        queue = RabbitJobQueue(self.options, self.requester.kind)
        await queue.start()
        self._extra.append(queue)
        return queue

    async def dead_letters(self, count: int = 1, within_s: float = 10.0) -> list[DeadRecord]:
        """The dead letters so far, once there are at least ``count``."""
        async with asyncio.timeout(within_s):
            while True:
                self._collect_memory_dead_letters()
                if len(self._dead) >= count:
                    return list(self._dead)
                self._dead_changed.clear()
                if self.backend == "memory":
                    await asyncio.sleep(0.01)  # the memory queue has no event for this
                else:
                    await self._dead_changed.wait()

    def _collect_memory_dead_letters(self) -> None:
        if isinstance(self.requester, MemoryJobQueue):
            seen = len(self._dead)
            for letter in list(self.requester.dead_letters)[seen:]:
                self._dead.append(
                    DeadRecord(
                        reason=letter.reason,
                        detail=letter.detail,
                        headers=dict(letter.envelope.headers),
                        body=letter.envelope.body,
                    )
                )

    async def inject(self, envelope: Envelope) -> None:
        """Queue a raw message on the work queue, as a foreign or broken requester would."""
        if isinstance(self.requester, MemoryJobQueue):
            self.requester.inject(envelope)
            return
        assert self._raw is not None
        channel = await self._raw.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(
                envelope.body,
                headers=envelope.headers,  # type: ignore[arg-type]
                content_type=envelope.content_type,
                type=envelope.kind,
            ),
            routing_key=self.options.name,
        )
        await channel.close()

    async def waiting(self) -> int:
        """Jobs waiting in the work queue."""
        if isinstance(self.requester, MemoryJobQueue):
            return len(self.requester)
        assert self._raw is not None
        channel = await self._raw.channel()
        queue = await channel.declare_queue(self.options.name, passive=True)
        count = queue.declaration_result.message_count or 0
        await channel.close()
        return count

    async def _on_dead(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        reason = headers.get(DEAD_REASON_HEADER)
        detail = headers.get(DEAD_DETAIL_HEADER, "")
        if reason is None:  # dead-lettered by the broker itself
            deaths = headers.get("x-death") or [{}]
            reason = deaths[0].get("reason", "?")  # type: ignore[index, union-attr]
        self._dead.append(
            DeadRecord(reason=str(reason), detail=str(detail), headers=headers, body=message.body)
        )
        self._dead_changed.set()


@contextlib.asynccontextmanager
async def open_transport(
    backend: str,
    *,
    url: str | None = None,
    kind: JobKind[Any, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Transport]:
    """Both ends of ``backend`` with a fresh queue name, carrying ``kind`` (render jobs by
    default); options overridden by keyword."""
    options = QueueOptions(
        url=url or AMQP_URL,
        name=f"lipcast.test.{uuid.uuid4().hex[:12]}",
        result_timeout_s=10.0,
        reconnect_interval_s=0.2,
        connect_timeout_s=5.0,
        connection_name="lipcast tests",
    )
    options = replace(options, **overrides)
    if backend == "memory":
        memory: MemoryJobQueue[Any, Any] = MemoryJobQueue(options, kind)
        yield Transport(backend=backend, options=options, requester=memory, worker_queue=memory)
        await memory.close()
        return
    require_broker()
    raw = await aio_pika.connect(options.url)
    requester: RabbitJobQueue[Any, Any] = RabbitJobQueue(
        replace(options, connection_name="lipcast tests requester"), kind
    )
    worker_queue: RabbitJobQueue[Any, Any] = RabbitJobQueue(
        replace(options, connection_name="lipcast tests worker"), kind
    )
    transport = Transport(
        backend=backend,
        options=options,
        requester=requester,
        worker_queue=worker_queue,
        _raw=raw,
    )
    dead_channel: aio_pika.abc.AbstractChannel | None = None
    try:
        await requester.start()
        await worker_queue.start()
        dead_channel = await raw.channel()
        dead_queue = await dead_channel.declare_queue(options.dead_letter_queue, passive=True)
        await dead_queue.consume(transport._on_dead, no_ack=True)
        yield transport
    finally:
        for queue in (requester, worker_queue, *transport._extra):
            await queue.close()
        if dead_channel is not None and not dead_channel.is_closed:
            await dead_channel.close()
        await raw.close()
        # A fresh connection: a test may have had the broker drop every connection it had.
        async with await aio_pika.connect(options.url) as cleanup_connection:
            cleanup = await cleanup_connection.channel()
            for name in (options.name, options.dead_letter_queue, options.suspect_queue):
                await cleanup.queue_delete(name)
            await cleanup.exchange_delete(options.dead_letter_exchange)
            await cleanup.exchange_delete(options.awaiting_exchange)


@contextlib.asynccontextmanager
async def running_worker(
    queue: JobQueue, handler: JobHandler, **kwargs: Any
) -> AsyncIterator[RenderWorker]:
    """A :class:`RenderWorker` serving ``queue`` in a task until the block ends."""
    worker = RenderWorker(queue, handler, **kwargs)
    ready = asyncio.Event()
    task = asyncio.create_task(worker.run(on_ready=ready.set), name="test-render-worker")
    ready_wait = asyncio.create_task(ready.wait())
    await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    ready_wait.cancel()
    if task.done():
        task.result()  # raise what stopped it
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 10)


ROOT = str(Path(__file__).resolve().parent.parent.parent)


class WorkerProcess:
    """``tests.queue_support.worker_process`` in a child process, its output line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"worker-{process.pid}-stdout")

    @classmethod
    async def start(cls, queue: str, *args: str, url: str = AMQP_URL) -> WorkerProcess:
        env = {**os.environ, "LIPCAST_AMQP_URL": url, "PYTHONPATH": ROOT}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.queue_support.worker_process",
            "--queue",
            queue,
            *args,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        return cls(process)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode().strip())
            self._changed.set()
        self._changed.set()

    async def wait_for(self, prefix: str, within_s: float = 20.0) -> str:
        """The first output line starting with ``prefix``, waiting for it if need be."""
        async with asyncio.timeout(within_s):
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                if self._reader.done():
                    raise AssertionError(f"worker {self.pid} exited; output: {self.lines}")
                self._changed.clear()
                await self._changed.wait()

    def kill(self) -> None:
        self.process.kill()

    def terminate(self) -> None:
        self.process.terminate()

    async def wait(self, within_s: float = 20.0) -> int:
        code = await asyncio.wait_for(self.process.wait(), within_s)
        await self._reader
        return code

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.wait()


@contextlib.asynccontextmanager
async def worker_processes(
    count: int, queue: str, *args: str, url: str = AMQP_URL
) -> AsyncIterator[list[WorkerProcess]]:
    """``count`` worker processes, each consuming ``queue`` before the block starts."""
    workers = [await WorkerProcess.start(queue, *args, url=url) for _ in range(count)]
    try:
        await asyncio.gather(*(worker.wait_for("ready") for worker in workers))
        yield workers
    finally:
        for worker in workers:
            await worker.close()
