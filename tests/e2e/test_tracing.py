"""One trace per order, read back from the stack's Jaeger: every process's spans joined into one
causal tree -- the gateway's request, the operator's saga decisions and sends, each service's
handling -- retries and compensations included."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import TRACEPARENT_ANNOTATION
from vyapaar_stack import components
from vyapaar_stack.testing import GatewayTenant, System, get_order, order_manifest

SAGA_SERVICES = {"inventory", "payment", "shipping", "notification"}


# -- reading a trace from Jaeger's /api/v3 (OTLP JSON) ------------------------------------------


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    start_ns: int
    attributes: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __repr__(self) -> str:  # short, for assertion messages
        return f"<{self.service}: {self.name} {self.span_id} <- {self.parent_id or '-'}>"


def _value(raw: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in raw:
            return raw[key]
    if "intValue" in raw:
        return int(raw["intValue"])  # int64 is a string in OTLP JSON
    return raw


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value") or {}) for a in items or ()}


def spans_of(document: dict[str, Any]) -> list[Span]:
    """The spans of a ``GET /api/v3/traces/{id}`` answer."""
    found = []
    for resource_spans in (document.get("result") or {}).get("resourceSpans") or ():
        resource = _attributes((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for s in scope_spans.get("spans") or ():
                found.append(Span(
                    trace_id=s["traceId"], span_id=s["spanId"],
                    parent_id=s.get("parentSpanId") or "", name=s["name"],
                    service=str(resource.get("service.name", "?")),
                    start_ns=int(s.get("startTimeUnixNano") or 0),
                    attributes=_attributes(s.get("attributes"))))
    return sorted(found, key=lambda s: s.start_ns)


async def fetch_trace(http: aiohttp.ClientSession, traces_url: str, trace_id: str
                      ) -> list[Span]:
    async with http.get(f"{traces_url}/api/v3/traces/{trace_id}") as resp:
        if resp.status == 404:
            return []
        assert resp.status == 200, await resp.text()
        return spans_of(await resp.json(content_type=None))


async def settled_trace(http: aiohttp.ClientSession, traces_url: str, trace_id: str, *,
                        quiet: float = 3.0, within: float = 30.0) -> list[Span]:
    """The trace once it stops growing (no new span for ``quiet`` seconds): the processes
    export in batches, every half second on the stack."""
    deadline = time.monotonic() + within
    spans: list[Span] = []
    last_change = time.monotonic()
    while time.monotonic() < deadline:
        now = await fetch_trace(http, traces_url, trace_id)
        if len(now) != len(spans):
            spans, last_change = now, time.monotonic()
        elif spans and time.monotonic() - last_change >= quiet:
            return spans
        await asyncio.sleep(0.5)
    assert spans, f"trace {trace_id} never reached Jaeger ({traces_url})"
    return spans


class Tree:
    """A trace's spans by id, with the questions the specs ask."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self.by_id = {s.span_id: s for s in spans}

    def named(self, name: str, service: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.name == name
                and (service is None or s.service == service)]

    def one(self, name: str, service: str | None = None) -> Span:
        found = self.named(name, service)
        assert len(found) == 1, f"{len(found)} spans {name!r} of {service}: {self.outline()}"
        return found[0]

    def parent(self, span: Span) -> Span | None:
        return self.by_id.get(span.parent_id)

    def under(self, span: Span, ancestor: Span) -> bool:
        return any(a.span_id == ancestor.span_id for a in self.ancestors(span))

    def ancestors(self, span: Span) -> Iterator[Span]:
        seen: set[str] = set()
        current = self.parent(span)
        while current is not None and current.span_id not in seen:
            seen.add(current.span_id)
            yield current
            current = self.parent(current)

    def roots(self) -> list[Span]:
        return [s for s in self.spans if not s.parent_id]

    def orphans(self) -> list[Span]:
        return [s for s in self.spans if s.parent_id and s.parent_id not in self.by_id]

    def outline(self) -> str:
        """The tree as text, for a failing assertion's message."""
        children: dict[str, list[Span]] = {}
        for s in self.spans:
            children.setdefault(s.parent_id if s.parent_id in self.by_id else "", []).append(s)
        lines: list[str] = []

        def walk(parent: str, depth: int) -> None:
            for s in children.get(parent, ()):
                lines.append(f"{'  ' * depth}{s.service}: {s.name}"
                             f"{' (missing parent)' if s.parent_id and depth == 0 else ''}")
                walk(s.span_id, depth + 1)

        walk("", 0)
        return "\n" + "\n".join(lines)


# -- the system under test -------------------------------------------------------------------


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


@pytest.fixture
def tracing_on(running_system: System) -> None:
    """The tests' system exports spans (the stack's default; VYAPAAR_TRACING=0 turns it off)."""
    pid = running_system.operator().pid()
    assert pid is not None
    if not _environ(pid).get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        pytest.skip("tracing is off on this stack (VYAPAAR_TRACING=0): no spans to read")


def trace_id_of(order: dict[str, Any]) -> str:
    """The trace id the gateway gave the order (its annotation's traceparent)."""
    return str(order["metadata"]["annotations"][TRACEPARENT_ANNOTATION].split("-")[1])


async def wait_attempts(kubectl: Any, namespace: str, name: str, step: str, attempts: int,
                        within: float = 15) -> None:
    deadline = time.monotonic() + within
    while True:
        status = get_order(kubectl, namespace, name).get("status") or {}
        if ((status.get("steps") or {}).get(step) or {}).get("attempts", 0) >= attempts:
            return
        assert time.monotonic() < deadline, f"{step} never reached attempt {attempts}: {status}"
        await asyncio.sleep(0.1)


async def test_an_order_placed_through_the_gateway_is_one_trace_across_every_process(
    running_system: System, tracing_on: None, gateway_tenant: GatewayTenant,
    http: aiohttp.ClientSession, traces_url: str, unique_sku: Callable[[str], str],
    seed_stock: Any, wait_for_phase: Any, kubectl: Any, namespace: str,
) -> None:
    """An undeliverable address (shipping refuses after the capture: refund, release) and a
    ReserveStock retried after the step timeout (inventory frozen past it)."""
    sku = unique_sku("SKU-TRACE")
    await seed_stock({sku: 3})
    body = order_manifest("unused", sku=sku, unit_price=900, line1="UNDELIVERABLE 13")["spec"]
    config = running_system.config
    # Frozen (SIGSTOP), inventory takes the first ReserveStock only after the 3 s step
    # timeout has sent the second; thawed, it handles both (the second as a duplicate).
    components.kill(config, "inventory", signal.SIGSTOP)
    try:
        async with http.post(f"{gateway_tenant.url}/api/v1/orders", json=body,
                             headers={**gateway_tenant.headers,
                                      "Idempotency-Key": unique_sku("trace")}) as resp:
            assert resp.status == 201, await resp.text()
            view = await resp.json()
        await wait_attempts(kubectl, namespace, view["name"], "reserve", 2)
    finally:
        components.kill(config, "inventory", signal.SIGCONT)
    order = await wait_for_phase(view["name"], within=60)
    assert order["status"]["phase"] == "Failed"
    assert order["status"]["reason"] == "UndeliverableAddress"
    trace_id = trace_id_of(order)
    assert view.get("traceId") == trace_id, "the order view shows the order's trace id"

    tree = Tree(await settled_trace(http, traces_url, trace_id))
    outline = tree.outline()

    assert {s.service for s in tree.spans} >= {"gateway", "operator", *SAGA_SERVICES}, outline
    assert {s.trace_id for s in tree.spans} == {trace_id}
    # one root, the storefront's request; every other span's parent is in the trace
    roots = tree.roots()
    assert len(roots) == 1, outline
    assert roots[0].service == "gateway" and roots[0].name.startswith("POST"), outline
    assert not tree.orphans(), f"parents missing for {tree.orphans()}: {outline}"

    # each command a service handled hangs off the operator's send of that command
    processed = [s for s in tree.spans
                 if s.name.startswith("process ") and s.name[8:] in contracts.COMMANDS]
    assert processed, outline
    for span in processed:
        parent = tree.parent(span)
        assert parent is not None and parent.service == "operator", (span, outline)
        assert parent.name == f"send {span.name[8:]}", (span, parent, outline)
        assert span.service == contracts.COMMANDS[span.name[8:]].service, (span, outline)

    # the retried step: two deliveries of ReserveStock, each under a send of its own
    reserves = tree.named("process ReserveStock", "inventory")
    assert len(reserves) >= 2, outline
    sends = {tree.by_id[s.parent_id].span_id for s in reserves}
    assert len(sends) >= 2, f"the retry was not a send of its own: {outline}"

    # the compensation: decided under the rejection's saga span, which follows the reply
    rejected = tree.one("saga ShipmentRejected", "operator")
    assert any(a.name == "process CreateShipment" and a.service == "shipping"
               for a in tree.ancestors(rejected)), outline
    refund = tree.one("send RefundPayment", "operator")
    assert refund.parent_id == rejected.span_id, outline
    release = tree.one("send ReleaseStock", "operator")
    assert tree.under(release, rejected), outline
    for command in ("RefundPayment", "ReleaseStock"):
        handled = tree.named(f"process {command}")
        assert handled and all(tree.under(h, rejected) for h in handled), outline


async def test_an_order_created_with_kubectl_is_rooted_at_the_operator_with_its_uid(
    running_system: System, tracing_on: None, http: aiohttp.ClientSession, traces_url: str,
    unique_sku: Callable[[str], str], seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    from vyapaar_messaging import tracing  # the product's own rule for an order's root ids

    sku = unique_sku("SKU-TRACE-K")
    await seed_stock({sku: 1})
    created = apply_order(order_manifest("traced", sku=sku))
    order = await wait_for_phase("traced")
    assert order["status"]["phase"] == "Completed"
    uid = order["metadata"]["uid"]
    trace_id = uid.replace("-", "")
    _, root_trace, root_span, _ = tracing.order_root_traceparent(created["metadata"]).split("-")
    assert root_trace == trace_id

    tree = Tree(await settled_trace(http, traces_url, trace_id))
    outline = tree.outline()
    assert {s.service for s in tree.spans} >= {"operator", *SAGA_SERVICES}, outline
    roots = tree.roots()
    assert len(roots) == 1, outline
    assert (roots[0].service, roots[0].name) == ("operator", "saga Start"), outline
    assert roots[0].span_id == root_span, outline
    assert not tree.orphans(), f"parents missing for {tree.orphans()}: {outline}"
    assert len(tree.named("process ReserveStock", "inventory")) == 1, outline
