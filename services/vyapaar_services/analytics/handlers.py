"""Applying an order event to the read model: exactly once, in any order.

:func:`apply_event` runs in ONE transaction: record the envelope id in the inbox (a
redelivery stops here), take the order's lock (one order's events are applied one at a
time, so reading its history back is safe), add the history row (an event seen under
another envelope id -- the inbox pruned by retention, say -- stops here), then add its
money to the day's revenue and fold it into the order's row. The live consumer and the
rebuild (:mod:`.rebuild`) both apply events through it.

An envelope that is not a valid :class:`~vyapaar_messaging.contracts.OrderEvent` (another
type, an invalid payload, an unknown ``schemaVersion``, an id that is not
``event_id(uid, seq)``) raises :class:`~vyapaar_messaging.PermanentError`: the consumer
dead-letters it.
"""

from __future__ import annotations

import uuid
from typing import Final, Literal

import asyncpg
from vyapaar_messaging import Envelope, PermanentError, contracts
from vyapaar_messaging import metrics as messaging_metrics

from vyapaar_services.analytics import SERVICE, metrics, store
from vyapaar_services.analytics.readmodel import split_subject
from vyapaar_services.common import inbox
from vyapaar_services.common import metrics as service_metrics
from vyapaar_services.common.service import ServiceRuntime, Subscription

__all__ = ["EVENTS_QUEUE", "EVENT_TYPE", "Applied", "apply_event", "parse_event", "subscribe"]

EVENT_TYPE: Final = "OrderEvent"
EVENTS_QUEUE: Final = "analytics.order-events"
"""The service's queue (prefixed by ``VYAPAAR_AMQP_PREFIX``), bound to the order-events
fan-out beside the event log."""

#: ``applied``: new to the read model; ``duplicate``: it already had the event
Applied = Literal["applied", "duplicate"]


def parse_event(envelope: Envelope) -> contracts.OrderEvent:
    """The envelope's event, or :class:`PermanentError` if it breaks the contract."""
    if envelope.type != EVENT_TYPE:
        raise PermanentError(f"{envelope.type!r} is not an {EVENT_TYPE}")
    try:
        event = contracts.parse_payload(EVENT_TYPE, envelope.payload)
    except contracts.ContractError as exc:
        raise PermanentError(str(exc)) from exc
    assert isinstance(event, contracts.OrderEvent)
    expected = contracts.event_id(envelope.correlation_id, event.seq)
    if uuid.UUID(envelope.id) != uuid.UUID(expected):
        raise PermanentError(
            f"envelope id {envelope.id} is not event_id(uid, seq) = {expected}: "
            "an event must keep its id whoever publishes it again"
        )
    return event


async def apply_event(pool: asyncpg.Pool, envelope: Envelope) -> Applied:
    """Apply one event (see the module docstring); counted after the commit."""
    event = parse_event(envelope)
    uid = envelope.correlation_id
    outcome: Applied = "duplicate"
    async with pool.acquire() as conn, conn.transaction():
        if await inbox.record_message(conn, envelope):
            await inbox.lock_key(conn, f"analytics-order:{uid}")
            if await store.insert_event(conn, uid, envelope.id, event):
                await store.add_revenue(conn, event)
                namespace, name = split_subject(envelope.subject)
                await store.upsert_order(conn, uid, namespace, name, event)
                outcome = "applied"
        else:
            service_metrics.INBOX_DUPLICATES.labels(SERVICE, EVENT_TYPE).inc()
    if outcome == "applied":
        metrics.EVENTS_APPLIED.labels(metrics.reason_label(event.reason)).inc()
    else:
        metrics.EVENTS_DUPLICATE.inc()
    return outcome


def subscribe(runtime: ServiceRuntime) -> Subscription:
    """The service's subscription: :data:`EVENTS_QUEUE` bound to the order-events fan-out."""
    pool = runtime.require_started_pool()
    queue = runtime.topology.queue(EVENTS_QUEUE)
    messaging_metrics.init_consumer(queue, [EVENT_TYPE])
    service_metrics.INBOX_DUPLICATES.labels(runtime.service, EVENT_TYPE)

    async def handle(envelope: Envelope) -> None:
        await apply_event(pool, envelope)

    return Subscription(queue, handle, [(runtime.topology.order_events_exchange, "")])
