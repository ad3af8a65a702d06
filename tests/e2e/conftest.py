"""The whole system (services + operator) on the local stack, for end-to-end specs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from vyapaar_stack import system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.processes import Process

#: Fast deadlines so timeouts and retries show up within a test's patience.
OPERATOR_ENV = {
    "VYAPAAR_STEP_TIMEOUT_SECONDS": "3",
    "VYAPAAR_MAX_ATTEMPTS": "3",
    "VYAPAAR_BACKOFF_BASE_SECONDS": "0.5",
    "VYAPAAR_BACKOFF_MAX_SECONDS": "2",
    "VYAPAAR_COMPENSATION_TIMEOUT_SECONDS": "3",
    "VYAPAAR_COMPENSATION_MAX_ATTEMPTS": "6",
}

TERMINAL = {"Completed", "Failed", "Cancelled", "CompensationFailed"}


class System:
    """Handles on the running services and operator."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config

    def url(self, service: str) -> str:
        return system.service_url(self.config, service)

    def operator(self) -> Process:
        return Process("operator", self.config.state_dir / "run")

    def restart_operator(self) -> None:
        system.start_operator(self.config, OPERATOR_ENV)
        system.wait_operator(self.config)


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
async def http() -> Any:
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


def order_manifest(name: str, *, sku: str, quantity: int = 1, unit_price: int = 1000,
                   token: str = "tok_visa", line1: str = "1 MG Road",
                   cancel: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "vyapaar.dev/v1alpha1",
        "kind": "Order",
        "metadata": {"name": name},
        "spec": {
            "customer": {"id": "cust-e2e", "email": "e2e@example.com", "name": "E2E"},
            "items": [{"sku": sku, "quantity": quantity, "unitPrice": unit_price}],
            "currency": "INR",
            "paymentToken": token,
            "shippingAddress": {"name": "E2E", "line1": line1, "city": "Pune",
                                "postalCode": "411001", "country": "IN"},
            "cancel": cancel,
        },
    }


@pytest.fixture
def apply_order(kubectl: Any, namespace: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def apply(manifest: dict[str, Any]) -> dict[str, Any]:
        kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        return get_order(kubectl, namespace, manifest["metadata"]["name"])

    return apply


def get_order(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    out = kubectl("get", "orders.vyapaar.dev", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


@pytest.fixture
def wait_for_phase(kubectl: Any, namespace: str
                   ) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def wait(name: str, phases: set[str] | None = None,
                   timeout: float = 90) -> dict[str, Any]:
        wanted = phases or TERMINAL
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            order = get_order(kubectl, namespace, name)
            phase = (order.get("status") or {}).get("phase")
            if phase in wanted:
                return order
            if loop.time() > deadline:
                raise AssertionError(f"{name} stuck in {phase}: {order.get('status')}")
            await asyncio.sleep(0.3)

    return wait
