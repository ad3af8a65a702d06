"""Shared fixtures of the service and messaging tests (real PostgreSQL, RabbitMQ, Redis).

``amqp_url``, ``database_url`` and ``redis_url`` come from the project's pytest plugin
(``vyapaar_stack.pytest_plugin``: the local stack, or the ``VYAPAAR_*_URL`` env vars). If
that plugin is not installed, the fallbacks below read the env vars and skip otherwise.

Isolation: every test module gets its own AMQP name prefix (so its own exchanges and
queues) and every database-using test or module its own PostgreSQL schema; both are
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from vyapaar_services.common.config import Settings
from vyapaar_services.common.db import quote_ident
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime
from vyapaar_services.messaging import (
    Envelope,
    Publisher,
    Topology,
    declare_topology,
    delete_topology,
    retry_queue_name,
)
from vyapaar_services.messaging.topology import DEFAULT_RETRY_DELAYS

#: short delay tiers so retry paths finish in about a second
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


# -- PostgreSQL ------------------------------------------------------------------------------


async def drop_schema(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[str]:
    """A unique schema name for one test, dropped afterwards (created by migrate())."""
    name = unique("t_")
    yield name
    await drop_schema(database_url, name)


# -- Services --------------------------------------------------------------------------------


class RunningService:
    def __init__(self, client: TestClient[Any, Any], runtime: ServiceRuntime) -> None:
        self.client = client
        self.runtime = runtime

    @property
    def pool(self) -> asyncpg.Pool:
        assert self.runtime.pool is not None
        return self.runtime.pool


async def _start_service(
    create_app: Callable[[Settings], web.Application],
    service: str,
    *,
    database_url: str,
    amqp_url: str,
    topology: Topology,
    redis_url: str | None = None,
    **overrides: Any,
) -> RunningService:
    """Run a service app in-process against the real infrastructure; wait until ready."""
    options: dict[str, Any] = {
        "db_schema": unique(f"t_{service}_"),
        "retry_delays": FAST_RETRY_DELAYS,
        "outbox_poll_interval": 0.5,
        "db_pool_max": 10,
        "prefetch": 64,
        **overrides,
    }
    settings = Settings(
        service=service,
        database_url=database_url,
        amqp_url=amqp_url,
        amqp_prefix=topology.prefix,
        redis_url=redis_url,
        **options,
    )
    app = create_app(settings)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    runtime = app[RUNTIME_KEY]
    await runtime.wait_ready(30)
    return RunningService(client, runtime)


async def stop_service(running: RunningService, database_url: str) -> None:
    schema = running.runtime.settings.db_schema
    await running.client.close()
    await drop_schema(database_url, schema)


@pytest.fixture(scope="module")
async def service_runner(
    database_url: str,
    amqp_url: str,
    redis_url: str,
    topology: Topology,
    amqp_connection: AbstractRobustConnection,
) -> AsyncIterator[Callable[..., Awaitable[RunningService]]]:
    """``await service_runner(create_app, "inventory", **settings_overrides)`` runs a service
    (module scope); every service started is stopped and its schema dropped afterwards."""
    started: list[RunningService] = []

    async def run(
        create_app: Callable[[Settings], web.Application], service: str, **overrides: Any
    ) -> RunningService:
        overrides.setdefault("redis_url", redis_url)
        running = await _start_service(
            create_app,
            service,
            database_url=database_url,
            amqp_url=amqp_url,
            topology=topology,
            **overrides,
        )
        started.append(running)
        return running

    yield run
    for running in reversed(started):
        await stop_service(running, database_url)
    channel = await amqp_connection.channel()
    for running in started:  # the delay queues of non-default tiers
        queue = topology.command_queue(running.runtime.service)
        for delay in running.runtime.settings.retry_delays:
            await channel.queue_delete(
                retry_queue_name(queue, delay), if_unused=False, if_empty=False
            )
    await channel.close()


@pytest.fixture(scope="session")
def poll_queue() -> Callable[..., Awaitable[AbstractIncomingMessage]]:
    """``await poll_queue(channel, queue, within=10)``: the next message (unacked)."""
    return get_message


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., Awaitable[None]]:
    """``await wait_until(async_predicate, within=10)``."""
    return eventually
