"""The Order store on a real apiserver: a write says what happened to the object.

A status write meets an Order that changed (Conflict: decide again) or one deleted since it
was read (Gone: its saga let it go, there is nothing left to write) — neither is an error
for the operator to log with a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio import config as kube_config
from vyapaar_operator.orders import Conflict, Gone, OrderRef, OrderStore
from vyapaar_stack.testing import System, order_manifest


@pytest.fixture
async def store(running_system: System) -> AsyncIterator[OrderStore]:
    api = await kube_config.new_client_from_config(
        config_file=str(running_system.config.kubeconfig))
    async with api:
        yield OrderStore(api)


async def completed_order(store: OrderStore, apply_order: Callable[[dict[str, Any]], Any],
                          namespace: str, name: str) -> dict[str, Any]:
    apply_order(order_manifest(name, sku="SKU-NEVER-STOCKED"))  # fails at once: out of stock
    ref = OrderRef(namespace, name)
    for _ in range(150):
        obj = await store.get(ref)
        if obj and (obj.get("status") or {}).get("phase") == "Failed":
            return obj
        await asyncio.sleep(0.2)
    raise AssertionError(f"{ref} never failed")


async def test_a_status_write_on_a_changed_order_is_a_conflict(
    store: OrderStore, apply_order: Any, kubectl: Any, namespace: str,
) -> None:
    obj = await completed_order(store, apply_order, namespace, "changed")
    kubectl("annotate", "orders.vyapaar.dev", "changed", "-n", namespace, "touched=yes")
    with pytest.raises(Conflict):
        await store.replace_status(obj, {**obj["status"], "reason": "Rewritten"})


async def test_a_status_write_on_a_deleted_order_says_it_is_gone(
    store: OrderStore, apply_order: Any, kubectl: Any, namespace: str,
) -> None:
    obj = await completed_order(store, apply_order, namespace, "deleted")
    kubectl("delete", "orders.vyapaar.dev", "deleted", "-n", namespace, "--wait=true")
    assert await store.get(OrderRef(namespace, "deleted")) is None
    with pytest.raises(Gone):
        await store.replace_status(obj, {**obj["status"], "reason": "Rewritten"})
