"""The gateway with tracing on: a create is a server span (a child of the caller's span),
the Order's annotation ``vyapaar.dev/traceparent`` names that very span, so the saga's
spans hang from it, and the order's ``traceId`` says which trace to look up.

The gateway runs in-process, created after the ``spans`` fixture turned tracing on (as
``main`` does: configure first, then the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubernetes_asyncio import client
from opentelemetry.trace import SpanKind
from vyapaar_services.gateway.config import GatewaySettings
from vyapaar_services.gateway.orders import GROUP, PLURAL, VERSION

TOKEN = "a-token-for-tracing-specs"
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BODY = {
    "customer": {"id": "cust-trace", "email": "trace@example.com"},
    "items": [{"sku": "SKU-TRACE-1", "quantity": 1, "unitPrice": 1500}],
    "currency": "INR",
    "paymentToken": "tok_visa",
    "shippingAddress": {"name": "Trace", "line1": "1 MG Road", "city": "Pune",
                        "postalCode": "411001", "country": "IN"},
}


def traceparent_of(span: Any) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@pytest.fixture
async def traced_gateway(spans: Any, tmp_path: Path, crds: Path, redis_url: str,
                         namespace: str, monkeypatch: pytest.MonkeyPatch,
                         serve_gateway: Any) -> str:
    monkeypatch.setenv("KUBECONFIG", str(crds))
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tenants": [
        {"name": "tracing", "namespace": namespace, "token": TOKEN}]}))
    url: str = await serve_gateway(GatewaySettings(redis_url=redis_url, tokens_file=tokens))
    return url


async def place(url: str, **headers: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.post(
        f"{url}/api/v1/orders", json=BODY,
        headers={"Authorization": f"Bearer {TOKEN}", **headers},
    ) as response:
        assert response.status == 201, await response.text()
        order: dict[str, Any] = await response.json()
        return order


async def annotation(k8s_api: Any, namespace: str, name: str) -> str:
    obj = await client.CustomObjectsApi(k8s_api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name)
    value: str = obj["metadata"]["annotations"]["vyapaar.dev/traceparent"]
    return value


async def test_the_orders_annotation_names_the_server_span_of_its_create(
    spans: Any, traced_gateway: str, k8s_api: Any, namespace: str,
) -> None:
    order = await place(traced_gateway, traceparent=CALLER)

    (server,) = [s for s in spans.get_finished_spans() if s.name == "POST /api/v1/orders"]
    assert server.kind is SpanKind.SERVER
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == CALLER.split("-")[2]  # the caller's span
    assert await annotation(k8s_api, namespace, order["name"]) == traceparent_of(server)
    assert order["traceId"] == CALLER.split("-")[1]
    # the apiserver call made for the create is a client span under it
    calls = [s for s in spans.get_finished_spans()
             if s.kind is SpanKind.CLIENT and s.name == "POST orders"]
    assert calls and all(c.parent.span_id == server.context.span_id for c in calls)


async def test_without_a_caller_the_create_starts_the_orders_trace(
    spans: Any, traced_gateway: str, k8s_api: Any, namespace: str,
) -> None:
    order = await place(traced_gateway)

    (server,) = [s for s in spans.get_finished_spans() if s.name == "POST /api/v1/orders"]
    assert server.parent is None
    assert await annotation(k8s_api, namespace, order["name"]) == traceparent_of(server)
    assert order["traceId"] == f"{server.context.trace_id:032x}"
    # health checks and scrapes are not traced
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/metrics"):
            async with http.get(f"{traced_gateway}{path}") as response:
                assert response.status == 200
    assert not [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER
                and s.name != "POST /api/v1/orders"]
