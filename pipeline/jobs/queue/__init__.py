"""Job queues, chosen by name in bot.toml (``[queue] backend``): ``memory`` or ``rabbitmq``."""

from __future__ import annotations

from pipeline.backends import BackendSpec, load_backend
from pipeline.jobs.queue.base import (
    Delivery,
    DeliveryLostError,
    JobConsumer,
    JobExpiredError,
    JobFailedError,
    JobQueue,
    QueueError,
    QueueFullError,
    QueueOptions,
    QueueUnavailableError,
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


def open_job_queue(backend: str, options: QueueOptions) -> JobQueue:
    """The job queue named ``backend``, not yet started (``await queue.start()``)."""
    cls = load_backend("queue", backend, QUEUE_BACKENDS)
    queue: JobQueue = cls(options)
    return queue


__all__ = [
    "QUEUE_BACKENDS",
    "Delivery",
    "DeliveryLostError",
    "JobConsumer",
    "JobExpiredError",
    "JobFailedError",
    "JobQueue",
    "QueueError",
    "QueueFullError",
    "QueueOptions",
    "QueueUnavailableError",
    "ResultStream",
    "ResultTimeoutError",
    "open_job_queue",
]
