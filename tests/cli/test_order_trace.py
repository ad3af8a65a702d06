"""`vyapaar order trace NAME`: an order's spans as a tree, read from a fake gateway and a
fake Jaeger query API (``/api/v3/traces/{id}``, OTLP JSON) served by one aiohttp test server;
and the errors a person meets: no such order, no trace (yet), no backend."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from vyapaar_cli import trace as trace_cli
from vyapaar_cli.main import main

UID = "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"
UID_TRACE = UID.replace("-", "")
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
T0 = 1_765_000_000_000_000_000  # ns


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}  # OTLP JSON: int64 as a string
    return {"key": key, "value": {"stringValue": value}}


def span(span_id: str, name: str, start_ms: float, duration_ms: float, *,
         parent: str | None = None, kind: int = 1, trace_id: str = CALLER_TRACE,
         error: str | None = None, **attributes: Any) -> dict[str, Any]:
    """A span in OTLP JSON; in the attribute names ``_`` stands for ``.`` and ``__`` for
    ``_`` (``http_response_status__code`` is ``http.response.status_code``)."""
    start = T0 + int(start_ms * 1e6)
    raw: dict[str, Any] = {
        "traceId": trace_id, "spanId": span_id, "name": name, "kind": kind,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + int(duration_ms * 1e6)),
        "attributes": [attr(".".join(part.replace("~", "_") for part in
                                     k.replace("__", "~").split("_")), v)
                       for k, v in attributes.items()],
        "status": {"code": 2, "message": error} if error else {},
    }
    if parent:
        raw["parentSpanId"] = parent
    return raw


def resource(service: str, *spans: dict[str, Any]) -> dict[str, Any]:
    return {"resource": {"attributes": [attr("service.name", service)]},
            "scopeSpans": [{"scope": {"name": "vyapaar"}, "spans": list(spans)}]}


def order_trace(trace_id: str = CALLER_TRACE) -> dict[str, Any]:
    """A compensated order as Jaeger v2 returns it: the services out of causal order, a
    consumer-level retry, an error, and a span whose parent never arrived."""
    return {"result": {"resourceSpans": [
        resource("inventory",
                 span("c000000000000001", "process ReserveStock", 12, 3, parent="b000000000000003",
                      kind=5, trace_id=trace_id, error="boom", vyapaar_attempt=1,
                      vyapaar_outcome="retry"),
                 span("c000000000000002", "process ReserveStock", 220, 4,
                      parent="b000000000000003", kind=5, trace_id=trace_id, vyapaar_attempt=2,
                      vyapaar_outcome="ok"),
                 span("c000000000000003", "INSERT", 221, 1, parent="c000000000000002", kind=3,
                      trace_id=trace_id, db_statement="INSERT INTO reservations ...")),
        resource("gateway",
                 span("a000000000000001", "POST /api/v1/orders", 0, 9, kind=2, trace_id=trace_id,
                      http_response_status__code=201)),
        resource("operator",
                 span("b000000000000001", "saga Start", 10, 2, parent="a000000000000001",
                      trace_id=trace_id, vyapaar_order="shop/order-6m257",
                      vyapaar_phase_before="Pending", vyapaar_phase="Reserving",
                      vyapaar_changed=True),
                 span("b000000000000002", "PUT", 10.2, 1.1, parent="b000000000000001", kind=3,
                      trace_id=trace_id, http_response_status__code=503),
                 span("b000000000000003", "send ReserveStock", 11.5, 0.4,
                      parent="b000000000000001", kind=4, trace_id=trace_id,
                      vyapaar_step="reserve", vyapaar_attempt=1),
                 span("b000000000000009", "saga StockReserved", 300, 1.5,
                      parent="ffffffffffffffff", trace_id=trace_id, vyapaar_phase="Paying",
                      vyapaar_changed=False)),
    ]}}


def order_view(name: str, *, trace_id: str | None = CALLER_TRACE,
               phase: str = "Completed") -> dict[str, Any]:
    view: dict[str, Any] = {"name": name, "namespace": "shop", "uid": UID,
                            "resourceVersion": "42", "createdAt": "2026-12-07T10:00:00Z",
                            "spec": {}, "status": {"phase": phase}}
    if trace_id:
        view["traceId"] = trace_id
    return view


@dataclass
class Fakes:
    """What the fake gateway and the fake Jaeger serve, and what they were asked."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    traces: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    """Per trace id, the answers in turn (None: 404); the last one repeats."""
    asked: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    state = Fakes()

    async def get_order(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        order = state.orders.get(request.match_info["name"])
        if order is None:
            return web.json_response(
                {"type": "about:blank", "title": "Not Found", "status": 404,
                 "detail": f"order {request.match_info['name']} not found"},
                status=404, content_type="application/problem+json")
        return web.json_response(order)

    async def get_trace(request: web.Request) -> web.Response:
        trace_id = request.match_info["id"]
        state.asked.append(trace_id)
        answers = state.traces.get(trace_id) or [None]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer is None:
            return web.json_response({"error": {"httpCode": 404, "message": "No traces found"}},
                                     status=404)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/api/v1/orders/{name}", get_order)
    app.router.add_get("/api/v3/traces/{id}", get_trace)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.url = str(server.make_url("")).rstrip("/")
    try:
        yield state
    finally:
        await server.close()


Run = Callable[..., Any]


@pytest.fixture
def vyapaar(fakes: Fakes, capsys: pytest.CaptureFixture[str]) -> Run:
    """``vyapaar order trace ARGV`` in a thread (the fakes answer on this loop):
    (exit code, stdout, stderr)."""

    async def run(*argv: str, traces_url: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(main, [
            "order", "trace", *argv, f"--gateway={fakes.url}", "--token=tok",
            f"--traces-url={traces_url or fakes.url}"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def rows(out: str) -> list[tuple[str, str, str, str]]:
    """(offset, service, indented name, notes) of each span line of the tree."""
    lines = out.splitlines()
    name_at = lines[1].index("SPAN")
    found = []
    for line in lines[2:]:
        head, rest = line[:name_at].split(), line[name_at:]
        body = rest.lstrip(" ")
        name, _, notes = body.partition("  ")
        indented = " " * (len(rest) - len(body)) + name
        if not head:
            found.append(("", "", indented, notes.strip()))
            continue
        offset, _duration, service = head
        found.append((offset, service, indented, notes.strip()))
    return found


async def test_the_tree_indents_each_span_under_its_parent_across_services(
        fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-6m257"] = order_view("order-6m257")
    fakes.traces[CALLER_TRACE] = [order_trace()]

    code, out, err = await vyapaar("order-6m257")

    assert code == 0, err
    assert fakes.asked == [CALLER_TRACE]  # the gateway's traceId, not the UID
    assert out.splitlines()[0].startswith(
        f"trace {CALLER_TRACE}  order shop/order-6m257  8 spans  3 services  ")
    assert [(offset, service, name) for offset, service, name, _ in rows(out)] == [
        ("+0.00ms", "gateway", "POST /api/v1/orders"),
        ("+10.0ms", "operator", "  saga Start"),
        ("+10.2ms", "operator", "    PUT"),
        ("+11.5ms", "operator", "    send ReserveStock"),
        ("+12.0ms", "inventory", "      process ReserveStock"),
        ("+220.0ms", "inventory", "      process ReserveStock"),
        ("+221.0ms", "inventory", "        INSERT"),
        ("", "", "(missing parent ffffffffffffffff)"),
        ("+300.0ms", "operator", "  saga StockReserved"),
    ]
    notes = [n for *_, n in rows(out)]
    assert notes[1] == "Pending->Reserving"
    assert notes[8] == "unchanged"
    assert notes[3] == "step=reserve attempt=1"
    assert notes[4] == "attempt=1 outcome=retry ERROR: boom"
    assert notes[5] == "attempt=2"  # outcome ok and HTTP 2xx are not worth a note
    assert notes[0] == ""  # the gateway's 201
    assert notes[2] == "status=503"
    assert err == ""  # the order has finished: nothing more to come


async def test_an_order_without_a_caller_s_trace_is_looked_up_by_its_uid(
        fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-k1"] = order_view("order-k1", trace_id=None, phase="Paying")
    fakes.traces[UID_TRACE] = [order_trace(UID_TRACE)]

    code, out, err = await vyapaar("order-k1")

    assert code == 0, err
    assert fakes.asked == [UID_TRACE]
    assert "saga Start" in out
    assert "still running when read (phase Paying)" in err


async def test_json_lists_the_spans_in_tree_order_with_depth_offset_and_attributes(
        fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-6m257"] = order_view("order-6m257")
    fakes.traces[CALLER_TRACE] = [order_trace()]

    code, out, _ = await vyapaar("order-6m257", "-o", "json")

    assert code == 0
    document = json.loads(out)
    assert document["traceId"] == CALLER_TRACE
    assert document["services"] == ["gateway", "inventory", "operator"]
    assert document["missingParents"] == ["ffffffffffffffff"]
    spans = document["spans"]
    assert [(s["depth"], s["name"]) for s in spans[:4]] == [
        (0, "POST /api/v1/orders"), (1, "saga Start"), (2, "PUT"), (2, "send ReserveStock")]
    send = spans[3]
    assert send["kind"] == "producer" and send["parentSpanId"] == "b000000000000001"
    assert send["attributes"] == {"vyapaar.step": "reserve", "vyapaar.attempt": 1}
    assert send["offsetMs"] == 11.5 and send["durationMs"] == 0.4
    assert spans[4]["status"] == {"error": True, "message": "boom"}


async def test_otlp_prints_the_backends_answer_as_it_came(fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-6m257"] = order_view("order-6m257")
    fakes.traces[CALLER_TRACE] = [order_trace()]

    code, out, _ = await vyapaar("order-6m257", "-o", "otlp")

    assert code == 0
    assert json.loads(out) == order_trace()["result"]


async def test_an_unknown_order_is_one_line_and_exit_1(fakes: Fakes, vyapaar: Run) -> None:
    code, out, err = await vyapaar("order-nope")

    assert (code, out) == (1, "")
    assert err.startswith("vyapaar: error: 404 Not Found: order order-nope not found")
    assert fakes.asked == []


async def test_a_trace_the_backend_does_not_have_is_one_line_and_exit_1(
        fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-6m257"] = order_view("order-6m257")

    code, out, err = await vyapaar("order-6m257")

    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert f"no trace {CALLER_TRACE} for order order-6m257 at {fakes.url}" in err
    assert "--wait SECONDS" in err and "OTEL_EXPORTER_OTLP_ENDPOINT" in err


async def test_an_unreachable_backend_is_one_line_and_exit_1(
        fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-6m257"] = order_view("order-6m257")
    with socket.create_server(("127.0.0.1", 0)) as sock:
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"

    code, out, err = await vyapaar("order-6m257", traces_url=closed)

    assert (code, out) == (1, "")
    assert err == (f"vyapaar: error: cannot reach the trace backend at {closed}: connection "
                   "refused (set --traces-url or $VYAPAAR_TRACES_URL)\n")


async def test_a_backend_that_is_not_jaeger_is_reported_with_its_answer(
        fakes: Fakes, vyapaar: Run) -> None:
    fakes.orders["order-6m257"] = order_view("order-6m257")

    code, out, err = await vyapaar("order-6m257", traces_url=f"{fakes.url}/not-jaeger")

    assert (code, out) == (1, "")
    assert err.startswith(f"vyapaar: error: the trace backend at {fakes.url}/not-jaeger answered "
                          f"/api/v3/traces/{CALLER_TRACE} with 404 Not Found (is it Jaeger's "
                          "query API?)")
    assert err.count("\n") == 1


async def test_wait_polls_until_the_trace_appears_and_stops_growing(
        fakes: Fakes, vyapaar: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_cli, "POLL_INTERVAL", 0.05)
    monkeypatch.setattr(trace_cli, "SETTLE", 0.2)
    fakes.orders["order-6m257"] = order_view("order-6m257")
    full = order_trace()
    partial = json.loads(json.dumps(full))
    del partial["result"]["resourceSpans"][0]  # inventory's spans not exported yet
    fakes.traces[CALLER_TRACE] = [None, None, partial, partial, full]

    code, out, err = await vyapaar("order-6m257", "--wait", "10")

    assert code == 0, err
    assert "8 spans" in out.splitlines()[0]
    assert 5 < len(fakes.asked) < 20  # stopped once nothing new came for SETTLE seconds


async def test_wait_gives_up_after_its_budget(fakes: Fakes, vyapaar: Run,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace_cli, "POLL_INTERVAL", 0.05)
    fakes.orders["order-6m257"] = order_view("order-6m257")

    code, _, err = await vyapaar("order-6m257", "--wait", "0.3")

    assert code == 1
    assert "no trace" in err and "--wait SECONDS waits" not in err
    assert 3 <= len(fakes.asked) <= 8


def test_a_non_http_traces_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["order", "trace", "order-1", "--gateway=http://127.0.0.1:1", "--token=t",
                 "--traces-url=ftp://x"])
    assert code == 2
    assert "the traces URL must be http:// or https://" in capsys.readouterr().err


def test_the_trace_id_is_the_gateway_s_then_the_annotation_then_the_uid() -> None:
    assert trace_cli.trace_id_of({"traceId": CALLER_TRACE.upper(), "uid": UID}) == CALLER_TRACE
    raw = {"metadata": {"uid": UID, "annotations": {
        "vyapaar.dev/traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"}}}
    assert trace_cli.trace_id_of(raw) == CALLER_TRACE
    assert trace_cli.trace_id_of({"uid": UID, "traceId": "not-hex"}) == UID_TRACE


def test_ids_in_base64_are_read_as_hex_too() -> None:
    raw = order_trace()
    for resource_spans in raw["result"]["resourceSpans"]:
        for s in resource_spans["scopeSpans"][0]["spans"]:
            s["spanId"] = base64.b64encode(bytes.fromhex(s["spanId"])).decode()
    spans = trace_cli.spans_of(raw["result"])
    assert {s.span_id for s in spans} >= {"a000000000000001", "b000000000000003"}
    assert trace_cli.tree(spans).roots[0].name == "POST /api/v1/orders"


def test_the_help_shows_trace_and_its_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["order", "trace", "--help"])
    out = capsys.readouterr().out
    assert "--wait SECONDS" in out and "VYAPAAR_TRACES_URL" in out and "-o {tree,json,otlp}" in out
