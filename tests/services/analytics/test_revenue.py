"""Revenue: the money each event moved, per UTC day and currency, with totals per currency;
bad filters are refused with a problem. (This module's service starts with empty tables.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

D1, D2 = "2030-02-01", "2030-02-02"
IST = timezone(timedelta(hours=5, minutes=30))

INR_D1 = {"day": D1, "currency": "INR", "captured": 2599 + 1000, "refunded": 0, "net": 3599}
USD_D1 = {"day": D1, "currency": "USD", "captured": 1500, "refunded": 0, "net": 1500}
INR_D2 = {"day": D2, "currency": "INR", "captured": 700, "refunded": 1000, "net": -300}


@pytest.fixture(scope="module", autouse=True)
async def orders(analytics: Any, bus: Any, sagas: Any, wait_until: Any) -> None:
    """Four orders whose money moves on D1 and D2 (UTC)."""
    before = bus.handled()
    published = 0
    for events in (
        sagas.completed(datetime(2030, 2, 1, 10, 0, tzinfo=UTC), total=2599),
        sagas.completed(datetime(2030, 2, 1, 11, 0, tzinfo=UTC), total=1500, currency="USD"),
        # captured at 23:59:59 on D1, refunded at 00:00:01 on D2
        sagas.refunded(datetime(2030, 2, 1, 23, 59, 56, tzinfo=UTC), total=1000),
        # captured at 04:00:03 on 3 February in India: 22:30:03 UTC on D2
        sagas.completed(datetime(2030, 2, 3, 4, 0, tzinfo=IST), total=700),
    ):
        await bus.publish(str(uuid.uuid4()), events)
        published += len(events)

    async def applied() -> bool:
        return bool(bus.handled() - before >= published)

    await wait_until(applied, within=15)


async def revenue(analytics: Any, **params: str) -> dict[str, Any]:
    response = await analytics.client.get("/api/v1/analytics/revenue", params=params)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_revenue_is_per_utc_day_and_currency_with_totals(analytics: Any) -> None:
    body = await revenue(analytics)
    assert body["days"] == [INR_D1, USD_D1, INR_D2]
    assert body["totals"] == {
        "INR": {"captured": 4299, "refunded": 1000, "net": 3299},
        "USD": {"captured": 1500, "refunded": 0, "net": 1500},
    }
    assert (body["from"], body["to"], body["currency"]) == (None, None, None)


async def test_revenue_filters_by_inclusive_days_and_currency(analytics: Any) -> None:
    assert (await revenue(analytics, **{"from": D2}))["days"] == [INR_D2]
    assert (await revenue(analytics, to=D1))["days"] == [INR_D1, USD_D1]
    only_usd = await revenue(analytics, currency="USD")
    assert only_usd["days"] == [USD_D1]
    assert only_usd["totals"] == {"USD": {"captured": 1500, "refunded": 0, "net": 1500}}
    one_day = await revenue(analytics, **{"from": D1, "to": D1, "currency": "INR"})
    assert one_day["days"] == [INR_D1]
    assert (one_day["from"], one_day["to"], one_day["currency"]) == (D1, D1, "INR")
    nothing = await revenue(analytics, **{"from": "2031-01-01"})
    assert (nothing["days"], nothing["totals"]) == ([], {})


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from": "2030-13-01"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2030-2-1"}, "to"),
        ({"to": "2030-02-30"}, "to"),
        ({"currency": "inr"}, "currency"),
        ({"currency": "RUPEE"}, "currency"),
        ({"from": D2, "to": D1}, "from"),
    ],
)
async def test_a_bad_filter_is_a_400_problem(
    analytics: Any, params: dict[str, str], parameter: str
) -> None:
    response = await analytics.client.get("/api/v1/analytics/revenue", params=params)
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    problem = await response.json()
    assert problem["status"] == 400
    assert problem["type"].endswith("invalid-parameter")
    assert problem["parameter"] == parameter
    assert problem["detail"]
