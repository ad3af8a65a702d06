"""Fixtures of the analytics specs: the service in-process (one per module, so each module
has its own schema, AMQP prefix and event log), order events as the operator publishes them,
and ways to wait for and compare the read model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from vyapaar_messaging import Envelope, Publisher, Topology, contracts
from vyapaar_services.analytics.app import create_app

#: a day no other spec writes revenue for
T0 = datetime(2030, 1, 15, 9, 0, tzinfo=UTC)


def at(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


def event(seq: int, when: datetime, reason: str, phase: str, **fields: Any) -> contracts.OrderEvent:
    fields.setdefault("total", 2599)
    fields.setdefault("currency", "INR")
    fields.setdefault("announced", False)
    fields.setdefault("saga_version", 1)
    return contracts.OrderEvent(seq=seq, occurred_at=when, reason=reason, phase=phase, **fields)


def envelope(uid: str, order_event: contracts.OrderEvent, subject: str = "shop/order"
             ) -> Envelope:
    """The envelope the operator publishes for an event (the contract's id and key)."""
    created = Envelope.create(
        order_event,
        correlation_id=uid,
        subject=subject,
        idempotency_key=contracts.event_idempotency_key(uid, order_event.seq),
    )
    return created.model_copy(update={"id": contracts.event_id(uid, order_event.seq)})


class Sagas:
    """The events of typical orders, ``start`` being the first one's time; and the helpers
    to make others."""

    T0 = T0
    at = staticmethod(at)
    event = staticmethod(event)
    envelope = staticmethod(envelope)

    @staticmethod
    def completed(start: datetime = T0, total: int = 2599, currency: str = "INR"
                  ) -> list[contracts.OrderEvent]:
        money = {"total": total, "currency": currency}
        return [
            event(1, start, "SagaStarted", "Reserving", **money),
            event(2, at(start, 1), "StockReserved", "Paying", step="reserve",
                  step_started_at=start, **money),
            event(3, at(start, 3), "PaymentCaptured", "Shipping", step="pay",
                  step_started_at=at(start, 1), captured=total, **money),
            event(4, at(start, 4), "ShipmentCreated", "Completing", step="ship",
                  step_started_at=at(start, 3), **money),
            event(5, at(start, 5), "StockCommitted", "Completing", step="commit",
                  step_started_at=at(start, 4), **money),
            event(6, at(start, 5.5), "NotificationSent", "Completing", step="notify",
                  step_started_at=at(start, 4), **money),
            event(7, at(start, 6), "OrderCompleted", "Completed", announced=True,
                  message="Order completed", **money),
        ]

    @staticmethod
    def declined(start: datetime = T0, total: int = 2599, currency: str = "INR"
                 ) -> list[contracts.OrderEvent]:
        money = {"total": total, "currency": currency}
        warning = {"severity": "Warning", "announced": True}
        return [
            event(1, start, "SagaStarted", "Reserving", **money),
            event(2, at(start, 1), "StockReserved", "Paying", step="reserve",
                  step_started_at=start, **money),
            event(3, at(start, 5), "PaymentDeclined", "Compensating", step="pay",
                  step_started_at=at(start, 1), message="Payment declined: CARD_DECLINED",
                  **warning, **money),
            event(4, at(start, 5), "CompensationStarted", "Compensating", **warning, **money),
            event(5, at(start, 6), "StockReleased", "Compensating", step="reserve",
                  step_started_at=start, announced=True, **money),
            event(6, at(start, 7), "NotificationSent", "Compensating", step="notify-failed",
                  step_started_at=at(start, 6), **money),
            event(7, at(start, 7), "OrderFailed", "Failed", announced=True, **money),
        ]

    @staticmethod
    def refunded(start: datetime = T0, total: int = 2599, currency: str = "INR"
                 ) -> list[contracts.OrderEvent]:
        """Paid, then cancelled before shipping: the capture is refunded."""
        money = {"total": total, "currency": currency}
        return [
            event(1, start, "SagaStarted", "Reserving", **money),
            event(2, at(start, 1), "StockReserved", "Paying", step="reserve",
                  step_started_at=start, **money),
            event(3, at(start, 3), "PaymentCaptured", "Shipping", step="pay",
                  step_started_at=at(start, 1), captured=total, **money),
            event(4, at(start, 4), "CompensationStarted", "Compensating", severity="Warning",
                  announced=True, **money),
            event(5, at(start, 5), "PaymentRefunded", "Compensating", step="pay",
                  step_started_at=at(start, 1), refunded=total, announced=True, **money),
            event(6, at(start, 6), "StockReleased", "Compensating", step="reserve",
                  step_started_at=start, announced=True, **money),
            event(7, at(start, 7), "NotificationSent", "Compensating", step="notify-cancelled",
                  step_started_at=at(start, 6), **money),
            event(8, at(start, 7), "OrderCancelled", "Cancelled", announced=True, **money),
        ]


@pytest.fixture(scope="session")
def sagas() -> type[Sagas]:
    return Sagas


class EventBus:
    """Publishes order events to the (prefixed) fan-out, as the operator does."""

    def __init__(self, publisher: Publisher, topology: Topology) -> None:
        self.publisher = publisher
        self.topology = topology
        self.queue = topology.queue("analytics.order-events")

    async def send(self, message: Envelope) -> None:
        await self.publisher.publish(
            message, exchange=self.topology.order_events_exchange, routing_key=""
        )

    async def publish(self, uid: str, events: Sequence[contracts.OrderEvent],
                      subject: str = "shop/order") -> list[Envelope]:
        sent = [envelope(uid, e, subject) for e in events]
        for message in sent:
            await self.send(message)
        return sent

    def handled(self) -> float:
        """Events the service has handled and acked (applied or found already there)."""
        value = REGISTRY.get_sample_value(
            "vyapaar_messages_consumed_total",
            {"queue": self.queue, "type": "OrderEvent", "outcome": "ok"},
        )
        return value or 0.0


@pytest.fixture(scope="module")
def bus(publisher: Publisher, topology: Topology) -> EventBus:
    return EventBus(publisher, topology)


@pytest.fixture(scope="module")
async def analytics(service_runner: Any) -> Any:
    return await service_runner(create_app, "analytics")


@pytest.fixture
def handled_all(bus: EventBus, wait_until: Any) -> Callable[..., Awaitable[None]]:
    """``await handled_all(n, since=before)``: the service has acked ``n`` more events."""

    async def wait(count: int, since: float, within: float = 15.0) -> None:
        async def done() -> bool:
            return bus.handled() - since >= count

        await wait_until(done, within=within)

    return wait


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the read model, in key order."""
    queries = {
        "orders": "SELECT * FROM orders ORDER BY uid",
        "order_events": "SELECT * FROM order_events ORDER BY uid, seq",
        "revenue_daily": "SELECT * FROM revenue_daily ORDER BY day, currency",
    }
    return {table: [dict(r) for r in await pool.fetch(sql)] for table, sql in queries.items()}


@pytest.fixture(scope="session")
def read_model() -> Callable[[asyncpg.Pool], Awaitable[dict[str, list[dict[str, Any]]]]]:
    return snapshot
