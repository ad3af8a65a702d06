"""Rebuild: replaying the event log (a RabbitMQ stream, from its first event) into an emptied
read model gives exactly the tables the live service built event by event -- in-process, as
the ``rebuild`` command, and while the live service keeps applying new events."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vyapaar_services.analytics.rebuild import RebuildSummary, rebuild

START = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module", autouse=True)
async def history(analytics: Any, bus: Any, sagas: Any, wait_until: Any) -> None:
    """Orders of every kind, some events twice, one order out of order, one bad event."""
    before = bus.handled()
    handled = 0
    scrambled = sagas.completed(START + timedelta(hours=3), total=990)
    random.shuffle(scrambled)
    for events in (
        sagas.completed(START, total=2599),
        sagas.declined(START + timedelta(hours=1)),
        sagas.refunded(START + timedelta(hours=2), total=1200, currency="USD"),
        scrambled,
        sagas.completed(START + timedelta(days=1))[:4],
    ):
        sent = await bus.publish(str(uuid.uuid4()), events)
        await bus.send(sent[0])  # a duplicate
        handled += len(sent) + 1
    bad = sagas.envelope(str(uuid.uuid4()), sagas.completed()[0])
    await bus.send(bad.model_copy(update={"payload": {**bad.payload, "schemaVersion": 2}}))

    async def applied() -> bool:
        return bool(bus.handled() - before >= handled)

    await wait_until(applied, within=20)


async def spoil(pool: Any) -> None:
    """Lose and corrupt part of the read model, so only a real rebuild restores it."""
    await pool.execute("DELETE FROM order_events WHERE seq > 5")
    await pool.execute("UPDATE orders SET phase = 'Pending', finished_at = NULL")
    await pool.execute("UPDATE revenue_daily SET captured = captured * 2")


async def test_a_rebuild_from_the_log_equals_the_incremental_read_model(
    analytics: Any, read_model: Any
) -> None:
    incremental = await read_model(analytics.pool)
    await spoil(analytics.pool)
    progress: list[RebuildSummary] = []

    summary = await rebuild(analytics.runtime.settings, idle_seconds=1.0,
                            report=progress.append, report_every=0.01)

    assert await read_model(analytics.pool) == incremental
    assert summary.applied == len(incremental["order_events"]) == 7 + 7 + 8 + 7 + 4 == 33
    assert summary.duplicates == 5
    assert summary.rejected == 1
    assert summary.read == summary.applied + summary.duplicates + summary.rejected
    assert summary.rate > 0
    assert all(p.read <= summary.read for p in progress)
    assert await analytics.pool.fetchval("SELECT count(*) FROM inbox") == summary.applied


async def test_the_rebuild_command_rebuilds_and_reports_on_stderr(
    analytics: Any, read_model: Any
) -> None:
    incremental = await read_model(analytics.pool)
    await spoil(analytics.pool)
    settings = analytics.runtime.settings
    env = {
        **os.environ,
        "VYAPAAR_DATABASE_URL": settings.database_url,
        "VYAPAAR_AMQP_URL": settings.amqp_url,
        "VYAPAAR_DB_SCHEMA": settings.db_schema,
        "VYAPAAR_AMQP_PREFIX": settings.amqp_prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vyapaar_services.analytics", "rebuild", "--idle-seconds", "1",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
    lines = stderr.decode().splitlines()
    assert lines[0].startswith(f"rebuild: replaying {settings.amqp_prefix}order-events.log")
    assert lines[-1].startswith("rebuild: done in ")
    assert "33 applied, 5 duplicates, 1 rejected" in lines[-1]
    assert await read_model(analytics.pool) == incremental


async def test_a_rebuild_beside_the_live_service_converges(
    analytics: Any, bus: Any, sagas: Any, read_model: Any, handled_all: Any
) -> None:
    """Events published during the rebuild reach both the log and the live queue: whichever
    applies one first, the other finds it in the inbox."""
    before = bus.handled()
    running = asyncio.create_task(rebuild(analytics.runtime.settings, idle_seconds=1.5))
    published = 0
    for hour in range(5):
        events = sagas.completed(START + timedelta(days=2, hours=hour), total=100 + hour)
        await bus.publish(str(uuid.uuid4()), events)
        published += len(events)
        await asyncio.sleep(0.1)
    await running
    await handled_all(published, before)
    concurrent = await read_model(analytics.pool)

    await rebuild(analytics.runtime.settings, idle_seconds=1.0)  # alone this time
    assert await read_model(analytics.pool) == concurrent
    assert len(concurrent["orders"]) == 5 + 5


async def test_a_rebuild_that_cannot_connect_fails_clearly() -> None:
    env = {
        **os.environ,
        "VYAPAAR_DATABASE_URL": "postgresql://vyapaar:secret@127.0.0.1:9/vyapaar",
        "VYAPAAR_AMQP_URL": "amqp://guest:guest@127.0.0.1:9/",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vyapaar_services.analytics", "rebuild",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == 1
    text = stderr.decode()
    assert "rebuild: failed: cannot connect to PostgreSQL at 127.0.0.1:9" in text
    assert "Traceback" not in text and "secret" not in text
