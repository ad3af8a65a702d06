"""The event log: a RabbitMQ stream behind the fan-out of domain events keeps every event,
so a reader can start from the first one however many have read it before."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from vyapaar_messaging import Envelope, Publisher, Topology, contracts


def order_event(uid: str, seq: int) -> Envelope:
    payload = contracts.OrderEvent(
        seq=seq, occurred_at=datetime.now(UTC), reason="SagaStarted", phase="Reserving",
        announced=False, total=100, currency="INR")
    return Envelope.create(
        payload, correlation_id=uid, subject="shop/o1",
        idempotency_key=contracts.event_idempotency_key(uid, seq),
    ).model_copy(update={"id": contracts.event_id(uid, seq)})


async def read_log(connection: AbstractRobustConnection, topology: Topology, uid: str,
                   count: int, within: float = 10) -> list[Envelope]:
    """The log's events of order `uid`, read from offset 0 by a new reader."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=100)  # a stream reader must set one
    queue = await channel.get_queue(topology.event_log, ensure=False)
    seen: list[Envelope] = []
    enough = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        envelope = Envelope.from_message(message)
        if envelope.correlation_id == uid:
            seen.append(envelope)
        await message.ack()
        if len(seen) >= count:
            enough.set()

    await queue.consume(on_message, arguments={"x-stream-offset": "first"})
    try:
        await asyncio.wait_for(enough.wait(), within)
    finally:
        await channel.close()
    return seen


async def test_events_reach_the_log_and_every_reader_gets_them_all_from_the_start(
    publisher: Publisher, topology: Topology, amqp_connection: AbstractRobustConnection,
) -> None:
    uid = str(uuid.uuid4())
    sent = [order_event(uid, seq) for seq in (1, 2, 3)]
    for envelope in sent:
        await publisher.publish_event(envelope)

    first = await read_log(amqp_connection, topology, uid, 3)
    again = await read_log(amqp_connection, topology, uid, 3)

    assert [e.id for e in first] == [e.id for e in again] == [e.id for e in sent]
    assert [e.payload["seq"] for e in first] == [1, 2, 3]


def test_an_event_id_is_the_same_whenever_the_same_event_is_published() -> None:
    uid = str(uuid.uuid4())
    assert contracts.event_id(uid, 7) == contracts.event_id(uid, 7)
    assert contracts.event_id(uid, 7) != contracts.event_id(uid, 8)
    assert contracts.event_id(uid, 7) != contracts.event_id(str(uuid.uuid4()), 7)
    assert str(uuid.UUID(contracts.event_id(uid, 7))) == contracts.event_id(uid, 7)


def test_the_log_is_a_stream_bound_to_the_fan_out() -> None:
    topology = Topology(prefix="x.")
    assert topology.event_log == "x.order-events.log"
    assert topology.order_events_exchange == "x.vyapaar.order-events"

