"""Replies from the services, consumed from `operator.replies` and applied to the Orders.

A reply is acked only after the engine has written the Order's status (or
found nothing to change), so a crash in between redelivers it; applying a
reply twice changes nothing the second time. A reply whose subject is not an
Order's name is a poison message: it goes to the dead-letter queue with its reason.
A reply about an Order that does not exist (any more) is acked, logged and counted
as ignored: nothing can ever apply it, and the services' own records keep the fact.
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractConnection
from vyapaar_messaging.consumer import Consumer, Ignored, PermanentError
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import Topology

from vyapaar_operator.bus import reply_target
from vyapaar_operator.engine import SagaEngine


async def consume(connection: AbstractConnection, topology: Topology, engine: SagaEngine,
                  *, prefetch: int) -> None:
    async def handle(envelope: Envelope) -> None:
        try:
            ref = reply_target(envelope)
        except ValueError as exc:
            raise PermanentError(str(exc)) from exc
        applied = await engine.on_reply(
            ref, message_type=envelope.type, idempotency_key=envelope.idempotency_key,
            payload=envelope.payload, message_id=envelope.id,
            correlation_id=envelope.correlation_id,
        )
        if not applied:
            raise Ignored(f"no Order {ref} with uid {envelope.correlation_id}")

    consumer = Consumer(connection, topology.replies_queue, handle, prefetch=prefetch)
    await consumer.start()
    try:
        await asyncio.Event().wait()
    finally:
        await consumer.stop()
