"""Payment service: a ledger (charges, refunds) in minor units and a simulated processor.

Admin/read API:

* ``GET /api/v1/ledger?order=<uid>`` — ledger entries, payments and per-currency totals
  (``charged``, ``refunded``, ``net``) of one order, or of everything without ``order``
* ``GET /api/v1/processor?order=<uid>`` — what the simulated processor itself did (its own
  records, outside the service's transactions) and its per-currency totals (``captured``,
  ``refunded``): the outside view the ledger must match
* ``GET /admin/faults``, ``PUT /admin/faults {"errorRate": 0..1, "latencyMs": int,
  "lostCommitRate": 0..1}``
* ``/healthz``, ``/readyz``, ``/metrics``

Messages: consumes ``payment.commands`` (CheckFraud, ChargePayment, RefundPayment), replies on
``vyapaar.events`` as ``payment.<Reply>``. Env: see :mod:`vyapaar_services.common.config`
(``VYAPAAR_FAULT_ERROR_RATE``, ``VYAPAAR_FAULT_LATENCY_MS``).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from vyapaar_services.common import db
from vyapaar_services.common.config import Settings
from vyapaar_services.common.faults import FaultInjector, add_fault_routes
from vyapaar_services.common.http import json_response, query_param
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime, create_service_app
from vyapaar_services.payment import handlers, processor, store

__all__ = ["SERVICE", "create_app"]

SERVICE: Final = "payment"


async def get_ledger(request: web.Request) -> web.Response:
    order = query_param(request, "order")
    pool = request.app[RUNTIME_KEY].require_pool()
    return json_response(await store.ledger(pool, order))


async def get_processor(request: web.Request) -> web.Response:
    order = query_param(request, "order")
    pool = request.app[RUNTIME_KEY].require_pool()
    return json_response(await processor.operations(pool, order))


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env(SERVICE)
    faults = FaultInjector(SERVICE, settings.fault_error_rate, settings.fault_latency_ms)
    card_processor = processor.SimulatedProcessor(faults, settings.database_url,
                                                  settings.db_schema)
    runtime = ServiceRuntime(
        settings,
        migrations=db.load_migrations("vyapaar_services.payment.migrations", SERVICE),
        handlers=handlers.build_handlers(card_processor),
    )
    app = create_service_app(runtime)
    add_fault_routes(app, faults)
    app.router.add_get("/api/v1/ledger", get_ledger)
    app.router.add_get("/api/v1/processor", get_processor)

    async def close_processor(_app: web.Application) -> None:
        await card_processor.close()

    app.on_cleanup.append(close_processor)
    return app
