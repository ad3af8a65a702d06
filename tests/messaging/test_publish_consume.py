"""Publishing with confirms and the generic consumer, against a real RabbitMQ.

Each test gets its own consumer queue (bound to the module's private commands exchange
with its own routing key), so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from vyapaar_messaging import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    ERROR_HEADER,
    ORIGINAL_QUEUE_HEADER,
    Consumer,
    Envelope,
    PermanentError,
    Publisher,
    PublishFailed,
    Topology,
    contracts,
    declare_consumer_queue,
    dlq_name,
    metrics,
    retry_queue_name,
)

DELAYS = (0.2, 0.4)
PollQueue = Callable[..., Awaitable[AbstractIncomingMessage]]


def command(sku: str = "SKU-1") -> Envelope:
    uid = str(uuid.uuid4())
    return Envelope.create(
        contracts.ReserveStock(items=[contracts.Item(sku=sku, quantity=1)]),
        correlation_id=uid,
        subject="shop/order",
        idempotency_key=contracts.idempotency_key(uid, "reserve"),
    )


class Route:
    """A private consumer queue bound to the commands exchange with key ``routing_key``."""

    def __init__(self, topology: Topology) -> None:
        self.routing_key = f"route-{uuid.uuid4().hex[:8]}"
        self.queue = topology.queue(self.routing_key)
        self.bindings = [(topology.commands_exchange, self.routing_key)]


@pytest.fixture
async def route(
    topology: Topology, amqp_connection: AbstractRobustConnection
) -> AsyncIterator[Route]:
    r = Route(topology)
    ch = await amqp_connection.channel()
    await declare_consumer_queue(ch, r.queue, r.bindings, retry_delays=DELAYS)
    yield r
    for name in (r.queue, dlq_name(r.queue), *(retry_queue_name(r.queue, d) for d in DELAYS)):
        await ch.queue_delete(name, if_unused=False, if_empty=False)
    await ch.close()


class Recorder:
    """A handler that records what it saw and fails as told."""

    def __init__(self, fail_times: int = 0, error: type[Exception] = RuntimeError) -> None:
        self.fail_times = fail_times
        self.error = error
        self.calls: list[tuple[float, Envelope]] = []
        self.done = asyncio.Event()

    async def __call__(self, envelope: Envelope) -> None:
        self.calls.append((time.monotonic(), envelope))
        if len(self.calls) <= self.fail_times:
            raise self.error(f"boom #{len(self.calls)}")
        self.done.set()


def consumer_for(
    connection: AbstractRobustConnection, route: Route, handler: Any, **kwargs: Any
) -> Consumer:
    kwargs.setdefault("retry_delays", DELAYS)
    kwargs.setdefault("dlq_sample_interval", None)
    return Consumer(connection, route.queue, handler, bindings=route.bindings, **kwargs)


async def test_a_published_message_is_confirmed_persistent_and_carries_the_envelope(
    publisher: Publisher, route: Route, channel: Any, poll_queue: PollQueue
) -> None:
    cmd = command()
    await publisher.send_command(cmd, service=route.routing_key)

    message = await poll_queue(channel, route.queue)
    await message.ack()
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.message_id == cmd.id
    assert message.correlation_id == cmd.correlation_id
    assert message.type == "ReserveStock"
    assert Envelope.from_message(message) == cmd


async def test_an_unroutable_publish_fails_instead_of_vanishing(
    publisher: Publisher, topology: Topology
) -> None:
    with pytest.raises(PublishFailed, match="unroutable"):
        await publisher.send_command(command(), service="nobody-listens-here")


async def test_publish_and_consume_round_trip_acks_after_the_handler(
    publisher: Publisher, route: Route, amqp_connection: AbstractRobustConnection, channel: Any
) -> None:
    handler = Recorder()
    cmd = command()
    async with consumer_for(amqp_connection, route, handler):
        await publisher.send_command(cmd, service=route.routing_key)
        await asyncio.wait_for(handler.done.wait(), 10)
        await asyncio.sleep(0.2)  # let the ack reach the broker
    assert [env for _, env in handler.calls] == [cmd]
    queue = await channel.declare_queue(route.queue, passive=True, robust=False)
    assert queue.declaration_result.message_count == 0


async def test_a_failing_handler_is_retried_through_every_delay_tier_then_dead_lettered(
    publisher: Publisher,
    route: Route,
    amqp_connection: AbstractRobustConnection,
    channel: Any,
    poll_queue: PollQueue,
) -> None:
    handler = Recorder(fail_times=99)
    cmd = command()
    before = metrics.MESSAGES_DEAD_LETTERED.labels(route.queue, "ReserveStock", "exhausted")
    dead_before = before._value.get()
    async with consumer_for(amqp_connection, route, handler):
        await publisher.send_command(cmd, service=route.routing_key)
        dead = await poll_queue(channel, dlq_name(route.queue), within=10)
        await dead.ack()

    # 1 attempt + one per delay tier, each tier waiting at least its TTL
    assert len(handler.calls) == len(DELAYS) + 1
    times = [t for t, _ in handler.calls]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, delay in zip(gaps, DELAYS, strict=True):
        assert gap >= delay * 0.9
    assert all(env.id == cmd.id for _, env in handler.calls)

    headers = dead.headers
    assert headers[ATTEMPT_HEADER] == len(DELAYS) + 1
    assert headers[DEAD_LETTER_REASON_HEADER] == "exhausted"
    assert headers[ORIGINAL_QUEUE_HEADER] == route.queue
    assert "RuntimeError: boom #3" in str(headers[ERROR_HEADER])
    assert dead.message_id == cmd.id
    assert dead.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert Envelope.from_message(dead) == cmd
    assert before._value.get() == dead_before + 1


async def test_a_handler_that_recovers_on_retry_handles_the_message_once_more_and_acks(
    publisher: Publisher, route: Route, amqp_connection: AbstractRobustConnection, channel: Any
) -> None:
    handler = Recorder(fail_times=1)
    async with consumer_for(amqp_connection, route, handler):
        await publisher.send_command(command(), service=route.routing_key)
        await asyncio.wait_for(handler.done.wait(), 10)
        await asyncio.sleep(0.2)
    assert len(handler.calls) == 2
    dlq = await channel.declare_queue(dlq_name(route.queue), passive=True, robust=False)
    assert dlq.declaration_result.message_count == 0


async def test_a_permanent_error_goes_straight_to_the_dlq(
    publisher: Publisher,
    route: Route,
    amqp_connection: AbstractRobustConnection,
    channel: Any,
    poll_queue: PollQueue,
) -> None:
    handler = Recorder(fail_times=99, error=PermanentError)
    async with consumer_for(amqp_connection, route, handler):
        await publisher.send_command(command(), service=route.routing_key)
        dead = await poll_queue(channel, dlq_name(route.queue), within=10)
        await dead.ack()
    assert len(handler.calls) == 1
    assert dead.headers[DEAD_LETTER_REASON_HEADER] == "permanent"
    assert dead.headers[ATTEMPT_HEADER] == 1


async def test_poison_messages_go_straight_to_the_dlq_with_a_reason_and_do_not_block_the_queue(
    publisher: Publisher,
    route: Route,
    amqp_connection: AbstractRobustConnection,
    channel: Any,
    poll_queue: PollQueue,
) -> None:
    good = command()
    unknown_type = good.model_copy(update={"id": str(uuid.uuid4()), "type": "FlyToTheMoon"})
    bad_payload = good.model_copy(
        update={"id": str(uuid.uuid4()), "payload": {"items": [{"sku": "X", "quantity": -3}]}}
    )
    poison_bodies = [
        aio_pika.Message(b"{this is not json", message_id="not-json"),
        aio_pika.Message(json.dumps({"type": "ReserveStock"}).encode(), message_id="no-env"),
        unknown_type.to_message(),
        bad_payload.to_message(),
    ]
    handler = Recorder()
    # prefetch 1: if a poison message were not settled, the good one could never arrive
    async with consumer_for(amqp_connection, route, handler, prefetch=1):
        for message in poison_bodies:
            await publisher.publish_message(
                message, exchange=publisher.topology.commands_exchange,
                routing_key=route.routing_key,
            )  # fmt: skip
        await publisher.send_command(good, service=route.routing_key)
        await asyncio.wait_for(handler.done.wait(), 10)

    assert [env.id for _, env in handler.calls] == [good.id]
    dead = [await poll_queue(channel, dlq_name(route.queue)) for _ in poison_bodies]
    for message in dead:
        await message.ack()
    by_id = {m.message_id: m.headers for m in dead}
    assert set(by_id) == {"not-json", "no-env", unknown_type.id, bad_payload.id}
    assert all(h[DEAD_LETTER_REASON_HEADER] == "poison" for h in by_id.values())
    assert all(h[ORIGINAL_QUEUE_HEADER] == route.queue for h in by_id.values())
    assert all(h[ATTEMPT_HEADER] == 1 for h in by_id.values())
    assert "not valid JSON" in str(by_id["not-json"][ERROR_HEADER])
    assert "invalid envelope" in str(by_id["no-env"][ERROR_HEADER])
    assert "unknown message type 'FlyToTheMoon'" in str(by_id[unknown_type.id][ERROR_HEADER])
    assert "quantity" in str(by_id[bad_payload.id][ERROR_HEADER])


async def test_unacked_work_is_redelivered_to_another_consumer_when_one_dies(
    publisher: Publisher, route: Route, amqp_connection: AbstractRobustConnection
) -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def stuck(_envelope: Envelope) -> None:
        started.set()
        await never.wait()

    cmd = command()
    first = consumer_for(amqp_connection, route, stuck)
    await first.start()
    await publisher.send_command(cmd, service=route.routing_key)
    await asyncio.wait_for(started.wait(), 10)
    await first.stop(grace=0.1)  # closes its channel with the message unacked

    handler = Recorder()
    redelivered = metrics.MESSAGES_REDELIVERED.labels(route.queue, "ReserveStock")
    before = redelivered._value.get()
    async with consumer_for(amqp_connection, route, handler):
        await asyncio.wait_for(handler.done.wait(), 10)
    never.set()
    assert [env.id for _, env in handler.calls] == [cmd.id]
    assert redelivered._value.get() == before + 1
