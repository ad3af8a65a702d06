"""Circuit breakers on the running system: a service that stops answering makes sagas wait
at its step, not spend their budgets and compensate; the same outage without breakers does.

The suite's operator runs with breakers off (its specs of failures expect compensations);
these specs restart it with them on, and put it back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import aio_pika
import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY
from vyapaar_stack import system
from vyapaar_stack.testing import (
    System,
    apply_orders,
    get_order,
    ledger_kinds,
    order_manifest,
    phase_of,
    records,
    wait_orders,
)

BREAKERS_ON = {"VYAPAAR_BREAKER_THRESHOLD": "3", "VYAPAAR_BREAKER_COOLDOWN_SECONDS": "25",
               "VYAPAAR_BREAKER_PROBES": "2",
               "VYAPAAR_MAX_IN_FLIGHT": "0"}  # all 50 at payment, none queued in Pending
PAYMENT_COMMANDS = DEFAULT_TOPOLOGY.command_queue("payment")


@pytest.fixture
def breakers_on(running_system: System) -> Iterator[None]:
    running_system.restart_operator(**BREAKERS_ON)
    yield
    running_system.restart_operator()


async def operator_metric(http: aiohttp.ClientSession, system_: System, name: str,
                          **labels: str) -> float:
    url = f"http://{system_.config.host}:{system.PORTS.operator_metrics}/metrics"
    async with http.get(url) as resp:
        text = await resp.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v
                                              for k, v in labels.items()))


async def queued_commands(amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(PAYMENT_COMMANDS, passive=True)
        return int(queue.declaration_result.message_count or 0)


def create(kubectl: Any, namespace: str, prefix: str, count: int, sku: str) -> list[str]:
    return apply_orders(kubectl, namespace, [order_manifest(f"{prefix}-{i:02d}", sku=sku,
                                                           unit_price=100)
                                            for i in range(count)])


async def wait_phases(kubectl: Any, namespace: str, names: list[str], phases: set[str],
                      within: float) -> dict[str, str]:
    orders = await wait_orders(kubectl, namespace, names, phases, within=within)
    return {name: phase_of(order) for name, order in orders.items()}


async def test_an_open_breaker_makes_orders_wait_at_the_step_and_all_complete_after(
    running_system: System, breakers_on: None, payment_stopped: Callable[[], None],
    http: aiohttp.ClientSession, unique_sku: Callable[[str], str], seed_stock: Any,
    kubectl: Any, namespace: str, amqp_url: str,
) -> None:
    sku = unique_sku("SKU-BREAKER")
    await seed_stock({sku: 60})
    held_before = await operator_metric(http, running_system,
                                        "vyapaar_circuit_breaker_held_commands_total",
                                        service="payment")
    tripping = create(kubectl, namespace, "trip", 4, sku)
    for _ in range(60):  # their charges time out: three in a row open the breaker
        if await operator_metric(http, running_system, "vyapaar_circuit_breaker_state",
                                 service="payment") == 2:
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("the payment breaker did not open")

    waiting = create(kubectl, namespace, "wait", 50, sku)
    await wait_phases(kubectl, namespace, tripping + waiting, {"Paying"}, within=60)
    await asyncio.sleep(15)  # longer than a step's whole retry budget (3 x 3 s + backoff)
    await wait_phases(kubectl, namespace, tripping + waiting, {"Paying"}, within=0)
    assert await queued_commands(amqp_url) < 12  # no retry storm: the 50 were held
    held = await operator_metric(http, running_system,
                                 "vyapaar_circuit_breaker_held_commands_total",
                                 service="payment")
    assert held - held_before >= 50

    payment_stopped()  # repaired: after the cooldown the probes get answers, it closes
    ended = await wait_phases(kubectl, namespace, tripping + waiting,
                              {"Completed", "Failed", "Cancelled"}, within=120)
    assert set(ended.values()) == {"Completed"}
    assert await operator_metric(http, running_system, "vyapaar_circuit_breaker_state",
                                 service="payment") == 0
    for name in tripping + waiting:
        uid = get_order(kubectl, namespace, name)["metadata"]["uid"]
        assert ledger_kinds(await records(http, running_system, uid)) == [("charge", 100)]
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    reasons = {e["reason"] for e in events["items"]}
    assert {"CircuitBreakerOpened", "CircuitBreakerClosed"} <= reasons


async def test_without_breakers_the_same_outage_compensates(
    running_system: System, payment_stopped: Callable[[], None],
    http: aiohttp.ClientSession, unique_sku: Callable[[str], str], seed_stock: Any,
    kubectl: Any, namespace: str, amqp_url: str,
) -> None:
    sku = unique_sku("SKU-NO-BREAKER")
    await seed_stock({sku: 16})
    queued_before = await queued_commands(amqp_url)
    names = create(kubectl, namespace, "nobreaker", 16, sku)  # the suite's in-flight limit
    await wait_phases(kubectl, namespace, names, {"Compensating", "CompensationFailed"},
                      within=60)
    reasons = {get_order(kubectl, namespace, n)["status"]["reason"] for n in names}
    assert reasons == {"PaymentTimedOut"}  # every order spent its budget and turned around
    assert await queued_commands(amqp_url) - queued_before >= 16 * 3  # every attempt sent

    payment_stopped()  # the refunds of charges that may have happened can now be done
    ended = await wait_phases(kubectl, namespace, names, {"Failed"}, within=90)
    assert set(ended.values()) == {"Failed"}
    for name in names:  # expired commands are dropped: no money moved
        uid = get_order(kubectl, namespace, name)["metadata"]["uid"]
        kinds = ledger_kinds(await records(http, running_system, uid))
        assert [k for k, _ in kinds].count("charge") == [k for k, _ in kinds].count("refund")
