"""Calibration: what the idle system burns, and what one status write costs the control plane.

The saga log is the Order's status, so the price of the design is mostly status writes.
To put a number on "one write" the benchmark replaces the status of an Order that no
operator touches K times — once with a real completed Order's status, once with three
fields — and divides kube-apiserver's and etcd's CPU by K. The operator must leave that
Order alone, so it lives in a namespace its ``VYAPAAR_NAMESPACES`` excludes (the local
stack's operator excludes ``vyn-*``); when the running operator watches every namespace the
calibration is skipped, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from vyapaar_operator.orders import GROUP, MERGE_PATCH, PLURAL, VERSION, OrderStore

from . import apiserver
from .load import Context, compact_size, delete_namespace, order_manifest
from .procstat import Snapshot
from .report import CONTROL_PLANE_WRITE, IdleBaseline, WriteCost

CALIBRATION_PREFIX = "vyn-bench-calib-"
CALIBRATION_LABEL = "vyapaar.dev/bench"
#: three fields, like the first status an operator writes; observedGeneration varies per
#: write, since the apiserver skips a write that changes nothing
MINIMAL_STATUS: dict[str, Any] = {"phase": "Pending", "reason": "Calibrating",
                                  "observedGeneration": 0}
WARM_UP = 10


def namespace_matches(name: str, pattern: str) -> bool:
    """kopf's namespace pattern: comma-separated globs, ``!glob`` excludes, and a leading
    exclusion implies a catch-all before it (kopf ``match_namespace``)."""
    globs = [glob.strip() for glob in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    matches = first = fnmatch.fnmatch(name, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matches = matches and not fnmatch.fnmatch(name, glob.lstrip("!"))
        else:
            matches = matches or (first and fnmatch.fnmatch(name, glob))
    return matches


def namespace_watched(name: str, patterns: Iterable[str]) -> bool:
    """Does an operator started with these ``VYAPAAR_NAMESPACES`` act in `name`?"""
    patterns = list(patterns)
    return not patterns or any(namespace_matches(name, p) for p in patterns)


def read_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with (empty when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def operator_patterns(environ: Mapping[str, str]) -> tuple[str, ...]:
    """``VYAPAAR_NAMESPACES`` split as the operator splits it (vyapaar_operator.settings)."""
    raw = environ.get("VYAPAAR_NAMESPACES", "")
    return tuple(ns.strip() for ns in raw.split(",") if ns.strip())


def operator_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The operator's VYAPAAR_* settings for the report (URLs left out: they hold passwords)."""
    return {k: v for k, v in sorted(environ.items())
            if k.startswith("VYAPAAR_") and not k.endswith("_URL")}


def calibration_namespace(patterns: Iterable[str]) -> str | None:
    """A fresh namespace the operator ignores, or None if it watches them all."""
    name = f"{CALIBRATION_PREFIX}{uuid.uuid4().hex[:6]}"
    return None if namespace_watched(name, patterns) else name


def _rates(delta: Snapshot, skip: Iterable[str] = ()) -> dict[str, float]:
    """CPU seconds per second; a restarted component (in `skip`) counts as 0."""
    if delta.at <= 0:
        return {}
    return {p: 0.0 if p in skip else max(0.0, s / delta.at) for p, s in delta.cpu_s.items()}


async def idle_baseline(ctx: Context, seconds: float) -> IdleBaseline:
    """CPU per second of every process and writes per second, with no orders in flight."""
    if seconds <= 0:
        return IdleBaseline.none()
    ctx.refresh()
    before_text = await apiserver.scrape(ctx.config)
    before = ctx.processes.snapshot()
    await asyncio.sleep(seconds)
    delta = ctx.processes.snapshot().minus(before)
    writes = apiserver.writes_by_resource(apiserver.delta(
        apiserver.request_counts(await apiserver.scrape(ctx.config)),
        apiserver.request_counts(before_text)))
    restarted = ctx.restarted()
    if restarted:
        ctx.on_note(f"restarted while measuring the idle system (idle CPU taken as 0): "
                    f"{', '.join(restarted)}")
    return IdleBaseline(seconds=delta.at, cpu_s_per_s=_rates(delta, restarted),
                        machine_busy_per_s=delta.machine_busy_s / delta.at,
                        writes_per_s={r: n / delta.at for r, n in writes.items()},
                        restarted=restarted)


async def _write_cost(ctx: Context, store: OrderStore, obj: dict[str, Any],
                      idle: IdleBaseline, variant: str, status: Mapping[str, Any],
                      writes: int) -> tuple[WriteCost, dict[str, Any]]:
    """`writes` status replaces, each from the resourceVersion the last one returned."""
    generation = 0

    async def put(current: dict[str, Any]) -> dict[str, Any]:
        nonlocal generation
        generation += 1
        return await store.replace_status(current, {**status, "observedGeneration": generation})

    for _ in range(WARM_UP):
        obj = await put(obj)
    requests_before = apiserver.request_counts(await apiserver.scrape(ctx.config))
    before = ctx.processes.snapshot()
    started = time.monotonic()
    for _ in range(writes):
        obj = await put(obj)
    wall = time.monotonic() - started
    delta = ctx.processes.snapshot().minus(before)
    served = apiserver.delta(apiserver.request_counts(await apiserver.scrape(ctx.config)),
                             requests_before)
    cpu = {p: max(0.0, delta.cpu_s.get(p, 0.0) - idle.cpu_s_per_s.get(p, 0.0) * delta.at)
           for p in CONTROL_PLANE_WRITE}
    return WriteCost(variant=variant, writes=writes, status_bytes=compact_size(obj["status"]),
                     wall_s=wall, cpu_s=cpu,
                     other_requests=max(0, apiserver.resource_requests(served) - writes)), obj


async def release_orders(api: Any, namespace: str) -> None:
    """Drop the finalizers of the Orders in `namespace`: no operator acts there to drop them
    (an admission policy may add the saga's on create), and the namespace could not go."""
    objs = client.CustomObjectsApi(api)
    listed = await objs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    for item in listed["items"]:
        if item["metadata"].get("finalizers"):
            with contextlib.suppress(ApiException):
                await objs.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"],
                    {"metadata": {"finalizers": None}},
                    _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # via **kwargs
                )


async def release_stuck_namespaces(api: Any) -> list[str]:
    """Earlier calibration namespaces still terminating (a run cut short): release them."""
    core = client.CoreV1Api(api)
    stuck = [ns.metadata.name for ns in (await core.list_namespace(
        label_selector=f"{CALIBRATION_LABEL}=calibration")).items
        if ns.status.phase == "Terminating"]
    for name in stuck:
        await release_orders(api, name)
    return stuck


async def status_writes(ctx: Context, idle: IdleBaseline, *, namespace: str,
                        full_status: Mapping[str, Any] | None, writes: int
                        ) -> tuple[WriteCost | None, WriteCost]:
    """The cost of a full-size and of a minimal status write, in a namespace of its own."""
    core = client.CoreV1Api(ctx.api)
    objs = client.CustomObjectsApi(ctx.api)
    store = OrderStore(ctx.api)
    ctx.refresh()
    await release_stuck_namespaces(ctx.api)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=namespace, labels={CALIBRATION_LABEL: "calibration"})))
    try:
        obj = await objs.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, order_manifest("calibration", "SKU-BENCH-000"))
        full = None
        if full_status is not None:
            full, obj = await _write_cost(ctx, store, obj, idle, "full", full_status, writes)
        minimal, obj = await _write_cost(ctx, store, obj, idle, "minimal", MINIMAL_STATUS,
                                         writes)
    finally:
        await release_orders(ctx.api, namespace)
        if not await delete_namespace(core, namespace):
            ctx.on_note(f"namespace {namespace} is still terminating; going on")
    restarted = ctx.restarted()
    if restarted:
        ctx.on_note(f"restarted during the calibration: {', '.join(restarted)}")
    return full, minimal
