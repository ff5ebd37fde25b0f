"""Job queues, chosen by name in bot.toml (``[queue] backend``): ``memory`` or ``rabbitmq``."""

from __future__ import annotations

from typing import overload

from pipeline.backends import BackendSpec, load_backend
from pipeline.jobs.queue.base import (
    RENDER_JOBS,
    TRANSCRIBE_JOBS,
    Delivery,
    DeliveryLostError,
    J,
    JobConsumer,
    JobExpiredError,
    JobFailedError,
    JobKind,
    JobQueue,
    QueueError,
    QueueFullError,
    QueueOptions,
    QueueUnavailableError,
    R,
    ResultStream,
    ResultTimeoutError,
)

QUEUE_BACKENDS: dict[str, BackendSpec] = {
    "memory": BackendSpec(
        target="pipeline.jobs.queue.memory:MemoryJobQueue",
        description="in-process: one machine, workers as tasks (the default)",
    ),
    "rabbitmq": BackendSpec(
        target="pipeline.jobs.queue.rabbitmq:RabbitJobQueue",
        requires=("aio_pika",),
        package="aio-pika",
        description="a shared RabbitMQ work queue: render workers on other machines",
    ),
}


@overload
def open_job_queue(backend: str, options: QueueOptions) -> JobQueue: ...


@overload
def open_job_queue(backend: str, options: QueueOptions, kind: JobKind[J, R]) -> JobQueue[J, R]: ...


def open_job_queue(
    backend: str, options: QueueOptions, kind: JobKind[J, R] | None = None
) -> JobQueue[J, R] | JobQueue:
    """The job queue named ``backend`` for ``kind`` (render jobs by default), not yet started
    (``await queue.start()``)."""
    cls = load_backend("queue", backend, QUEUE_BACKENDS)
    queue: JobQueue[J, R] = cls(options, kind)
    return queue


__all__ = [
    "QUEUE_BACKENDS",
    "RENDER_JOBS",
    "TRANSCRIBE_JOBS",
    "Delivery",
    "DeliveryLostError",
    "JobConsumer",
    "JobExpiredError",
    "JobFailedError",
    "JobKind",
    "JobQueue",
    "QueueError",
    "QueueFullError",
    "QueueOptions",
    "QueueUnavailableError",
    "ResultStream",
    "ResultTimeoutError",
    "open_job_queue",
]
