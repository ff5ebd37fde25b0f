"""The ``rabbitmq`` job queue: render workers on any number of machines share one work queue.

Topology (declared idempotently by requesters and workers alike; ``<name>`` is
``[queue] name``, ``lipcast.render`` by default):

* ``<name>``: a durable classic queue with ``x-max-priority`` (jobs carry priority 0-9),
  ``x-max-length`` with ``x-overflow = reject-publish`` (with publisher confirms a full queue
  nacks the publish, and :meth:`RabbitJobQueue.submit` raises :class:`QueueFullError` at
  once), and ``x-dead-letter-exchange = <name>.dead-letter``. Each job's ``expiration`` is the
  time left to its deadline, so a job nobody took in time is dead-lettered by the broker with
  the ``x-death`` reason ``expired``.
* ``<name>.dead-letter``: a fanout exchange; ``<name>.dead``: the durable queue bound to it,
  keeping the newest ``dead_letter_max_length`` dead jobs. Jobs the workers give up on are
  published there with ``lipcast-dead-reason`` / ``lipcast-dead-detail`` headers.

Results travel by direct reply-to: the requester consumes ``amq.rabbitmq.reply-to`` in no-ack
mode on the same channel it publishes jobs on, and each worker publishes every result part to
the job's ``reply_to`` with the job id as ``correlation_id``. Replies are not ``mandatory``:
RabbitMQ 3.10 answers a mandatory direct reply with ``basic.return`` even when it delivered
it, so a worker cannot tell that a requester has gone and renders the job to its end.

Why a classic queue and attempt counting by republishing: quorum queues count deliveries
(``x-delivery-limit``) but RabbitMQ 3.10 quorum queues have no priorities, and classic queues,
which do, only flag a redelivery (``redelivered``) without counting it. So the count travels
in the job: a worker that receives a job flagged ``redelivered`` knows the previous delivery was
never settled (its worker died, or lost its connection) and, before doing any work, publishes a
copy with ``lipcast-attempt`` raised by one and acknowledges the original; after
``max_attempts`` it dead-letters the job as ``poison`` instead. A failed attempt that the worker
survives does the same. Jobs taken but not started when a worker stops are handed back with
their count unchanged.

Reconnection: both sides use ``connect_robust``. A worker's consumer and prefetch are
restored by aio-pika; a job whose connection dropped mid-render cannot be acknowledged and is
redelivered by the broker. A requester's reply consumer lives on its channel, so on every
reopen the requester consumes ``amq.rabbitmq.reply-to`` again and publishes once more every
job still awaiting results (replies addressed to the old channel are lost by design); the
:class:`ResultStream` drops parts that arrive twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
    DeliveryMode,
    ExchangeType,
)
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic
from yarl import URL

from pipeline.errors import ConfigError
from pipeline.jobs.queue.base import (
    Delivery,
    DeliveryLostError,
    JobConsumer,
    JobExpiredError,
    JobFailedError,
    JobQueue,
    QueueFullError,
    QueueOptions,
    QueueUnavailableError,
    ResultStream,
    check_not_expired,
)
from pipeline.jobs.wire import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    DEAD_BY_HEADER,
    DEAD_DETAIL_HEADER,
    DEAD_REASON_HEADER,
    ERROR_EXPIRED,
    ERROR_INVALID,
    ERROR_POISON,
    Envelope,
    RenderJob,
    RenderResult,
    WireError,
    decode,
    encode,
    expiration_s,
    valid_id,
)

log = logging.getLogger(__name__)

REPLY_TO = "amq.rabbitmq.reply-to"
APP_ID = "lipcast"

# Errors that mean "the connection or channel is gone", as opposed to a broker's answer.
_LINK_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.AMQPChannelError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)
_LOST_ERRORS: tuple[type[BaseException], ...] = (DeliveryLostError, *_LINK_ERRORS)


def safe_url(url: str) -> str:
    """``url`` without its password, fit for logs and error messages."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparsable URL>"
    return str(parsed.with_password(None)) if parsed.password else url


def work_queue_arguments(options: QueueOptions) -> dict[str, Any]:
    """The work queue's declaration arguments."""
    return {
        "x-max-priority": options.max_priority,
        "x-max-length": options.max_length,
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": options.dead_letter_exchange,
    }


def _envelope_of(message: AbstractIncomingMessage) -> Envelope:
    return Envelope(
        kind=message.type or "",
        headers=cast(dict[str, Any], dict(message.headers or {})),
        body=message.body,
        content_type=message.content_type or "",
    )


def _attempt_of(headers: dict[str, Any]) -> int:
    value = headers.get(ATTEMPT_HEADER, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _copy(
    message: AbstractIncomingMessage, headers: dict[str, Any], **changes: Any
) -> aio_pika.Message:
    """A new message with the body and properties of ``message`` and the given headers."""
    properties: dict[str, Any] = {
        "content_type": message.content_type,
        "type": message.type,
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "priority": message.priority,
        "expiration": message.expiration,
        "timestamp": message.timestamp,
        "app_id": message.app_id,
        "delivery_mode": message.delivery_mode or DeliveryMode.NOT_PERSISTENT,
    }
    properties.update(changes)
    return aio_pika.Message(message.body, headers=headers, **properties)


class RabbitJobQueue(JobQueue):
    """Jobs through a shared RabbitMQ work queue, results by direct reply-to."""

    name = "rabbitmq"

    def __init__(self, options: QueueOptions | None = None) -> None:
        super().__init__(options or QueueOptions())
        self._connection: AbstractRobustConnection | None = None
        self._start_lock = asyncio.Lock()
        self._requester_lock = asyncio.Lock()
        self._requester: AbstractRobustChannel | None = None
        self._replies_ready = asyncio.Event()
        self._generation = 0  # bumped each time the reply consumer (re)starts
        self._published: dict[str, int] = {}  # job id -> generation it was last published in
        self._streams: dict[str, ResultStream] = {}
        self._consumers: list[_RabbitConsumer] = []

    # -- connection and topology ---------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._connection is not None:
                return
            url = self.options.url
            try:
                connection = await aio_pika.connect_robust(
                    url,
                    timeout=self.options.connect_timeout_s,
                    reconnect_interval=self.options.reconnect_interval_s,
                    client_properties={"connection_name": self.options.connection_name},
                )
            except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as err:
                raise QueueUnavailableError(
                    f"cannot reach RabbitMQ at {safe_url(url)}: {err or type(err).__name__}. "
                    "Is the broker running, and are [queue] url in bot.toml and "
                    "LIPCAST_AMQP_URL right?"
                ) from err
            try:
                channel = await connection.channel()
                await self._declare(channel)
                await channel.close()
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
            log.info("connected to RabbitMQ at %s, queue %r", safe_url(url), self.options.name)

    async def _declare(
        self, channel: AbstractRobustChannel
    ) -> tuple[AbstractRobustQueue, AbstractExchange]:
        """Declare the dead-letter exchange and queue and the work queue (idempotent)."""
        options = self.options
        try:
            dead_exchange = await channel.declare_exchange(
                options.dead_letter_exchange, ExchangeType.FANOUT, durable=True
            )
            dead_queue = await channel.declare_queue(
                options.dead_letter_queue,
                durable=True,
                arguments={"x-max-length": options.dead_letter_max_length},
            )
            await dead_queue.bind(dead_exchange, routing_key="")
            work_queue = await channel.declare_queue(
                options.name, durable=True, arguments=work_queue_arguments(options)
            )
        except aiormq.exceptions.ChannelPreconditionFailed as err:
            raise ConfigError(
                f"RabbitMQ already has a queue or exchange for [queue] name = {options.name!r} "
                f"declared with other settings ({err}). Delete it (rabbitmqctl delete_queue "
                f"{options.name}) or pick another [queue] name"
            ) from err
        return work_queue, dead_exchange

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        for stream in list(self._streams.values()):
            stream.fail(QueueUnavailableError(f"job {stream.job_id}: the job queue was closed"))
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()
        self._requester = None
        self._replies_ready.clear()

    def _connection_or_fail(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise QueueUnavailableError("the RabbitMQ job queue is not started")
        return self._connection

    # -- requester -----------------------------------------------------------------------

    async def submit(self, job: RenderJob) -> ResultStream:
        check_not_expired(job, time.time())
        await self.start()
        await self._ensure_requester()
        if job.job_id in self._streams:
            raise ValueError(f"job {job.job_id} is already in flight")
        stream = ResultStream(job, timeout_s=self.options.result_timeout_s, on_close=self._forget)
        self._streams[job.job_id] = stream
        try:
            await self._publish_job(stream)
        except BaseException:
            stream.close()
            raise
        return stream

    def _forget(self, stream: ResultStream) -> None:
        if self._streams.get(stream.job_id) is stream:
            del self._streams[stream.job_id]
            self._published.pop(stream.job_id, None)

    async def _ensure_requester(self) -> None:
        async with self._requester_lock:
            if self._requester is not None:
                return
            channel = await self._connection_or_fail().channel()
            await self._declare(channel)
            channel.close_callbacks.add(self._on_requester_closed)
            channel.reopen_callbacks.add(self._on_requester_reopened)
            self._requester = channel
            await self._consume_replies(channel)

    async def _consume_replies(self, channel: AbstractRobustChannel) -> None:
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(REPLY_TO, self._on_reply, no_ack=True)
        self._generation += 1
        self._replies_ready.set()

    def _on_requester_closed(self, _channel: Any, exc: BaseException | None) -> None:
        self._replies_ready.clear()
        if self._connection is not None:
            log.warning("lost the requester channel (%s); waiting to reconnect", exc)

    async def _on_requester_reopened(self, channel: Any) -> None:
        try:
            await self._consume_replies(channel)
        except Exception:
            log.exception("could not consume replies after reconnecting")
            return
        pending = [stream for stream in self._streams.values() if stream.awaiting_results]
        if pending:
            log.warning("reconnected; publishing %d unfinished jobs again", len(pending))
        for stream in pending:
            try:
                await self._publish_job(stream)
            except Exception as err:  # noqa: BLE001 - each job's fate goes to its stream
                stream.fail(err)

    async def _publish_job(self, stream: ResultStream) -> None:
        """Publish ``stream.job`` once per reply-consumer generation."""
        job = stream.job
        timeout = self.options.connect_timeout_s
        if not self._replies_ready.is_set():
            # Reconnecting: wait for it, but never past the point where the job is useless.
            patience = max(0.0, min(timeout, job.deadline - time.time()))
            try:
                await asyncio.wait_for(self._replies_ready.wait(), patience)
            except TimeoutError:
                raise QueueUnavailableError(
                    f"RabbitMQ at {safe_url(self.options.url)} is unreachable (reconnecting); "
                    f"job {job.job_id} not queued"
                ) from None
        generation = self._generation
        if self._published.get(job.job_id) == generation:
            return
        now = time.time()
        if job.deadline <= now:
            raise JobExpiredError(
                f"job {job.job_id}: deadline passed before it could be queued", job_id=job.job_id
            )
        envelope = encode(job)
        message = aio_pika.Message(
            envelope.body,
            headers=cast(Any, envelope.headers),
            content_type=envelope.content_type,
            type=envelope.kind,
            message_id=job.job_id,
            correlation_id=job.job_id,
            reply_to=REPLY_TO,
            priority=job.priority,
            expiration=expiration_s(job.deadline, now),
            app_id=APP_ID,
            # Not persistent: a job lives seconds, far less than a broker restart takes.
            delivery_mode=DeliveryMode.NOT_PERSISTENT,
        )
        channel = self._requester
        if channel is None:
            raise QueueUnavailableError("the requester channel is closed")
        self._published[job.job_id] = generation
        try:
            confirmation = await channel.default_exchange.publish(
                message, routing_key=self.options.name, mandatory=True, timeout=timeout
            )
        except aiormq.exceptions.DeliveryError as err:
            self._published.pop(job.job_id, None)
            raise QueueFullError(
                f"the render queue {self.options.name!r} is full ({self.options.max_length} "
                "jobs waiting); try again in a moment"
            ) from err
        except _LINK_ERRORS as err:
            # The reopen callback publishes every unfinished job again.
            self._published.pop(job.job_id, None)
            log.warning("job %s: connection lost while queueing (%s); will retry", job.job_id, err)
            return
        if not isinstance(confirmation, Basic.Ack):
            self._published.pop(job.job_id, None)
            raise QueueUnavailableError(
                f"RabbitMQ has no queue {self.options.name!r} to take job {job.job_id}"
            )

    async def _on_reply(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        stream = self._streams.get(properties.correlation_id or "")
        if stream is None:
            log.debug(
                "dropping a result for a finished or unknown job %s", properties.correlation_id
            )
            return
        envelope = Envelope(
            kind=properties.message_type or "",
            headers=cast(dict[str, Any], dict(properties.headers or {})),
            body=message.body,
            content_type=properties.content_type or "",
        )
        try:
            result = decode(envelope, RenderResult)
            if result.job_id != stream.job_id:
                raise WireError(
                    "malformed", f"result for job {result.job_id} sent as {stream.job_id}"
                )
        except WireError as err:
            stream.fail(
                JobFailedError(
                    f"job {stream.job_id}: a worker sent an invalid result ({err})",
                    job_id=stream.job_id,
                    reason=ERROR_INVALID,
                )
            )
            return
        stream.deliver(result)

    # -- worker --------------------------------------------------------------------------

    async def consumer(self, *, prefetch: int = 1) -> JobConsumer:
        await self.start()
        channel = await self._connection_or_fail().channel()
        await channel.set_qos(prefetch_count=prefetch)
        work_queue, dead_exchange = await self._declare(channel)
        consumer = _RabbitConsumer(self, channel, work_queue, dead_exchange)
        await consumer.start()
        self._consumers.append(consumer)
        return consumer


class _RabbitConsumer(JobConsumer):
    def __init__(
        self,
        owner: RabbitJobQueue,
        channel: AbstractRobustChannel,
        work_queue: AbstractRobustQueue,
        dead_exchange: AbstractExchange,
    ) -> None:
        self.options = owner.options
        self._channel = channel
        self._work_queue = work_queue
        self._dead_exchange = dead_exchange
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None
        self._tag: str | None = None

    async def start(self) -> None:
        self._tag = await self._work_queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopped.is_set():
            await self._hand_back(message)
        else:
            self._inbox.put_nowait(message)

    async def next(self) -> Delivery | None:
        while not self._stopped.is_set():
            getter = asyncio.ensure_future(self._inbox.get())
            stopping = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({getter, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not getter.done():
                getter.cancel()
                break
            message = getter.result()
            if self._stopped.is_set():
                await self._hand_back(message)
                break
            try:
                delivery = await self._admit(message)
            except _LOST_ERRORS as err:
                log.warning("lost the connection while taking a job (%s); it comes back", err)
                continue
            if delivery is not None:
                return delivery
        return None

    async def stop(self) -> None:
        if self._stopping is None:
            self._stopped.set()
            self._stopping = asyncio.ensure_future(self._stop())
        # Shielded: a caller's cancellation must not cancel the Basic.Cancel RPC, which makes
        # aiormq close the channel that the jobs in progress still publish their results on.
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self._tag is not None:
            try:
                await self._work_queue.cancel(self._tag)
            except _LINK_ERRORS as err:
                log.debug("cancelling the consumer failed: %s", err)
        while not self._inbox.empty():
            await self._hand_back(self._inbox.get_nowait())

    @staticmethod
    def _alive(message: AbstractIncomingMessage) -> bool:
        try:
            message.channel  # noqa: B018 - raises once the channel it came on is closed
        except aiormq.exceptions.ChannelInvalidStateError:
            return False
        return True

    async def _admit(self, message: AbstractIncomingMessage) -> Delivery | None:
        """Validate and count a delivery; settle it here unless a worker should run it."""
        if not self._alive(message):
            return None  # came on a channel lost since; the broker delivers it again
        envelope = _envelope_of(message)
        try:
            job = decode(envelope, RenderJob)
        except WireError as err:
            await self.dead_letter(message, ERROR_INVALID, str(err))
            job_id = envelope.headers.get("job_id")
            if message.reply_to and isinstance(job_id, str) and valid_id(job_id):
                failure = RenderResult.failure(
                    job_id, part=0, reason=ERROR_INVALID, error=f"invalid job: {err}"
                )
                await self.send_result(message, failure)
            return None
        attempt = _attempt_of(cast(dict[str, Any], message.headers or {}))
        if message.redelivered:
            # The delivery before this one was never settled: its worker died or lost its
            # connection. Count that attempt before doing any work that may kill us too.
            done = attempt
            if done >= self.options.max_attempts:
                detail = (
                    f"handed to workers {done} times and never finished (each worker died or "
                    "lost its connection)"
                )
                await self.dead_letter(message, ERROR_POISON, detail)
                await self.send_result(
                    message,
                    RenderResult.failure(job.job_id, part=0, reason=ERROR_POISON, error=detail),
                )
                return None
            await self.requeue(message, job, attempt=done + 1)
            return None
        return _RabbitDelivery(self, message, job, attempt)

    async def send_result(self, message: AbstractIncomingMessage, result: RenderResult) -> bool:
        """Publish one result part to the job's requester; False if there is none any more."""
        if not message.reply_to:
            return False
        envelope = encode(result)
        reply = aio_pika.Message(
            envelope.body,
            headers=cast(Any, envelope.headers),
            content_type=envelope.content_type,
            type=envelope.kind,
            correlation_id=result.job_id,
            message_id=f"{result.job_id}/{result.part}",
            app_id=APP_ID,
            delivery_mode=DeliveryMode.NOT_PERSISTENT,
        )
        try:
            # Not mandatory: RabbitMQ 3.10 returns every mandatory direct reply, delivered or not.
            confirmation = await self._channel.default_exchange.publish(
                reply,
                routing_key=message.reply_to,
                mandatory=False,
                timeout=self.options.connect_timeout_s,
            )
        except aiormq.exceptions.DeliveryError:
            return False
        except _LINK_ERRORS as err:
            raise DeliveryLostError(f"job {result.job_id}: connection lost: {err}") from err
        return isinstance(confirmation, Basic.Ack)

    async def settle(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
        except _LINK_ERRORS as err:
            raise DeliveryLostError(
                f"connection lost before the job was acknowledged: {err}"
            ) from err

    async def requeue(
        self, message: AbstractIncomingMessage, job: RenderJob | None, *, attempt: int
    ) -> None:
        """Put a job back at the end of the queue with its attempt count, then settle it."""
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        changes: dict[str, Any] = {}
        if job is not None:
            now = time.time()
            if job.deadline <= now:
                await self.dead_letter(message, ERROR_EXPIRED, "deadline passed while queued again")
                return
            changes["expiration"] = expiration_s(job.deadline, now)
        try:
            await self._channel.default_exchange.publish(
                _copy(message, headers, **changes),
                routing_key=self.options.name,
                mandatory=True,
                timeout=self.options.connect_timeout_s,
            )
        except aiormq.exceptions.DeliveryError:
            # The queue is full: let the broker requeue it (it then counts as one more attempt).
            log.warning("queue full; job %s goes back as a redelivery", message.message_id)
            await message.nack(requeue=True)
            return
        await self.settle(message)

    async def _hand_back(self, message: AbstractIncomingMessage) -> None:
        """Return a job that was never started, without counting an attempt."""
        if not self._alive(message):
            return
        try:
            await self.requeue(message, None, attempt=_attempt_of(dict(message.headers or {})))
        except _LOST_ERRORS as err:
            log.debug("hand-back failed (%s); the broker requeues the job", err)

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str, detail: str) -> None:
        """Publish the job to the dead-letter exchange with ``reason``, then settle it."""
        log.warning("dead-lettering job %s (%s): %s", message.message_id, reason, detail)
        headers = dict(message.headers or {})
        headers[DEAD_REASON_HEADER] = reason
        headers[DEAD_DETAIL_HEADER] = detail[:1000]
        headers[DEAD_AT_HEADER] = repr(time.time())
        headers[DEAD_BY_HEADER] = self.options.connection_name
        copy = _copy(message, headers, expiration=None, delivery_mode=DeliveryMode.PERSISTENT)
        try:
            await self._dead_exchange.publish(
                copy, routing_key=self.options.name, timeout=self.options.connect_timeout_s
            )
        except aiormq.exceptions.DeliveryError:
            # Let the broker dead-letter it (x-death reason "rejected", without our detail).
            await message.reject(requeue=False)
            return
        except _LINK_ERRORS as err:
            raise DeliveryLostError(f"connection lost while dead-lettering: {err}") from err
        await self.settle(message)


class _RabbitDelivery(Delivery):
    def __init__(
        self,
        consumer: _RabbitConsumer,
        message: AbstractIncomingMessage,
        job: RenderJob,
        attempt: int,
    ) -> None:
        self._consumer = consumer
        self._message = message
        self.job = job
        self.attempt = attempt

    async def reply(self, result: RenderResult) -> bool:
        return await self._consumer.send_result(self._message, result)

    async def ack(self) -> None:
        await self._consumer.settle(self._message)

    async def retry(self, reason: str) -> bool:
        if self.attempt >= self._consumer.options.max_attempts:
            detail = f"failed on all {self.attempt} attempts; last: {reason}"
            await self._consumer.dead_letter(self._message, ERROR_POISON, detail)
            return False
        log.info(
            "job %s: attempt %d failed (%s); queued again", self.job.job_id, self.attempt, reason
        )
        await self._consumer.requeue(self._message, self.job, attempt=self.attempt + 1)
        return True

    async def dead_letter(self, reason: str, detail: str) -> None:
        await self._consumer.dead_letter(self._message, reason, detail)
