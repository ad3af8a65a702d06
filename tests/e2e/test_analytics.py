"""The analytics read model on the running system: it agrees exactly with what the services
recorded and with every order's status; a duplicated event changes nothing; killed with
SIGKILL it catches up with nothing lost; and a rebuild from the event log gives the same
tables."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client.parser import text_string_to_metric_families
from vyapaar_messaging import Publisher, Topology
from vyapaar_messaging.topology import queue_depth
from vyapaar_stack import components
from vyapaar_stack.testing import (
    TERMINAL,
    EventSubscriber,
    System,
    apply_orders,
    order_manifest,
    phase_of,
    set_faults,
    wait_orders,
    wait_published,
)

SCHEMA = "analytics"  # the stack runs the service with its default schema
TABLES = {"orders": "uid", "order_events": "uid, seq", "revenue_daily": "day, currency"}


async def analytics(http: aiohttp.ClientSession, running: System, path: str,
                    **params: str) -> Any:
    async with http.get(f"{running.url('analytics')}/api/v1/analytics/{path}",
                        params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def caught_up(http: aiohttp.ClientSession, running: System,
                    orders: dict[str, dict[str, Any]], within: float = 60
                    ) -> dict[str, dict[str, Any]]:
    """Each order as the read model has it, once it holds every event its status counts."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    read: dict[str, dict[str, Any]] = {}
    for name, order in orders.items():
        url = f"{running.url('analytics')}/api/v1/analytics/orders/{order['metadata']['uid']}"
        while True:
            async with http.get(url) as resp:
                body = await resp.json()
            if resp.status == 200 and len(body["history"]) == order["status"]["eventSeq"]:
                read[name] = body
                break
            assert loop.time() < deadline, f"{name}: the read model did not catch up: {body}"
            await asyncio.sleep(0.3)
    return read


def assert_history_is_the_status(order: dict[str, Any], read: dict[str, Any]) -> None:
    status = order["status"]
    history = read["history"]
    assert [e["seq"] for e in history] == list(range(1, status["eventSeq"] + 1))
    announced = [(datetime.fromisoformat(e["occurredAt"]), e["reason"], e["message"])
                 for e in history if e["announced"]]
    assert announced == [(datetime.fromisoformat(t["time"]), t["reason"], t["message"])
                         for t in status["timeline"]]
    assert read["phase"] == status["phase"]
    assert read["total"] == status["total"] and read["currency"] == status["currency"]
    assert read["finishedAt"] is not None


def with_currency(manifest: dict[str, Any], currency: str) -> dict[str, Any]:
    manifest["spec"]["currency"] = currency
    return manifest


def revenue_totals(body: dict[str, Any]) -> Counter[str]:
    return Counter({currency: t["net"] for currency, t in body["totals"].items()})


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def snapshot(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the read model's tables (the inbox is how it got there, not what it is)."""
    return {table: [tuple(row) for row in await conn.fetch(
                f"SELECT * FROM {SCHEMA}.{table} ORDER BY {order}")]
            for table, order in TABLES.items()}


async def duplicates_counted(http: aiohttp.ClientSession, running: System) -> float:
    async with http.get(f"{running.url('analytics')}/metrics") as resp:
        text = await resp.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "vyapaar_analytics_events_duplicate_total")


LEDGER_NET = """
    SELECT currency, sum(CASE kind WHEN 'charge' THEN amount ELSE -amount END) AS net
    FROM payment.ledger_entries WHERE order_uid = ANY($1::text[]) GROUP BY currency"""
READ_MODEL_NET = f"""
    SELECT currency, sum(e.captured - e.refunded) AS net
    FROM {SCHEMA}.order_events e JOIN {SCHEMA}.orders o USING (uid)
    WHERE o.uid = ANY($1::text[]) GROUP BY currency"""
FINISHED = f"""
    SELECT uid FROM {SCHEMA}.orders WHERE phase IN ('Completed', 'Failed', 'Cancelled')"""


async def settled(pair: Callable[[], Awaitable[tuple[Counter[str], Counter[str]]]],
                  within: float = 15) -> tuple[Counter[str], Counter[str]]:
    """Both sides of a comparison, once they agree or `within` seconds passed: whatever
    else runs on the stack may be moving money while they are read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        left, right = await pair()
        if left == right or loop.time() > deadline:
            return left, right
        await asyncio.sleep(0.5)


async def net_by_currency(conn: asyncpg.Connection, query: str, uids: list[str]
                          ) -> Counter[str]:
    return +Counter({row["currency"]: int(row["net"]) for row in await conn.fetch(query, uids)})


async def test_the_read_model_is_what_the_services_recorded_and_the_statuses_tell(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str, database: asyncpg.Connection,
) -> None:
    sku, rare = unique_sku("SKU-AN"), unique_sku("SKU-AN-RARE")
    await seed_stock({sku: 20, rare: 0})
    names = apply_orders(kubectl, namespace, [
        order_manifest("an-paid", sku=sku, quantity=2, unit_price=1500),
        with_currency(order_manifest("an-paid-eur", sku=sku, unit_price=1250), "EUR"),
        with_currency(order_manifest("an-paid-jpy", sku=sku, unit_price=900), "JPY"),
        order_manifest("an-declined", sku=sku, token="tok_decline"),
        order_manifest("an-no-stock", sku=rare),
        order_manifest("an-undeliverable", sku=sku, unit_price=700, line1="UNDELIVERABLE 7"),
        with_currency(order_manifest("an-refunded-eur", sku=sku, unit_price=333,
                                     line1="UNDELIVERABLE 9"), "EUR"),
        order_manifest("an-cancelled", sku=sku, cancel=True),
    ])

    orders = await wait_published(kubectl, namespace, names)
    read = await caught_up(http, running_system, orders)

    for name, order in orders.items():
        assert_history_is_the_status(order, read[name])
    assert {o["status"]["phase"] for o in orders.values()} == {"Completed", "Failed",
                                                              "Cancelled"}
    # Money, per currency: what the payment service's ledger holds for these orders, and
    # for every finished order the read model knows (all that ran since it subscribed).
    ours = [o["metadata"]["uid"] for o in orders.values()]
    assert await net_by_currency(database, READ_MODEL_NET, ours) == await net_by_currency(
        database, LEDGER_NET, ours) == Counter({"INR": 3000, "EUR": 1250, "JPY": 900})
    async def every_finished_order() -> tuple[Counter[str], Counter[str]]:
        every = [row["uid"] for row in await database.fetch(FINISHED)]
        return (await net_by_currency(database, READ_MODEL_NET, every),
                await net_by_currency(database, LEDGER_NET, every))

    # The revenue API adds up what the events moved, day by day.
    async def revenue_and_events() -> tuple[Counter[str], Counter[str]]:
        totals = revenue_totals(await analytics(http, running_system, "revenue"))
        known = [r["uid"] for r in await database.fetch(f"SELECT uid FROM {SCHEMA}.orders")]
        return +totals, await net_by_currency(database, READ_MODEL_NET, known)

    for pair in (every_finished_order, revenue_and_events):
        left, right = await settled(pair)
        assert left == right, pair.__name__
    today = str(datetime.now(UTC).date())
    eur_today = await analytics(http, running_system, "revenue", currency="EUR",
                                **{"from": today, "to": today})
    assert set(eur_today["totals"]) <= {"EUR"} and eur_today["totals"]["EUR"]["net"] >= 1250
    steps = {s["step"]: s for s in (await analytics(http, running_system, "steps"))["steps"]}
    assert {"reserve", "pay", "ship", "commit", "notify"} <= set(steps)


async def test_a_duplicated_event_changes_nothing(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str, database: asyncpg.Connection,
    amqp_connection: AbstractRobustConnection, subscriber: EventSubscriber,
) -> None:
    sku = unique_sku("SKU-AN-DUP")
    await seed_stock({sku: 1})
    names = apply_orders(kubectl, namespace, [
        order_manifest("an-dup", sku=sku, unit_price=4200)])
    orders = await wait_published(kubectl, namespace, names)
    await caught_up(http, running_system, orders)
    captured = next(e for e in subscriber.of(orders["an-dup"]["metadata"]["uid"])
                    if e.payload["reason"] == "PaymentCaptured")
    tables = await snapshot(database)
    counted = await duplicates_counted(http, running_system)

    publisher = await Publisher.open(amqp_connection, Topology())
    try:
        for _ in range(2):
            await publisher.publish_event(captured)
    finally:
        await publisher.close()

    for _ in range(100):
        if await duplicates_counted(http, running_system) >= counted + 2:
            break
        await asyncio.sleep(0.2)
    assert await duplicates_counted(http, running_system) == counted + 2
    assert await snapshot(database) == tables


async def test_killed_with_sigkill_mid_run_it_catches_up_with_nothing_lost(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-AN-KILL")
    count = 10
    await seed_stock({sku: count})
    await set_faults(http, running_system, "payment", latencyMs=1000)
    try:
        names = apply_orders(kubectl, namespace, [
            order_manifest(f"an-kill-{i}", sku=sku, unit_price=100 + i) for i in range(count)])
        await asyncio.sleep(1.0)  # events are flowing: the payments take a second each
        assert components.kill(running_system.config, "analytics", signal.SIGKILL)
        unfinished = await wait_orders(kubectl, namespace, names, TERMINAL, at_least=0)
        assert any(phase_of(o) not in TERMINAL for o in unfinished.values()), (
            "every order finished before the kill; nothing was tested")
        await asyncio.sleep(1.0)  # events pile up in its queue meanwhile
        components.start(running_system.config, "analytics")
    finally:
        await set_faults(http, running_system, "payment", latencyMs=0)

    orders = await wait_published(kubectl, namespace, names)
    read = await caught_up(http, running_system, orders)
    for name, order in orders.items():
        assert order["status"]["phase"] == "Completed"
        assert_history_is_the_status(order, read[name])


async def test_a_rebuild_from_the_event_log_gives_the_same_tables(
    running_system: System, database: asyncpg.Connection,
    amqp_connection: AbstractRobustConnection,
) -> None:
    channel = await amqp_connection.channel()
    for _ in range(100):  # whatever earlier specs published has been applied
        if await queue_depth(channel, "analytics.order-events") == 0:
            break
        await asyncio.sleep(0.2)
    await channel.close()
    incremental = await snapshot(database)
    assert incremental["order_events"], "nothing to rebuild"

    rebuild = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vyapaar_services.analytics", "rebuild", "--idle-seconds", "2",
        env={**os.environ, **running_system.config.env()},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(rebuild.communicate(), 300)

    assert rebuild.returncode == 0, (out + err).decode()
    assert await snapshot(database) == incremental
