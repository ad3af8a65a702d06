"""Step outcomes: per step, how often it succeeded, failed and was compensated, how long its
forward outcomes took, and why it failed. (This module's service starts with empty tables.)

The orders: one completed, one declined by the payment (its stock released), and one with a
breaker-held payment and a shipment retried after no reply."""

from __future__ import annotations

import uuid
from typing import Any

import pytest


@pytest.fixture(scope="module", autouse=True)
async def orders(analytics: Any, bus: Any, sagas: Any, wait_until: Any) -> None:
    start = sagas.T0
    slow = [
        sagas.event(1, start, "CommandHeld", "Paying", step="pay"),  # no step start: no duration
        sagas.event(2, sagas.at(start, 40), "Retrying", "Shipping", step="ship",
                    step_started_at=sagas.at(start, 10), severity="Warning", announced=True),
    ]
    before = bus.handled()
    for events in (sagas.completed(start), sagas.declined(start), slow):
        await bus.publish(str(uuid.uuid4()), events)

    async def applied() -> bool:
        return bool(bus.handled() - before >= 7 + 7 + 2)

    await wait_until(applied, within=15)


def timing(count: int, avg: float, p50: float, p95: float) -> Any:
    return pytest.approx({"count": count, "avgSeconds": avg, "p50Seconds": p50,
                          "p95Seconds": p95})


async def test_each_step_counts_its_outcomes_durations_and_failure_reasons(
    analytics: Any,
) -> None:
    response = await analytics.client.get("/api/v1/analytics/steps")
    assert response.status == 200
    steps = {s.pop("step"): s for s in (await response.json())["steps"]}

    assert list(steps) == sorted(steps)
    assert steps["reserve"] == {  # reserved twice (1 s each), released once
        "succeeded": 2, "failed": 0, "compensated": 1,
        "duration": timing(2, 1.0, 1.0, 1.0), "failureReasons": [],
    }  # fmt: skip
    assert steps["pay"] == {  # captured after 2 s, declined after 4 s; the hold counts nowhere
        "succeeded": 1, "failed": 1, "compensated": 0,
        "duration": timing(2, 3.0, 3.0, 3.9),
        "failureReasons": [{"reason": "PaymentDeclined", "count": 1}],
    }  # fmt: skip
    assert steps["ship"] == {  # a retry is a failure, but not an outcome with a duration
        "succeeded": 1, "failed": 1, "compensated": 0,
        "duration": timing(1, 1.0, 1.0, 1.0),
        "failureReasons": [{"reason": "Retrying", "count": 1}],
    }  # fmt: skip
    assert steps["commit"]["duration"] == timing(1, 1.0, 1.0, 1.0)
    assert steps["notify"]["duration"] == timing(1, 1.5, 1.5, 1.5)
    assert steps["notify-failed"]["succeeded"] == 1
    assert set(steps) == {"reserve", "pay", "ship", "commit", "notify", "notify-failed"}


async def test_the_step_outcomes_view_has_every_step_event_and_its_duration(
    analytics: Any,
) -> None:
    rows = await analytics.pool.fetch(
        """SELECT reason, severity, duration_seconds FROM step_outcomes
           WHERE step = 'pay' ORDER BY occurred_at, reason"""
    )
    assert [tuple(r) for r in rows] == [
        ("CommandHeld", "Normal", None),
        ("PaymentCaptured", "Normal", 2.0),
        ("PaymentDeclined", "Warning", 4.0),
    ]
    steps = await analytics.pool.fetchval("SELECT count(*) FROM step_outcomes")
    events = await analytics.pool.fetchval(
        "SELECT count(*) FROM order_events WHERE step IS NOT NULL")
    assert steps == events == 5 + 4 + 2
