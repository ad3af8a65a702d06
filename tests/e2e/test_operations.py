"""Operating sagas at scale on the running system, with `vyapaar orders` as on-call runs it.

A paused saga waits out a payment outage longer than its whole retry budget and completes
once resumed, charged once; sagas stuck in CompensationFailed by a refund outage all finish
after the repair with one command; `retry` also brings back their dead-lettered commands.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp
from vyapaar_messaging import dlq
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY
from vyapaar_stack import components
from vyapaar_stack.testing import (
    OPERATOR_ENV,
    System,
    apply_orders,
    condition,
    get_order,
    ledger_kinds,
    order_manifest,
    records,
    remove_from_dlq,
    set_faults,
    wait_orders,
)

HELD = {"Paying", "Reserving", "Pending"}
"""Where the paused sagas wait (16 at payment; the others queued by the in-flight limit)."""


def vyapaar(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "vyapaar_cli", *args],
                            capture_output=True, text=True, timeout=300)
    print(result.stdout, result.stderr[-2000:])
    return result


def labelled(names: list[str], batch: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Order manifests labelled ``batch=<batch>`` (what `vyapaar orders -l` chooses)."""
    manifests = [order_manifest(name, **kwargs) for name in names]
    for manifest in manifests:
        manifest["metadata"]["labels"] = {"batch": batch}
    return manifests


async def test_orders_paused_longer_than_their_whole_retry_budget_complete_once_resumed(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str,
) -> None:
    sku, count = unique_sku("SKU-PAUSE"), 20
    await seed_stock({sku: count})
    names = [f"paused-{i:02d}" for i in range(count)]
    config = running_system.config
    components.stop(config, "payment")  # the misbehaving service: charges wait in the queue
    try:
        apply_orders(kubectl, namespace, labelled(names, "pause", sku=sku, unit_price=100))
        # 16 sagas run at once (the in-flight limit); the others wait, queued, in Pending.
        await wait_orders(kubectl, namespace, names, {"Paying"}, within=30, at_least=16)
        paused = vyapaar("orders", "pause", "-n", namespace, "-l", "batch=pause",
                         "--rate", "200")
        assert paused.returncode == 0, paused.stderr
        assert f"{count} Orders matched: {count} pause" in paused.stdout
        orders = await wait_orders(kubectl, namespace, names, HELD)
        for order in orders.values():  # the pause is seen: the status says so
            while condition(order, "Paused") is None:
                await asyncio.sleep(0.2)
                order = get_order(kubectl, namespace, order["metadata"]["name"])
        orders = await wait_orders(kubectl, namespace, names, HELD)
        attempts = {n: o["status"].get("steps", {}).get("pay", {}).get("attempts", 0)
                    for n, o in orders.items()}

        await asyncio.sleep(15)  # longer than 3 attempts of a 3 s timeout with their backoff
        orders = await wait_orders(kubectl, namespace, names, HELD)
        for name, order in orders.items():
            paused_condition = condition(order, "Paused")
            assert paused_condition is not None and paused_condition["status"] == "True", name
            pay = order["status"].get("steps", {}).get("pay", {})
            assert pay.get("attempts", 0) == attempts[name]  # not one retry while paused
    finally:
        components.start(config, "payment")

    dry = vyapaar("orders", "resume", "-n", namespace, "-l", "batch=pause", "--dry-run")
    assert dry.returncode == 0 and f"{count} of {count} Orders would change" in dry.stdout
    assert await wait_orders(kubectl, namespace, names, HELD)  # the dry run changed nothing
    resumed = vyapaar("orders", "resume", "-n", namespace, "-l", "batch=pause")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{count} Orders matched: {count} unpause" in resumed.stdout
    orders = await wait_orders(kubectl, namespace, names, {"Completed", "Failed", "Cancelled"})
    for name, order in orders.items():
        status = order["status"]
        assert status["phase"] == "Completed", (name, status["reason"])
        assert status["steps"]["pay"]["attempts"] == max(attempts[name], 1)  # none lost
        reasons = [entry["reason"] for entry in status.get("timeline", [])]
        assert "Paused" in reasons and "Resumed" in reasons
        effects = await records(http, running_system, order["metadata"]["uid"])
        assert ledger_kinds(effects) == [("charge", 100)]


PAYMENT_COMMANDS = DEFAULT_TOPOLOGY.command_queue("payment")
REFUND_ATTEMPTS = int(OPERATOR_ENV["VYAPAAR_COMPENSATION_MAX_ATTEMPTS"])


async def dead_letters_of(amqp_url: str, uids: set[str]) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        _, messages = await dlq.list_messages(connection, PAYMENT_COMMANDS, limit=10_000)
    return sum(1 for m in messages if m.correlation_id in uids)


async def stuck_in_compensation_failed(
    running_system: System, http: aiohttp.ClientSession, seed_stock: Any, kubectl: Any,
    namespace: str, amqp_url: str, sku: str, names: list[str], batch: str,
) -> dict[str, dict[str, Any]]:
    """Undeliverable orders (charged, then to be refunded) during a refund outage that lasts
    until every refund attempt is dead-lettered (none left to heal them on its own)."""
    await seed_stock({sku: len(names)})
    await set_faults(http, running_system, "payment", errorRate=1.0, operations=["refund"])
    try:
        apply_orders(kubectl, namespace, labelled(names, batch, sku=sku, unit_price=250,
                                                  line1="UNDELIVERABLE Lane"))
        stuck = await wait_orders(kubectl, namespace, names, {"CompensationFailed"},
                                  within=180)
        uids = {o["metadata"]["uid"] for o in stuck.values()}
        for _ in range(120):  # the service's own retries of the last attempts run out
            if await dead_letters_of(amqp_url, uids) >= len(uids) * REFUND_ATTEMPTS:
                break
            await asyncio.sleep(1.0)
        else:
            raise AssertionError("the refund attempts were not all dead-lettered")
        return stuck
    finally:
        await set_faults(http, running_system, "payment", errorRate=0.0)  # repaired


async def refunded_in_full(http: aiohttp.ClientSession, running_system: System,
                           orders: dict[str, dict[str, Any]]) -> None:
    for name, order in orders.items():
        assert order["status"]["phase"] == "Failed", name
        effects = await records(http, running_system, order["metadata"]["uid"])
        assert ledger_kinds(effects) == [("charge", 250), ("refund", 250)], name


async def test_orders_stuck_in_compensation_failed_all_finish_with_one_resume(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str, amqp_url: str,
    channel: Any,
) -> None:
    names = [f"stuck-{i:02d}" for i in range(30)]
    stuck = await stuck_in_compensation_failed(
        running_system, http, seed_stock, kubectl, namespace, amqp_url,
        unique_sku("SKU-STUCK"), names, "stuck")

    resumed = vyapaar("orders", "resume", "-n", namespace, "--phase", "CompensationFailed")
    assert resumed.returncode == 0, resumed.stderr
    assert "30 Orders matched: 30 repair" in resumed.stdout
    orders = await wait_orders(kubectl, namespace, names, {"Failed", "Cancelled"})
    await refunded_in_full(http, running_system, orders)
    # The outage's dead letters are this test's own: they go (the next test's count on).
    await remove_from_dlq(channel, PAYMENT_COMMANDS,
                          [o["metadata"]["uid"] for o in stuck.values()])


async def test_retry_redrives_exactly_their_dead_lettered_commands_then_resumes(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str, amqp_url: str,
) -> None:
    names = [f"retried-{i}" for i in range(3)]
    stuck = await stuck_in_compensation_failed(
        running_system, http, seed_stock, kubectl, namespace, amqp_url,
        unique_sku("SKU-RETRY"), names, "retry")
    uids = {o["metadata"]["uid"] for o in stuck.values()}
    assert await dead_letters_of(amqp_url, uids) == len(uids) * REFUND_ATTEMPTS
    retried = vyapaar("orders", "retry", "-n", namespace, "-l", "batch=retry")
    assert retried.returncode == 0, retried.stderr
    assert "redrove" in retried.stderr
    assert "3 Orders matched: 3 repair" in retried.stdout
    assert await dead_letters_of(amqp_url, uids) == 0  # redriven: refunded, idempotently
    orders = await wait_orders(kubectl, namespace, names, {"Failed", "Cancelled"})
    await refunded_in_full(http, running_system, orders)
