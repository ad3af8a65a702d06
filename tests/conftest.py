"""Fixtures shared by the specs: the whole system (services + operator) on the local stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from vyapaar_stack import system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.testing import OPERATOR_ENV, TERMINAL, System, get_order


@pytest.fixture(scope="session")
def running_system(local_infra: StackConfig, crds: Path) -> Iterator[System]:
    config = local_infra
    system.down(config)  # start from this code, with the test settings
    for name in system.SERVICES:
        system.start_service(config, name)
    for name in system.SERVICES:
        system.wait_service(config, name)
    system.start_operator(config, OPERATOR_ENV)
    system.wait_operator(config)
    yield System(config)


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
