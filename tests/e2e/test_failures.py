"""Crashes, duplicates, poison and deletion: the saga stays correct when things go wrong."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import EVENTS_EXCHANGE, REPLIES_QUEUE, dlq_name
from vyapaar_stack import system
from vyapaar_stack.testing import (
    System,
    get_order,
    ledger_kinds,
    order_manifest,
    records,
    set_faults,
    stock,
)


async def test_sigkill_of_the_operator_mid_saga_loses_nothing_and_doubles_nothing(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any, kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-KILL")
    orders = 12
    await seed_stock({sku: orders})
    await set_faults(http, running_system, "payment", latencyMs=2000)
    try:
        uids = [apply_order(order_manifest(f"k{i}", sku=sku, unit_price=100))["metadata"]["uid"]
                for i in range(orders)]
        await asyncio.sleep(0.3)  # sagas are now in flight (payments take 2 s each)
        operator = running_system.operator()
        pid = operator.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(1.0)
        phases = {(get_order(kubectl, namespace, f"k{i}").get("status") or {}).get("phase")
                  for i in range(orders)}
        assert phases - {"Completed"}, "all orders finished before the kill; nothing was tested"
        running_system.restart_operator()
    finally:
        await set_faults(http, running_system, "payment", latencyMs=0)

    for i in range(orders):
        assert (await wait_for_phase(f"k{i}", within=120))["status"]["phase"] == "Completed"
    for uid in uids:
        effects = await records(http, running_system, uid)
        assert ledger_kinds(effects) == [("charge", 100)]
        assert len(effects["shipping"]["items"]) == 1
        assert [n["template"] for n in effects["notification"]["items"]] == ["order-confirmed"]
    assert await stock(http, running_system, sku) == {
        "available": 0, "held": 0, "committed": orders}


async def test_a_reply_delivered_twice_changes_nothing_the_second_time(
    running_system: System, amqp_url: str, unique_sku: Callable[[str], str], seed_stock: Any,
    apply_order: Any, wait_for_phase: Any, kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-DUP")
    await seed_stock({sku: 1})
    order = apply_order(order_manifest("dup", sku=sku))
    await wait_for_phase("dup")
    uid = order["metadata"]["uid"]
    for _ in range(50):  # settled: the finalizer goes right after the final status write
        done = get_order(kubectl, namespace, "dup")
        if not done["metadata"].get("finalizers"):
            break
        await asyncio.sleep(0.1)
    assert not done["metadata"].get("finalizers")
    before = done["metadata"]["resourceVersion"]

    stale = Envelope.from_dict({
        "id": str(uuid.uuid4()), "type": "StockReserved", "correlationId": uid,
        "causationId": None, "subject": f"{namespace}/dup",
        "idempotencyKey": f"{uid}:reserve", "time": "2026-01-01T00:00:00Z",
        "traceparent": f"00-{uid.replace('-', '')}-{'1' * 16}-01",
        "payload": {"reservationId": "r-duplicate"},
    })
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for _ in range(2):
            await exchange.publish(stale.to_message(), routing_key="inventory.StockReserved")
    await asyncio.sleep(2)

    after = get_order(kubectl, namespace, "dup")
    assert after["metadata"]["resourceVersion"] == before
    assert after["status"]["steps"]["reserve"]["reservationId"] != "r-duplicate"


async def test_a_command_delivered_twice_has_one_effect(
    running_system: System, amqp_url: str, http: aiohttp.ClientSession,
    unique_sku: Callable[[str], str], seed_stock: Any, apply_order: Any, wait_for_phase: Any,
    namespace: str,
) -> None:
    sku = unique_sku("SKU-TWICE")
    await seed_stock({sku: 1})
    uid = apply_order(order_manifest("twice", sku=sku, unit_price=999))["metadata"]["uid"]
    await wait_for_phase("twice")

    charge = Envelope.from_dict({
        "id": str(uuid.uuid4()), "type": "ChargePayment", "correlationId": uid,
        "causationId": None, "subject": f"{namespace}/twice",
        "idempotencyKey": f"{uid}:pay", "time": "2026-01-01T00:00:00Z",
        "traceparent": f"00-{uid.replace('-', '')}-{'2' * 16}-01",
        "payload": {"amount": 999, "currency": "INR", "token": "tok_visa",
                    "customer": {"id": "cust-e2e"}},
    })
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("vyapaar.commands")
        for _ in range(2):
            await exchange.publish(charge.to_message(), routing_key="payment")
    await asyncio.sleep(2)

    effects = await records(http, running_system, uid)
    assert ledger_kinds(effects) == [("charge", 999)]


async def test_a_poison_reply_is_dead_lettered_with_its_reason_and_blocks_nothing(
    running_system: System, amqp_url: str, unique_sku: Callable[[str], str], seed_stock: Any,
    apply_order: Any, wait_for_phase: Any,
) -> None:
    marker = uuid.uuid4().hex
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(json.dumps({"not": "an envelope", "marker": marker}).encode(),
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key="inventory.StockReserved")

        sku = unique_sku("SKU-AFTER-POISON")
        await seed_stock({sku: 1})
        apply_order(order_manifest("behind-poison", sku=sku))
        assert (await wait_for_phase("behind-poison"))["status"]["phase"] == "Completed"

        dlq = await channel.declare_queue(dlq_name(REPLIES_QUEUE), passive=True)
        found = None
        for _ in range(200):
            message = await dlq.get(fail=False)
            if message is None:
                break
            if marker.encode() in message.body:
                found = message
                await message.ack()
                break
            await message.nack(requeue=True)
        assert found is not None, "the poison message is not in the dead-letter queue"
        assert found.headers.get("x-vyapaar-error")
        assert found.headers.get("x-vyapaar-dead-letter-reason") == "poison"


async def test_deleting_an_order_before_the_pivot_compensates_first(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any, kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-DEL")
    await seed_stock({sku: 3})
    await set_faults(http, running_system, "payment", latencyMs=2500)
    try:
        uid = apply_order(order_manifest("deleted", sku=sku, unit_price=250))["metadata"]["uid"]
        await wait_for_phase("deleted", {"Paying"})
        kubectl("delete", "orders.vyapaar.dev", "deleted", "-n", namespace, "--wait=false")
        for _ in range(200):
            gone = kubectl("get", "orders.vyapaar.dev", "deleted", "-n", namespace,
                           check=False)
            if gone.returncode != 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the order was never removed")
    finally:
        await set_faults(http, running_system, "payment", latencyMs=0)
    await asyncio.sleep(3)  # a charge still in the payment service's hands lands, then refunds

    effects = await records(http, running_system, uid)
    kinds = ledger_kinds(effects)
    assert [a for k, a in kinds if k == "charge"] == [a for k, a in kinds if k == "refund"]
    assert await stock(http, running_system, sku) == {"available": 3, "held": 0, "committed": 0}


async def test_a_reply_about_an_order_that_does_not_exist_is_acked_counted_and_logged(
    running_system: System, amqp_url: str, http: aiohttp.ClientSession, namespace: str,
) -> None:
    metrics_url = (f"http://{running_system.config.host}:"
                   f"{system.PORTS.operator_metrics}/metrics")

    async def ignored() -> tuple[float, float]:
        async with http.get(metrics_url) as resp:
            text = await resp.text()
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (sample.name == "vyapaar_messages_consumed_total"
                        and sample.labels == {"queue": REPLIES_QUEUE, "type": "PaymentCaptured",
                                              "outcome": "ignored"}):
                    values["consumed"] = sample.value
                if (sample.name == "vyapaar_saga_replies_total"
                        and sample.labels == {"type": "PaymentCaptured", "result": "ignored"}):
                    values["replies"] = sample.value
        return values.get("consumed", 0.0), values.get("replies", 0.0)

    before = await ignored()
    uid = str(uuid.uuid4())
    reply = Envelope.create(
        contracts.PaymentCaptured(charge_id="ch_ghost", amount=100, currency="INR"),
        correlation_id=uid, idempotency_key=f"{uid}:pay",
        subject=f"{namespace}/no-such-order")
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        await exchange.publish(reply.to_message(), routing_key="payment.PaymentCaptured")

        for _ in range(100):
            after = await ignored()
            if after[0] > before[0]:
                break
            await asyncio.sleep(0.1)
        assert after == (before[0] + 1, before[1] + 1), (before, after)
        log = running_system.operator().log_file.read_text(errors="replace")
        assert f"ignored PaymentCaptured {reply.id}: no Order {namespace}/no-such-order" in log
        dlq = await channel.declare_queue(dlq_name(REPLIES_QUEUE), passive=True)
        for _ in range(dlq.declaration_result.message_count or 0):
            message = await dlq.get(fail=False)
            if message is None:
                break
            assert reply.id.encode() not in message.body, "the reply was dead-lettered"
            await message.nack(requeue=True)
