"""A generic, reliable consumer: manual ack, delayed retries with backoff, dead-letter queue.

::

    async def handle(envelope: Envelope) -> None:
        ...  # raise PermanentError("why") to dead-letter now; any other exception = retry

    consumer = Consumer(connection, topology.replies_queue, handle, prefetch=32)
    await consumer.start()      # declares Q, Q.dlq and Q.retry.* and starts consuming
    ...
    await consumer.stop()       # stops consuming and waits for in-flight handlers

Per message:

1. The body is parsed as an :class:`Envelope`; with ``validate_payload=True`` (default) the
   payload must match its contract. A message that fails this is POISON: it goes straight to
   ``Q.dlq`` (headers ``x-vyapaar-error``, ``x-vyapaar-original-queue``,
   ``x-vyapaar-attempt``, ``x-vyapaar-dead-letter-reason=poison``) and is acked, so it never
   blocks the messages behind it.
2. The handler runs (cancelled after ``handler_timeout`` seconds, which counts as a
   transient failure). Success -> ack (only now: the handler has committed its work).
3. :class:`PermanentError` -> ``Q.dlq`` (reason ``permanent``) and ack.
   :class:`Ignored` -> ack, logged with its reason and counted (outcome ``ignored``): a
   well-formed message about something the handler does not know (a reply for an Order that
   no longer exists), which no retry or redrive can change.
4. Any other exception -> republished to the delay queue of the current tier
   (``Q.retry.1s``, ``Q.retry.5s``, ...) with ``x-vyapaar-attempt`` incremented, then acked;
   when the TTL expires the broker dead-letters it back to ``Q``. After the last tier the
   message goes to ``Q.dlq`` (reason ``exhausted``).

Every republish (retry or DLQ) waits for the publisher confirm before the original is acked,
so a message is never lost (it may be duplicated if the process dies in between — handlers
are idempotent). If the republish fails the message is nacked back to ``Q``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)

from vyapaar_messaging import contracts, metrics, tracing
from vyapaar_messaging.context import bind_message_context
from vyapaar_messaging.envelope import Envelope, EnvelopeError
from vyapaar_messaging.publisher import Publisher, PublishFailed
from vyapaar_messaging.topology import (
    DEFAULT_DELIVERY_LIMIT,
    DEFAULT_RETRY_DELAYS,
    declare_consumer_queue,
    dlq_name,
    format_delay,
    queue_depth,
    retry_queue_name,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "ATTEMPT_HEADER",
    "DEAD_LETTER_REASON_HEADER",
    "ERROR_HEADER",
    "FAILED_AT_HEADER",
    "ORIGINAL_QUEUE_HEADER",
    "Consumer",
    "Handler",
    "Ignored",
    "PermanentError",
    "TransientError",
]

log = logging.getLogger(__name__)

#: 1-based number of the delivery attempt (on a DLQ message: attempts made)
ATTEMPT_HEADER: Final = "x-vyapaar-attempt"
#: why the last attempt failed (truncated)
ERROR_HEADER: Final = "x-vyapaar-error"
#: the consumer queue the message came from (redrive target)
ORIGINAL_QUEUE_HEADER: Final = "x-vyapaar-original-queue"
#: poison | permanent | exhausted
DEAD_LETTER_REASON_HEADER: Final = "x-vyapaar-dead-letter-reason"
#: RFC 3339 time of the dead-lettering
FAILED_AT_HEADER: Final = "x-vyapaar-failed-at"
#: how many times the message was redriven from the DLQ
REDRIVE_COUNT_HEADER: Final = "x-vyapaar-redrive-count"

_BROKER_HEADERS: Final = ("x-death", "x-delivery-count", "x-first-death-", "x-last-death-")
_MAX_ERROR_LEN: Final = 2000


class PermanentError(Exception):
    """Raise from a handler: the message can never succeed; dead-letter it now."""


class Ignored(Exception):
    """Raise from a handler: the message is well formed but about nothing the handler knows
    (e.g. an Order deleted meanwhile); ack it, log why, count it as ``ignored``."""


class TransientError(Exception):
    """Raise from a handler for an expected temporary failure: retried like any other
    exception, but logged without a stack trace."""


Handler = Callable[[Envelope], Awaitable[None]]
#: failures logged without a stack trace
_EXPECTED: Final = (TransientError, TimeoutError, ConnectionError)


def int_header(value: object) -> int | None:
    """An AMQP header value as an int (None if absent or not a number)."""
    if isinstance(value, bytes | bytearray):
        value = value.decode(errors="replace")
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def attempt_of(message: AbstractIncomingMessage | aio_pika.Message) -> int:
    """The 1-based attempt number of this delivery (header ``x-vyapaar-attempt``)."""
    attempt = int_header((message.headers or {}).get(ATTEMPT_HEADER))
    return max(attempt or 1, 1)


def clean_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """Headers without the broker's dead-lettering bookkeeping."""
    return {k: v for k, v in (headers or {}).items() if not k.startswith(_BROKER_HEADERS)}


def copy_message(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of ``message`` (body and properties) with new headers."""
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        user_id=None,
        app_id=message.app_id,
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Consumer:
    """Consume ``queue_name`` with ``handler(envelope)``; see the module docstring.

    ``source`` is a connection (the consumer opens its own confirm channel and closes it on
    stop; preferred — use ``aio_pika.connect_robust`` so it survives broker restarts) or a
    channel opened with ``publisher_confirms=True`` (its QoS is set to ``prefetch``).
    """

    def __init__(
        self,
        source: AbstractConnection | AbstractChannel,
        queue_name: str,
        handler: Handler,
        *,
        prefetch: int = 16,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        validate_payload: bool = True,
        declare: bool = True,
        bindings: Iterable[tuple[str, str]] = (),
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        dlq_sample_interval: float | None = 15.0,
        handler_timeout: float | None = 120.0,
    ) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        self.source = source
        self.queue_name = queue_name
        self.dlq_name = dlq_name(queue_name)
        self.handler = handler
        self.prefetch = prefetch
        self.retry_delays = tuple(retry_delays)
        self.retry_queues = [retry_queue_name(queue_name, d) for d in self.retry_delays]
        self.validate_payload = validate_payload
        self.declare = declare
        self.bindings = list(bindings)
        self.delivery_limit = delivery_limit
        self.dlq_sample_interval = dlq_sample_interval
        self.handler_timeout = handler_timeout
        self.channel: AbstractChannel | None = None
        self.publisher: Publisher | None = None
        self._own_channel = False
        self._queue: AbstractQueue | None = None
        self._tag: ConsumerTag | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._sampler: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._tag is not None

    async def start(self) -> None:
        if self._tag is not None:
            return
        if isinstance(self.source, AbstractConnection):
            self.channel = await self.source.channel(publisher_confirms=True, on_return_raises=True)
            self._own_channel = True
        else:
            self.channel = self.source
        await self.channel.set_qos(prefetch_count=self.prefetch)
        self.publisher = Publisher(self.channel)
        if self.declare:
            self._queue = await declare_consumer_queue(
                self.channel,
                self.queue_name,
                self.bindings,
                delivery_limit=self.delivery_limit,
                retry_delays=self.retry_delays,
            )
        else:
            self._queue = await self.channel.get_queue(self.queue_name, ensure=True)
        self._tag = await self._queue.consume(self._on_message, no_ack=False)
        if self.dlq_sample_interval and isinstance(self.source, AbstractConnection):
            self._sampler = asyncio.create_task(self._sample_dlq_depth())
        log.info("consuming %s (prefetch %d)", self.queue_name, self.prefetch)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop consuming, wait (up to ``grace`` seconds) for in-flight handlers, close our channel.
        Unacked messages go back to the queue when the channel closes."""
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if self._tag is not None and self._queue is not None:
            tag, self._tag = self._tag, None
            try:
                await self._queue.cancel(tag)
            except Exception:  # channel already gone
                log.debug("cancel of consumer %s failed", tag, exc_info=True)
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("%d handlers still running after %.0fs", self._inflight, grace)
        if self._own_channel and self.channel is not None and not self.channel.is_closed:
            await self.channel.close()

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- processing -----------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._inflight += 1
        self._idle.clear()
        try:
            await self._process(message)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    async def _process(self, message: AbstractIncomingMessage) -> None:
        queue = self.queue_name
        type_label = metrics.message_type_label(message.type)
        attempt = attempt_of(message)
        if message.redelivered:
            metrics.MESSAGES_REDELIVERED.labels(queue, type_label).inc()

        try:
            envelope = Envelope.from_message(message)
            type_label = metrics.message_type_label(envelope.type)
            if self.validate_payload:
                contracts.parse_payload(envelope.type, envelope.payload)
        except (EnvelopeError, contracts.ContractError) as exc:
            log.warning("poison message on %s (message id %s): %s", queue, message.message_id, exc)
            await self._dead_letter(message, "poison", str(exc), attempt, type_label)
            return

        with (
            bind_message_context(
                envelope.correlation_id, envelope.id, envelope.type, envelope.trace_id
            ),
            tracing.consumer_span(envelope, queue, attempt) as span,
        ):
            if span is not None and message.redelivered:
                span.set_attribute("messaging.rabbitmq.redelivered", True)
            await self._handle(message, envelope, attempt, type_label, span)

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        envelope: Envelope,
        attempt: int,
        type_label: str,
        span: Span | None,
    ) -> None:
        """Run the handler on ``envelope`` and ack, retry or dead-letter the delivery
        (inside its ``process`` span when tracing is on; ``span`` is None when off)."""
        queue = self.queue_name
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self.handler(envelope), self.handler_timeout)
        except PermanentError as exc:
            self._observe(started, type_label)
            log.warning("permanent failure of %s: %s", envelope.type, exc)
            tracing.set_outcome(span, "dead_lettered", f"permanent: {exc}")
            await self._dead_letter(message, "permanent", str(exc), attempt, type_label)
            return
        except Ignored as exc:
            self._observe(started, type_label)
            log.info("ignored %s %s: %s", envelope.type, envelope.id, exc)
            tracing.set_outcome(span, "ignored")
            await self._ack(message, envelope, queue, type_label, "ignored")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._observe(started, type_label)
            error = f"{type(exc).__name__}: {exc}"
            if attempt <= len(self.retry_delays):
                log.warning(
                    "attempt %d of %s failed, retrying in %s: %s",
                    attempt,
                    envelope.type,
                    format_delay(self.retry_delays[attempt - 1]),
                    error,
                    exc_info=not isinstance(exc, TransientError | TimeoutError | ConnectionError),
                )
                tracing.set_outcome(span, "retry", error)
                await self._retry(message, attempt, error, type_label)
            else:
                log.error(
                    "attempt %d of %s failed, retries exhausted: %s",
                    attempt,
                    envelope.type,
                    error,
                    exc_info=True,
                )
                tracing.set_outcome(span, "dead_lettered", f"exhausted: {error}")
                await self._dead_letter(message, "exhausted", error, attempt, type_label)
            return
        self._observe(started, type_label)
        tracing.set_outcome(span, "ok")
        await self._ack(message, envelope, queue, type_label, "ok")

    async def _ack(self, message: AbstractIncomingMessage, envelope: Envelope, queue: str,
                   type_label: str, outcome: str) -> None:
        try:
            await message.ack()
        except Exception:
            # The work is committed; the broker will redeliver and the inbox dedupes.
            log.warning("ack of %s failed; it will be redelivered", envelope.id)
            return
        metrics.MESSAGES_CONSUMED.labels(queue, type_label, outcome).inc()

    def _observe(self, started: float, type_label: str) -> None:
        metrics.MESSAGE_HANDLING_DURATION.labels(self.queue_name, type_label).observe(
            time.perf_counter() - started
        )

    async def _republish(
        self, message: AbstractIncomingMessage, target: str, headers: dict[str, Any]
    ) -> bool:
        assert self.publisher is not None
        try:
            await self.publisher.send_to_queue(copy_message(message, headers), target)
        except PublishFailed:
            log.exception("could not move message %s to %s", message.message_id, target)
            await asyncio.sleep(1.0)  # avoid a hot loop while the broker is unhappy
            try:
                await message.nack(requeue=True)
            except Exception:
                log.debug("nack failed", exc_info=True)
            return False
        try:
            await message.ack()
        except Exception:
            log.warning("ack after moving %s to %s failed", message.message_id, target)
        return True

    async def _retry(
        self, message: AbstractIncomingMessage, attempt: int, error: str, type_label: str
    ) -> None:
        target = self.retry_queues[attempt - 1]
        headers = clean_headers(message.headers)
        headers.update(
            {
                ATTEMPT_HEADER: attempt + 1,
                ERROR_HEADER: error[:_MAX_ERROR_LEN],
                ORIGINAL_QUEUE_HEADER: self.queue_name,
            }
        )
        if await self._republish(message, target, headers):
            tier = format_delay(self.retry_delays[attempt - 1])
            metrics.MESSAGES_RETRIED.labels(self.queue_name, type_label, tier).inc()
            metrics.MESSAGES_CONSUMED.labels(self.queue_name, type_label, "retry").inc()

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        reason: str,
        error: str,
        attempt: int,
        type_label: str,
    ) -> None:
        headers = clean_headers(message.headers)
        headers.update(
            {
                ATTEMPT_HEADER: attempt,
                ERROR_HEADER: error[:_MAX_ERROR_LEN],
                ORIGINAL_QUEUE_HEADER: self.queue_name,
                DEAD_LETTER_REASON_HEADER: reason,
                FAILED_AT_HEADER: _now(),
            }
        )
        if await self._republish(message, self.dlq_name, headers):
            metrics.MESSAGES_DEAD_LETTERED.labels(self.queue_name, type_label, reason).inc()
            metrics.MESSAGES_CONSUMED.labels(self.queue_name, type_label, "dead_lettered").inc()

    async def _sample_dlq_depth(self) -> None:
        """Publish the DLQ depth as a gauge (on a separate channel: a failed passive
        declare closes its channel)."""
        assert self.dlq_sample_interval is not None
        assert isinstance(self.source, AbstractConnection)
        channel: AbstractChannel | None = None
        try:
            while True:
                try:
                    if channel is None or channel.is_closed:
                        channel = await self.source.channel(publisher_confirms=False)
                    count = await queue_depth(channel, self.dlq_name)
                    metrics.DLQ_MESSAGES.labels(self.queue_name).set(count)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.debug("could not sample %s", self.dlq_name, exc_info=True)
                    channel = None
                await asyncio.sleep(self.dlq_sample_interval)
        finally:
            if channel is not None and not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()
