"""Analytics service, end to end: order events published to the fan-out become the read
model -- one row per order and its full history -- exactly once, in any order; events that
break the contract go to the dead-letter queue and change nothing."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from vyapaar_messaging import Envelope, contracts, dlq


def duplicates_counted() -> float:
    return REGISTRY.get_sample_value("vyapaar_analytics_events_duplicate_total") or 0.0


def new_order() -> str:
    return str(uuid.uuid4())


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


async def order(analytics: Any, uid: str) -> dict[str, Any]:
    response = await analytics.client.get(f"/api/v1/analytics/orders/{uid}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def rows_of(analytics: Any, uid: str) -> dict[str, Any]:
    """The order's rows in every table (its revenue day is its own in these specs)."""
    pool = analytics.pool
    day = await pool.fetchval(
        "SELECT (min(occurred_at) AT TIME ZONE 'UTC')::date FROM order_events WHERE uid = $1",
        uid)
    return {
        "order": dict(await pool.fetchrow("SELECT * FROM orders WHERE uid = $1", uid)),
        "history": [dict(r) for r in await pool.fetch(
            "SELECT * FROM order_events WHERE uid = $1 ORDER BY seq", uid)],
        "revenue": [dict(r) for r in await pool.fetch(
            "SELECT * FROM revenue_daily WHERE day = $1 ORDER BY currency", day)],
    }


async def test_an_orders_events_become_its_row_and_its_history(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    uid, events = new_order(), sagas.completed()
    before = bus.handled()
    await bus.publish(uid, events, subject="shop/order-42")
    await handled_all(len(events), before)

    body = await order(analytics, uid)
    history = body.pop("history")
    assert body == {
        "uid": uid, "namespace": "shop", "name": "order-42",
        "phase": "Completed", "reason": "OrderCompleted", "sagaVersion": 1,
        "total": 2599, "currency": "INR",
        "startedAt": body["startedAt"], "finishedAt": body["finishedAt"],
        "updatedAt": body["updatedAt"], "lastSeq": 7,
    }  # fmt: skip
    assert when(body["startedAt"]) == events[0].occurred_at
    assert when(body["finishedAt"]) == events[-1].occurred_at
    assert when(body["updatedAt"]) == events[-1].occurred_at
    assert [h["seq"] for h in history] == [1, 2, 3, 4, 5, 6, 7]
    assert [h["reason"] for h in history] == [e.reason for e in events]
    payment = history[2]
    assert payment["eventId"] == contracts.event_id(uid, 3)
    assert (payment["step"], payment["phase"], payment["severity"]) == ("pay", "Shipping",
                                                                         "Normal")
    assert when(payment["stepStartedAt"]) == events[2].step_started_at
    assert (payment["captured"], payment["refunded"], payment["announced"]) == (2599, 0, False)
    assert history[-1]["message"] == "Order completed"
    assert history[0]["step"] is None and history[0]["stepStartedAt"] is None


async def test_an_order_still_in_flight_has_no_finish_time(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    uid = new_order()
    before = bus.handled()
    await bus.publish(uid, sagas.completed(sagas.T0 + timedelta(days=1))[:3])
    await handled_all(3, before)

    body = await order(analytics, uid)
    assert (body["phase"], body["reason"], body["lastSeq"]) == ("Shipping", "PaymentCaptured", 3)
    assert body["startedAt"] is not None
    assert body["finishedAt"] is None


async def test_a_failed_order_finishes_when_it_reaches_failed(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    uid, events = new_order(), sagas.declined(sagas.T0 + timedelta(days=2))
    before = bus.handled()
    await bus.publish(uid, events)
    await handled_all(len(events), before)

    body = await order(analytics, uid)
    assert (body["phase"], body["reason"]) == ("Failed", "OrderFailed")
    assert when(body["finishedAt"]) == events[-1].occurred_at
    assert [h["severity"] for h in body["history"]].count("Warning") == 2


async def test_a_duplicate_or_redelivered_event_changes_nothing(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    uid, events = new_order(), sagas.refunded(sagas.T0 + timedelta(days=3))
    before = bus.handled()
    sent = await bus.publish(uid, events)
    await handled_all(len(events), before)
    applied = await rows_of(analytics, uid)
    duplicates = duplicates_counted()

    for message in [sent[2], sent[4], sent[-1], sent[2]]:  # the money moves, twice over
        await bus.send(message)
    await handled_all(len(events) + 4, before)
    assert await rows_of(analytics, uid) == applied
    assert duplicates_counted() == duplicates + 4

    # Once the inbox has forgotten them (retention), the history still knows the events.
    await analytics.pool.execute("DELETE FROM inbox WHERE correlation_id = $1", uid)
    for message in sent:
        await bus.send(message)
    await handled_all(2 * len(events) + 4, before)
    assert await rows_of(analytics, uid) == applied
    assert applied["revenue"] == [{"day": events[0].occurred_at.date(), "currency": "INR",
                                   "captured": 2599, "refunded": 2599}]


async def test_events_that_arrive_out_of_order_converge_to_the_same_read_model(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    in_order, shuffled = new_order(), new_order()
    start = sagas.T0 + timedelta(days=4)
    events = sagas.completed(start)
    scrambled = [*reversed(events[4:]), *random.sample(events[:4], 4), events[2], events[-1]]
    before = bus.handled()
    await bus.publish(in_order, events)
    await bus.publish(shuffled, scrambled)  # the last event first, duplicates among them
    await handled_all(len(events) + len(scrambled), before)

    def without_identity(rows: dict[str, Any]) -> dict[str, Any]:
        return {
            "order": {k: v for k, v in rows["order"].items() if k != "uid"},
            "history": [{k: v for k, v in h.items() if k not in ("uid", "event_id")}
                        for h in rows["history"]],
        }

    expected, converged = await rows_of(analytics, in_order), await rows_of(analytics, shuffled)
    assert without_identity(converged) == without_identity(expected)
    assert converged["order"]["started_at"] == start
    assert converged["order"]["finished_at"] == events[-1].occurred_at
    assert expected["revenue"] == [{"day": start.date(), "currency": "INR",
                                    "captured": 2 * 2599, "refunded": 0}]


async def test_a_late_early_event_fills_in_the_start_without_undoing_the_latest(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    uid, events = new_order(), sagas.completed(sagas.T0 + timedelta(days=5))
    before = bus.handled()
    await bus.publish(uid, events[1:])
    await handled_all(len(events) - 1, before)
    assert (await order(analytics, uid))["startedAt"] is None

    await bus.publish(uid, events[:1])
    await handled_all(len(events), before)
    body = await order(analytics, uid)
    assert when(body["startedAt"]) == events[0].occurred_at
    assert (body["phase"], body["lastSeq"]) == ("Completed", 7)


def schema_version_2(message: Any) -> Any:
    return message.model_copy(update={"payload": {**message.payload, "schemaVersion": 2}})


def without_phase(message: Any) -> Any:
    payload = {k: v for k, v in message.payload.items() if k != "phase"}
    return message.model_copy(update={"payload": payload})


def with_another_id(message: Any) -> Any:
    return message.model_copy(update={"id": str(uuid.uuid4())})


async def test_an_event_that_breaks_the_contract_is_dead_lettered_and_changes_nothing(
    analytics: Any, bus: Any, sagas: Any, amqp_connection: Any, wait_until: Any
) -> None:
    cases = {"poison": [schema_version_2, without_phase], "permanent": [with_another_id]}
    for reason, breakers in cases.items():
        for breaker in breakers:
            uid = new_order()
            bad = breaker(sagas.envelope(uid, sagas.completed()[0]))
            await bus.send(bad)

            async def dead_lettered(message_id: str = bad.id) -> bool:
                return await dlq.show_message(amqp_connection, bus.queue, message_id) is not None

            await wait_until(dead_lettered)
            shown = await dlq.show_message(amqp_connection, bus.queue, bad.id)
            assert shown is not None
            assert shown.reason == reason, (breaker.__name__, shown.error)
            response = await analytics.client.get(f"/api/v1/analytics/orders/{uid}")
            assert response.status == 404, breaker.__name__


async def test_a_command_on_the_event_fan_out_is_dead_lettered(
    analytics: Any, bus: Any, amqp_connection: Any, wait_until: Any
) -> None:
    uid = new_order()
    message = Envelope.create(contracts.ReleaseStock(), correlation_id=uid,
                              idempotency_key=contracts.idempotency_key(uid, "reserve"))
    await bus.send(message)

    async def dead_lettered() -> bool:
        return await dlq.show_message(amqp_connection, bus.queue, message.id) is not None

    await wait_until(dead_lettered)
    shown = await dlq.show_message(amqp_connection, bus.queue, message.id)
    assert shown is not None and shown.reason == "permanent"
    assert "not an OrderEvent" in (shown.error or "")


async def test_an_unknown_order_is_a_404_problem(analytics: Any) -> None:
    response = await analytics.client.get(f"/api/v1/analytics/orders/{new_order()}")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == 404
    assert problem["type"].endswith("order-not-found")
    assert problem["title"] == "Order not found"


async def test_applied_and_duplicate_events_are_counted_in_metrics(
    analytics: Any, bus: Any, sagas: Any, handled_all: Any
) -> None:
    uid = new_order()
    before = bus.handled()
    sent = await bus.publish(uid, sagas.completed(sagas.T0 + timedelta(days=6)))
    await bus.send(sent[0])
    await handled_all(len(sent) + 1, before)

    metrics = await (await analytics.client.get("/metrics")).text()
    assert 'vyapaar_analytics_events_applied_total{reason="OrderCompleted"}' in metrics
    assert 'vyapaar_analytics_events_applied_total{reason="PaymentCaptured"}' in metrics
    assert "vyapaar_analytics_events_duplicate_total" in metrics
    ready = await analytics.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": True, "broker": True, "consumer": True}
