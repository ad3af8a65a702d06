"""Helpers for end-to-end specs: the running system, Order manifests, service records."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import dlq_name

from . import system
from .config import StackConfig
from .processes import Process

HELM_NAMESPACE_PREFIX = system.HELM_NAMESPACE_PREFIX

#: Fast deadlines so timeouts and retries show up within a test's patience.
OPERATOR_ENV = {
    "VYAPAAR_STEP_TIMEOUT_SECONDS": "3",
    "VYAPAAR_MAX_ATTEMPTS": "3",
    "VYAPAAR_BACKOFF_BASE_SECONDS": "0.5",
    "VYAPAAR_BACKOFF_MAX_SECONDS": "2",
    "VYAPAAR_COMPENSATION_TIMEOUT_SECONDS": "3",
    "VYAPAAR_COMPENSATION_MAX_ATTEMPTS": "6",
    "VYAPAAR_COMPENSATION_BACKOFF_BASE_SECONDS": "0.5",
    "VYAPAAR_COMPENSATION_BACKOFF_MAX_SECONDS": "2",
    # Off, so that a stopped service's timeouts compensate as the specs of failures expect;
    # the specs of the breakers turn them on (tests/e2e/test_breakers.py).
    "VYAPAAR_BREAKER_THRESHOLD": "0",
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

    def restart_operator(self, **settings: str) -> None:
        """Start the operator (stopped first if it runs) with the tests' settings, and
        these ones over them."""
        self.operator().stop()
        system.start_operator(self.config, {**OPERATOR_ENV, **settings})
        system.wait_operator(self.config)

    @property
    def gateway_url(self) -> str:
        return system.gateway_url(self.config)


@dataclass(frozen=True)
class GatewayTenant:
    """A tenant of the running gateway: its namespace and bearer token."""

    name: str
    namespace: str
    token: str
    url: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def add_gateway_tenant(config: StackConfig, namespace: str, within: float = 15,
                       rate_limit: str | None = None) -> GatewayTenant:
    """Give ``namespace`` a tenant and token, and wait until the gateway accepts it."""
    tenant = GatewayTenant(namespace, namespace, secrets.token_urlsafe(24),
                           system.gateway_url(config))
    tenants = [t for t in system.read_tenants(config) if t.get("name") != tenant.name]
    entry = {"name": tenant.name, "namespace": namespace, "token": tenant.token,
             **({"rateLimit": rate_limit} if rate_limit else {})}
    system.write_tenants(config, [*tenants, entry])
    request = urllib.request.Request(f"{tenant.url}/api/v1/orders?limit=1",
                                     headers=tenant.headers)
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5):
                return tenant
        except urllib.error.HTTPError as exc:
            if exc.code != 401 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def remove_gateway_tenant(config: StackConfig, tenant: GatewayTenant) -> None:
    system.write_tenants(config, [t for t in system.read_tenants(config)
                                  if t.get("name") != tenant.name])


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


def condition(order: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The Order's condition of that type, if it has one."""
    conditions = (order.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def get_order(kubectl: Any, namespace: str, name: str) -> dict[str, Any]:
    out: subprocess.CompletedProcess[str] = kubectl(
        "get", "orders.vyapaar.dev", name, "-n", namespace, "-o", "json")
    return dict(json.loads(out.stdout))


def apply_orders(kubectl: Any, namespace: str, manifests: list[dict[str, Any]]) -> list[str]:
    """Create the Orders in one `kubectl apply` (one at a time, the first may time out before
    the last exists); their names."""
    kubectl("apply", "-n", namespace, "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    return [m["metadata"]["name"] for m in manifests]


async def wait_orders(kubectl: Any, namespace: str, names: list[str], phases: set[str], *,
                      within: float = 120, at_least: int | None = None
                      ) -> dict[str, dict[str, Any]]:
    """The named Orders (one list a round) once all of them -- or ``at_least`` -- are in
    ``phases``."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        listed = json.loads(kubectl("get", "orders.vyapaar.dev", "-n", namespace,
                                    "-o", "json").stdout)["items"]
        orders = {o["metadata"]["name"]: o for o in listed if o["metadata"]["name"] in names}
        there = sum(1 for o in orders.values() if phase_of(o) in phases)
        if there >= (len(names) if at_least is None else at_least):
            return orders
        if asyncio.get_running_loop().time() > deadline:
            now = {n: phase_of(o) for n, o in orders.items()}
            raise AssertionError(f"not all in {sorted(phases)}: {now}")
        await asyncio.sleep(0.5)


async def wait_published(kubectl: Any, namespace: str, names: list[str], *,
                         within: float = 120) -> dict[str, dict[str, Any]]:
    """The named Orders once all are finished and each has dropped its published domain
    events from ``status.outbox`` (the write after the broker confirmed them)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        orders = await wait_orders(kubectl, namespace, names, TERMINAL, within=within)
        kept = [n for n, o in orders.items() if "outbox" in o["status"]]
        if not kept:
            return orders
        assert asyncio.get_running_loop().time() < deadline, f"events kept by {kept}"
        await asyncio.sleep(0.3)


class EventSubscriber:
    """A subscriber of ``vyapaar.order-events``: its own queue, every envelope kept."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.envelopes.append(Envelope.from_message(message))
        await message.ack()

    def of(self, uid: str) -> list[Envelope]:
        return [e for e in self.envelopes if e.correlation_id == uid]

    async def settle(self, orders: dict[str, dict[str, Any]], within: float = 30) -> None:
        """Until every order's events up to its ``status.eventSeq`` have arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            missing = {
                o["metadata"]["name"]: o["status"]["eventSeq"] - len(
                    {e.payload["seq"] for e in self.of(o["metadata"]["uid"])})
                for o in orders.values()}
            if not any(missing.values()):
                return
            if loop.time() > deadline:
                raise AssertionError(f"events missing: {missing}")
            await asyncio.sleep(0.2)


def phase_of(order: dict[str, Any]) -> str:
    return str((order.get("status") or {}).get("phase") or "")


async def set_faults(http: aiohttp.ClientSession, running: System, service: str,
                     **faults: Any) -> None:
    """``PUT /admin/faults`` of payment or shipping (errorRate, latencyMs, operations, ...)."""
    async with http.put(f"{running.url(service)}/admin/faults", json=faults) as resp:
        assert resp.status == 200, await resp.text()


async def records(http: aiohttp.ClientSession, running: System, uid: str) -> dict[str, Any]:
    """What every service holds about one order."""
    out: dict[str, Any] = {}
    for service, path in (("inventory", "reservations"), ("payment", "ledger"),
                          ("shipping", "shipments"), ("notification", "notifications")):
        async with http.get(f"{running.url(service)}/api/v1/{path}",
                            params={"order": uid}) as resp:
            assert resp.status == 200, await resp.text()
            out[service] = await resp.json()
    return out


async def stock(http: aiohttp.ClientSession, running: System, sku: str) -> dict[str, int]:
    async with http.get(f"{running.url('inventory')}/api/v1/stock/{sku}") as resp:
        assert resp.status == 200
        data = await resp.json()
    return {k: int(data[k]) for k in ("available", "held", "committed")}


def ledger_kinds(effects: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted((e["kind"], e["amount"]) for e in effects["payment"]["entries"])


async def remove_from_dlq(channel: AbstractChannel, queue: str, markers: list[str]) -> int:
    """Ack the messages in `queue`'s DLQ whose body holds one of `markers` (a test's own
    poison), put the others back; return how many were removed."""
    dlq = await channel.declare_queue(dlq_name(queue), passive=True)
    removed = 0
    for _ in range(2000):
        message = await dlq.get(fail=False)
        if message is None:
            break
        if any(marker.encode() in message.body for marker in markers):
            await message.ack()
            removed += 1
        else:
            await message.nack(requeue=True)
    return removed
