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

* ``<name>.suspect``: a durable queue that dead-letters back into ``<name>``. A job whose
  workers died holding it twice in a row is very likely poison (one that kills whoever
  renders it); it waits here :data:`SUSPECT_WAIT_S` seconds before its next attempt, so such
  a job cannot take down every worker at once while the others' replacements start.
* ``<name>.awaiting``: a durable direct exchange. A requester holds an exclusive queue of its
  own per connection (``<name>.requester.<token>``, nothing is ever stored in it) and binds it
  here with each job's *ticket* (``<job id>.<token>``, the ``lipcast-ticket`` header) for as
  long as it awaits that job's results. Before rendering, a worker publishes an empty
  ``mandatory`` message with the ticket as routing key: if the broker cannot route it, nobody
  awaits the job any more (it was answered, or its requester lost its connection, which deletes
  the exclusive queue and every binding at once, and queued the job again under a new ticket),
  and the worker drops the job without rendering it, counting no attempt.

Results travel by direct reply-to: the requester consumes ``amq.rabbitmq.reply-to`` in no-ack
mode on the same channel it publishes jobs on, and each worker publishes every result part to
the job's ``reply_to`` with the job id as ``correlation_id``. Replies are not ``mandatory``:
RabbitMQ 3.10 answers a mandatory direct reply with ``basic.return`` even when it delivered
it, which is why the liveness check above goes through a queue of the requester's instead.

Why a classic queue and attempt counting by republishing: quorum queues count deliveries
(``x-delivery-limit``) but RabbitMQ 3.10 quorum queues have no priorities, and classic queues,
which do, only flag a redelivery (``redelivered``) without counting it. So the count travels
in the job: a worker that receives a job flagged ``redelivered`` whose requester still awaits
it knows the previous delivery was never settled while someone waited for it (its worker died,
or lost its connection mid-render) and, before doing any work, publishes a copy with
``lipcast-attempt`` raised by one and acknowledges the original; after ``max_attempts`` it
dead-letters the job as ``poison`` instead. A failed attempt that the worker survives does the
same. A job that was answered and then redelivered (its worker lost the acknowledgement to a
connection drop) is no longer awaited, so it is dropped, never counted. Jobs taken but not
started when a worker stops are handed back with their count unchanged.

Place in the queue: a job queued again (a counted redelivery, a failed attempt, a requester's
re-publish after reconnecting) goes back with its priority raised by
:data:`~pipeline.jobs.queue.base.REQUEUE_PRIORITY_BUMP` (at most 9), ahead of the new work of
its own priority, so a fault costs a sentence one more render, not a trip to the back.

Reconnection: both sides use ``connect_robust``. Start-up (connecting, declaring, consuming)
retries a connection dropped midway until ``connect_timeout_s`` has passed, then raises
:class:`QueueUnavailableError`. A worker's consumer and prefetch are restored by aio-pika; a
job whose connection dropped mid-render cannot be acknowledged and is redelivered by the
broker. A requester's reply consumer and its awaiting queue live on its channel, so on every
reopen the requester makes both again and publishes once more every job still awaiting results
(replies addressed to the old channel are lost by design); the :class:`ResultStream` drops
parts that arrive twice. Each drop is logged once, as one WARNING per connection ("lost the
connection", "reconnected after N s"); what aio-pika and aiormq log about it is left to ``-vv``
(:func:`lipcast.logs.setup_logging`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar, cast

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
    J,
    JobConsumer,
    JobExpiredError,
    JobFailedError,
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
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    DEAD_BY_HEADER,
    DEAD_DETAIL_HEADER,
    DEAD_REASON_HEADER,
    ERROR_EXPIRED,
    ERROR_INVALID,
    ERROR_POISON,
    Envelope,
    Job,
    WireError,
    decode,
    encode,
    expiration_s,
    valid_id,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

REPLY_TO = "amq.rabbitmq.reply-to"
APP_ID = "lipcast"
TICKET_HEADER = "lipcast-ticket"  # the routing key that reaches the job's requester, if any
# How long a job that two workers in a row died holding waits before its next attempt: about
# the time a replaced worker takes to start.
SUSPECT_WAIT_S = 2.0
SUSPECT_AFTER_DEATHS = 2

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
# aio-pika and aiormq raise RuntimeError for a channel opened while the connection is down.
_START_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *_LINK_ERRORS)
_MAX_BACKOFF_S = 5.0


def safe_url(url: str) -> str:
    """``url`` without its password, fit for logs and error messages."""
    try:
        parsed = URL(url)
    except ValueError:
        return "<unparsable URL>"
    return str(parsed.with_password(None)) if parsed.password else url


def describe_drop(err: BaseException | None) -> str:
    """Why a connection or channel went away, in words (never an object's repr)."""
    if err is None:
        return "closed"
    if isinstance(err, aiormq.exceptions.ChannelInvalidStateError):
        return "the channel was already closed"
    if isinstance(err, aiormq.exceptions.AMQPError) and err.args:
        first = err.args[0]
        if isinstance(first, int) and len(err.args) > 1:  # (reply code, reply text)
            return f"{err.args[1]} ({first})"
        if isinstance(first, str) and first:
            return first
    text = str(err)
    if not text or " object at 0x" in text:
        return type(err).__name__
    return text


def _dropped(err: RuntimeError, connection: AbstractRobustConnection) -> bool:
    """Whether aio-pika or aiormq raised ``err`` because the connection is down right now."""
    text = str(err)
    return not connection.connected.is_set() or "closed" in text or "not opened" in text


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


class RabbitJobQueue(JobQueue[J, R]):
    """Jobs through a shared RabbitMQ work queue, results by direct reply-to."""

    name = "rabbitmq"

    def __init__(
        self, options: QueueOptions | None = None, kind: JobKind[J, R] | None = None
    ) -> None:
        super().__init__(options or QueueOptions(), kind)
        self._connection: AbstractRobustConnection | None = None
        self._closing = False
        self._lost_at: float | None = None  # when the connection dropped; None while up
        self._queued_again = 0  # unfinished jobs published again since the drop
        self._start_lock = asyncio.Lock()
        self._requester_lock = asyncio.Lock()
        self._requester: AbstractRobustChannel | None = None
        # Releases tickets: queue.unbind has no no-wait form, and on the requester channel
        # its round trip would hold up the next job's publish.
        self._releaser: AbstractRobustChannel | None = None
        self._replies_ready = asyncio.Event()
        self._generation = 0  # bumped each time the reply consumer (re)starts
        self._awaiting_queue: str | None = None  # this connection's exclusive queue
        self._token = ""  # this generation's part of every ticket
        self._published: dict[str, int] = {}  # job id -> generation it was last published in
        self._tickets: dict[str, str] = {}  # job id -> ticket bound in this generation
        self._streams: dict[str, ResultStream[J, R]] = {}
        self._consumers: list[_RabbitConsumer[J, R]] = []
        self._tasks: set[asyncio.Task[None]] = set()

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
                    f"cannot reach RabbitMQ at {safe_url(url)}: {describe_drop(err)}. "
                    "Is the broker running, and are [queue] url in bot.toml and "
                    "LIPCAST_AMQP_URL right?"
                ) from err
            self._closing = False
            connection.close_callbacks.add(self._on_connection_lost)
            connection.reconnect_callbacks.add(self._on_reconnected)
            self._connection = connection

            async def declare() -> None:
                channel = await connection.channel()
                try:
                    await self._declare(channel)
                finally:
                    if not channel.is_closed:
                        await channel.close()

            try:
                await self._while_starting("declaring the queues", declare)
            except BaseException:
                self._connection = None
                self._closing = True
                await connection.close()
                raise
            log.info("connected to RabbitMQ at %s, queue %r", safe_url(url), self.options.name)

    def _on_connection_lost(self, _connection: Any, exc: BaseException | None) -> None:
        if self._closing or self._lost_at is not None:
            return  # closing on purpose, or a failed reconnection attempt of the same outage
        self._lost_at = time.monotonic()
        log.warning(
            "lost the connection to RabbitMQ at %s (%s); reconnecting every %g s",
            safe_url(self.options.url),
            describe_drop(exc),
            self.options.reconnect_interval_s,
        )

    def _on_reconnected(self, _connection: Any) -> None:
        if self._lost_at is None:
            return
        down = time.monotonic() - self._lost_at
        self._lost_at = None
        again, self._queued_again = self._queued_again, 0
        suffix = f"; queued {again} unfinished jobs again" if again else ""
        log.warning("reconnected to RabbitMQ after %.1f s%s", down, suffix)

    async def _while_starting(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """Run a start-up ``step``, again after each dropped connection, for connect_timeout_s.

        A broker that drops connections (a restart, ``rabbitmqctl close_all_connections``)
        is met by reconnecting and starting the step over; one that stays away past the
        timeout becomes one :class:`QueueUnavailableError` line.
        """
        connection = self._connection_or_fail()
        deadline = time.monotonic() + self.options.connect_timeout_s
        pause = self.options.reconnect_interval_s
        while True:
            try:
                return await step()
            except _START_ERRORS as err:
                if isinstance(err, RuntimeError) and not _dropped(err, connection):
                    raise
                left = deadline - time.monotonic()
                if left <= 0 or self._closing:
                    raise QueueUnavailableError(
                        f"RabbitMQ at {safe_url(self.options.url)} kept dropping the "
                        f"connection while {what} ({describe_drop(err)}) for "
                        f"{self.options.connect_timeout_s:g} s (connect_timeout_s); is the "
                        "broker restarting?"
                    ) from err
                log.warning(
                    "the connection dropped while %s (%s); trying again", what, describe_drop(err)
                )
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _MAX_BACKOFF_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    connection.connected.wait(), max(0.0, deadline - time.monotonic())
                )

    async def _declare(self, channel: AbstractRobustChannel) -> _Topology:
        """Declare the exchanges and queues both sides use (idempotent)."""
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
            await channel.declare_queue(
                options.suspect_queue,
                durable=True,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": options.name,
                },
            )
            awaiting = await channel.declare_exchange(
                options.awaiting_exchange, ExchangeType.DIRECT, durable=True
            )
            work_queue = await channel.declare_queue(
                options.name, durable=True, arguments=work_queue_arguments(options)
            )
        except aiormq.exceptions.ChannelPreconditionFailed as err:
            raise ConfigError(
                f"RabbitMQ already has a queue or exchange for [queue] name = {options.name!r} "
                f"declared with other settings ({describe_drop(err)}). Delete it (rabbitmqctl "
                f"delete_queue {options.name}) or pick another [queue] name"
            ) from err
        return _Topology(work_queue=work_queue, dead_exchange=dead_exchange, awaiting=awaiting)

    async def close(self) -> None:
        self._closing = True
        for consumer in list(self._consumers):
            await consumer.stop()
        for stream in list(self._streams.values()):
            stream.fail(QueueUnavailableError(f"job {stream.job_id}: the job queue was closed"))
        if self._tasks:
            # Let releases in flight finish: cancelling an RPC makes aiormq close its channel.
            await asyncio.wait(set(self._tasks), timeout=self.options.connect_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()
        self._requester = None
        self._releaser = None
        self._awaiting_queue = None
        self._replies_ready.clear()

    @property
    def dropped_unawaited(self) -> int:
        """Jobs this queue's consumers dropped unrendered because nobody awaited them."""
        return sum(consumer.unawaited for consumer in self._consumers)

    def _connection_or_fail(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise QueueUnavailableError("the RabbitMQ job queue is not started")
        return self._connection

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requester -----------------------------------------------------------------------

    async def submit(self, job: J) -> ResultStream[J, R]:
        check_not_expired(job, time.time())
        await self.start()
        await self._ensure_requester()
        if job.job_id in self._streams:
            raise ValueError(f"job {job.job_id} is already in flight")
        stream: ResultStream[J, R] = ResultStream(
            job, timeout_s=self.options.result_timeout_s, on_close=self._forget
        )
        self._streams[job.job_id] = stream
        try:
            await self._publish_job(stream)
        except BaseException:
            stream.close()
            raise
        return stream

    def _forget(self, stream: ResultStream[J, R]) -> None:
        if self._streams.get(stream.job_id) is stream:
            del self._streams[stream.job_id]
            self._published.pop(stream.job_id, None)
            self._release_ticket(stream.job_id)

    def _release_ticket(self, job_id: str) -> None:
        """Stop awaiting ``job_id``: workers that get a copy of it from now on drop it."""
        ticket = self._tickets.pop(job_id, None)
        queue = self._awaiting_queue
        if ticket is None or queue is None or self._closing:
            return
        self._spawn(self._unbind(queue, ticket), name=f"rabbitmq-release-{job_id}")

    async def _unbind(self, queue: str, ticket: str) -> None:
        channel = self._releaser
        if channel is None or queue != self._awaiting_queue:
            return  # the queue went with its connection, and every binding with it
        try:
            underlay = await channel.get_underlay_channel()
            await underlay.queue_unbind(queue, self.options.awaiting_exchange, routing_key=ticket)
        except _LINK_ERRORS as err:
            log.debug("releasing ticket %s: %s (its queue goes with the connection)", ticket, err)

    async def _ensure_requester(self) -> None:
        async with self._requester_lock:
            if self._requester is not None:
                return
            connection = self._connection_or_fail()

            async def open_requester() -> AbstractRobustChannel:
                channel = await connection.channel()
                try:
                    await self._declare(channel)
                    await self._consume_replies(channel)
                except BaseException:
                    if not channel.is_closed:
                        with contextlib.suppress(*_LINK_ERRORS):
                            await channel.close()
                    raise
                return channel

            channel = await self._while_starting("opening the requester channel", open_requester)
            self._releaser = await self._while_starting(
                "opening the requester channel", connection.channel
            )
            channel.close_callbacks.add(self._on_requester_closed)
            channel.reopen_callbacks.add(self._on_requester_reopened)
            self._requester = channel

    async def _consume_replies(self, channel: AbstractRobustChannel) -> None:
        """Consume direct replies and hold a fresh awaiting queue on ``channel``'s connection."""
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(REPLY_TO, self._on_reply, no_ack=True)
        token = uuid.uuid4().hex[:12]
        queue = f"{self.options.name}.requester.{token}"
        # Declared on the underlying channel, so aio-pika never re-declares it after a
        # reconnect: the old name must stay gone, and with it every old ticket.
        await underlay.queue_declare(
            queue, exclusive=True, auto_delete=True, arguments={"x-max-length": 0}
        )
        self._awaiting_queue = queue
        self._token = token
        self._tickets.clear()
        self._generation += 1
        self._replies_ready.set()

    def _on_requester_closed(self, _channel: Any, _exc: BaseException | None) -> None:
        self._replies_ready.clear()
        self._awaiting_queue = None
        self._tickets.clear()

    async def _on_requester_reopened(self, channel: Any) -> None:
        try:
            await self._consume_replies(channel)
        except _LINK_ERRORS as err:
            log.warning(
                "the connection dropped again while reopening the requester channel (%s); "
                "waiting for the next reconnection",
                describe_drop(err),
            )
            return
        pending = [stream for stream in self._streams.values() if stream.awaiting_results]
        self._queued_again += len(pending)
        for stream in pending:
            try:
                await self._publish_job(stream, again=True)
            except Exception as err:  # noqa: BLE001 - each job's fate goes to its stream
                stream.fail(err)

    async def _publish_job(self, stream: ResultStream[J, R], *, again: bool = False) -> None:
        """Publish ``stream.job`` once per reply-consumer generation, with a fresh ticket."""
        job = stream.job
        timeout = self.options.connect_timeout_s
        if not self._replies_ready.is_set():
            # Reconnecting: wait for it, but never past the point where the job is useless.
            again = True
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
        channel = self._requester
        queue = self._awaiting_queue
        if channel is None or queue is None:
            raise QueueUnavailableError("the requester channel is closed")
        ticket = f"{job.job_id}.{self._token}"
        self._published[job.job_id] = generation
        try:
            underlay = await channel.get_underlay_channel()
            # No-wait: the broker binds before it routes the job published next on this
            # channel, so a worker never sees the job before its ticket; and no round trip.
            await underlay.queue_bind(
                queue, self.options.awaiting_exchange, routing_key=ticket, nowait=True
            )
            self._tickets[job.job_id] = ticket
            now = time.time()
            if job.deadline <= now:
                raise JobExpiredError(
                    f"job {job.job_id}: deadline passed before it could be queued",
                    job_id=job.job_id,
                )
            priority = job.priority
            if again:
                priority = requeue_priority(priority, self.options.max_priority)
            envelope = encode(job)
            headers = {**envelope.headers, TICKET_HEADER: ticket}
            message = aio_pika.Message(
                envelope.body,
                headers=cast(Any, headers),
                content_type=envelope.content_type,
                type=envelope.kind,
                message_id=job.job_id,
                correlation_id=job.job_id,
                reply_to=REPLY_TO,
                priority=priority,
                expiration=expiration_s(job.deadline, now),
                app_id=APP_ID,
                # Not persistent: a job lives seconds, far less than a broker restart takes.
                delivery_mode=DeliveryMode.NOT_PERSISTENT,
            )
            confirmation = await channel.default_exchange.publish(
                message, routing_key=self.options.name, mandatory=True, timeout=timeout
            )
        except aiormq.exceptions.DeliveryError as err:
            self._published.pop(job.job_id, None)
            raise QueueFullError(
                f"the {self.kind.noun} queue {self.options.name!r} is full "
                f"({self.options.max_length} jobs waiting); try again in a moment"
            ) from err
        except _LINK_ERRORS as err:
            # The reopen callback publishes every unfinished job again.
            self._published.pop(job.job_id, None)
            log.info(
                "job %s: the connection dropped while queueing it (%s); queued again once "
                "reconnected",
                job.job_id,
                describe_drop(err),
            )
            return
        except BaseException:
            self._published.pop(job.job_id, None)
            raise
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
            result = decode(envelope, self.kind.result)
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
            self._release_ticket(stream.job_id)
            return
        stream.deliver(result)
        if not stream.awaiting_results:
            # Answered: a copy of the job that a worker gets from now on is not rendered.
            self._release_ticket(stream.job_id)

    # -- worker --------------------------------------------------------------------------

    async def consumer(self, *, prefetch: int = 1) -> JobConsumer[J, R]:
        await self.start()
        connection = self._connection_or_fail()

        async def open_consumer() -> _RabbitConsumer[J, R]:
            channel = await connection.channel()
            try:
                await channel.set_qos(prefetch_count=prefetch)
                topology = await self._declare(channel)
                consumer = _RabbitConsumer(self, channel, topology)
                await consumer.start()
            except BaseException:
                if not channel.is_closed:
                    with contextlib.suppress(*_LINK_ERRORS):
                        await channel.close()
                raise
            return consumer

        consumer = await self._while_starting("starting to consume jobs", open_consumer)
        self._consumers.append(consumer)
        return consumer


@dataclass(frozen=True, kw_only=True)
class _Topology:
    work_queue: AbstractRobustQueue
    dead_exchange: AbstractExchange
    awaiting: AbstractExchange


class _RabbitConsumer(JobConsumer[J, R]):
    def __init__(
        self, owner: RabbitJobQueue[J, R], channel: AbstractRobustChannel, topology: _Topology
    ) -> None:
        self.options = owner.options
        self.kind = owner.kind
        self._channel = channel
        self._work_queue = topology.work_queue
        self._dead_exchange = topology.dead_exchange
        self._awaiting = topology.awaiting
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopped = asyncio.Event()
        self._stopping: asyncio.Future[None] | None = None
        self._tag: str | None = None
        self.unawaited = 0  # jobs dropped unrendered because nobody awaited them any more

    async def start(self) -> None:
        self._tag = await self._work_queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopped.is_set():
            await self._hand_back(message)
        else:
            self._inbox.put_nowait(message)

    async def next(self) -> Delivery[J, R] | None:
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
                log.info(
                    "job %s: the connection dropped while taking it (%s); the broker hands it "
                    "out again",
                    message.message_id,
                    describe_drop(err.__cause__ or err),
                )
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
                log.debug("cancelling the consumer failed: %s", describe_drop(err))
        while not self._inbox.empty():
            await self._hand_back(self._inbox.get_nowait())

    @staticmethod
    def _alive(message: AbstractIncomingMessage) -> bool:
        try:
            message.channel  # noqa: B018 - raises once the channel it came on is closed
        except aiormq.exceptions.ChannelInvalidStateError:
            return False
        return True

    async def _admit(self, message: AbstractIncomingMessage) -> Delivery[J, R] | None:
        """Validate and count a delivery; settle it here unless a worker should run it."""
        if not self._alive(message):
            return None  # came on a channel lost since; the broker delivers it again
        envelope = _envelope_of(message)
        try:
            job = decode(envelope, self.kind.job)
        except WireError as err:
            await self.dead_letter(message, ERROR_INVALID, str(err))
            job_id = envelope.headers.get("job_id")
            if message.reply_to and isinstance(job_id, str) and valid_id(job_id):
                failure = self.kind.result.failure(
                    job_id, part=0, reason=ERROR_INVALID, error=f"invalid job: {err}"
                )
                await self.send_result(message, failure)
            return None
        headers = cast(dict[str, Any], message.headers or {})
        attempt = _attempt_of(headers)
        ticket = headers.get(TICKET_HEADER)
        if isinstance(ticket, str) and not await self._awaited(ticket):
            self.unawaited += 1
            log.info(
                "job %s (%s): nobody awaits it any more (answered, or queued again "
                "by its requester after a reconnect); dropped unrendered",
                job.job_id,
                job.label(),
            )
            await self.settle(message)
            return None
        if message.redelivered:
            # The delivery before this one was never settled while its requester waited: its
            # worker died or lost its connection. Count that attempt before doing any work
            # that may kill us too.
            done = attempt
            if done >= self.options.max_attempts:
                detail = (
                    f"handed to workers {done} times and never finished (each worker died or "
                    "lost its connection)"
                )
                await self.dead_letter(message, ERROR_POISON, detail)
                await self.send_result(
                    message,
                    self.kind.result.failure(job.job_id, part=0, reason=ERROR_POISON, error=detail),
                )
                return None
            wait_s = SUSPECT_WAIT_S if done >= SUSPECT_AFTER_DEATHS else 0.0
            if wait_s:
                outcome = f"it may be poison: attempt {done + 1} in {wait_s:g} s"
            else:
                outcome = f"attempt {done + 1} next, ahead of new work"
            log.warning(
                "job %s (%s) redelivered: the worker holding it on attempt %d of "
                "%d died or lost its connection; %s",
                job.job_id,
                job.label(),
                done,
                self.options.max_attempts,
                outcome,
            )
            await self.requeue(message, job, attempt=done + 1, wait_s=wait_s)
            return None
        return _RabbitDelivery(self, message, job, attempt)

    async def _awaited(self, ticket: str) -> bool:
        """Whether the job's requester still awaits it: can the broker route its ticket?"""
        try:
            confirmation = await self._awaiting.publish(
                aio_pika.Message(b"", delivery_mode=DeliveryMode.NOT_PERSISTENT),
                routing_key=ticket,
                mandatory=True,
                timeout=self.options.connect_timeout_s,
            )
        except aiormq.exceptions.DeliveryError:
            return False
        except _LINK_ERRORS as err:
            raise DeliveryLostError(describe_drop(err)) from err
        return isinstance(confirmation, Basic.Ack)

    async def send_result(self, message: AbstractIncomingMessage, result: R) -> bool:
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
            raise DeliveryLostError(
                f"the connection dropped while sending part {result.part} ({describe_drop(err)})"
            ) from err
        return isinstance(confirmation, Basic.Ack)

    async def settle(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.ack()
        except _LINK_ERRORS as err:
            raise DeliveryLostError(
                f"the connection dropped before the job was acknowledged ({describe_drop(err)})"
            ) from err

    async def requeue(
        self,
        message: AbstractIncomingMessage,
        job: Job | None,
        *,
        attempt: int,
        wait_s: float = 0.0,
    ) -> None:
        """Queue a job again with its attempt count, then settle the delivery.

        A job that is being tried again (``job`` given) goes back with its priority raised
        (:func:`~pipeline.jobs.queue.base.requeue_priority`); one handed back unstarted keeps
        the priority it had. With ``wait_s`` it waits that long in the suspect queue first.
        """
        headers = dict(message.headers or {})
        headers[ATTEMPT_HEADER] = attempt
        changes: dict[str, Any] = {}
        if job is not None:
            now = time.time()
            if job.deadline <= now:
                await self.dead_letter(message, ERROR_EXPIRED, "deadline passed while queued again")
                return
            changes["expiration"] = expiration_s(job.deadline, now)
            changes["priority"] = requeue_priority(message.priority or 0, self.options.max_priority)
        routing_key = self.options.name
        if wait_s > 0:
            # Expiring there is what moves it back to the work queue (which drops the
            # expiration; the worker still checks the job's deadline when it takes it).
            changes["expiration"] = wait_s
            routing_key = self.options.suspect_queue
        try:
            await self._channel.default_exchange.publish(
                _copy(message, headers, **changes),
                routing_key=routing_key,
                mandatory=True,
                timeout=self.options.connect_timeout_s,
            )
        except aiormq.exceptions.DeliveryError:
            # The queue is full: let the broker requeue it (it then counts as one more attempt).
            log.warning("queue full; job %s goes back as a redelivery", message.message_id)
            await message.nack(requeue=True)
            return
        except _LINK_ERRORS as err:
            raise DeliveryLostError(
                f"the connection dropped while queueing the job again ({describe_drop(err)})"
            ) from err
        await self.settle(message)

    async def _hand_back(self, message: AbstractIncomingMessage) -> None:
        """Return a job that was never started, without counting an attempt."""
        if not self._alive(message):
            return
        try:
            await self.requeue(message, None, attempt=_attempt_of(dict(message.headers or {})))
        except _LOST_ERRORS as err:
            log.debug("hand-back failed (%s); the broker requeues the job", describe_drop(err))

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
            raise DeliveryLostError(
                f"the connection dropped while dead-lettering the job ({describe_drop(err)})"
            ) from err
        await self.settle(message)


class _RabbitDelivery(Delivery[J, R]):
    def __init__(
        self,
        consumer: _RabbitConsumer[J, R],
        message: AbstractIncomingMessage,
        job: J,
        attempt: int,
    ) -> None:
        self._consumer = consumer
        self._message = message
        self.job = job
        self.attempt = attempt

    async def reply(self, result: R) -> bool:
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
