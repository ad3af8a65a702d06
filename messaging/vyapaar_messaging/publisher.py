"""Publishing with publisher confirms.

A :class:`Publisher` wraps a channel opened with ``publisher_confirms=True`` (use
:meth:`Publisher.open`). Every publish is ``mandatory`` and waits for the broker's confirm:
:meth:`Publisher.publish` returns only once RabbitMQ has taken responsibility for the
message, and raises :class:`PublishFailed` when it was nacked, unroutable, or the channel
was lost (the caller decides whether to retry; a lost confirm may mean a duplicate, which
receivers tolerate by design).
"""

from __future__ import annotations

import logging

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractMessage,
    HeadersType,
)

from vyapaar_messaging import contracts, metrics, tracing
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY, Topology

__all__ = ["PublishFailed", "Publisher"]

log = logging.getLogger(__name__)


class PublishFailed(Exception):
    """The broker did not confirm the message (nack, unroutable, channel or timeout)."""


class Publisher:
    """Publishes envelopes (or raw messages) and waits for the broker's confirm."""

    def __init__(
        self,
        channel: AbstractChannel,
        topology: Topology = DEFAULT_TOPOLOGY,
        *,
        confirm_timeout: float = 15.0,
    ) -> None:
        if not getattr(channel, "publisher_confirms", False):
            raise ValueError("Publisher needs a channel opened with publisher_confirms=True")
        self.channel = channel
        self.topology = topology
        self.confirm_timeout = confirm_timeout
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(
        cls,
        connection: AbstractConnection,
        topology: Topology = DEFAULT_TOPOLOGY,
        *,
        confirm_timeout: float = 15.0,
    ) -> Publisher:
        """Open a dedicated confirm channel on ``connection``."""
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, topology, confirm_timeout=confirm_timeout)

    async def close(self) -> None:
        if not self.channel.is_closed:
            await self.channel.close()

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self.channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self.channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish_message(
        self,
        message: AbstractMessage,
        *,
        exchange: str,
        routing_key: str,
        type_label: str | None = None,
    ) -> None:
        """Publish a raw AMQP message (mandatory) and wait for the confirm."""
        label = metrics.message_type_label(type_label or message.type)
        if tracing.ENABLED:
            # On the current span (the sender's `send`, the relay's `publish`, a consumer's
            # `process` when it moves a message to a retry queue or the DLQ).
            tracing.add_event(
                "publish",
                {
                    "messaging.destination.name": exchange or "(default)",
                    "messaging.rabbitmq.destination.routing_key": routing_key,
                    "messaging.message.id": message.message_id,
                },
            )
        try:
            target = await self._exchange(exchange)
            result = await target.publish(
                message, routing_key=routing_key, mandatory=True, timeout=self.confirm_timeout
            )
        except aiormq.exceptions.PublishError as exc:
            metrics.MESSAGES_PUBLISHED.labels(exchange, label, "failed").inc()
            raise PublishFailed(
                f"unroutable: exchange={exchange!r} routing_key={routing_key!r}"
            ) from exc
        except (
            TimeoutError,
            ConnectionError,
            RuntimeError,
            aiormq.exceptions.AMQPError,
        ) as exc:
            metrics.MESSAGES_PUBLISHED.labels(exchange, label, "failed").inc()
            raise PublishFailed(
                f"publish to {exchange!r}/{routing_key!r} not confirmed: {exc!r}"
            ) from exc
        if not isinstance(result, aiormq.spec.Basic.Ack):
            # A Basic.Return delivered without on_return_raises, or no confirm at all.
            metrics.MESSAGES_PUBLISHED.labels(exchange, label, "failed").inc()
            raise PublishFailed(
                f"publish to {exchange!r}/{routing_key!r} not acknowledged: {result!r}"
            )
        metrics.MESSAGES_PUBLISHED.labels(exchange, label, "confirmed").inc()

    async def publish(
        self,
        envelope: Envelope,
        *,
        exchange: str,
        routing_key: str,
        headers: HeadersType | None = None,
    ) -> None:
        """Publish an envelope as a persistent message and wait for the confirm."""
        await self.publish_message(
            envelope.to_message(headers),
            exchange=exchange,
            routing_key=routing_key,
            type_label=envelope.type,
        )

    async def send_command(self, envelope: Envelope, *, service: str | None = None) -> None:
        """Publish a command to ``vyapaar.commands`` with routing key = its service."""
        target = service or contracts.service_for(envelope.type)
        await self.publish(envelope, exchange=self.topology.commands_exchange, routing_key=target)

    async def publish_reply(self, envelope: Envelope, *, service: str | None = None) -> None:
        """Publish a reply to ``vyapaar.events`` with routing key ``<service>.<type>``."""
        source = service or contracts.service_for(envelope.type)
        await self.publish(
            envelope,
            exchange=self.topology.events_exchange,
            routing_key=contracts.reply_routing_key(source, envelope.type),
        )

    async def publish_event(self, envelope: Envelope) -> None:
        """Publish a domain event to the fan-out ``vyapaar.order-events``."""
        await self.publish(envelope, exchange=self.topology.order_events_exchange, routing_key="")

    async def send_to_queue(self, message: aio_pika.Message, queue: str) -> None:
        """Publish a raw message straight to ``queue`` through the default exchange."""
        await self.publish_message(message, exchange="", routing_key=queue)
