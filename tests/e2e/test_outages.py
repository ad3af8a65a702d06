"""Outages of the infrastructure cost time, not orders: RabbitMQ stopped under load."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from vyapaar_stack import components, system
from vyapaar_stack.testing import (
    OPERATOR_ENV,
    System,
    ledger_kinds,
    order_manifest,
    records,
    stock,
)

#: long enough that the replies held up by the outage still arrive within the step's budget
PATIENT_OPERATOR = {**OPERATOR_ENV, "VYAPAAR_STEP_TIMEOUT_SECONDS": "10"}


@pytest.fixture
def patient_operator(running_system: System) -> Iterator[System]:
    config = running_system.config
    running_system.operator().stop()
    system.start_operator(config, PATIENT_OPERATOR)
    system.wait_operator(config)
    try:
        yield running_system
    finally:
        running_system.operator().stop()
        running_system.restart_operator()


async def unpublished_retries(http: aiohttp.ClientSession, running: System) -> float:
    url = f"http://{running.config.host}:{system.PORTS.operator_metrics}/metrics"
    async with http.get(url) as resp:
        text = await resp.text()
    return sum(sample.value
               for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "vyapaar_saga_retries_total"
               and sample.labels.get("reason") == "unpublished")


@pytest.mark.slow
async def test_orders_placed_while_the_broker_is_down_complete_once_it_is_back(
    patient_operator: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    running = patient_operator
    config = running.config
    sku = unique_sku("SKU-OUTAGE")
    before, during = 6, 6
    await seed_stock({sku: before + during})
    unpublished = await unpublished_retries(http, running)
    uids = [apply_order(order_manifest(f"o{i}", sku=sku, unit_price=300))["metadata"]["uid"]
            for i in range(before)]

    await asyncio.to_thread(components.stop, config, "rabbitmq")
    try:
        for _ in range(50):  # a service out of rotation: it cannot do its work
            async with http.get(f"{running.url('payment')}/readyz") as resp:
                status, body = resp.status, await resp.json()
            if status == 503:
                break
            await asyncio.sleep(0.1)
        assert status == 503, body
        assert body["checks"]["broker"] is False
        uids += [apply_order(order_manifest(f"o{before + i}", sku=sku, unit_price=300))
                 ["metadata"]["uid"] for i in range(during)]
        await asyncio.sleep(12)  # longer than a step's timeout: the old code failed orders here
    finally:
        await asyncio.to_thread(components.start, config, "rabbitmq")

    for i in range(before + during):
        order = await wait_for_phase(f"o{i}", within=180)
        assert order["status"]["phase"] == "Completed", json.dumps(order["status"], indent=1)
    for uid in uids:
        assert ledger_kinds(await records(http, running, uid)) == [("charge", 300)]
    assert await stock(http, running, sku) == {
        "available": 0, "held": 0, "committed": before + during}
    assert await unpublished_retries(http, running) > unpublished
    async with http.get(f"{running.url('payment')}/readyz") as resp:
        assert resp.status == 200


@pytest.mark.slow
async def test_charges_the_saga_gave_up_on_never_happen_when_payment_comes_back(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    config = running_system.config
    sku = unique_sku("SKU-GAVE-UP")
    orders = 4
    await seed_stock({sku: orders})
    await asyncio.to_thread(components.stop, config, "payment")
    try:
        uids = [apply_order(order_manifest(f"g{i}", sku=sku, unit_price=700))["metadata"]["uid"]
                for i in range(orders)]
        # every ChargePayment waits in the queue; the saga runs out of attempts and turns
        # around, its RefundPayment queued behind them
        for i in range(orders):
            await wait_for_phase(f"g{i}", {"Compensating"}, within=60)
    finally:
        await asyncio.to_thread(components.start, config, "payment")

    for i in range(orders):
        order = await wait_for_phase(f"g{i}", within=120)
        assert order["status"]["phase"] == "Failed"
        assert order["status"]["reason"] == "PaymentTimedOut"
    for uid in uids:
        effects = await records(http, running_system, uid)
        assert ledger_kinds(effects) == []  # never charged, so never refunded
        async with http.get(f"{running_system.url('payment')}/api/v1/processor",
                            params={"order": uid}) as resp:
            assert (await resp.json())["operations"] == []  # the processor saw nothing
    assert await stock(http, running_system, sku) == {"available": orders, "held": 0,
                                                      "committed": 0}
