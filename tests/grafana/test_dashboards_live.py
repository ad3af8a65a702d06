"""Every panel query of every dashboard returns data from the real Prometheus after a real run.

The run drives orders through every outcome (completed, declined, undeliverable, cancelled),
the gateway (an order, its idempotent replay, its event stream, a burst over the rate limit),
a command delivered twice (inbox duplicate, idempotent replay), a poison reply (dead-letter
queue) and a stock commit that fails until a database fault is lifted (delayed retries).
Then each query is evaluated the way Grafana would (a range query, ``$__rate_interval``
= 20 s for the 5 s scrape interval) until it returns a finite value; Prometheus scrapes every
5 s, so this takes up to a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import EVENTS_EXCHANGE, REPLIES_QUEUE
from vyapaar_stack import system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.testing import GatewayTenant, System, order_manifest, remove_from_dlq

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
@contextlib.asynccontextmanager
async def stock_fault(database_url: str, sku: str) -> AsyncIterator[None]:
    """Until exit, committing held stock of ``sku`` fails in the database (a transient error
    for the inventory service: its consumer retries the CommitStock with delays)."""
    assert re.fullmatch(r"[A-Za-z0-9-]+", sku), sku
    name = f"vyapaar_test_fault_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("""
            CREATE OR REPLACE FUNCTION inventory.vyapaar_test_fault() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'injected by a test: % of stock % fails', TG_ARGV[0], NEW.sku;
            END $$""")
        await conn.execute(
            f"CREATE TRIGGER {name} BEFORE UPDATE ON inventory.stock FOR EACH ROW "
            f"WHEN (OLD.sku = '{sku}' AND NEW.committed > OLD.committed) "
            f"EXECUTE FUNCTION inventory.vyapaar_test_fault('commit')")
        yield
    finally:
        await conn.execute(f"DROP TRIGGER IF EXISTS {name} ON inventory.stock")
        await conn.close()


async def counter(http: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` with ``labels`` on a /metrics page."""
    async with http.get(url) as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        wanted = all(f'{k}="{v}"' in line for k, v in labels.items())
        if line.startswith((name + "{", name + " ")) and wanted:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def scraped_since_start(http: aiohttp.ClientSession, prometheus_url: str,
                              config: StackConfig) -> None:
    """Wait until Prometheus has scraped the processes running now (the fixture restarts
    them): a counter's first increment is only visible to rate() if its zero was scraped."""
    targets = {name: system.service_url(config, name) for name in system.SERVICES}
    targets["operator"] = f"http://{config.host}:{system.PORTS.operator_metrics}"
    for _ in range(60):
        stale = []
        for job, url in targets.items():
            started = await counter(http, f"{url}/metrics", "process_start_time_seconds")
            async with http.get(f"{prometheus_url}/api/v1/query", params={
                    "query": f'process_start_time_seconds{{job="{job}"}}'}) as resp:
                result = (await resp.json())["data"]["result"]
            if not result or float(result[0]["value"][1]) != started:
                stale.append(job)
        if not stale:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"Prometheus has not scraped the running {stale}")


async def until_scraped(http: aiohttp.ClientSession, prometheus_url: str, expr: str) -> None:
    for _ in range(30):
        async with http.get(f"{prometheus_url}/api/v1/query", params={"query": expr}) as resp:
            if (await resp.json())["data"]["result"]:
                return
        await asyncio.sleep(1)
    raise AssertionError(f"Prometheus never scraped {expr}")


def range_query(lint: ModuleType, prometheus_url: str, expr: str, start: float) -> list[Any]:
    status, body = lint.query(prometheus_url, "/api/v1/query_range", {
        "query": lint.substitute(expr), "start": f"{start:.3f}", "end": f"{time.time():.3f}",
        "step": "5",
    })
    assert status == 200 and body["status"] == "success", body
    return list(body["data"]["result"])


def has_finite_value(result: list[Any]) -> bool:
    return any(math.isfinite(float(value)) for series in result for _, value in series["values"])


async def test_every_panel_query_returns_data_after_a_real_run(
    running_system: System, prometheus_url: str,
    http: aiohttp.ClientSession, unique_sku: Callable[[str], str], seed_stock: Any,
    apply_order: Any, wait_for_phase: Any, namespace: str, amqp_url: str, database_url: str,
    lint: ModuleType, gateway_tenant: GatewayTenant,
) -> None:
    await scraped_since_start(http, prometheus_url, running_system.config)
    started = time.time() - 30
    sku, retried_sku = unique_sku("SKU-DASH"), unique_sku("SKU-DASH-RETRY")
    await seed_stock({sku: 20, retried_sku: 1})

    # A commit that fails until the fault is lifted: delayed retries, then Completed.
    metrics_url = f"{running_system.url('inventory')}/metrics"
    retries = await counter(http, metrics_url, "vyapaar_messages_retried_total",
                            queue="inventory.commands")
    async with stock_fault(database_url, retried_sku):
        apply_order(order_manifest("dash-retried", sku=retried_sku))
        for _ in range(150):
            if await counter(http, metrics_url, "vyapaar_messages_retried_total",
                             queue="inventory.commands") > retries:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the failing commit was never retried")
    assert (await wait_for_phase("dash-retried"))["status"]["phase"] == "Completed"
    # Let Prometheus see this first saga's histograms before the burst below: a series
    # whose first scrape already holds every observation shows no rate().
    await until_scraped(http, prometheus_url, 'vyapaar_saga_step_duration_seconds_count'
                        '{job="operator", step="notify", outcome="succeeded"}')

    # Every outcome.
    outcomes: dict[str, tuple[dict[str, Any], str]] = {
        "dash-ok-1": ({}, "Completed"),
        "dash-ok-2": ({"quantity": 2}, "Completed"),
        "dash-declined": ({"token": "tok_decline"}, "Failed"),
        "dash-far": ({"line1": "UNDELIVERABLE"}, "Failed"),
        "dash-cancelled": ({"cancel": True}, "Cancelled"),
    }
    uids = {name: apply_order(order_manifest(name, sku=sku, **extra))["metadata"]["uid"]
            for name, (extra, _) in outcomes.items()}
    for name, (_, phase) in outcomes.items():
        assert (await wait_for_phase(name))["status"]["phase"] == phase, name

    # Through the gateway: an order, its replay, its event stream, a burst over the limit.
    spec = order_manifest("unused", sku=sku)["spec"]
    for _ in range(2):
        async with http.post(f"{gateway_tenant.url}/api/v1/orders", json=spec,
                             headers={**gateway_tenant.headers,
                                      "Idempotency-Key": "dash"}) as created:
            assert created.status == 201, await created.text()
            via_gateway = (await created.json())["name"]
    async with http.get(f"{gateway_tenant.url}/api/v1/orders/{via_gateway}/events",
                        headers=gateway_tenant.headers) as stream:
        await stream.read()  # to its end: the order completes
    burst = [http.get(f"{gateway_tenant.url}/api/v1/orders?limit=1",
                      headers=gateway_tenant.headers) for _ in range(60)]
    statuses = [r.status for r in await asyncio.gather(*burst)]
    assert 429 in statuses, statuses

    marker = uuid.uuid4().hex.encode()
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        # A command delivered twice: an idempotent replay, then an inbox duplicate.
        uid = uids["dash-ok-1"]
        charge = Envelope.from_dict({
            "id": str(uuid.uuid4()), "type": "ChargePayment", "correlationId": uid,
            "causationId": None, "subject": f"{namespace}/dash-ok-1",
            "idempotencyKey": f"{uid}:pay", "time": "2026-01-01T00:00:00Z",
            "traceparent": f"00-{uid.replace('-', '')}-{'3' * 16}-01",
            "payload": {"amount": 1000, "currency": "INR", "token": "tok_visa",
                        "customer": {"id": "cust-e2e"}},
        })
        commands = await channel.get_exchange("vyapaar.commands")
        for _ in range(2):
            await commands.publish(charge.to_message(), routing_key="payment")
        # A poison reply: dead-lettered by the operator's consumer.
        events = await channel.get_exchange(EVENTS_EXCHANGE)
        await events.publish(
            aio_pika.Message(json.dumps({"not": "an envelope", "marker": marker.decode()})
                             .encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="inventory.StockReserved")
        try:
            missing = await wait_for_every_query(lint, prometheus_url, started)
        finally:
            await asyncio.sleep(1)  # the poison message reaches the DLQ
            await remove_from_dlq(channel, REPLIES_QUEUE, [marker.decode()])
    assert missing == [], "panels without data:\n" + "\n".join(missing)


async def wait_for_every_query(lint: ModuleType, prometheus_url: str, start: float,
                               within: float = 75) -> list[str]:
    pending = {
        (path.stem, title, ref): expr
        for path in DASHBOARDS
        for title, ref, expr in lint.targets(json.loads(path.read_text()))
    }
    assert len(pending) >= 60
    deadline = time.monotonic() + within
    while True:
        for key, expr in list(pending.items()):
            result = await asyncio.to_thread(range_query, lint, prometheus_url, expr, start)
            if has_finite_value(result):
                del pending[key]
        if not pending or time.monotonic() > deadline:
            return [f"{dash} / {title} [{ref}]: {expr}"
                    for (dash, title, ref), expr in sorted(pending.items())]
        await asyncio.sleep(5)
