"""What one order costs the cluster: apiserver writes by resource and the stored status.

These are the structural figures of issue 9 that must not regress (speed lives in
`vyapaar bench`, not here): every write to an Order is one version of it, which a watch
sees exactly once, and every Event is an object of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, watch
from vyapaar_stack.testing import System, order_manifest

FINALIZER = "vyapaar.dev/saga"
STATUS_LIMIT = 1536  # bytes of a completed one-item Order's status, as stored


async def versions_until_done(
    k8s_api: Any, namespace: str, names: set[str], within: float = 90
) -> dict[str, list[dict[str, Any]]]:
    """Every version of each Order, from creation until it is Completed without finalizer."""
    objects = client.CustomObjectsApi(k8s_api)
    seen: dict[str, list[dict[str, Any]]] = {name: [] for name in names}

    def done(name: str) -> bool:
        last = seen[name][-1] if seen[name] else None
        return bool(last and (last.get("status") or {}).get("phase") == "Completed"
                    and FINALIZER not in (last["metadata"].get("finalizers") or []))

    async def follow() -> None:
        stream = watch.Watch()
        async with stream.stream(objects.list_namespaced_custom_object, "vyapaar.dev",
                                 "v1alpha1", namespace, "orders",
                                 timeout_seconds=int(within)) as events:
            async for event in events:
                obj = event["object"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    seen[obj["metadata"]["name"]].append(obj)
                if all(done(name) for name in names):
                    return

    await asyncio.wait_for(follow(), within)
    return seen


async def test_a_completed_order_costs_nine_writes_and_keeps_a_small_status(
    running_system: System, k8s_api: Any, namespace: str, seed_stock: Any,
    unique_sku: Callable[[str], str], apply_order: Any,
) -> None:
    names = {f"cost-{i}" for i in range(6)}
    sku = unique_sku("SKU-COST")
    await seed_stock({sku: len(names)})
    following = asyncio.create_task(versions_until_done(k8s_api, namespace, names))
    await asyncio.sleep(0.5)  # the watch is open before the first create
    for name in sorted(names):
        apply_order(order_manifest(name, sku=sku))
    versions = await following
    await asyncio.sleep(1)  # Events are posted in the background
    core = client.CoreV1Api(k8s_api)
    events = Counter(
        (e.involved_object.name, e.reason)
        for e in (await core.list_namespaced_event(namespace)).items
    )

    for name in names:
        created, *updates = versions[name]
        # The finalizer comes with the creation (the MutatingAdmissionPolicy): no write.
        assert FINALIZER in created["metadata"]["finalizers"], name
        status_writes = [v for v in updates if FINALIZER in (v["metadata"].get("finalizers") or [])]
        # Start (reserve in flight), reserved (pay), paid (ship), shipped (commit + notify),
        # committed + notified together, the outcome's domain events dropped from the outbox
        # once the broker has them (each earlier write drops the events of the one before),
        # then the finalizer removed.
        assert len(status_writes) == 6, [v["status"].get("phase") for v in updates]
        assert [len(v["status"].get("outbox", ())) for v in status_writes][-1] == 0
        assert len(updates) == len(status_writes) + 1
        # One Event: the outcome. Routine progress is in the steps' entries.
        assert {reason: n for (who, reason), n in events.items() if who == name} == {
            "OrderCompleted": 1}
        assert 1 + len(updates) + 1 <= 9  # the create, the updates, the Event

        final = versions[name][-1]["status"]
        assert len(json.dumps(final, separators=(",", ":"))) <= STATUS_LIMIT
        assert {s["state"] for s in final["steps"].values()} == {"Succeeded"}
