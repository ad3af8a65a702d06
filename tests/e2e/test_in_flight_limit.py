"""The in-flight limit: Orders beyond it wait in Pending, say so, and start in creation order.

A second operator runs here with `VYAPAAR_MAX_IN_FLIGHT=2`, watching one namespace of its
own (a `vyn-` one, which the suite's operator leaves alone), against the same services.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from kubernetes_asyncio import client, watch
from vyapaar_stack.processes import Process
from vyapaar_stack.testing import (
    HELM_NAMESPACE_PREFIX,
    OPERATOR_ENV,
    System,
    condition,
    order_manifest,
)

LIMIT = 2
ORDERS = 8


@pytest.fixture
async def limited_namespace(k8s_api: Any) -> AsyncIterator[str]:
    name = f"{HELM_NAMESPACE_PREFIX}limit-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(k8s_api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    await core.delete_namespace(name)


@pytest.fixture
def limited_operator(running_system: System, limited_namespace: str) -> Iterator[Process]:
    config = running_system.config
    proc = Process("operator-limited", config.state_dir / "run")
    proc.start([sys.executable, "-m", "vyapaar_operator"], env={
        **config.env(), **OPERATOR_ENV,
        "VYAPAAR_NAMESPACES": limited_namespace,
        "VYAPAAR_MAX_IN_FLIGHT": str(LIMIT),
        "VYAPAAR_HEALTH_PORT": "0", "VYAPAAR_METRICS_PORT": "0",
    })
    yield proc
    proc.stop()


def time_of(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_orders_beyond_the_limit_wait_queued_and_start_in_creation_order(
    limited_operator: Process, limited_namespace: str, k8s_api: Any, kubectl: Any,
    seed_stock: Any, unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-LIMIT")
    await seed_stock({sku: ORDERS})
    names = [f"queued-{i}" for i in range(ORDERS)]
    objects = client.CustomObjectsApi(k8s_api)
    finals: dict[str, dict[str, Any]] = {}
    said_queued: set[str] = set()

    async def follow() -> None:
        stream = watch.Watch()
        async with stream.stream(objects.list_namespaced_custom_object, "vyapaar.dev",
                                 "v1alpha1", limited_namespace, "orders",
                                 timeout_seconds=120) as events:
            async for event in events:
                obj = event["object"]
                name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
                queued = condition(obj, "Queued")
                if phase == "Pending" and queued and queued["status"] == "True":
                    assert queued["reason"] == "InFlightLimitReached"
                    said_queued.add(name)
                if phase == "Completed":
                    finals[name] = obj
                if len(finals) == ORDERS:
                    return

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    # All at once (one List, created in this order), so that most must wait.
    kubectl("apply", "-n", limited_namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List",
        "items": [order_manifest(name, sku=sku) for name in names]}))
    await asyncio.wait_for(following, 120)

    assert set(finals) == set(names)  # every queued Order ran, and completed
    # Created within milliseconds, sagas of a few hundred: nearly all beyond the limit waited
    # (one may find a slot already free), and said why.
    assert len(said_queued) >= ORDERS - LIMIT - 1
    for name in said_queued:
        admitted = condition(finals[name], "Queued")
        assert admitted is not None and admitted["status"] == "False"
        assert admitted["reason"] == "Admitted"

    runs = {name: (time_of(o["status"]["startedAt"]), time_of(o["status"]["finishedAt"]))
            for name, o in finals.items()}
    # Started in creation order...
    assert sorted(names, key=lambda n: runs[n][0]) == names
    # ...and never more than LIMIT at once (a slot frees when a saga finishes).
    for name, (start, _) in runs.items():
        running = [n for n, (s, f) in runs.items() if s <= start < f]
        assert len(running) <= LIMIT, (name, running)
