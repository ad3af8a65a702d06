"""Fixtures of the service specs: PostgreSQL schemas and services run in-process.

The AMQP fixtures (``amqp_connection``, ``topology``, ``publisher``, ``replies``, ...) are
shared with the messaging specs and live in ``tests/conftest.py``. Isolation: every
database-using test or module gets its own PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from vyapaar_messaging import (
    Topology,
    dlq_name,
    retry_queue_name,
)
from vyapaar_services.common.config import Settings
from vyapaar_services.common.db import quote_ident
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime

#: short delay tiers so retry paths finish in about a second (the AMQP fixtures' too)
FAST_RETRY_DELAYS = (0.2, 0.4)


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


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
        assert runtime.consumer is not None
        self.queue = runtime.consumer.queue_name
        """The queue it consumes (``<service>.commands``, or its own subscription's)."""

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
        queue = running.queue
        for delay in running.runtime.settings.retry_delays:
            await channel.queue_delete(
                retry_queue_name(queue, delay), if_unused=False, if_empty=False
            )
        if queue not in topology.consumer_queues():  # a subscription outside the topology
            for name in (queue, dlq_name(queue)):
                await channel.queue_delete(name, if_unused=False, if_empty=False)
    await channel.close()
