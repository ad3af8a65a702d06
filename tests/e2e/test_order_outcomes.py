"""Every way an order can end, with the effects each service must show for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from vyapaar_stack.testing import (
    System,
    condition,
    ledger_kinds,
    order_manifest,
    records,
    stock,
)


def templates(effects: dict[str, Any]) -> list[str]:
    return [n["template"] for n in effects["notification"]["items"]]


async def test_a_paid_order_completes_with_stock_committed_one_capture_one_shipment(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    sku = unique_sku("SKU-OK")
    await seed_stock({sku: 5})
    uid = apply_order(order_manifest("paid", sku=sku, quantity=2, unit_price=1500))[
        "metadata"]["uid"]

    order = await wait_for_phase("paid")

    assert order["status"]["phase"] == "Completed"
    assert condition(order, "Ready")["status"] == "True"  # type: ignore[index]
    effects = await records(http, running_system, uid)
    assert [r["status"] for r in effects["inventory"]["items"]] == ["committed"]
    assert ledger_kinds(effects) == [("charge", 3000)]
    assert [s["status"] for s in effects["shipping"]["items"]] == ["created"]
    assert templates(effects) == ["order-confirmed"]
    assert await stock(http, running_system, sku) == {"available": 3, "held": 0, "committed": 2}


async def test_a_declined_payment_releases_the_stock_and_tells_the_customer(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    sku = unique_sku("SKU-DECL")
    await seed_stock({sku: 5})
    uid = apply_order(order_manifest("declined", sku=sku, token="tok_decline"))[
        "metadata"]["uid"]

    order = await wait_for_phase("declined")

    assert order["status"]["phase"] == "Failed"
    effects = await records(http, running_system, uid)
    assert [r["status"] for r in effects["inventory"]["items"]] == ["released"]
    assert ledger_kinds(effects) == []  # nothing captured
    assert effects["shipping"]["items"] == []
    assert templates(effects) == ["order-failed"]
    assert await stock(http, running_system, sku) == {"available": 5, "held": 0, "committed": 0}


async def test_an_order_beyond_the_stock_fails_without_touching_payment(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    sku = unique_sku("SKU-RARE")
    await seed_stock({sku: 1})
    uid = apply_order(order_manifest("too-many", sku=sku, quantity=3))["metadata"]["uid"]

    order = await wait_for_phase("too-many")

    assert order["status"]["phase"] == "Failed"
    assert "stock" in order["status"]["message"].lower()
    effects = await records(http, running_system, uid)
    assert ledger_kinds(effects) == []
    assert templates(effects) == ["order-failed"]
    assert await stock(http, running_system, sku) == {"available": 1, "held": 0, "committed": 0}


async def test_an_undeliverable_order_is_refunded_after_capture_and_its_stock_released(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    sku = unique_sku("SKU-FAR")
    await seed_stock({sku: 4})
    uid = apply_order(order_manifest("far-away", sku=sku, quantity=2, unit_price=700,
                                     line1="UNDELIVERABLE"))["metadata"]["uid"]

    order = await wait_for_phase("far-away")

    assert order["status"]["phase"] == "Failed"
    effects = await records(http, running_system, uid)
    assert ledger_kinds(effects) == [("charge", 1400), ("refund", 1400)]
    assert [r["status"] for r in effects["inventory"]["items"]] == ["released"]
    assert all(s["status"] != "created" for s in effects["shipping"]["items"])
    assert templates(effects) == ["order-failed"]
    assert await stock(http, running_system, sku) == {"available": 4, "held": 0, "committed": 0}


async def test_an_order_cancelled_before_the_pivot_is_compensated_and_cancelled(
    running_system: System, http: aiohttp.ClientSession, unique_sku: Callable[[str], str],
    seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    sku = unique_sku("SKU-CXL")
    await seed_stock({sku: 2})
    uid = apply_order(order_manifest("changed-mind", sku=sku, cancel=True))["metadata"]["uid"]

    order = await wait_for_phase("changed-mind")

    assert order["status"]["phase"] == "Cancelled"
    effects = await records(http, running_system, uid)
    charges = [a for k, a in ledger_kinds(effects) if k == "charge"]
    refunds = [a for k, a in ledger_kinds(effects) if k == "refund"]
    assert charges == refunds  # whatever was captured was refunded
    assert all(s["status"] != "created" for s in effects["shipping"]["items"])
    assert "order-cancelled" in templates(effects)
    assert await stock(http, running_system, sku) == {"available": 2, "held": 0, "committed": 0}


async def test_a_cancellation_after_the_pivot_is_refused_with_a_condition(
    running_system: System, unique_sku: Callable[[str], str], seed_stock: Any,
    apply_order: Any, wait_for_phase: Any, kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-LATE")
    await seed_stock({sku: 2})
    apply_order(order_manifest("too-late", sku=sku))
    await wait_for_phase("too-late", {"Completing", "Completed"})

    kubectl("patch", "orders.vyapaar.dev", "too-late", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"cancel":true}}')
    order = await wait_for_phase("too-late", {"Completed"})
    for _ in range(50):  # the refusal lands with the next status write; give it 10 s
        refused = condition(order, "CancellationRefused")
        if refused:
            break
        await asyncio.sleep(0.2)
        order = await wait_for_phase("too-late", {"Completed"})
    assert refused is not None and refused["status"] == "True"
    assert order["status"]["phase"] == "Completed"
    events = kubectl("get", "events", "-n", namespace, "--field-selector",
                     "involvedObject.name=too-late", "-o", "name").stdout
    assert events.strip()


async def test_describe_shows_every_step_and_the_outcome_as_an_event(
    running_system: System, unique_sku: Callable[[str], str], seed_stock: Any,
    apply_order: Any, wait_for_phase: Any, kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-DESC")
    await seed_stock({sku: 1})
    apply_order(order_manifest("described", sku=sku))
    await wait_for_phase("described")

    described = kubectl("describe", "orders.vyapaar.dev", "described", "-n", namespace).stdout
    # The steps' entries (routine progress is not an Event: issue 9, one write per step)...
    for field in ("Reservation Id", "Charge Id", "Shipment Id", "Tracking Id"):
        assert field in described
    # ...and the outcome, in the status and among the Events.
    events = described.partition("Events:")[2]
    assert "OrderCompleted" in events
    listed = kubectl("get", "orders.vyapaar.dev", "-n", namespace).stdout
    assert "Completed" in listed.splitlines()[1]
