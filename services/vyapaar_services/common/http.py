"""aiohttp scaffolding shared by every service.

:func:`create_base_app` returns an application with

* ``GET /healthz`` — the process is alive (always 200),
* ``GET /readyz`` — 200 when the readiness callback reports every check ok, else 503,
* ``GET /metrics`` — Prometheus exposition of the default registry,
* middlewares: correlation id (``X-Correlation-Id`` in and out, bound to the log context),
  RED metrics by route template, and errors as ``application/problem+json`` (RFC 9457:
  ``type``, ``title``, ``status``, ``detail``, ``instance`` + extensions).

Handlers raise :class:`Problem` (or aiohttp's ``HTTPException``) for client errors, and use
:func:`read_json` to parse a body into a pydantic model (400 for malformed JSON, 422 with an
``errors`` list for a body that does not validate).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, ValidationError

from vyapaar_services.common import metrics
from vyapaar_services.common.logs import correlation_id_var

__all__ = [
    "PROBLEM_CONTENT_TYPE",
    "SERVICE_KEY",
    "Problem",
    "ReadinessCheck",
    "create_base_app",
    "dumps",
    "json_response",
    "problem_response",
    "query_param",
    "read_json",
]

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
PROBLEM_BASE: Final = "urn:vyapaar:problem:"
SERVICE_KEY: Final = web.AppKey("vyapaar_service", str)

M = TypeVar("M", bound=BaseModel)
#: returns ``{check name: ok}``
ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, mode="json")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(data), status=status, content_type="application/json")


class Problem(Exception):
    """An RFC 9457 problem; raise from a handler. ``type_`` is a slug or a URI."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ if (":" in type_) else PROBLEM_BASE + type_
        self.headers = dict(headers or {})
        """Response headers that go with it (``Retry-After``, ``WWW-Authenticate``)."""
        self.extensions = extensions


def problem_response(problem: Problem, instance: str | None = None) -> web.Response:
    body: dict[str, Any] = {"type": problem.type, "title": problem.title, "status": problem.status}
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    body.update(problem.extensions)
    return web.Response(text=dumps(body), status=problem.status, content_type=PROBLEM_CONTENT_TYPE,
                        headers=problem.headers)


async def read_json(request: web.Request, model: type[M]) -> M:
    """Parse the JSON body into ``model`` or raise a 400/422 :class:`Problem`."""
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(
            400, "Malformed JSON", f"The request body is not valid JSON: {exc}",
            type_="invalid-json",
        ) from None  # fmt: skip
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"]) or "<body>", "message": err["msg"]}
            for err in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise Problem(
            422, "Invalid request body", detail, type_="validation-error", errors=errors
        ) from None


def query_param(request: web.Request, name: str, *, required: bool = False) -> str | None:
    value = request.query.get(name)
    if value is not None:
        value = value.strip()
    if required and not value:
        raise Problem(
            400, "Missing query parameter", f"The query parameter {name!r} is required.",
            type_="missing-parameter",
        )  # fmt: skip
    return value or None


def _route_label(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return str(resource.canonical)


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]



@web.middleware
async def correlation_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    cid = request.headers.get("X-Correlation-Id") or str(uuid.uuid4())
    token = correlation_id_var.set(cid[:200])
    try:
        response = await handler(request)
    finally:
        correlation_id_var.reset(token)
    # A handler that learnt the order's uid answers with that as the correlation id.
    response.headers.setdefault("X-Correlation-Id", cid[:200])
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    service = request.app.get(SERVICE_KEY, "unknown")
    route = _route_label(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.HTTP_REQUESTS.labels(service, request.method, route, str(status)).inc()
        metrics.HTTP_REQUEST_DURATION.labels(service, request.method, route).observe(
            time.perf_counter() - started
        )


@web.middleware
async def problem_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem, request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        response = problem_response(Problem(exc.status, exc.reason, detail), request.path)
        for header in ("Allow", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(
            Problem(500, "Internal Server Error", "An unexpected error occurred."),
            request.path,
        )


def create_base_app(
    service: str,
    readiness: ReadinessCheck,
    *,
    client_max_size: int = 1024 * 1024,
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """``middlewares`` run innermost, after the correlation, metrics and problem ones."""
    app = web.Application(
        middlewares=[correlation_middleware, metrics_middleware, problem_middleware,
                     *middlewares],
        client_max_size=client_max_size,
    )
    app[SERVICE_KEY] = service

    async def healthz(_request: web.Request) -> web.Response:
        return json_response({"status": "ok", "service": service})

    async def readyz(_request: web.Request) -> web.Response:
        try:
            checks = dict(await readiness())
        except Exception as exc:
            log.warning("readiness check failed: %s", exc)
            checks = {"error": False}
        ok = bool(checks) and all(checks.values())
        return json_response(
            {"status": "ready" if ok else "not ready", "service": service, "checks": checks},
            status=200 if ok else 503,
        )

    async def metrics_endpoint(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app
