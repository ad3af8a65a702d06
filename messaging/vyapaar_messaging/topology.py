"""RabbitMQ topology of Vyapaar Nexus, declared idempotently from code.

Exchanges (durable):

* ``vyapaar.commands`` — direct; routing key = service name
  (``inventory|payment|shipping|notification``).
* ``vyapaar.events`` — topic; services publish replies as ``<service>.<ReplyType>``.
* ``vyapaar.order-events`` — fanout; the operator publishes domain events (what happened
  to each order, :class:`~vyapaar_messaging.contracts.OrderEvent`) after the status write
  that records them.

Queues (durable, quorum):

* ``<service>.commands`` bound to ``vyapaar.commands`` with key ``<service>``;
* ``operator.replies`` bound to ``vyapaar.events`` with ``#``;
* ``order-events.log`` — a *stream* bound to ``vyapaar.order-events``: the durable event
  log. It keeps every event (a stream is not drained by reading), so a read model can be
  rebuilt from scratch by reading it from offset 0, and the operator's events always have
  somewhere to go (publishes are mandatory) whoever subscribes;
* for every consumer queue ``Q``: ``Q.dlq`` (dead letters, quorum) and fixed-TTL delay
  queues ``Q.retry.<delay>`` (e.g. ``Q.retry.1s``) that dead-letter back to ``Q`` through
  the default exchange when the TTL expires. Delay queues are declared by the
  :class:`~vyapaar_messaging.consumer.Consumer` that uses them.

``Q`` itself dead-letters to ``Q.dlq`` after ``x-delivery-limit`` redeliveries, so a message
that crashes its consumer over and over cannot wedge the queue.

Everything can be prefixed (``Topology(prefix="t1.")``) so tests and parallel environments
can share one broker. :func:`declare_topology` declares the whole fixed topology (all
exchanges, every service's command queue and the operator's reply queue); any component
may call it at start, so nothing published before the consumer starts is unroutable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from vyapaar_messaging.contracts import SERVICES

__all__ = [
    "COMMANDS_EXCHANGE",
    "DEFAULT_DELIVERY_LIMIT",
    "DEFAULT_RETRY_DELAYS",
    "DEFAULT_TOPOLOGY",
    "EVENTS_EXCHANGE",
    "EVENT_LOG",
    "ORDER_EVENTS_EXCHANGE",
    "REPLIES_QUEUE",
    "Topology",
    "declare_consumer_queue",
    "declare_event_log",
    "declare_exchanges",
    "declare_retry_queues",
    "declare_topology",
    "delete_topology",
    "dlq_name",
    "format_delay",
    "queue_depth",
    "retry_queue_name",
]

COMMANDS_EXCHANGE: Final = "vyapaar.commands"
EVENTS_EXCHANGE: Final = "vyapaar.events"
REPLIES_QUEUE: Final = "operator.replies"
ORDER_EVENTS_EXCHANGE: Final = "vyapaar.order-events"
EVENT_LOG: Final = "order-events.log"
#: Delay tiers in seconds: attempt 1 fails -> wait 1 s, attempt 2 -> 5 s, attempt 3 -> 30 s,
#: attempt 4 fails -> DLQ.
DEFAULT_RETRY_DELAYS: Final[tuple[float, ...]] = (1.0, 5.0, 30.0)
#: Redeliveries (consumer crashes, channel losses) after which the broker dead-letters.
DEFAULT_DELIVERY_LIMIT: Final = 20


def format_delay(seconds: float) -> str:
    """``1.0 -> "1s"``, ``0.25 -> "250ms"``, ``90 -> "90s"``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError("retry delays must be positive")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def retry_queue_name(queue: str, delay: float) -> str:
    return f"{queue}.retry.{format_delay(delay)}"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


@dataclass(frozen=True, slots=True)
class Topology:
    """Names of the exchanges and queues, optionally prefixed."""

    prefix: str = ""

    @property
    def commands_exchange(self) -> str:
        return f"{self.prefix}{COMMANDS_EXCHANGE}"

    @property
    def events_exchange(self) -> str:
        return f"{self.prefix}{EVENTS_EXCHANGE}"

    @property
    def replies_queue(self) -> str:
        return f"{self.prefix}{REPLIES_QUEUE}"

    @property
    def order_events_exchange(self) -> str:
        return f"{self.prefix}{ORDER_EVENTS_EXCHANGE}"

    @property
    def event_log(self) -> str:
        return f"{self.prefix}{EVENT_LOG}"

    def command_queue(self, service: str) -> str:
        return f"{self.prefix}{service}.commands"

    def queue(self, name: str) -> str:
        """A prefixed queue name for another consumer (e.g. ``analytics.events``)."""
        return f"{self.prefix}{name}"

    def consumer_queues(self) -> list[str]:
        """Every consumer queue of the fixed topology."""
        return [*(self.command_queue(s) for s in SERVICES), self.replies_queue]


DEFAULT_TOPOLOGY: Final = Topology()


def _quorum_args(**extra: Any) -> dict[str, Any]:
    return {"x-queue-type": "quorum", **extra}


def _main_queue_args(queue: str, delivery_limit: int) -> dict[str, Any]:
    return _quorum_args(
        **{
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq_name(queue),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": delivery_limit,
        }
    )


async def declare_exchanges(
    channel: AbstractChannel, topology: Topology = DEFAULT_TOPOLOGY
) -> tuple[AbstractExchange, AbstractExchange]:
    """Declare ``vyapaar.commands`` (direct), ``vyapaar.events`` (topic) and
    ``vyapaar.order-events`` (fanout); return the first two."""
    commands = await channel.declare_exchange(
        topology.commands_exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    events = await channel.declare_exchange(
        topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await channel.declare_exchange(
        topology.order_events_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    return commands, events


async def declare_event_log(
    channel: AbstractChannel, topology: Topology = DEFAULT_TOPOLOGY
) -> AbstractQueue:
    """Declare the event log: a durable stream bound to ``vyapaar.order-events``.

    No retention limit is set here, so a read model can always be rebuilt from the first
    event; an operator who would rather cap the disk sets a RabbitMQ policy
    (``max-age`` / ``max-length-bytes``) on it, knowing a rebuild then starts later.
    """
    log_queue = await channel.declare_queue(
        topology.event_log, durable=True, arguments={"x-queue-type": "stream"}
    )
    await log_queue.bind(topology.order_events_exchange, "")
    return log_queue


async def declare_consumer_queue(
    channel: AbstractChannel,
    queue: str,
    bindings: Iterable[tuple[str, str]] = (),
    *,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    retry_delays: Sequence[float] = (),
) -> AbstractQueue:
    """Declare a durable quorum consumer queue, its ``.dlq`` and (optionally) its delay
    queues, and bind it: ``bindings`` = ``[(exchange name, routing key), ...]``.

    Use this for consumers outside the fixed topology (e.g. analytics binding
    ``vyapaar.events``)."""
    await channel.declare_queue(dlq_name(queue), durable=True, arguments=_quorum_args())
    declared = await channel.declare_queue(
        queue, durable=True, arguments=_main_queue_args(queue, delivery_limit)
    )
    for exchange, routing_key in bindings:
        await declared.bind(exchange, routing_key)
    if retry_delays:
        await declare_retry_queues(channel, queue, retry_delays)
    return declared


async def declare_retry_queues(
    channel: AbstractChannel, queue: str, delays: Sequence[float]
) -> list[str]:
    """Declare ``queue.retry.<delay>`` for each delay: quorum, ``x-message-ttl`` = delay,
    dead-lettering (at-least-once) back to ``queue`` through the default exchange."""
    names = []
    for delay in delays:
        name = retry_queue_name(queue, delay)
        await channel.declare_queue(
            name,
            durable=True,
            arguments=_quorum_args(
                **{
                    "x-message-ttl": round(delay * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": queue,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                }
            ),
        )
        names.append(name)
    return names


async def declare_topology(
    channel: AbstractChannel,
    topology: Topology = DEFAULT_TOPOLOGY,
    *,
    retry_delays: Sequence[float] = (),
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> Topology:
    """Declare the whole fixed topology (idempotent; safe to call from every component).

    Exchanges, ``<service>.commands`` for every service, ``operator.replies`` bound to
    ``#``, every ``.dlq``, the event log; and delay queues when ``retry_delays`` is given (consumers
    declare their own delay queues at start anyway).
    """
    await declare_exchanges(channel, topology)
    for service in SERVICES:
        await declare_consumer_queue(
            channel,
            topology.command_queue(service),
            [(topology.commands_exchange, service)],
            delivery_limit=delivery_limit,
            retry_delays=retry_delays,
        )
    await declare_consumer_queue(
        channel,
        topology.replies_queue,
        [(topology.events_exchange, "#")],
        delivery_limit=delivery_limit,
        retry_delays=retry_delays,
    )
    await declare_event_log(channel, topology)
    return topology


async def delete_topology(
    channel: AbstractChannel,
    topology: Topology,
    *,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    extra_queues: Iterable[str] = (),
) -> None:
    """Delete every queue and exchange of ``topology`` (for tests and teardown only)."""
    queues = [*topology.consumer_queues(), *extra_queues]
    for queue in queues:
        names = [queue, dlq_name(queue), *(retry_queue_name(queue, d) for d in retry_delays)]
        for name in names:
            await channel.queue_delete(name, if_unused=False, if_empty=False)
    await channel.queue_delete(topology.event_log, if_unused=False, if_empty=False)
    await channel.exchange_delete(topology.commands_exchange, if_unused=False)
    await channel.exchange_delete(topology.events_exchange, if_unused=False)
    await channel.exchange_delete(topology.order_events_exchange, if_unused=False)


async def queue_depth(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in ``queue`` (passive declare; raises — and closes the channel — if
    the queue does not exist, so use a scratch channel)."""
    underlay = await channel.get_underlay_channel()
    result = await underlay.queue_declare(queue, passive=True)
    return int(result.message_count or 0)
