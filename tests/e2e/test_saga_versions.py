"""Saga versions on the running system: a release that changes the flow keeps the sagas in
flight on the flow they started on, starts new ones on the new flow, and leaves alone an
Order whose version it does not know.

Version 1 reserves, pays and ships; version 2 screens the payment for fraud first.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from vyapaar_stack.testing import (
    System,
    apply_orders,
    condition,
    get_order,
    ledger_kinds,
    order_manifest,
    phase_of,
    records,
    wait_orders,
)

#: Long enough that orders wait at a stopped service through an operator restart instead
#: of timing out; no in-flight limit, so every order starts at once.
PATIENT = {"VYAPAAR_STEP_TIMEOUT_SECONDS": "30", "VYAPAAR_MAX_IN_FLIGHT": "0"}
FINISHED = {"Completed", "Failed", "Cancelled", "CompensationFailed"}


@pytest.fixture
def operator_restored(running_system: System) -> Iterator[None]:
    yield
    running_system.restart_operator()


def steps_of(order: dict[str, Any]) -> set[str]:
    return set(order["status"]["steps"])


async def test_orders_in_flight_across_a_release_end_on_the_flow_they_started_on(
    running_system: System, operator_restored: None, payment_stopped: Callable[[], None],
    http: aiohttp.ClientSession, unique_sku: Callable[[str], str], seed_stock: Any,
    kubectl: Any, namespace: str,
) -> None:
    sku = unique_sku("SKU-VERSIONS")
    await seed_stock({sku: 20})
    running_system.restart_operator(**PATIENT)  # releases new sagas on version 1
    first = apply_orders(kubectl, namespace, [
        *(order_manifest(f"v1-{i}", sku=sku, unit_price=700) for i in range(8)),
        order_manifest("v1-fraud", sku=sku, unit_price=700, token="tok_fraud"),
    ])
    await wait_orders(kubectl, namespace, first, {"Paying"}, within=60)  # payment is down

    running_system.restart_operator(**PATIENT, VYAPAAR_SAGA_VERSION="2")  # the new release
    second = apply_orders(kubectl, namespace, [
        *(order_manifest(f"v2-{i}", sku=sku, unit_price=900) for i in range(8)),
        order_manifest("v2-fraud", sku=sku, unit_price=900, token="tok_fraud"),
    ])
    await wait_orders(kubectl, namespace, second, {"CheckingFraud"}, within=60)
    for name in first:  # still waiting at pay, on their own flow, after the restart
        order = get_order(kubectl, namespace, name)
        assert (phase_of(order), order["status"]["sagaVersion"]) == ("Paying", 1)

    payment_stopped()  # back: the charges of version 1 and the checks of version 2 go through
    ended = await wait_orders(kubectl, namespace, first + second, FINISHED, within=120)

    for name, order in ended.items():
        version = order["status"]["sagaVersion"]
        uid = order["metadata"]["uid"]
        kinds = ledger_kinds(await records(http, running_system, uid))
        if name.startswith("v1-"):
            assert version == 1 and "fraud-check" not in steps_of(order), name
            assert phase_of(order) == "Completed", name  # v1 never screens, even tok_fraud
            assert kinds == [("charge", 700)], name
        elif name == "v2-fraud":
            assert version == 2 and "fraud-check" in steps_of(order)
            assert (phase_of(order), order["status"]["reason"]) == ("Failed", "FraudSuspected")
            assert order["status"]["steps"]["pay"]["state"] == "Skipped"
            assert order["status"]["steps"]["reserve"]["state"] == "Compensated"
            assert kinds == []  # nothing charged
        else:
            assert version == 2 and phase_of(order) == "Completed", name
            assert order["status"]["steps"]["fraud-check"]["state"] == "Succeeded", name
            assert kinds == [("charge", 900)], name


async def test_an_order_of_an_unknown_version_is_left_alone_until_an_operator_knows_it(
    running_system: System, unique_sku: Callable[[str], str], seed_stock: Any,
    kubectl: Any, namespace: str, http: aiohttp.ClientSession,
) -> None:
    sku = unique_sku("SKU-UNKNOWN-VERSION")
    await seed_stock({sku: 2})
    held = order_manifest("from-the-future", sku=sku)
    held["spec"]["paused"] = True  # started, then held where it is, version recorded
    apply_orders(kubectl, namespace, [held])
    order = (await wait_orders(kubectl, namespace, ["from-the-future"], {"Reserving"},
                               within=60))["from-the-future"]
    assert order["status"]["sagaVersion"] == 1
    # As a newer operator that knows version 99 would have written it:
    kubectl("patch", "orders.vyapaar.dev", "from-the-future", "-n", namespace,
            "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"sagaVersion": 99}}))
    kubectl("patch", "orders.vyapaar.dev", "from-the-future", "-n", namespace,
            "--type=merge", "-p", json.dumps({"spec": {"paused": False}}))

    refused = await wait_condition(kubectl, namespace, "from-the-future",
                                   "UnknownSagaVersion", "True")
    assert "99" in refused["message"]
    order = get_order(kubectl, namespace, "from-the-future")
    assert phase_of(order) == "Reserving" and order["status"]["sagaVersion"] == 99
    assert order["status"]["steps"]["reserve"].get("unsent") is True  # nothing published
    uid = order["metadata"]["uid"]
    assert (await records(http, running_system, uid))["inventory"]["items"] == []
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json",
                                "--field-selector",
                                "involvedObject.name=from-the-future").stdout)
    assert "UnknownSagaVersion" in {e["reason"] for e in events["items"]}

    # An operator that knows the version (here: the version put back) carries on.
    kubectl("patch", "orders.vyapaar.dev", "from-the-future", "-n", namespace,
            "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"sagaVersion": 1}}))
    ended = await wait_orders(kubectl, namespace, ["from-the-future"], FINISHED, within=60)
    assert phase_of(ended["from-the-future"]) == "Completed"
    cleared = await wait_condition(kubectl, namespace, "from-the-future",
                                   "UnknownSagaVersion", "False")
    assert cleared["reason"] == "KnownVersion"


async def wait_condition(kubectl: Any, namespace: str, name: str, type_: str, status: str,
                         within: float = 30) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = condition(get_order(kubectl, namespace, name), type_)
        if found is not None and found["status"] == status:
            return dict(found)
        if loop.time() > deadline:
            raise AssertionError(f"{name}: condition {type_} is {found}, not {status}")
        await asyncio.sleep(0.5)
