"""Inventory service, end to end: commands in over RabbitMQ, effects in PostgreSQL,
replies out through the outbox on ``vyapaar.events``."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from vyapaar_messaging import Envelope, Publisher, Topology, contracts, dlq
from vyapaar_services.inventory.app import create_app

SUBJECT = "shop/order"


def new_order() -> str:
    return str(uuid.uuid4())


def reserve(uid: str, **items: int) -> Envelope:
    return Envelope.create(
        contracts.ReserveStock(
            items=[contracts.Item(sku=sku, quantity=q) for sku, q in items.items()]
        ),
        correlation_id=uid,
        subject=SUBJECT,
        idempotency_key=contracts.idempotency_key(uid, "reserve"),
    )


def release(uid: str) -> Envelope:
    return Envelope.create(
        contracts.ReleaseStock(),
        correlation_id=uid,
        subject=SUBJECT,
        idempotency_key=contracts.idempotency_key(uid, "reserve"),  # same key as the forward
    )


def commit(uid: str) -> Envelope:
    return Envelope.create(
        contracts.CommitStock(),
        correlation_id=uid,
        subject=SUBJECT,
        idempotency_key=contracts.idempotency_key(uid, "commit"),
    )


def retried(envelope: Envelope) -> Envelope:
    """The same command re-sent with a new message id (same idempotency key)."""
    return envelope.model_copy(update={"id": str(uuid.uuid4())})


@pytest.fixture(scope="module")
async def inventory(service_runner: Any) -> Any:
    return await service_runner(create_app, "inventory")


async def seed(inventory: Any, sku: str, available: int) -> None:
    response = await inventory.client.put(f"/api/v1/stock/{sku}", json={"available": available})
    assert response.status in (200, 201), await response.text()


async def stock(inventory: Any, sku: str) -> dict[str, int]:
    response = await inventory.client.get(f"/api/v1/stock/{sku}")
    assert response.status == 200
    body = await response.json()
    return {k: body[k] for k in ("available", "held", "committed")}


def sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:8]}"


async def test_reserve_holds_stock_and_replies_stock_reserved(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    item = sku()
    await seed(inventory, item, 5)
    uid = new_order()
    cmd = reserve(uid, **{item: 2})

    await publisher.send_command(cmd)

    [reply] = await replies.wait(uid)
    assert reply.type == "StockReserved"
    assert reply.causation_id == cmd.id
    assert reply.idempotency_key == cmd.idempotency_key
    assert reply.subject == SUBJECT
    assert reply.trace_id == cmd.trace_id
    assert replies.routing_keys[replies.replies.index(reply)] == "inventory.StockReserved"
    assert await stock(inventory, item) == {"available": 3, "held": 2, "committed": 0}
    response = await inventory.client.get("/api/v1/reservations", params={"order": uid})
    [reservation] = (await response.json())["items"]
    assert reservation["id"] == reply.payload["reservationId"]
    assert reservation["status"] == "held"
    assert reservation["items"] == [{"sku": item, "quantity": 2}]


async def test_a_redelivered_command_has_one_effect_and_gets_the_original_reply(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    item = sku()
    await seed(inventory, item, 5)
    uid = new_order()
    cmd = reserve(uid, **{item: 2})

    await publisher.send_command(cmd)
    await replies.wait(uid, 1)
    await publisher.send_command(cmd)  # same message id
    await publisher.send_command(retried(cmd))  # same key, new message id

    first, second, third = await replies.wait(uid, 3)
    assert first.type == second.type == third.type == "StockReserved"
    assert first.id == second.id == third.id  # the stored reply, replayed
    assert await stock(inventory, item) == {"available": 3, "held": 2, "committed": 0}


async def test_release_undoes_a_reservation_and_is_idempotent(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    item = sku()
    await seed(inventory, item, 4)
    uid = new_order()
    await publisher.send_command(reserve(uid, **{item: 3}))
    await replies.wait(uid, 1)

    undo = release(uid)
    await publisher.send_command(undo)
    await publisher.send_command(retried(undo))

    _, released, again = await replies.wait(uid, 3)
    assert released.type == "StockReleased"
    assert released.payload == {"noop": False}
    assert again.id == released.id
    assert await stock(inventory, item) == {"available": 4, "held": 0, "committed": 0}


async def test_release_before_reserve_is_a_noop_tombstone_and_the_late_reserve_is_refused(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    item = sku()
    await seed(inventory, item, 4)
    uid = new_order()

    await publisher.send_command(release(uid))
    [released] = await replies.wait(uid, 1)
    assert released.type == "StockReleased"
    assert released.payload == {"noop": True}

    await publisher.send_command(reserve(uid, **{item: 1}))
    _, refused = await replies.wait(uid, 2)
    assert refused.type == "StockRejected"
    assert refused.payload["reason"] == "ALREADY_COMPENSATED"
    assert await stock(inventory, item) == {"available": 4, "held": 0, "committed": 0}
    response = await inventory.client.get("/api/v1/reservations", params={"order": uid})
    assert [r["status"] for r in (await response.json())["items"]] == ["tombstone"]


async def test_commit_turns_held_stock_into_committed_stock_idempotently(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    item = sku()
    await seed(inventory, item, 4)
    uid = new_order()
    await publisher.send_command(reserve(uid, **{item: 3}))
    await replies.wait(uid, 1)

    done = commit(uid)
    await publisher.send_command(done)
    await publisher.send_command(retried(done))

    _, committed, again = await replies.wait(uid, 3)
    assert committed.type == "StockCommitted"
    assert again.id == committed.id
    assert await stock(inventory, item) == {"available": 1, "held": 0, "committed": 3}


async def test_rejections_name_the_sku_and_move_nothing(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    plenty, scarce = sku(), sku()
    await seed(inventory, plenty, 10)
    await seed(inventory, scarce, 1)
    short, unknown = new_order(), new_order()

    await publisher.send_command(reserve(short, **{plenty: 1, scarce: 2}))
    await publisher.send_command(reserve(unknown, **{plenty: 1, "NO-SUCH-SKU": 1}))

    [out_of_stock] = await replies.wait(short)
    [no_sku] = await replies.wait(unknown)
    assert out_of_stock.payload == {"reason": "OUT_OF_STOCK", "sku": scarce}
    assert no_sku.payload == {"reason": "UNKNOWN_SKU", "sku": "NO-SUCH-SKU"}
    assert await stock(inventory, plenty) == {"available": 10, "held": 0, "committed": 0}
    assert await stock(inventory, scarce) == {"available": 1, "held": 0, "committed": 0}


async def test_a_hot_sku_never_goes_negative_under_concurrent_reservations(
    inventory: Any, publisher: Publisher, replies: Any
) -> None:
    hot = sku()
    await seed(inventory, hot, 10)
    orders = [new_order() for _ in range(50)]

    await asyncio.gather(*(publisher.send_command(reserve(uid, **{hot: 1})) for uid in orders))

    results = [(await replies.wait(uid, within=30))[0] for uid in orders]
    outcomes = [r.type for r in results]
    assert outcomes.count("StockReserved") == 10
    assert outcomes.count("StockRejected") == 40
    assert all(r.payload["reason"] == "OUT_OF_STOCK" for r in results if r.type == "StockRejected")
    level = await stock(inventory, hot)
    assert level == {"available": 0, "held": 10, "committed": 0}
    assert sum(level.values()) == 10  # conservation: initial = available + held + committed


async def test_a_commit_for_an_order_without_a_reservation_is_dead_lettered(
    inventory: Any, publisher: Publisher, topology: Topology, amqp_connection: Any
) -> None:
    cmd = commit(new_order())
    await publisher.send_command(cmd)
    queue = topology.command_queue("inventory")
    for _ in range(200):
        shown = await dlq.show_message(amqp_connection, queue, cmd.id)
        if shown is not None:
            break
        await asyncio.sleep(0.05)
    assert shown is not None
    assert shown.reason == "permanent"
    assert "no held reservation" in (shown.error or "")
    assert await dlq.redrive(amqp_connection, queue, []) == 0  # nothing selected, untouched


async def test_admin_api_refuses_bad_input_with_problem_json(inventory: Any) -> None:
    client = inventory.client
    cases = [
        (client.put("/api/v1/stock/SKU-1", json={"available": -1}), 422, "validation-error"),
        (client.put("/api/v1/stock/SKU-1", json={"available": "ten"}), 422, "validation-error"),
        (client.put("/api/v1/stock/SKU-1", data=b"{"), 400, "invalid-json"),
        (client.put("/api/v1/stock/bad sku!", json={"available": 1}), 400, "invalid-sku"),
        (client.get("/api/v1/stock/NEVER-SEEN"), 404, "unknown-sku"),
    ]
    for request, status, kind in cases:
        response = await request
        assert response.status == status
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["status"] == status
        assert problem["type"] == f"urn:vyapaar:problem:{kind}"
        assert problem["title"]
    assert (await client.get("/api/v1/stock/SKU-1")).status == 404  # nothing was created


async def test_seeding_creates_then_updates_and_lists(inventory: Any) -> None:
    item = sku()
    created = await inventory.client.put(f"/api/v1/stock/{item}", json={"available": 7})
    assert created.status == 201
    updated = await inventory.client.put(f"/api/v1/stock/{item}", json={"available": 9})
    assert updated.status == 200
    listing = await (await inventory.client.get("/api/v1/stock")).json()
    [row] = [r for r in listing["items"] if r["sku"] == item]
    assert row["available"] == 9
    assert row["total"] == 9


async def test_health_readiness_and_metrics(inventory: Any, topology: Topology) -> None:
    assert (await inventory.client.get("/healthz")).status == 200
    ready = await inventory.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": True, "broker": True, "consumer": True}
    text = await (await inventory.client.get("/metrics")).text()
    queue = topology.command_queue("inventory")
    assert (
        f'vyapaar_messages_consumed_total{{outcome="ok",queue="{queue}",type="ReserveStock"}}'
        in text
    )
    assert 'vyapaar_outbox_pending_messages{service="inventory"}' in text
    assert 'vyapaar_db_pool_connections{service="inventory"}' in text
