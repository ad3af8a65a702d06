"""Shipping service, end to end: shipments with tracking ids, deterministic rejection of
undeliverable addresses, voiding and tombstones."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from vyapaar_messaging import Envelope, Publisher, contracts
from vyapaar_services.shipping.app import create_app


def address(**changes: str) -> contracts.Address:
    fields = {
        "name": "Asha Rao",
        "line1": "12 MG Road",
        "city": "Bengaluru",
        "postal_code": "560001",
        "country": "IN",
        **changes,
    }
    return contracts.Address(**fields)  # type: ignore[arg-type]


def new_order() -> str:
    return str(uuid.uuid4())


def create(uid: str, to: contracts.Address | None = None) -> Envelope:
    return Envelope.create(
        contracts.CreateShipment(
            address=to or address(), items=[contracts.Item(sku="SKU-1", quantity=2)]
        ),
        correlation_id=uid,
        subject="shop/order",
        idempotency_key=contracts.idempotency_key(uid, "ship"),
    )


def void(uid: str) -> Envelope:
    return Envelope.create(
        contracts.VoidShipment(),
        correlation_id=uid,
        subject="shop/order",
        idempotency_key=contracts.idempotency_key(uid, "ship"),
    )


def retried(envelope: Envelope) -> Envelope:
    return envelope.model_copy(update={"id": str(uuid.uuid4())})


@pytest.fixture(scope="module")
async def shipping(service_runner: Any) -> Any:
    return await service_runner(create_app, "shipping")


async def shipments(shipping: Any, uid: str) -> list[dict[str, Any]]:
    response = await shipping.client.get("/api/v1/shipments", params={"order": uid})
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_a_shipment_is_created_with_a_tracking_id(
    shipping: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    cmd = create(uid)
    await publisher.send_command(cmd)

    [reply] = await replies.wait(uid)
    assert reply.type == "ShipmentCreated"
    assert reply.causation_id == cmd.id
    assert reply.payload["trackingId"].startswith("VN")
    [shipment] = await shipments(shipping, uid)
    assert shipment["id"] == reply.payload["shipmentId"]
    assert shipment["trackingId"] == reply.payload["trackingId"]
    assert shipment["status"] == "created"
    assert shipment["address"]["postalCode"] == "560001"


@pytest.mark.parametrize(
    "to",
    [
        address(name="Mr Undeliverable"),
        address(line1="1 undeliverable lane"),
        address(country="AQ"),
    ],
    ids=["name", "line1", "antarctica"],
)
async def test_undeliverable_addresses_are_rejected_deterministically(
    shipping: Any, publisher: Publisher, replies: Any, to: contracts.Address
) -> None:
    uid = new_order()
    await publisher.send_command(create(uid, to))
    [reply] = await replies.wait(uid)
    assert reply.type == "ShipmentRejected"
    assert reply.payload == {"reason": "UNDELIVERABLE_ADDRESS"}
    [shipment] = await shipments(shipping, uid)
    assert shipment["status"] == "rejected"
    assert shipment["trackingId"] is None


async def test_a_redelivered_or_retried_create_books_one_shipment(
    shipping: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    cmd = create(uid)
    await publisher.send_command(cmd)
    await replies.wait(uid, 1)
    await publisher.send_command(cmd)
    await publisher.send_command(retried(cmd))
    results = await replies.wait(uid, 3)
    assert len({r.id for r in results}) == 1
    assert len(await shipments(shipping, uid)) == 1


async def test_void_cancels_a_created_shipment_idempotently(
    shipping: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    await publisher.send_command(create(uid))
    await replies.wait(uid, 1)
    cmd = void(uid)
    await publisher.send_command(cmd)
    await publisher.send_command(retried(cmd))
    _, voided, again = await replies.wait(uid, 3)
    assert voided.type == "ShipmentVoided"
    assert voided.payload == {"noop": False}
    assert again.id == voided.id
    assert [s["status"] for s in await shipments(shipping, uid)] == ["voided"]


async def test_void_before_create_is_a_noop_tombstone_and_the_late_create_is_refused(
    shipping: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    await publisher.send_command(void(uid))
    [voided] = await replies.wait(uid)
    assert voided.payload == {"noop": True}
    await publisher.send_command(create(uid))
    _, refused = await replies.wait(uid, 2)
    assert refused.type == "ShipmentRejected"
    assert refused.payload == {"reason": "ALREADY_COMPENSATED"}
    assert [s["status"] for s in await shipments(shipping, uid)] == ["tombstone"]


async def test_faults_can_be_changed_at_run_time(shipping: Any) -> None:
    client = shipping.client
    response = await client.put("/admin/faults", json={"errorRate": 0.5, "latencyMs": 20})
    assert response.status == 200
    assert await (await client.get("/admin/faults")).json() == {
        "errorRate": 0.5, "latencyMs": 20, "lostCommitRate": 0.0, "operations": []}
    await client.put("/admin/faults", json={"errorRate": 0, "latencyMs": 0})
    bad = await client.put("/admin/faults", json={"errorRate": "lots"})
    assert bad.status == 422
    assert (await bad.json())["type"] == "urn:vyapaar:problem:validation-error"
