"""The gateway's order API, on the running system: orders placed over HTTP run their saga,
their stream tells every transition, and bad requests change nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from vyapaar_stack.testing import (
    GatewayTenant,
    System,
    add_gateway_tenant,
    remove_gateway_tenant,
)

FORWARD = ["Pending", "Reserving", "Paying", "Shipping", "Completing", "Completed"]


def order_body(sku: str, token: str = "tok_visa", quantity: int = 1) -> dict[str, Any]:
    return {
        "customer": {"id": "cust-gw", "email": "gw@example.com", "name": "Gateway"},
        "items": [{"sku": sku, "quantity": quantity, "unitPrice": 1500}],
        "currency": "INR",
        "paymentToken": token,
        "shippingAddress": {"name": "Gateway", "line1": "1 MG Road", "city": "Pune",
                            "postalCode": "411001", "country": "IN"},
    }


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse a server-sent-events body into ``{"id", "event", "data"}`` dicts."""
    event: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in event or "data" in event:
                event["data"] = json.loads(event.get("data") or "null")
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


async def create(http: aiohttp.ClientSession, tenant: GatewayTenant, body: Any,
                 **headers: str) -> aiohttp.ClientResponse:
    response = await http.post(f"{tenant.url}/api/v1/orders", json=body,
                               headers={**tenant.headers, **headers})
    await response.read()
    return response


def orders_in(kubectl: Any, namespace: str) -> list[str]:
    out = kubectl("get", "orders.vyapaar.dev", "-n", namespace, "-o", "name")
    return [line for line in out.stdout.splitlines() if line]


@pytest.fixture
def slow_payment(running_system: System) -> Iterator[Callable[[int], None]]:
    import urllib.request

    def set_latency(ms: int) -> None:
        request = urllib.request.Request(
            f"{running_system.url('payment')}/admin/faults", method="PUT",
            data=json.dumps({"errorRate": 0, "latencyMs": ms}).encode(),
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()

    yield set_latency
    set_latency(0)


@pytest.fixture
def other_tenant(running_system: System, kubectl: Any) -> Iterator[GatewayTenant]:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", namespace)
    tenant = add_gateway_tenant(running_system.config, namespace)
    try:
        yield tenant
    finally:
        remove_gateway_tenant(running_system.config, tenant)
        kubectl("delete", "namespace", namespace, "--wait=false")


# -- an order's life through the gateway ------------------------------------------------


async def test_an_order_placed_through_the_gateway_completes_and_its_stream_tells_each_phase(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-GW")
    await seed_stock({sku: 5})
    created = await create(http, gateway_tenant, order_body(sku))
    assert created.status == 201, await created.text()
    order = await created.json()
    assert created.headers["Location"] == f"/api/v1/orders/{order['name']}"
    assert created.headers["X-Correlation-Id"] == order["uid"]

    received = []
    async with http.get(f"{gateway_tenant.url}/api/v1/orders/{order['name']}/events",
                        headers=gateway_tenant.headers) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        async for event in events(stream):
            received.append(event)
    # the server closed the stream after the end

    transitions = [e for e in received if e["event"] == "transition"]
    assert [e["data"]["phase"] for e in transitions] == FORWARD
    assert [e["id"] for e in transitions] == [str(n) for n in range(1, 7)]
    assert received[-1]["event"] == "end" and received[-1]["data"]["phase"] == "Completed"
    async with http.get(f"{gateway_tenant.url}/api/v1/orders/{order['name']}",
                        headers=gateway_tenant.headers) as read:
        assert (await read.json())["status"]["phase"] == "Completed"


async def test_a_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str], slow_payment: Callable[[int], None],
) -> None:
    sku = unique_sku("SKU-GW-RESUME")
    await seed_stock({sku: 5})
    slow_payment(2500)
    order = await (await create(http, gateway_tenant, order_body(sku))).json()
    url = f"{gateway_tenant.url}/api/v1/orders/{order['name']}/events"

    first: list[dict[str, Any]] = []
    async with http.get(url, headers=gateway_tenant.headers) as stream:
        async for event in events(stream):
            first.append(event)
            if event["data"]["phase"] == "Paying":
                break  # drop the connection mid-saga, while the payment is slow
    slow_payment(0)
    rest: list[dict[str, Any]] = []
    async with http.get(url, headers={**gateway_tenant.headers,
                                      "Last-Event-ID": first[-1]["id"]}) as stream:
        async for event in events(stream):
            rest.append(event)

    phases = [e["data"]["phase"] for e in first + rest if e["event"] == "transition"]
    assert phases == FORWARD
    ids = [e["id"] for e in first + rest if e["event"] == "transition"]
    assert len(ids) == len(set(ids))
    assert rest[-1]["event"] == "end"


async def test_a_cancellation_before_the_pivot_is_accepted_and_the_order_ends_cancelled(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str], slow_payment: Callable[[int], None],
) -> None:
    sku = unique_sku("SKU-GW-CANCEL")
    await seed_stock({sku: 5})
    slow_payment(2000)
    order = await (await create(http, gateway_tenant, order_body(sku))).json()
    cancel = await http.post(f"{gateway_tenant.url}/api/v1/orders/{order['name']}/cancel",
                             headers=gateway_tenant.headers)
    assert cancel.status == 202, await cancel.text()
    assert (await cancel.json())["spec"]["cancel"] is True
    async with http.get(f"{gateway_tenant.url}/api/v1/orders/{order['name']}/events",
                        headers=gateway_tenant.headers) as stream:
        last = [e async for e in events(stream)][-1]
    assert last["data"]["phase"] == "Cancelled"


async def test_a_cancellation_past_the_pivot_is_refused_with_a_problem(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-GW-LATE")
    await seed_stock({sku: 5})
    order = await (await create(http, gateway_tenant, order_body(sku))).json()
    async with http.get(f"{gateway_tenant.url}/api/v1/orders/{order['name']}/events",
                        headers=gateway_tenant.headers) as stream:
        assert [e async for e in events(stream)][-1]["data"]["phase"] == "Completed"
    refused = await http.post(f"{gateway_tenant.url}/api/v1/orders/{order['name']}/cancel",
                              headers=gateway_tenant.headers)
    assert refused.status == 409
    assert refused.content_type == "application/problem+json"
    problem = await refused.json()
    assert problem["type"].endswith("past-pivot") and "shipment" in problem["detail"]


# -- idempotency -----------------------------------------------------------------------------


async def test_a_replay_with_the_same_key_returns_the_same_order_and_says_so(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, kubectl: Any,
    unique_sku: Callable[[str], str],
) -> None:
    body = order_body(unique_sku("SKU-GW-IDEM"))
    first = await create(http, gateway_tenant, body, **{"Idempotency-Key": "order-1"})
    again = await create(http, gateway_tenant, body, **{"Idempotency-Key": "order-1"})
    assert (first.status, again.status) == (201, 201)
    assert first.headers["Idempotent-Replayed"] == "false"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await first.json())["uid"] == (await again.json())["uid"]
    assert len(orders_in(kubectl, gateway_tenant.namespace)) == 1


async def test_twenty_concurrent_requests_with_one_key_create_exactly_one_order(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, kubectl: Any,
    unique_sku: Callable[[str], str],
) -> None:
    body = order_body(unique_sku("SKU-GW-RACE"))
    responses = await asyncio.gather(*(
        create(http, gateway_tenant, body, **{"Idempotency-Key": "same-key"})
        for _ in range(20)))
    uids = {(await r.json())["uid"] for r in responses if r.status == 201}
    assert len(uids) == 1
    statuses = sorted(r.status for r in responses)
    assert set(statuses) <= {201, 429}, statuses  # the rate limit may refuse a few
    assert [r.headers["Idempotent-Replayed"] for r in responses
            if r.status == 201].count("false") == 1
    assert len(orders_in(kubectl, gateway_tenant.namespace)) == 1


async def test_the_same_key_with_another_body_is_refused_and_creates_nothing(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, kubectl: Any,
    unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-GW-CONFLICT")
    first = await create(http, gateway_tenant, order_body(sku), **{"Idempotency-Key": "k"})
    other = await create(http, gateway_tenant, order_body(sku, quantity=2),
                         **{"Idempotency-Key": "k"})
    assert first.status == 201
    assert other.status == 422
    assert (await other.json())["type"].endswith("idempotency-key-reused")
    assert len(orders_in(kubectl, gateway_tenant.namespace)) == 1


# -- who may do what, and how much ----------------------------------------------------------


async def test_no_token_is_401_and_another_tenants_order_is_not_found(
    gateway_tenant: GatewayTenant, other_tenant: GatewayTenant, http: aiohttp.ClientSession,
    unique_sku: Callable[[str], str],
) -> None:
    theirs = await (await create(http, other_tenant, order_body(unique_sku("SKU-GW-T")))).json()
    async with http.get(f"{gateway_tenant.url}/api/v1/orders") as anonymous:
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        assert anonymous.content_type == "application/problem+json"
    async with http.get(f"{gateway_tenant.url}/api/v1/orders/{theirs['name']}",
                        headers=gateway_tenant.headers) as foreign:
        assert foreign.status == 404
    async with http.get(f"{gateway_tenant.url}/api/v1/orders",
                        headers=gateway_tenant.headers) as mine:
        assert theirs["name"] not in [o["name"] for o in (await mine.json())["items"]]
    async with http.get(f"{other_tenant.url}/api/v1/orders/{theirs['name']}",
                        headers=other_tenant.headers) as own:
        assert own.status == 200


async def test_a_burst_beyond_the_rate_limit_gets_429_with_retry_after(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession,
) -> None:
    async def one() -> aiohttp.ClientResponse:
        response = await http.get(f"{gateway_tenant.url}/api/v1/orders?limit=1",
                                  headers=gateway_tenant.headers)
        await response.read()
        return response

    responses = await asyncio.gather(*(one() for _ in range(60)))
    limited = [r for r in responses if r.status == 429]
    assert limited, [r.status for r in responses]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in limited)
    assert limited[0].content_type == "application/problem+json"
    assert {r.status for r in responses} <= {200, 429}


async def test_a_tenant_with_a_rate_limit_of_its_own_gets_that_limit(
    running_system: System, kubectl: Any, http: aiohttp.ClientSession,
) -> None:
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", namespace)
    tenant = add_gateway_tenant(running_system.config, namespace, rate_limit="3/minute")
    try:
        statuses, limits = [], set()
        for _ in range(5):
            async with http.get(f"{tenant.url}/api/v1/orders?limit=1",
                                headers=tenant.headers) as response:
                statuses.append(response.status)
                limits.add(response.headers["RateLimit-Limit"])
        assert statuses[-1] == 429 and statuses.count(200) <= 3, statuses
        assert limits == {"3"}
    finally:
        remove_gateway_tenant(running_system.config, tenant)
        kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.mark.parametrize(("body", "content_type", "status", "field"), [
    (b'{"customer": ', "application/json", 400, None),
    (json.dumps({**order_body("SKU-X1"), "currency": "XYZ"}).encode(), "application/json",
     422, "currency"),
    (json.dumps({**order_body("SKU-X1"), "items": [{"sku": "SKU-X1", "quantity": 0,
                                                    "unitPrice": 1}]}).encode(),
     "application/json", 422, "items.0.quantity"),
    (json.dumps({**order_body("SKU-X1"), "items": [
        {"sku": "SKU-X1", "quantity": 1, "unitPrice": 1},
        {"sku": "SKU-X1", "quantity": 2, "unitPrice": 1}]}).encode(),  # a CEL rule
     "application/json", 422, "items"),
    (b"x" * 70_000, "application/json", 413, None),
    (b"customer=1", "application/x-www-form-urlencoded", 415, None),
])
async def test_bad_input_gets_a_problem_and_creates_nothing(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, kubectl: Any,
    body: bytes, content_type: str, status: int, field: str | None,
) -> None:
    async with http.post(f"{gateway_tenant.url}/api/v1/orders", data=body,
                         headers={**gateway_tenant.headers, "Content-Type": content_type,
                                  "Idempotency-Key": "bad-1"}) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/problem+json"
        problem = await response.json()
    assert problem["status"] == status and problem["detail"]
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]], problem
    assert orders_in(kubectl, gateway_tenant.namespace) == []


# -- reading -----------------------------------------------------------------------------------


async def test_orders_are_listed_by_phase_in_pages_with_continue_tokens(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-GW-LIST")
    await seed_stock({sku: 10})
    names = []
    for token in ("tok_visa", "tok_visa", "tok_decline"):
        order = await (await create(http, gateway_tenant, order_body(sku, token))).json()
        names.append(order["name"])
        async with http.get(f"{gateway_tenant.url}/api/v1/orders/{order['name']}/events",
                            headers=gateway_tenant.headers) as stream:
            [e async for e in events(stream)]

    listed: list[str] = []
    page: dict[str, Any] = {"continue": None}
    pages = 0
    while True:
        params = {"limit": "2", **({"continue": page["continue"]} if page["continue"] else {})}
        async with http.get(f"{gateway_tenant.url}/api/v1/orders", params=params,
                            headers=gateway_tenant.headers) as response:
            page = await response.json()
        listed += [o["name"] for o in page["items"]]
        pages += 1
        if not page["continue"]:
            break
    assert sorted(listed) == sorted(names) and pages == 2
    async with http.get(f"{gateway_tenant.url}/api/v1/orders", params={"phase": "Failed"},
                        headers=gateway_tenant.headers) as response:
        assert [o["name"] for o in (await response.json())["items"]] == [names[2]]
    async with http.get(f"{gateway_tenant.url}/api/v1/orders", params={"phase": "Nope"},
                        headers=gateway_tenant.headers) as response:
        assert response.status == 400


async def test_the_callers_trace_and_the_orders_uid_follow_the_order(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, kubectl: Any,
    running_system: System, unique_sku: Callable[[str], str], seed_stock: Any,
    slow_payment: Callable[[int], None],
) -> None:
    sku = unique_sku("SKU-GW-TRACE")
    await seed_stock({sku: 5})
    slow_payment(2000)
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    created = await create(http, gateway_tenant, order_body(sku), traceparent=caller)
    order = await created.json()
    stored = json.loads(kubectl("get", "orders.vyapaar.dev", order["name"], "-n",
                                gateway_tenant.namespace, "-o", "json").stdout)
    annotation = stored["metadata"]["annotations"]["vyapaar.dev/traceparent"]
    assert annotation.split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert stored["metadata"]["finalizers"] == ["vyapaar.dev/saga"]
    log = (running_system.config.state_dir / "run" / "gateway.log").read_text()
    line = next(json.loads(x) for x in log.splitlines()
                if x.startswith("{") and order["uid"] in x and "created" in x)
    assert line["correlationId"] == order["uid"] and line["traceparent"] == annotation


async def test_the_gateway_exports_red_metrics_and_its_own(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession,
) -> None:
    async with http.get(f"{gateway_tenant.url}/api/v1/orders",
                        headers=gateway_tenant.headers) as response:
        assert response.status == 200
    async with http.get(f"{gateway_tenant.url}/metrics") as response:
        text = await response.text()
    assert 'vyapaar_http_requests_total{method="GET",route="/api/v1/orders",' \
           'service="gateway",status="200"}' in text
    assert "vyapaar_gateway_event_streams " in text
    async with http.get(f"{gateway_tenant.url}/readyz") as response:
        assert (await response.json())["checks"] == {"redis": True, "kubernetes": True}


async def test_an_orders_page_link_reads_that_order_and_nothing_else(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession,
    unique_sku: Callable[[str], str],
) -> None:
    mine = await (await create(http, gateway_tenant, order_body(unique_sku("SKU-GW-L1")))).json()
    other = await (await create(http, gateway_tenant, order_body(unique_sku("SKU-GW-L2")))).json()
    page, _, fragment = mine["links"]["page"].partition("#token=")
    assert page == f"/orders/{mine['name']}" and fragment
    link = {"Authorization": f"Bearer {fragment}"}
    base = f"{gateway_tenant.url}/api/v1/orders"

    async with http.get(f"{base}/{mine['name']}", headers=link) as read:
        assert read.status == 200 and (await read.json())["uid"] == mine["uid"]
    async with http.get(f"{base}/{mine['name']}/events", headers=link) as stream:
        assert stream.status == 200
        received = [e async for e in events(stream)]
    assert received[0]["data"]["phase"] == "Pending"
    for method, url in (("GET", f"{base}/{other['name']}"), ("GET", base),
                        ("POST", f"{base}/{mine['name']}/cancel"), ("POST", base)):
        async with http.request(method, url, headers=link, json=order_body("SKU-X1")) as denied:
            assert denied.status == 403, (method, url)
            assert (await denied.json())["type"].endswith("link-scope")
