"""HTTP scaffolding: health, readiness, metrics, problem+json errors, correlation ids."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel
from vyapaar_services.common.http import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    create_base_app,
    json_response,
    read_json,
)
from vyapaar_services.common.logs import JsonFormatter, correlation_id_var


class Body(BaseModel):
    count: int


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    state = {"ready": False}

    async def readiness() -> Mapping[str, bool]:
        return {"database": state["ready"], "broker": True}

    app = create_base_app("testsvc", readiness)

    async def echo(request: web.Request) -> web.Response:
        body = await read_json(request, Body)
        return json_response({"count": body.count, "cid": correlation_id_var.get()})

    async def teapot(_request: web.Request) -> web.Response:
        raise Problem(418, "I'm a teapot", "Short and stout.", type_="teapot", spout=1)

    async def crash(_request: web.Request) -> web.Response:
        raise ZeroDivisionError("secret internals")

    async def make_ready(_request: web.Request) -> web.Response:
        state["ready"] = True
        return json_response({})

    app.router.add_post("/echo", echo)
    app.router.add_get("/teapot", teapot)
    app.router.add_get("/crash", crash)
    app.router.add_post("/ready", make_ready)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_healthz_is_always_ok(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_readyz_reports_each_check(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["checks"] == {"database": False, "broker": True}
    await client.post("/ready")
    assert (await client.get("/readyz")).status == 200


async def test_problem_json_for_raised_problems(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get("/teapot")
    assert response.status == 418
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert await response.json() == {
        "type": "urn:vyapaar:problem:teapot",
        "title": "I'm a teapot",
        "status": 418,
        "detail": "Short and stout.",
        "instance": "/teapot",
        "spout": 1,
    }


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "title"),
    [
        ("GET", "/nowhere", None, 404, "Not Found"),
        ("DELETE", "/echo", None, 405, "Method Not Allowed"),
        ("POST", "/echo", b"{oops", 400, "Malformed JSON"),
        ("POST", "/echo", b'{"count": "many"}', 422, "Invalid request body"),
        ("GET", "/crash", None, 500, "Internal Server Error"),
    ],
)
async def test_every_error_is_problem_json(
    client: TestClient[web.Request, web.Application],
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    title: str,
) -> None:
    response = await client.request(method, path, data=body)
    assert response.status == status
    assert response.content_type == PROBLEM_CONTENT_TYPE
    problem = await response.json()
    assert problem["status"] == status
    assert problem["title"] == title
    assert "secret internals" not in json.dumps(problem)


async def test_validation_problems_list_the_fields(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post("/echo", json={"count": "many"})
    problem = await response.json()
    assert problem["errors"][0]["field"] == "count"


async def test_correlation_id_is_taken_from_the_request_and_echoed(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.post("/echo", json={"count": 2}, headers={"X-Correlation-Id": "c-9"})
    assert (await response.json()) == {"count": 2, "cid": "c-9"}
    assert response.headers["X-Correlation-Id"] == "c-9"


async def test_metrics_count_requests_by_route_template(
    client: TestClient[web.Request, web.Application],
) -> None:
    await client.get("/teapot")
    response = await client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    assert (
        'vyapaar_http_requests_total{method="GET",route="/teapot",service="testsvc",status="418"}'
        in text
    )
    assert "vyapaar_http_request_duration_seconds_bucket" in text


def test_log_lines_are_json_with_service_and_correlation_id() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    token = correlation_id_var.set("order-1")
    try:
        line = json.loads(JsonFormatter("inventory").format(record))
    finally:
        correlation_id_var.reset(token)
    assert line["message"] == "hello world"
    assert line["level"] == "INFO"
    assert line["service"] == "inventory"
    assert line["correlationId"] == "order-1"
    assert line["time"].endswith("Z")


def test_log_lines_name_the_trace_and_span_they_were_written_in(spans: Any) -> None:
    from vyapaar_messaging import tracing
    from vyapaar_messaging.context import bind_message_context

    def line() -> dict[str, Any]:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        return dict(json.loads(JsonFormatter("inventory").format(record)))

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with bind_message_context("order-1", "m1", "ReserveStock", trace_id):
        handled = line()
        with tracing.span("process ReserveStock") as span:
            inside = line()
    assert handled["traceId"] == trace_id and "spanId" not in handled
    assert span is not None
    context = span.get_span_context()
    assert inside["traceId"] == f"{context.trace_id:032x}"
    assert inside["spanId"] == f"{context.span_id:016x}"
    assert inside["correlationId"] == "order-1"
    assert "traceId" not in line()
