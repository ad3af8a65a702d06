"""One timer task serves every saga's next deadline."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from vyapaar_operator import deadlines as deadlines_module
from vyapaar_operator.deadlines import Deadlines
from vyapaar_operator.orders import OrderRef

A, B = OrderRef("n", "a"), OrderRef("n", "b")


async def test_due_orders_fire_in_deadline_order_and_only_once() -> None:
    deadlines = Deadlines()
    fired: list[OrderRef] = []

    async def on_due(ref: OrderRef) -> None:
        fired.append(ref)

    now = datetime.now(UTC)
    deadlines.set(B, now + timedelta(milliseconds=100))
    deadlines.set(A, now + timedelta(milliseconds=20))
    runner = asyncio.create_task(deadlines.run(on_due))
    await asyncio.sleep(0.4)
    runner.cancel()
    assert fired == [A, B]
    assert len(deadlines) == 0


async def test_a_later_deadline_replaces_an_earlier_one() -> None:
    deadlines = Deadlines()
    fired: list[OrderRef] = []

    async def on_due(ref: OrderRef) -> None:
        fired.append(ref)

    now = datetime.now(UTC)
    deadlines.set(A, now + timedelta(milliseconds=30))
    deadlines.set(A, now + timedelta(seconds=30))
    runner = asyncio.create_task(deadlines.run(on_due))
    await asyncio.sleep(0.2)
    runner.cancel()
    assert fired == []


async def test_a_forgotten_order_never_fires() -> None:
    deadlines = Deadlines()
    fired: list[OrderRef] = []

    async def on_due(ref: OrderRef) -> None:
        fired.append(ref)

    deadlines.set(A, datetime.now(UTC) + timedelta(milliseconds=30))
    deadlines.forget(A)
    runner = asyncio.create_task(deadlines.run(on_due))
    await asyncio.sleep(0.2)
    runner.cancel()
    assert fired == []


async def test_a_tick_that_failed_while_the_apiserver_was_away_comes_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deadlines_module, "RETRY_SECONDS", 0.05)
    deadlines = Deadlines()
    calls: list[OrderRef] = []

    async def on_due(ref: OrderRef) -> None:
        calls.append(ref)
        if len(calls) < 3:
            raise aiohttp.ClientConnectionError("connection refused")

    deadlines.set(A, datetime.now(UTC))
    runner = asyncio.create_task(deadlines.run(on_due))
    await asyncio.sleep(0.5)
    runner.cancel()
    assert calls == [A, A, A]  # failed twice, then went through; nothing more after
    assert len(deadlines) == 0
