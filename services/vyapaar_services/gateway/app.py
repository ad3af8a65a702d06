"""The gateway: the public HTTP API in front of the Order resources.

Storefront backends place and follow orders here without Kubernetes credentials:

* ``POST /api/v1/orders`` — the body is an Order ``spec`` (schema: the CRD's); optional
  ``Idempotency-Key`` (see :mod:`.idempotency`); 201 with the order
* ``GET /api/v1/orders?phase=&limit=&continue=`` — a page of the tenant's orders
* ``GET /api/v1/orders/{name}``, ``POST /api/v1/orders/{name}/cancel``
* ``GET /api/v1/orders/{name}/events`` — the order's transitions as server-sent events
* ``GET /orders/{name}`` — a page that shows an order live (token in the URL fragment)
* ``GET /openapi.json``, ``/healthz``, ``/readyz``, ``/metrics``

Every ``/api/`` request needs ``Authorization: Bearer <token>`` (:mod:`.tenants`) and
counts against the token's rate limit (:mod:`.ratelimit`); every error is
``application/problem+json``. A W3C ``traceparent`` sent with a create is kept on the
Order (annotation ``vyapaar.dev/traceparent``), so the saga's messages join the caller's
trace (with tracing on, the annotation names the request's own server span, a child of
the caller's); an order's ``traceId`` says which trace that is. Logs carry the order's uid
as the correlation id.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any, Final

from aiohttp import web
from kubernetes_asyncio import client
from redis.asyncio import Redis
from redis.exceptions import RedisError
from vyapaar_messaging import tracing
from vyapaar_messaging.envelope import TRACEPARENT_ANNOTATION, TRACEPARENT_RE, new_traceparent

from vyapaar_services.common.http import (
    Problem,
    create_base_app,
    json_response,
    query_param,
)
from vyapaar_services.common.logs import configure_logging, correlation_id_var
from vyapaar_services.common.redis_client import create_redis
from vyapaar_services.gateway import metrics
from vyapaar_services.gateway.config import GatewaySettings
from vyapaar_services.gateway.history import cancellation_refusal
from vyapaar_services.gateway.idempotency import (
    FINGERPRINT_ANNOTATION,
    IdempotencyKeys,
    fingerprint,
    order_name,
    parse_key,
    reused_key,
)
from vyapaar_services.gateway.openapi import PHASES, document
from vyapaar_services.gateway.orders import AlreadyExists, Orders, api_client, order_view
from vyapaar_services.gateway.ratelimit import RateLimiter
from vyapaar_services.gateway.schema import validate_spec
from vyapaar_services.gateway.stream import stream_order_events
from vyapaar_services.gateway.tenants import Tenant, TokenRegistry

__all__ = ["SERVICE", "Gateway", "create_app", "main"]

log = logging.getLogger(__name__)

SERVICE: Final = "gateway"
MAX_PAGE: Final = 500


class Gateway:
    """The gateway's connections: Kubernetes, Redis, the tokens, the rate limiter."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.tokens = TokenRegistry(settings.tokens_file)  # fails fast on a bad file
        self.limiter = RateLimiter(settings.redis_url, settings.rate_limit)
        self._redis: Redis | None = None
        self._api: client.ApiClient | None = None
        self._orders: Orders | None = None

    async def start(self) -> None:
        self._redis = create_redis(self.settings.redis_url, timeout=2.0)
        self._api = await api_client()
        self._orders = Orders(self._api)

    async def stop(self) -> None:
        if self._api is not None:
            await self._api.close()
        if self._redis is not None:
            await self._redis.aclose()

    @property
    def orders(self) -> Orders:
        assert self._orders is not None, "the gateway has not started"
        return self._orders

    @property
    def keys(self) -> IdempotencyKeys:
        assert self._redis is not None, "the gateway has not started"
        return IdempotencyKeys(self._redis, self.settings.idempotency_ttl_seconds)

    async def readiness(self) -> dict[str, bool]:
        checks = {"redis": False, "kubernetes": False}
        if self._redis is not None:
            with contextlib.suppress(Exception):
                checks["redis"] = bool(await self._redis.ping())
        if self._api is not None:
            with contextlib.suppress(Exception):
                await client.VersionApi(self._api).get_code(_request_timeout=2)
                checks["kubernetes"] = True
        return checks

    async def cleanup_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()


GATEWAY: Final = web.AppKey("vyapaar_gateway", Gateway)
TENANT: Final = web.RequestKey("vyapaar_tenant", Tenant)


# -- middleware: who is calling, and how often ------------------------------------------

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def tenant_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    gateway = request.app[GATEWAY]
    tenant = gateway.tokens.authenticate(request.headers.get("Authorization"))
    if tenant.only_order is not None:
        _check_link_scope(request, tenant.only_order)
    request[TENANT] = tenant
    try:
        limits = await gateway.limiter.check(tenant)
        response = await handler(request)
    except RedisError as exc:
        # Without Redis there is no rate limit to count and no idempotency key to claim. A
        # create that got as far as the apiserver is safe to retry with its key: the name
        # the key maps to makes the retry find it.
        log.warning("Redis unavailable during %s %s: %s", request.method, request.path, exc)
        raise Problem(503, "Service Unavailable", "Redis (rate limits, idempotency keys) is "
                      "unavailable; retry shortly.", type_="redis-unavailable",
                      headers={"Retry-After": "1"}) from None
    if not response.prepared:
        response.headers.update(limits)
    return response


_LINK_ROUTES: Final = ("/api/v1/orders/{name}", "/api/v1/orders/{name}/events")


def _check_link_scope(request: web.Request, order: str) -> None:
    """A read-only link reads its one order: the order and its event stream, nothing else."""
    resource = request.match_info.route.resource
    allowed = (request.method == "GET" and resource is not None
               and resource.canonical in _LINK_ROUTES
               and request.match_info.get("name") == order)
    if not allowed:
        raise Problem(403, "Forbidden", f"This token is a read-only link to order {order!r}: "
                      "it reads that order and its events, nothing else.",
                      type_="link-scope")


# -- handlers -------------------------------------------------------------------------------


def _not_found(name: str) -> Problem:
    return Problem(404, "Not Found", f"Order {name!r} does not exist.", type_="order-not-found")


def _view(request: web.Request, obj: dict[str, Any]) -> dict[str, Any]:
    """The order, with a read-only link to its page to hand the customer."""
    gateway, tenant = request.app[GATEWAY], request[TENANT]
    name = obj["metadata"]["name"]
    token = gateway.tokens.link_token(tenant, name, gateway.settings.link_ttl_seconds)
    return order_view(obj, link_token=token)


def _order_response(request: web.Request, obj: dict[str, Any], status: int = 200
                    ) -> web.Response:
    correlation_id_var.set(obj["metadata"]["uid"])
    response = json_response(_view(request, obj), status=status)
    response.headers["X-Correlation-Id"] = obj["metadata"]["uid"]
    return response


async def _read_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise Problem(415, "Unsupported Media Type", "Send the order as application/json.",
                      type_="unsupported-media-type")
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "Malformed JSON", f"The request body is not valid JSON: {exc}",
                      type_="invalid-json") from None


def _traceparent(request: web.Request) -> str:
    """The caller's trace continued (a new span of it), or a new trace. With tracing on,
    the span is this request's server span (itself a child of the caller's span), so the
    saga's spans hang from it."""
    match = TRACEPARENT_RE.match(request.headers.get("traceparent", "").strip())
    valid = match and match.group(1) != "0" * 32 and match.group(2) != "0" * 16
    caller = match.group(1) if match and valid else None
    if tracing.ENABLED:
        return tracing.current_traceparent(caller)
    return new_traceparent(caller)


async def create_order(request: web.Request) -> web.Response:
    gateway, tenant = request.app[GATEWAY], request[TENANT]
    key = parse_key(request.headers.get("Idempotency-Key"))
    spec = validate_spec(await _read_body(request))
    traceparent = _traceparent(request)
    annotations = {TRACEPARENT_ANNOTATION: traceparent}
    replayed = False
    if key is None:
        obj = await gateway.orders.create(tenant.namespace, spec, name=None,
                                          annotations=annotations)
    else:
        body_fingerprint = fingerprint(spec)
        annotations[FINGERPRINT_ANNOTATION] = body_fingerprint
        claim = await gateway.keys.claim(tenant.name, key, body_fingerprint)
        name = claim.replay_of or order_name(tenant.namespace, key)
        if claim.replay_of is not None:
            found = await gateway.orders.get(tenant.namespace, name)
            if found is None:
                raise Problem(410, "Gone", f"The order {name!r} this Idempotency-Key created "
                              "has since been deleted.", type_="order-deleted")
            obj, replayed = found, True
        else:
            try:
                obj = await gateway.orders.create(tenant.namespace, spec, name=name,
                                                  annotations=annotations)
            except AlreadyExists:
                # Redis forgot the key, the apiserver did not: the name is the key's.
                existing = await gateway.orders.get(tenant.namespace, name)
                annotated = ((existing or {}).get("metadata", {}).get("annotations") or {})
                if existing is None or annotated.get(FINGERPRINT_ANNOTATION) != body_fingerprint:
                    await gateway.keys.release(claim)
                    raise reused_key() from None
                obj, replayed = existing, True
            except BaseException:
                await gateway.keys.release(claim)
                raise
            await gateway.keys.record(claim, obj["metadata"]["name"])
    if replayed:
        metrics.IDEMPOTENT_REPLAYS.labels(tenant.name).inc()
    else:
        metrics.ORDERS_CREATED.labels(tenant.name).inc()
        correlation_id_var.set(obj["metadata"]["uid"])
        log.info("order %s/%s created", tenant.namespace, obj["metadata"]["name"],
                 extra={"tenant": tenant.name, "traceparent": traceparent,
                        "idempotencyKey": key is not None})
    response = _order_response(request, obj, status=201)
    response.headers["Location"] = f"/api/v1/orders/{obj['metadata']['name']}"
    if key is not None:
        response.headers["Idempotent-Replayed"] = "true" if replayed else "false"
    return response


async def get_order(request: web.Request) -> web.Response:
    gateway, tenant = request.app[GATEWAY], request[TENANT]
    name = request.match_info["name"]
    obj = await gateway.orders.get(tenant.namespace, name)
    if obj is None:
        raise _not_found(name)
    return _order_response(request, obj)


async def list_orders(request: web.Request) -> web.Response:
    gateway, tenant = request.app[GATEWAY], request[TENANT]
    phase = query_param(request, "phase")
    if phase is not None and phase not in PHASES:
        raise Problem(400, "Invalid phase", f"phase must be one of {', '.join(PHASES)}.",
                      type_="invalid-parameter")
    raw_limit = query_param(request, "limit") or "50"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise Problem(400, "Invalid limit", f"limit must be an integer from 1 to {MAX_PAGE}.",
                      type_="invalid-parameter")
    page = await gateway.orders.list(tenant.namespace, phase=phase, limit=int(raw_limit),
                                     continue_token=query_param(request, "continue"))
    return json_response({"items": [_view(request, o) for o in page.items],
                          "continue": page.continue_token})


async def cancel_order(request: web.Request) -> web.Response:
    """Ask the saga to cancel (``spec.cancel``); refused at once where it would be anyway."""
    gateway, tenant = request.app[GATEWAY], request[TENANT]
    name = request.match_info["name"]
    for _ in range(5):  # re-read on a concurrent change (the operator writes too)
        obj = await gateway.orders.get(tenant.namespace, name)
        if obj is None:
            raise _not_found(name)
        correlation_id_var.set(obj["metadata"]["uid"])
        refusal = cancellation_refusal(obj)
        if refusal is not None:
            kind, detail = refusal
            raise Problem(409, "Cannot cancel", detail, type_=kind,
                          phase=(obj.get("status") or {}).get("phase") or "Pending")
        if (obj.get("spec") or {}).get("cancel"):
            return _order_response(request, obj, status=202)
        patched = await gateway.orders.request_cancel(obj)
        if patched is not None:
            log.info("cancellation of %s/%s requested", tenant.namespace, name,
                     extra={"tenant": tenant.name})
            return _order_response(request, patched, status=202)
    raise Problem(503, "Service Unavailable", "The order kept changing; retry shortly.",
                  type_="conflict", headers={"Retry-After": "1"})


async def order_events(request: web.Request) -> web.StreamResponse:
    gateway, tenant = request.app[GATEWAY], request[TENANT]
    return await stream_order_events(request, gateway.orders, tenant.namespace,
                                     request.match_info["name"],
                                     gateway.settings.heartbeat_seconds)


async def openapi_document(_request: web.Request) -> web.Response:
    return json_response(document())


@cache
def _order_page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: only its own inline script and style run
    (by hash), it talks only to this origin, and no other site may frame it."""
    html = resources.files("vyapaar_services.gateway").joinpath("static", "order.html")
    text = html.read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'"
            for b in blocks)

    policy = (f"default-src 'none'; script-src {hashes('script')}; "
              f"style-src {hashes('style')}; connect-src 'self'; img-src 'self' data:; "
              "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
    return text, policy


async def order_page(_request: web.Request) -> web.Response:
    """The tracking page: static, so it needs no token; its script reads one from the URL's
    fragment (never sent to a server) and calls the API with it."""
    text, policy = _order_page()
    return web.Response(text=text, content_type="text/html",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": policy,
                                 "Referrer-Policy": "no-referrer",
                                 "X-Content-Type-Options": "nosniff"})


def create_app(settings: GatewaySettings | None = None) -> web.Application:
    settings = settings or GatewaySettings.from_env()
    gateway = Gateway(settings)
    app = create_base_app(SERVICE, gateway.readiness, client_max_size=settings.max_body_bytes,
                          middlewares=[tenant_middleware])
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.cleanup_ctx)
    app.router.add_post("/api/v1/orders", create_order)
    app.router.add_get("/api/v1/orders", list_orders)
    app.router.add_get("/api/v1/orders/{name}", get_order)
    app.router.add_post("/api/v1/orders/{name}/cancel", cancel_order)
    app.router.add_get("/api/v1/orders/{name}/events", order_events)
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/orders/{name}", order_page)
    return app


def main() -> None:
    """``python -m vyapaar_services.gateway``."""
    from vyapaar_services.common.config import ConfigError

    try:
        settings = GatewaySettings.from_env()
        configure_logging(SERVICE, settings.log_level)
        tracing.configure(SERVICE)  # before the app: it instruments aiohttp's server
        app = create_app(settings)
    except ConfigError as exc:
        raise SystemExit(f"vyapaar gateway: {exc}") from None
    log.info("starting %s on %s:%d", SERVICE, settings.http_host, settings.http_port)
    try:
        web.run_app(app, host=settings.http_host, port=settings.http_port, access_log=None,
                    print=None, shutdown_timeout=10.0)
    finally:
        tracing.shutdown()
