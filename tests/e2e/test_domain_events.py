"""Domain events: every transition of every order reaches the fan-out, after the status
write that recorded it, exactly as the status tells it -- even across an operator crash."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
from vyapaar_messaging import Envelope, contracts
from vyapaar_stack.testing import (
    TERMINAL,
    EventSubscriber,
    System,
    apply_orders,
    ledger_kinds,
    order_manifest,
    phase_of,
    records,
    set_faults,
    wait_orders,
    wait_published,
)


def assert_told_as_the_status_tells_it(order: dict[str, Any], events: list[Envelope]) -> None:
    """The order's events, deduplicated by id: numbered 1..eventSeq without a gap, each id
    derived from the order and the seq, every copy of one id the same; the announced ones
    are the status timeline; the last one is the outcome; the outbox is empty."""
    uid, status = order["metadata"]["uid"], order["status"]
    by_id: dict[str, Envelope] = {}
    for envelope in events:
        first = by_id.setdefault(envelope.id, envelope)
        assert first.payload == envelope.payload, f"{envelope.id}: two different events"
    told = sorted(by_id.values(), key=lambda e: e.payload["seq"])
    assert [e.payload["seq"] for e in told] == list(range(1, status["eventSeq"] + 1))
    assert [e.id for e in told] == [contracts.event_id(uid, e.payload["seq"]) for e in told]
    assert all(e.subject == f"{order['metadata']['namespace']}/{order['metadata']['name']}"
               for e in told)
    parsed = [contracts.OrderEvent.model_validate(e.payload) for e in told]
    announced = [(e.occurred_at, e.reason, e.message) for e in parsed if e.announced]
    timeline = [(datetime.fromisoformat(t["time"]), t["reason"], t["message"])
                for t in status["timeline"]]
    assert announced == timeline
    assert parsed[-1].phase == status["phase"]


def money_told(events: list[Envelope]) -> int:
    unique = {e.id: contracts.OrderEvent.model_validate(e.payload) for e in events}
    return sum(e.captured - e.refunded for e in unique.values())


def ledger_net(effects: dict[str, Any]) -> int:
    return sum(amount if kind == "charge" else -amount for kind, amount in ledger_kinds(effects))


async def test_every_outcome_is_told_event_by_event_as_its_status_records_it(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str, subscriber: EventSubscriber,
) -> None:
    sku, rare = unique_sku("SKU-EV"), unique_sku("SKU-EV-RARE")
    await seed_stock({sku: 10, rare: 0})
    manifests = [
        order_manifest("ev-paid", sku=sku, unit_price=1500),
        order_manifest("ev-declined", sku=sku, token="tok_decline"),
        order_manifest("ev-no-stock", sku=rare),
        order_manifest("ev-undeliverable", sku=sku, unit_price=700, line1="UNDELIVERABLE 1"),
        order_manifest("ev-cancelled", sku=sku, cancel=True),
    ]
    names = apply_orders(kubectl, namespace, manifests)

    await subscriber.settle(await wait_orders(kubectl, namespace, names, TERMINAL))
    orders = await wait_published(kubectl, namespace, names)

    for order in orders.values():
        uid = order["metadata"]["uid"]
        assert_told_as_the_status_tells_it(order, subscriber.of(uid))
        effects = await records(http, running_system, uid)
        assert money_told(subscriber.of(uid)) == ledger_net(effects), order["metadata"]
    refunded = [contracts.OrderEvent.model_validate(e.payload)
                for e in subscriber.of(orders["ev-undeliverable"]["metadata"]["uid"])]
    assert [(e.reason, e.captured, e.refunded) for e in refunded if e.captured or e.refunded
            ] == [("PaymentCaptured", 700, 0), ("PaymentRefunded", 0, 700)]


async def test_an_operator_killed_mid_run_neither_loses_nor_invents_an_event(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, kubectl: Any, namespace: str, subscriber: EventSubscriber,
) -> None:
    sku = unique_sku("SKU-EV-KILL")
    count = 10
    await seed_stock({sku: count})
    await set_faults(http, running_system, "payment", latencyMs=1500)
    try:
        names = apply_orders(kubectl, namespace, [
            order_manifest(f"ev-kill-{i}", sku=sku, unit_price=100) for i in range(count)])
        await asyncio.sleep(0.5)  # sagas in flight: each payment takes 1.5 s
        pid = running_system.operator().pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        unfinished = await wait_orders(kubectl, namespace, names, TERMINAL, at_least=0)
        assert any(phase_of(o) not in TERMINAL for o in unfinished.values()), (
            "every order finished before the kill; nothing was tested")
        running_system.restart_operator()
    finally:
        await set_faults(http, running_system, "payment", latencyMs=0)

    await subscriber.settle(await wait_orders(kubectl, namespace, names, TERMINAL))
    orders = await wait_published(kubectl, namespace, names)
    for order in orders.values():
        assert order["status"]["phase"] == "Completed"
        assert_told_as_the_status_tells_it(order, subscriber.of(order["metadata"]["uid"]))
