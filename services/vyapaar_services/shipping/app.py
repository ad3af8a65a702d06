"""Shipping service: shipments with tracking ids, a simulated carrier with deterministic
rejection of undeliverable addresses, and fault injection.

Admin/read API:

* ``GET /api/v1/shipments?order=<uid>`` — shipments (of one order, or the latest)
* ``GET /admin/faults``, ``PUT /admin/faults {"errorRate": 0..1, "latencyMs": int}``
* ``/healthz``, ``/readyz``, ``/metrics``

Messages: consumes ``shipping.commands`` (CreateShipment, VoidShipment), replies on
``vyapaar.events`` as ``shipping.<Reply>``. Env: see :mod:`vyapaar_services.common.config`.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from vyapaar_services.common import db
from vyapaar_services.common.config import Settings
from vyapaar_services.common.faults import FaultInjector, add_fault_routes
from vyapaar_services.common.http import json_response, query_param
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime, create_service_app
from vyapaar_services.shipping import handlers, store

__all__ = ["SERVICE", "create_app"]

SERVICE: Final = "shipping"


async def list_shipments(request: web.Request) -> web.Response:
    order = query_param(request, "order")
    pool = request.app[RUNTIME_KEY].require_pool()
    return json_response({"items": await store.list_shipments(pool, order)})


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env(SERVICE)
    faults = FaultInjector(SERVICE, settings.fault_error_rate, settings.fault_latency_ms)
    runtime = ServiceRuntime(
        settings,
        migrations=db.load_migrations("vyapaar_services.shipping.migrations", SERVICE),
        handlers=handlers.build_handlers(faults),
    )
    app = create_service_app(runtime)
    add_fault_routes(app, faults)
    app.router.add_get("/api/v1/shipments", list_shipments)
    return app
