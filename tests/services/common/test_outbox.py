"""Transactional outbox + relay and the inbox, against real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from vyapaar_messaging import Envelope, Publisher, Topology, contracts
from vyapaar_services.common import db, inbox, outbox
from vyapaar_services.common.outbox import OutboxRelay


def reply(order: str) -> Envelope:
    return Envelope.create(
        contracts.StockReserved(reservation_id=f"r-{order}"),
        correlation_id=order,
        idempotency_key=f"{order}:reserve",
    )


@pytest.fixture
async def pool(database_url: str, schema: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(database_url, schema, max_size=4)
    await db.migrate(p, schema, db.common_migrations())
    yield p
    await p.close()


@pytest.fixture
async def received(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """Every message reaching a private queue bound to the events exchange."""
    messages: list[AbstractIncomingMessage] = []
    ch = await amqp_connection.channel()
    queue = await ch.declare_queue(exclusive=True, robust=False)
    await queue.bind(topology.events_exchange, "inventory.#")

    async def keep(message: AbstractIncomingMessage) -> None:
        messages.append(message)
        await message.ack()

    await queue.consume(keep)
    yield messages
    await ch.close()


async def enqueue(conn: asyncpg.Connection, envelope: Envelope, topology: Topology) -> None:
    await outbox.enqueue(
        conn, envelope, exchange=topology.events_exchange,
        routing_key=contracts.reply_routing_key("inventory", envelope.type),
    )  # fmt: skip


async def wait_for(messages: list[Any], count: int, within: float = 10.0) -> None:
    for _ in range(int(within / 0.02)):
        if len(messages) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(messages)} of {count} messages arrived")


async def test_the_relay_publishes_exactly_the_committed_rows(
    pool: asyncpg.Pool,
    publisher: Publisher,
    topology: Topology,
    schema: str,
    received: list[AbstractIncomingMessage],
) -> None:
    committed = reply("order-committed")
    rolled_back = reply("order-rolled-back")
    async with pool.acquire() as conn:
        async with conn.transaction():
            await enqueue(conn, committed, topology)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await enqueue(conn, rolled_back, topology)
                raise RuntimeError("business change failed")

    relay = OutboxRelay(pool, publisher, schema=schema)
    assert await relay.drain() == 1
    await wait_for(received, 1)
    await asyncio.sleep(0.2)  # nothing else shows up
    assert [m.message_id for m in received] == [committed.id]
    assert received[0].routing_key == "inventory.StockReserved"
    assert Envelope.from_message(received[0]) == committed
    assert await outbox.pending_count(pool) == 0
    assert await relay.drain() == 0  # sent rows are not published again


async def test_the_running_relay_is_woken_by_notify_on_commit(
    pool: asyncpg.Pool,
    publisher: Publisher,
    topology: Topology,
    schema: str,
    database_url: str,
    received: list[AbstractIncomingMessage],
) -> None:
    relay = OutboxRelay(pool, publisher, schema=schema, database_url=database_url, poll_interval=60)
    await relay.start()
    try:
        await asyncio.sleep(0.3)  # listening
        envelope = reply("order-notify")
        loop = asyncio.get_running_loop()
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, envelope, topology)
        committed_at = loop.time()
        await wait_for(received, 1, within=5)
        assert loop.time() - committed_at < 2  # far below the 60 s poll interval
    finally:
        await relay.stop()
    assert [m.message_id for m in received] == [envelope.id]


async def test_several_relays_publish_each_row_once(
    pool: asyncpg.Pool,
    publisher: Publisher,
    topology: Topology,
    schema: str,
    received: list[AbstractIncomingMessage],
) -> None:
    envelopes = [reply(f"order-{i}") for i in range(60)]
    async with pool.acquire() as conn, conn.transaction():
        for envelope in envelopes:
            await enqueue(conn, envelope, topology)
    relays = [OutboxRelay(pool, publisher, schema=schema, batch_size=7) for _ in range(3)]
    counts = await asyncio.gather(*(r.drain() for r in relays))
    assert sum(counts) == 60
    await wait_for(received, 60)
    await asyncio.sleep(0.2)
    assert sorted(m.message_id or "" for m in received) == sorted(e.id for e in envelopes)


async def test_an_unpublishable_row_stays_pending_with_its_error(
    pool: asyncpg.Pool, publisher: Publisher, schema: str
) -> None:
    async with pool.acquire() as conn:
        await outbox.enqueue(
            conn, reply("order-x"), exchange="", routing_key=f"no-queue-{uuid.uuid4().hex}"
        )
    relay = OutboxRelay(pool, publisher, schema=schema)
    assert await relay.drain() == 0
    row = await pool.fetchrow("SELECT sent_at, publish_attempts, last_error FROM outbox")
    assert row is not None
    assert row["sent_at"] is None
    assert row["publish_attempts"] == 1
    assert "unroutable" in row["last_error"]


async def test_the_inbox_records_each_message_id_once(pool: asyncpg.Pool) -> None:
    envelope = reply("order-inbox")
    async with pool.acquire() as conn:
        assert await inbox.record_message(conn, envelope) is True
        assert await inbox.record_message(conn, envelope) is False
        other = envelope.model_copy(update={"id": str(uuid.uuid4())})
        assert await inbox.record_message(conn, other) is True


async def test_a_rolled_back_inbox_row_does_not_count_as_handled(pool: asyncpg.Pool) -> None:
    envelope = reply("order-inbox-rollback")
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                assert await inbox.record_message(conn, envelope) is True
                raise RuntimeError("handler failed")
        assert await inbox.record_message(conn, envelope) is True


async def test_idempotency_results_are_stored_per_key_and_command_type(
    pool: asyncpg.Pool,
) -> None:
    command = Envelope.create(
        contracts.ReleaseStock(), correlation_id="o", idempotency_key="o:reserve"
    )
    result = command.reply(contracts.StockReleased(noop=True))
    async with pool.acquire() as conn:
        assert await inbox.load_result(conn, "o:reserve", "ReleaseStock") is None
        await inbox.save_result(conn, "o:reserve", "ReleaseStock", command.id, result)
        assert await inbox.load_result(conn, "o:reserve", "ReleaseStock") == result
        assert await inbox.has_result(conn, "o:reserve", "ReleaseStock")
        assert not await inbox.has_result(conn, "o:reserve", "ReserveStock")


async def test_with_tracing_on_the_relays_publish_is_a_span_under_the_replys_own(
    spans: Any,
    pool: asyncpg.Pool,
    publisher: Publisher,
    topology: Topology,
    schema: str,
    received: list[AbstractIncomingMessage],
) -> None:
    stored = reply("order-traced")
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, stored, topology)

    relay = OutboxRelay(pool, publisher, schema=schema)
    assert await relay.drain() == 1
    await wait_for(received, 1)

    (publish,) = [s for s in spans.get_finished_spans() if s.name == "publish StockReserved"]
    assert f"{publish.context.trace_id:032x}" == stored.trace_id
    assert publish.parent is not None and f"{publish.parent.span_id:016x}" == stored.span_id
    assert publish.attributes["messaging.message.id"] == stored.id
    assert publish.attributes["messaging.rabbitmq.destination.routing_key"] == (
        "inventory.StockReserved"
    )
    assert publish.attributes["vyapaar.outbox.waited_ms"] >= 0
    # the envelope is published as stored: the relay does not re-parent it
    assert Envelope.from_message(received[0]) == stored
    # the relay's own SQL has no parent and starts no trace
    assert {s.name for s in spans.get_finished_spans()} == {"publish StockReserved"}
