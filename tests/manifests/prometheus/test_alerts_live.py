"""Every alert fires on the local stack for its real cause (GET /api/v1/alerts).

Causes are isolated from other tests: own namespace and SKUs, database faults scoped to this
module's SKUs (a trigger that fails the stock update of one SKU), an outbox row of its own,
a poison message with a marker. They are all set up at the start of the module, so the
alerts with a ``for:`` (and the compensation retry budget before CompensationFailed) run
their clocks in parallel; each test
then waits, bounded, for its alert to be *firing* (past pending). Afterwards everything is
repaired: the faults are lifted, the failed compensation is resumed, the orders finish, and
the dead-lettered messages and the outbox row of this module are removed.

TargetDown stops the notification service (its steps are retried forever, so no other saga
fails meanwhile) for about 40 seconds and restarts it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import EVENTS_EXCHANGE, REPLIES_QUEUE
from vyapaar_stack import infra, system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.processes import Process
from vyapaar_stack.testing import System, get_order, order_manifest, remove_from_dlq

pytestmark = pytest.mark.slow

ALERTS = {"VyapaarTargetDown", "VyapaarSagaStuck", "VyapaarCompensationFailed",
          "VyapaarDeadLetterQueueNotEmpty", "VyapaarOutboxLag", "VyapaarSagaFailureRatioHigh"}
DECLINED_ORDERS = 15
#: The compensation budget of the test settings (vyapaar_stack.testing.OPERATOR_ENV: six
#: attempts, 3 s timeout + 0.5..2 s backoff: about 30 s), plus scrapes, with a wide margin.
COMPENSATION_FAILED_WITHIN = 240


@dataclass
class Causes:
    config: StackConfig
    prometheus_url: str
    namespace: str
    started: float
    uids: dict[str, str] = field(default_factory=dict)
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    outbox_id: int | None = None
    triggers: list[str] = field(default_factory=list)


# --- Helpers ------------------------------------------------------------------------------


async def prometheus(http: aiohttp.ClientSession, url: str, path: str,
                     **params: str) -> Any:
    async with http.get(f"{url}{path}", params=params) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]


async def wait_for_alert(http: aiohttp.ClientSession, causes: Causes, name: str,
                         labels: dict[str, str], *, within: float) -> dict[str, Any]:
    """The alert ``name`` with ``labels`` once it is firing (``within`` s of the setup)."""
    seen = "absent"
    while True:
        data = await prometheus(http, causes.prometheus_url, "/api/v1/alerts")
        for alert in data["alerts"]:
            if alert["labels"].get("alertname") == name and all(
                    alert["labels"].get(k) == v for k, v in labels.items()):
                seen = alert["state"]
                if seen == "firing":
                    return dict(alert)
        if time.monotonic() - causes.started > within:
            raise AssertionError(f"{name} {labels} not firing after {within}s (state: {seen})")
        await asyncio.sleep(2)


async def stock_fault(conn: asyncpg.Connection, sku: str, condition: str, what: str) -> str:
    """A trigger failing the update of ``sku``'s stock row when ``condition`` holds."""
    assert re.fullmatch(r"[A-Za-z0-9-]+", sku), sku
    name = f"vyapaar_test_fault_{uuid.uuid4().hex[:12]}"
    await conn.execute("""
        CREATE OR REPLACE FUNCTION inventory.vyapaar_test_fault() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'injected by a test: % of stock % fails', TG_ARGV[0], NEW.sku;
        END $$""")
    await conn.execute(
        f"CREATE TRIGGER {name} BEFORE UPDATE ON inventory.stock FOR EACH ROW "
        f"WHEN (OLD.sku = '{sku}' AND {condition}) "
        f"EXECUTE FUNCTION inventory.vyapaar_test_fault('{what}')")
    return name


async def scraped_since_start(http: aiohttp.ClientSession, prometheus_url: str,
                              config: StackConfig) -> None:
    """Wait until Prometheus has scraped the processes that run now (fresh counters)."""
    targets = {name: system.service_url(config, name) for name in system.SERVICES}
    targets["operator"] = f"http://{config.host}:{system.PORTS.operator_metrics}"
    stale: list[str] = []
    for _ in range(60):
        stale = []
        for job, url in targets.items():
            async with http.get(f"{url}/metrics") as resp:
                text = await resp.text()
            started = next(float(line.split()[1]) for line in text.splitlines()
                           if line.startswith("process_start_time_seconds "))
            result = (await prometheus(http, prometheus_url, "/api/v1/query",
                                       query=f'process_start_time_seconds{{job="{job}"}}')
                      )["result"]
            if not result or float(result[0]["value"][1]) != started:
                stale.append(job)
        if not stale:
            return
        await asyncio.sleep(1)
    raise AssertionError(f"Prometheus has not scraped the running {stale}")


def apply(kubectl: Any, namespace: str, manifest: dict[str, Any]) -> str:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    return str(get_order(kubectl, namespace, manifest["metadata"]["name"])["metadata"]["uid"])


def phase(kubectl: Any, namespace: str, name: str) -> str | None:
    return (get_order(kubectl, namespace, name).get("status") or {}).get("phase")


# --- The causes, set up once --------------------------------------------------------------


@pytest.fixture(scope="module")
async def causes(running_system: System, prometheus_url: str, database_url: str,
                 amqp_url: str, kubectl: Any) -> AsyncIterator[Causes]:
    config = running_system.config
    infra.reload_prometheus(config)  # the rules as they are in manifests/prometheus/rules
    namespace = f"t-alerts-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "vyapaar.dev/test=true")
    suffix = uuid.uuid4().hex[:8].upper()
    skus = {kind: f"SKU-ALERT-{kind}-{suffix}" for kind in ("RELEASE", "COMMIT", "DECLINE")}
    causes = Causes(config, prometheus_url, namespace, time.monotonic())
    db = await asyncpg.connect(database_url)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await scraped_since_start(http, prometheus_url, config)
        for kind, count in (("RELEASE", 1), ("COMMIT", 1), ("DECLINE", DECLINED_ORDERS)):
            async with http.put(f"{running_system.url('inventory')}/api/v1/stock/{skus[kind]}",
                                json={"available": count}) as resp:
                assert resp.status < 300, await resp.text()
        try:
            # CompensationFailed: the stock cannot be released, so the compensation of a
            # declined order is retried until its budget runs out.
            causes.triggers.append(await stock_fault(
                db, skus["RELEASE"], "NEW.available > OLD.available AND NEW.held < OLD.held",
                "release"))
            causes.uids["repair-me"] = apply(kubectl, namespace, order_manifest(
                "repair-me", sku=skus["RELEASE"], token="tok_decline"))
            # SagaStuck: the stock cannot be committed, so the order stays in Completing.
            causes.triggers.append(await stock_fault(
                db, skus["COMMIT"], "NEW.committed > OLD.committed", "commit"))
            causes.uids["stuck"] = apply(kubectl, namespace, order_manifest(
                "stuck", sku=skus["COMMIT"]))
            # SagaFailureRatioHigh: a burst of declined payments.
            for i in range(DECLINED_ORDERS):
                name = f"declined-{i}"
                causes.uids[name] = apply(kubectl, namespace, order_manifest(
                    name, sku=skus["DECLINE"], token="tok_decline"))
            # OutboxLag: a reply the payment relay cannot publish (unroutable).
            envelope = Envelope.from_dict({
                "id": str(uuid.uuid4()), "type": "PaymentRefunded",
                "correlationId": causes.marker, "causationId": None,
                "subject": f"{namespace}/outbox-lag", "idempotencyKey": f"{causes.marker}:pay",
                "time": "2026-01-01T00:00:00Z",
                "traceparent": f"00-{causes.marker}-{'4' * 16}-01",
                "payload": {"refundId": None, "amount": 0, "noop": True},
            })
            causes.outbox_id = await db.fetchval(
                """INSERT INTO payment.outbox (message_id, message_type, correlation_id,
                                               exchange, routing_key, envelope)
                   VALUES ($1, $2, $3, '', $4, $5::jsonb) RETURNING id""",
                envelope.id, envelope.type, causes.marker,
                f"vyapaar-test-unroutable-{causes.marker}", json.dumps(envelope.to_dict()))
            # DeadLetterQueueNotEmpty: a poison reply.
            connection = await aio_pika.connect_robust(amqp_url)
            async with connection:
                channel = await connection.channel(publisher_confirms=True)
                exchange = await channel.get_exchange(EVENTS_EXCHANGE)
                await exchange.publish(
                    aio_pika.Message(json.dumps({"poison": causes.marker}).encode(),
                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="inventory.StockReserved")
            yield causes
        finally:
            await repair(causes, db, kubectl, amqp_url)
            await db.close()
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def repair(causes: Causes, db: asyncpg.Connection, kubectl: Any, amqp_url: str) -> None:
    """Lift every fault, resume the failed compensation, let the orders finish, clean up."""
    for trigger in causes.triggers:
        await db.execute(f"DROP TRIGGER IF EXISTS {trigger} ON inventory.stock")
    if causes.outbox_id is not None:
        await db.execute("DELETE FROM payment.outbox WHERE id = $1", causes.outbox_id)
    if "repair-me" in causes.uids and phase(kubectl, causes.namespace,
                                            "repair-me") == "CompensationFailed":
        kubectl("annotate", "-n", causes.namespace, "orders.vyapaar.dev", "repair-me",
                "vyapaar.dev/resume=now", "--overwrite")
    deadline = time.monotonic() + 120
    for name in causes.uids:
        while phase(kubectl, causes.namespace, name) not in ("Completed", "Failed",
                                                             "Cancelled"):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
    await asyncio.sleep(2)  # retries still queued by the faults reach the DLQs
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        markers = [causes.marker, *causes.uids.values()]
        for queue in (REPLIES_QUEUE, "inventory.commands"):
            await remove_from_dlq(channel, queue, markers)


# --- The alerts ---------------------------------------------------------------------------


async def test_the_rules_are_loaded_by_the_local_prometheus(
        causes: Causes, http: aiohttp.ClientSession) -> None:
    data = await prometheus(http, causes.prometheus_url, "/api/v1/rules")
    loaded = {rule["name"]: rule for group in data["groups"] for rule in group["rules"]}
    assert set(loaded) >= ALERTS
    assert all(loaded[name]["health"] == "ok" for name in loaded), loaded


async def test_a_poison_message_fires_dead_letter_queue_not_empty(
        causes: Causes, http: aiohttp.ClientSession) -> None:
    alert = await wait_for_alert(http, causes, "VyapaarDeadLetterQueueNotEmpty",
                                 {"queue": REPLIES_QUEUE}, within=90)
    assert float(alert["value"]) >= 1


async def test_an_outbox_row_that_cannot_be_published_fires_outbox_lag(
        causes: Causes, http: aiohttp.ClientSession) -> None:
    alert = await wait_for_alert(http, causes, "VyapaarOutboxLag", {"service": "payment"},
                                 within=180)
    assert float(alert["value"]) > 30


async def test_a_burst_of_declined_orders_fires_failure_ratio_high(
        causes: Causes, http: aiohttp.ClientSession) -> None:
    alert = await wait_for_alert(http, causes, "VyapaarSagaFailureRatioHigh", {},
                                 within=200)
    assert float(alert["value"]) > 0.25


async def test_a_saga_that_cannot_finish_fires_saga_stuck(
        causes: Causes, http: aiohttp.ClientSession, kubectl: Any) -> None:
    alert = await wait_for_alert(http, causes, "VyapaarSagaStuck", {"phase": "Completing"},
                                 within=240)
    assert float(alert["value"]) >= 1
    assert phase(kubectl, causes.namespace, "stuck") == "Completing"


async def test_a_stopped_service_fires_target_down(
        causes: Causes, http: aiohttp.ClientSession) -> None:
    config = causes.config
    notification = Process("notification", config.state_dir / "run")
    stopped = time.monotonic()
    notification.stop()
    try:
        alert = await wait_for_alert(http, causes, "VyapaarTargetDown",
                                     {"job": "notification"},
                                     within=time.monotonic() - causes.started + 90)
        assert float(alert["value"]) == 0
        assert time.monotonic() - stopped >= 30  # pending for its `for: 30s` first
    finally:
        system.start_service(config, "notification")
        system.wait_service(config, "notification")


async def test_a_compensation_that_cannot_succeed_fires_compensation_failed(
        causes: Causes, http: aiohttp.ClientSession, kubectl: Any) -> None:
    alert = await wait_for_alert(http, causes, "VyapaarCompensationFailed", {},
                                 within=COMPENSATION_FAILED_WITHIN)
    assert float(alert["value"]) >= 1
    assert phase(kubectl, causes.namespace, "repair-me") == "CompensationFailed"
