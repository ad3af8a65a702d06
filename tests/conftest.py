"""Fixtures shared by the specs: AMQP (a private, prefixed copy of the topology per module)
and the whole system (services + operator) on the local stack.

``amqp_url``, ``database_url`` and ``redis_url`` come from the project's pytest plugin
(``vyapaar_stack.pytest_plugin``: the local stack, or the ``VYAPAAR_*_URL`` env vars). If
that plugin is not installed, the fallbacks below read the env vars and skip otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from vyapaar_messaging import (
    Envelope,
    Publisher,
    Topology,
    declare_topology,
    delete_topology,
)
from vyapaar_messaging.topology import DEFAULT_RETRY_DELAYS
from vyapaar_stack import components, system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.testing import (
    OPERATOR_ENV,
    TERMINAL,
    GatewayTenant,
    System,
    add_gateway_tenant,
    get_order,
    remove_gateway_tenant,
)

#: the short delay tiers of the messaging and service specs (tests/services/conftest.py too)
FAST_RETRY_DELAYS = (0.2, 0.4)


def _plugin_available() -> bool:
    try:
        return importlib.util.find_spec("vyapaar_stack.pytest_plugin") is not None
    except ModuleNotFoundError:
        return False


if not _plugin_available():

    def _env_or_skip(name: str) -> str:
        value = os.environ.get(name)
        if not value:
            pytest.skip(f"{name} is not set and the vyapaar_stack pytest plugin is missing")
        return value

    @pytest.fixture(scope="session")
    def amqp_url() -> str:
        return _env_or_skip("VYAPAAR_AMQP_URL")

    @pytest.fixture(scope="session")
    def database_url() -> str:
        return _env_or_skip("VYAPAAR_DATABASE_URL")

    @pytest.fixture(scope="session")
    def redis_url() -> str:
        return _env_or_skip("VYAPAAR_REDIS_URL")


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


# -- Tracing ---------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing on for one test, its spans kept in memory (an ``InMemorySpanExporter``:
    ``spans.get_finished_spans()``); off again afterwards, so the other specs run as the
    product does by default. Instruments aiohttp's server and asyncpg meanwhile: create
    in-process apps inside the test."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from vyapaar_messaging import tracing

    assert not tracing.ENABLED, "tracing was left on by an earlier test"
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


# -- AMQP ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def amqp_connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
async def topology(amqp_connection: AbstractRobustConnection) -> AsyncIterator[Topology]:
    """A private, declared copy of the whole topology (prefixed names), deleted afterwards."""
    topo = Topology(prefix=unique("t") + ".")
    channel = await amqp_connection.channel()
    await declare_topology(channel, topo)
    yield topo
    channel = await amqp_connection.channel()
    await delete_topology(channel, topo, retry_delays=(*DEFAULT_RETRY_DELAYS, *FAST_RETRY_DELAYS))
    await channel.close()


@pytest.fixture
async def channel(amqp_connection: AbstractRobustConnection) -> AsyncIterator[Any]:
    ch = await amqp_connection.channel(publisher_confirms=True, on_return_raises=True)
    yield ch
    if not ch.is_closed:
        await ch.close()


@pytest.fixture(scope="module")
async def publisher(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> AsyncIterator[Publisher]:
    pub = await Publisher.open(amqp_connection, topology)
    yield pub
    await pub.close()


async def get_message(channel: Any, queue: str, within: float = 10.0) -> AbstractIncomingMessage:
    """Poll ``queue`` (basic.get) until a message arrives; the caller acks it."""
    q = await channel.get_queue(queue, ensure=False)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        message = await q.get(no_ack=False, fail=False)
        if message is not None:
            return message  # type: ignore[no-any-return]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no message on {queue} within {within}s")
        await asyncio.sleep(0.05)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 10.0, interval: float = 0.05
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class ReplyCollector:
    """Consumes the (prefixed) ``operator.replies`` queue and keeps every envelope."""

    def __init__(self) -> None:
        self.replies: list[Envelope] = []
        self.routing_keys: list[str] = []
        self.messages: list[AbstractIncomingMessage] = []
        self._changed = asyncio.Condition()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        envelope = Envelope.from_message(message)
        async with self._changed:
            self.replies.append(envelope)
            self.routing_keys.append(message.routing_key or "")
            self.messages.append(message)
            self._changed.notify_all()
        await message.ack()

    def for_order(self, correlation_id: str) -> list[Envelope]:
        return [r for r in self.replies if r.correlation_id == correlation_id]

    async def wait(
        self, correlation_id: str, count: int = 1, within: float = 15.0
    ) -> list[Envelope]:
        """Wait until ``count`` replies for the order have arrived; return them all."""

        async def arrived() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.for_order(correlation_id)) >= count)

        try:
            await asyncio.wait_for(arrived(), within)
        except TimeoutError:
            raise AssertionError(
                f"expected {count} replies for {correlation_id}, got "
                f"{[r.type for r in self.for_order(correlation_id)]}"
            ) from None
        return self.for_order(correlation_id)


@pytest.fixture(scope="module")
async def replies(
    amqp_connection: AbstractRobustConnection, topology: Topology
) -> AsyncIterator[ReplyCollector]:
    collector = ReplyCollector()
    ch = await amqp_connection.channel()
    queue = await ch.get_queue(topology.replies_queue, ensure=True)
    tag = await queue.consume(collector.on_message)
    yield collector
    with contextlib.suppress(Exception):
        await queue.cancel(tag)
    await ch.close()



@pytest.fixture(scope="session")
def poll_queue() -> Callable[..., Awaitable[AbstractIncomingMessage]]:
    """``await poll_queue(channel, queue, within=10)``: the next message (unacked)."""
    return get_message


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., Awaitable[None]]:
    """``await wait_until(async_predicate, within=10)``."""
    return eventually


# -- The whole system ---------------------------------------------------------------


@pytest.fixture(scope="session")
def running_system(local_infra: StackConfig, crds: Path) -> Iterator[System]:
    """The services, the gateway and an operator with the tests' short timeouts.

    A system that was running before (the demo's) is put back as it was afterwards: the
    tests' operator must not stay behind in its place.
    """
    config = local_infra
    was_running = system.running(config)  # its readiness may follow an infra restart
    system.down(config)  # start from this code, with the test settings
    for name in system.SERVICES:
        system.start_service(config, name)
    for name in system.SERVICES:
        system.wait_service(config, name)
    system.start_gateway(config)
    system.wait_gateway(config)
    system.start_operator(config, OPERATOR_ENV)
    system.wait_operator(config)
    yield System(config)
    system.down(config)
    if was_running:
        system.up(config)


@pytest.fixture
def gateway_tenant(running_system: System, namespace: str) -> Iterator[GatewayTenant]:
    """A tenant of the running gateway whose namespace is this test's."""
    tenant = add_gateway_tenant(running_system.config, namespace)
    try:
        yield tenant
    finally:
        remove_gateway_tenant(running_system.config, tenant)


@pytest.fixture
def payment_stopped(running_system: System) -> Iterator[Callable[[], None]]:
    """Stop the payment service; the test starts it again (or this does, afterwards)."""
    components.stop(running_system.config, "payment")

    def start() -> None:
        components.start(running_system.config, "payment")

    yield start
    if not system.status(running_system.config)["payment"]:
        start()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def unique_sku() -> Callable[[str], str]:
    suffix = uuid.uuid4().hex[:8].upper()
    return lambda base: f"{base}-{suffix}"


@pytest.fixture
def seed_stock(running_system: System, http: aiohttp.ClientSession
               ) -> Callable[[dict[str, int]], Awaitable[None]]:
    async def seed(stock: dict[str, int]) -> None:
        for sku, available in stock.items():
            async with http.put(f"{running_system.url('inventory')}/api/v1/stock/{sku}",
                                json={"available": available}) as resp:
                assert resp.status < 300, await resp.text()

    return seed


@pytest.fixture
def apply_order(kubectl: Any, namespace: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    import json

    def apply(manifest: dict[str, Any]) -> dict[str, Any]:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        return get_order(kubectl, namespace, manifest["metadata"]["name"])

    return apply


@pytest.fixture
def wait_for_phase(kubectl: Any, namespace: str
                   ) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def wait(name: str, phases: set[str] | None = None,
                   within: float = 90) -> dict[str, Any]:
        wanted = phases or TERMINAL
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            order = get_order(kubectl, namespace, name)
            phase = (order.get("status") or {}).get("phase")
            if phase in wanted:
                return order
            if loop.time() > deadline:
                raise AssertionError(f"{name} stuck in {phase}: {order.get('status')}")
            await asyncio.sleep(0.3)

    return wait
