"""Inventory service: stock per SKU, reservations (held -> committed | released).

Admin/read API:

* ``GET /api/v1/stock`` — every SKU with available/held/committed/total
* ``GET /api/v1/stock/{sku}`` — one SKU (404 problem if unknown)
* ``PUT /api/v1/stock/{sku}`` ``{"available": int >= 0}`` — set the available count
  (seeding/restocking; 201 when the SKU is new)
* ``GET /api/v1/reservations?order=<uid>`` — reservations (of one order, or the latest)
* ``/healthz``, ``/readyz``, ``/metrics``

Messages: consumes ``inventory.commands`` (ReserveStock, ReleaseStock, CommitStock), replies
on ``vyapaar.events`` as ``inventory.<Reply>``. Env: see :mod:`vyapaar_services.common.config`
(``VYAPAAR_REDIS_URL`` enables the best-effort hot-SKU locks).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from vyapaar_services.common import db
from vyapaar_services.common.config import Settings
from vyapaar_services.common.http import Problem, json_response, query_param, read_json
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime, create_service_app
from vyapaar_services.inventory import handlers, store

__all__ = ["SERVICE", "create_app"]

SERVICE: Final = "inventory"
_SKU_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


class SetStock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    available: Annotated[StrictInt, Field(ge=0, le=1_000_000_000)]


def _sku(request: web.Request) -> str:
    sku = request.match_info["sku"]
    if not _SKU_RE.match(sku):
        raise Problem(
            400, "Invalid SKU",
            "A SKU is 1-100 characters: letters, digits, '.', '_', ':' or '-'.",
            type_="invalid-sku",
        )  # fmt: skip
    return sku


async def list_stock(request: web.Request) -> web.Response:
    pool = request.app[RUNTIME_KEY].require_pool()
    return json_response({"items": await store.list_stock(pool)})


async def get_stock(request: web.Request) -> web.Response:
    sku = _sku(request)
    pool = request.app[RUNTIME_KEY].require_pool()
    stock = await store.get_stock(pool, sku)
    if stock is None:
        raise Problem(404, "Unknown SKU", f"No stock record for SKU {sku!r}.", type_="unknown-sku")
    return json_response(stock)


async def put_stock(request: web.Request) -> web.Response:
    sku = _sku(request)
    body = await read_json(request, SetStock)
    pool = request.app[RUNTIME_KEY].require_pool()
    stock, created = await store.set_available(pool, sku, body.available)
    return json_response(stock, status=201 if created else 200)


async def list_reservations(request: web.Request) -> web.Response:
    order = query_param(request, "order")
    pool = request.app[RUNTIME_KEY].require_pool()
    return json_response({"items": await store.list_reservations(pool, order)})


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env(SERVICE)
    runtime = ServiceRuntime(
        settings,
        migrations=db.load_migrations("vyapaar_services.inventory.migrations", SERVICE),
        handlers=handlers.build_handlers(),
        around=handlers.sku_locks,
    )
    app = create_service_app(runtime)
    app.router.add_get("/api/v1/stock", list_stock)
    app.router.add_get("/api/v1/stock/{sku}", get_stock)
    app.router.add_put("/api/v1/stock/{sku}", put_stock)
    app.router.add_get("/api/v1/reservations", list_reservations)
    return app
