"""Analytics service: a read model of orders (history, revenue, step outcomes) built from the
operator's :class:`~vyapaar_messaging.contracts.OrderEvent`\\ s.

Read API (amounts in minor units; errors are problem+json):

* ``GET /api/v1/analytics/orders/{uid}`` — the order's row and its full history by seq
  (404 when no event of it has been applied)
* ``GET /api/v1/analytics/revenue?from=YYYY-MM-DD&to=YYYY-MM-DD&currency=XXX`` — captured,
  refunded and net per UTC day and currency, and totals per currency; every parameter is
  optional, the bounds are inclusive (400 for a bad date or currency, or from after to)
* ``GET /api/v1/analytics/steps`` — per step: succeeded, failed and compensated events,
  durations of forward outcomes (avg, p50, p95) and failure reasons by count; the
  definitions are in :mod:`vyapaar_services.analytics.readmodel`
* ``/healthz``, ``/readyz``, ``/metrics``

Messages: consumes ``analytics.order-events`` (bound to the ``vyapaar.order-events``
fan-out; retry tiers and a DLQ like every consumer) and publishes nothing: its outbox relay
idles, and is kept because it also prunes the inbox after the retention period. Env: see
:mod:`vyapaar_services.common.config`. ``python -m vyapaar_services.analytics rebuild``
rebuilds the read model from the event log (:mod:`.rebuild`).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Final

from aiohttp import web

from vyapaar_services.analytics import SERVICE, handlers, store
from vyapaar_services.analytics.readmodel import OutcomeReasons, summarise_steps
from vyapaar_services.common import db
from vyapaar_services.common.config import Settings
from vyapaar_services.common.http import Problem, json_response, query_param
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime, create_service_app

__all__ = ["SERVICE", "create_app", "migrations"]

_DAY_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY_RE: Final = re.compile(r"^[A-Z]{3}$")
OUTCOME_REASONS: Final = OutcomeReasons.from_contracts()


def migrations() -> list[db.Migration]:
    return db.load_migrations("vyapaar_services.analytics.migrations", SERVICE)


def _invalid(name: str, detail: str) -> Problem:
    return Problem(400, "Invalid query parameter", detail, type_="invalid-parameter",
                   parameter=name)


def day_param(request: web.Request, name: str) -> date | None:
    value = query_param(request, name)
    if value is None:
        return None
    try:
        if not _DAY_RE.match(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(name, f"{name}={value!r} is not a date YYYY-MM-DD.") from None


def currency_param(request: web.Request) -> str | None:
    value = query_param(request, "currency")
    if value is not None and not _CURRENCY_RE.match(value):
        raise _invalid("currency", f"currency={value!r} is not an ISO 4217 code (e.g. INR).")
    return value


async def get_order(request: web.Request) -> web.Response:
    uid = request.match_info["uid"]
    pool = request.app[RUNTIME_KEY].require_pool()
    order = await store.get_order(pool, uid)
    if order is None:
        raise Problem(404, "Order not found", f"No event of order {uid} has been applied.",
                      type_="order-not-found")
    order["history"] = await store.order_history(pool, uid)
    return json_response(order)


async def get_revenue(request: web.Request) -> web.Response:
    first, last = day_param(request, "from"), day_param(request, "to")
    if first is not None and last is not None and first > last:
        raise _invalid("from", f"from={first} is after to={last}.")
    currency = currency_param(request)
    pool = request.app[RUNTIME_KEY].require_pool()
    days = await store.revenue(pool, first, last, currency)
    totals: dict[str, dict[str, int]] = {}
    for row in days:
        total = totals.setdefault(row["currency"], {"captured": 0, "refunded": 0, "net": 0})
        for key in total:
            total[key] += row[key]
    return json_response(
        {"from": first, "to": last, "currency": currency, "days": days, "totals": totals}
    )


async def get_steps(request: web.Request) -> web.Response:
    pool = request.app[RUNTIME_KEY].require_pool()
    counts = await store.step_counts(pool)
    durations = await store.step_durations(pool, OUTCOME_REASONS)
    return json_response({"steps": summarise_steps(counts, durations, OUTCOME_REASONS)})


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env(SERVICE)
    runtime = ServiceRuntime(settings, migrations=migrations(), subscribe=handlers.subscribe)
    app = create_service_app(runtime)
    app.router.add_get("/api/v1/analytics/orders/{uid}", get_order)
    app.router.add_get("/api/v1/analytics/revenue", get_revenue)
    app.router.add_get("/api/v1/analytics/steps", get_steps)
    return app
