"""Fixtures of the end-to-end specs: a subscriber of the operator's domain events."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection
from vyapaar_messaging import Topology
from vyapaar_stack.testing import EventSubscriber, System


@pytest.fixture
async def subscriber(amqp_connection: AbstractRobustConnection,
                     running_system: System) -> AsyncIterator[EventSubscriber]:
    collector = EventSubscriber()
    channel = await amqp_connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(Topology().order_events_exchange, "")
    tag = await queue.consume(collector.on_message)
    yield collector
    with contextlib.suppress(Exception):
        await queue.cancel(tag)
    await channel.close()
