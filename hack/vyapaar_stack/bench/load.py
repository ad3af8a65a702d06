"""One load point of our system: Orders created at a fixed rate, followed to a terminal phase.

The load is open-loop (each create starts at its due time, whether or not earlier ones
have answered), so an overloaded system shows up as latency and a lower achieved rate
rather than as a slower generator. Latency is client-side, from the create call to the
watch event that shows a terminal phase. The point runs in a fresh namespace, deleted
after; the CPU and apiserver counters bracket the orders only, not the namespace's set-up
or deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from vyapaar_operator.orders import GROUP, KIND, PLURAL, VERSION

from .. import system
from ..config import StackConfig
from ..processes import StackError
from ..testing import TERMINAL
from . import apiserver
from .procstat import BENCH_CLIENT, ProcessSet, discover
from .report import OURS, PointMeasurement

NAMESPACE_PREFIX = "bench-"
#: creates waiting for an answer at once; beyond it the generator falls behind (reported)
MAX_IN_FLIGHT = 64
#: processes whose peak RSS each point reports (VmHWM, reset at the start of the point)
PEAK_RSS = ("operator", "inventory", "payment", "shipping", "notification",
            "kube-apiserver", "etcd")
CREATE_TIMEOUT_S = 30

#: (orders created, terminal phases so far) -> None; called about twice a second
OnProgress = Callable[[int, Mapping[str, int]], None]


class BenchError(StackError):
    """The benchmark cannot run or went wrong in a way a person can fix."""


def order_manifest(name: str, sku: str) -> dict[str, Any]:
    """A one-item Order that completes when stock is there."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name},
        "spec": {
            "customer": {"id": "bench", "email": "bench@example.com", "name": "Bench"},
            "items": [{"sku": sku, "quantity": 1, "unitPrice": 100}],
            "currency": "INR", "paymentToken": "tok_visa",
            "shippingAddress": {"name": "Bench", "line1": "1 Loop Road", "city": "Pune",
                                "postalCode": "411001", "country": "IN"},
        },
    }


def sku_names(skus: int) -> list[str]:
    """Stable names, so repeated runs reset the same rows instead of adding new ones."""
    return [f"SKU-BENCH-{i:03d}" for i in range(skus)]


def compact_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (what a status costs on the wire and in etcd)."""
    return len(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class Context:
    """What every point shares: the stack, its clients and its processes."""

    config: StackConfig
    api: Any  # kubernetes_asyncio.client.ApiClient
    http: aiohttp.ClientSession
    processes: ProcessSet
    stall_timeout: float = 60.0
    settle_s: float = 2.0
    on_note: Callable[[str], None] = print

    def refresh(self) -> None:
        """Find the processes again: on a shared stack a test session may restart some."""
        self.processes = discover(self.config)

    def restarted(self) -> list[str]:
        """Components whose pids changed since the last `refresh` (their CPU is then off)."""
        now = discover(self.config).roots
        return sorted(name for name, pids in self.processes.roots.items()
                      if name != BENCH_CLIENT and now.get(name) != pids)


@dataclass
class PointResult:
    measurement: PointMeasurement
    #: the status of a completed Order of median size (for the write calibration)
    sample_status: dict[str, Any] | None


@dataclass
class Tracker:
    """Orders created and the first terminal phase seen for each."""

    created: dict[str, float] = field(default_factory=dict)
    finished: dict[str, tuple[float, str]] = field(default_factory=dict)
    create_errors: int = 0
    creating: bool = True
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, obj: Mapping[str, Any]) -> None:
        phase = (obj.get("status") or {}).get("phase")
        name = obj["metadata"]["name"]
        if phase in TERMINAL and name not in self.finished:
            self.finished[name] = (time.monotonic(), phase)
            self.changed.set()

    def done(self) -> bool:
        return not self.creating and all(n in self.finished for n in self.created)

    def outcomes(self) -> Counter[str]:
        return Counter(phase for _, phase in self.finished.values())


async def seed_stock(ctx: Context, skus: int, per_sku: int, patience: float = 30.0) -> None:
    """Stock for every SKU; waits out a restart of the inventory service (a shared stack's
    test session restarts the services) for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    for sku in sku_names(skus):
        url = f"{system.service_url(ctx.config, 'inventory')}/api/v1/stock/{sku}"
        while True:
            try:
                async with ctx.http.put(url, json={"available": per_sku}) as resp:
                    if resp.status >= 300:
                        raise BenchError(f"inventory refused stock for {sku}: {resp.status} "
                                         f"{await resp.text()}")
                    break
            except aiohttp.ClientConnectionError:
                if time.monotonic() > deadline:
                    raise BenchError(f"the inventory service does not answer at {url}: "
                                     "start the system first (make demo)") from None
                await asyncio.sleep(1.0)


async def _follow(objs: Any, namespace: str, resource_version: str, tracker: Tracker) -> None:
    """Watch the namespace's Orders from `resource_version` on (reconnecting as needed)."""
    stream = watch.Watch()
    async with stream.stream(objs.list_namespaced_custom_object, GROUP, VERSION, namespace,
                             PLURAL, resource_version=resource_version,
                             allow_watch_bookmarks=True) as events:
        async for event in events:
            if event["type"] in ("ADDED", "MODIFIED"):
                tracker.observe(event["object"])


async def _create_all(objs: Any, namespace: str, tracker: Tracker, *, rate: float,
                      orders: int, skus: list[str]) -> tuple[float, float]:
    """Create `orders` Orders at `rate`; return (first create started, last one answered)."""
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    last_answer = 0.0

    async def create(i: int) -> None:
        nonlocal last_answer
        name = f"b{i:05d}"
        tracker.created[name] = time.monotonic()
        try:
            await objs.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, order_manifest(name, skus[i % len(skus)]),
                _request_timeout=CREATE_TIMEOUT_S)
        except (ApiException, aiohttp.ClientError, TimeoutError):
            tracker.created.pop(name, None)
            tracker.create_errors += 1
        finally:
            last_answer = time.monotonic()
            in_flight.release()

    start = time.monotonic()
    tasks = []
    for i in range(orders):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await in_flight.acquire()
        tasks.append(asyncio.create_task(create(i)))
    await asyncio.gather(*tasks)
    return start, last_answer


async def _wait_finished(tracker: Tracker, stall_timeout: float, follower: asyncio.Task[None]
                         ) -> None:
    """Until every created Order is terminal, or nothing finished for `stall_timeout`."""
    while not tracker.done():
        if follower.done():
            follower.result()  # the watch failed: raise its error
            raise BenchError("the watch on the Orders ended unexpectedly")
        tracker.changed.clear()
        try:
            await asyncio.wait_for(tracker.changed.wait(), timeout=stall_timeout)
        except TimeoutError:
            return


async def _ticker(tracker: Tracker, on_progress: OnProgress) -> None:
    while True:
        on_progress(len(tracker.created) + tracker.create_errors, tracker.outcomes())
        await asyncio.sleep(0.5)


def _sizes(items: list[dict[str, Any]]) -> tuple[list[int], list[int], dict[str, Any] | None]:
    """Status and whole-object sizes of the completed Orders; the median-size status."""
    completed = [o for o in items if (o.get("status") or {}).get("phase") == "Completed"]
    completed.sort(key=lambda o: compact_size(o["status"]))
    status = [compact_size(o["status"]) for o in completed]
    whole = [compact_size(o) for o in completed]
    sample = completed[len(completed) // 2]["status"] if completed else None
    return status, whole, sample


def saga_durations(items: list[dict[str, Any]]) -> tuple[list[float], int]:
    """Each finished saga's own duration (status.startedAt -> finishedAt, without its wait
    for a slot), and how many Orders waited for one (the Queued condition)."""
    durations, queued = [], 0
    for obj in items:
        status = obj.get("status") or {}
        if status.get("startedAt") and status.get("finishedAt"):
            durations.append((_time(status["finishedAt"]) - _time(status["startedAt"]))
                             .total_seconds())
        queued += any(c.get("type") == "Queued" for c in status.get("conditions") or ())
    return sorted(durations), queued


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def delete_namespace(core: Any, namespace: str, within: float = 120.0) -> bool:
    """Delete and wait until it is gone (so its clean-up does not load the next point)."""
    with contextlib.suppress(ApiException):
        await core.delete_namespace(namespace)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        await asyncio.sleep(0.5)
    return False


async def run_point(ctx: Context, *, rate: float, orders: int, skus: int,
                    on_progress: OnProgress) -> PointResult:
    """Offer `orders` Orders at `rate` per second to the running system; measure it all."""
    objs, core = client.CustomObjectsApi(ctx.api), client.CoreV1Api(ctx.api)
    namespace = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:6]}-r{rate:g}".replace(".", "p")
    await seed_stock(ctx, skus, orders)
    ctx.refresh()
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=namespace, labels={"vyapaar.dev/bench": "true"})))
    try:
        await asyncio.sleep(1.0)  # the operator picks up a new namespace within a moment
        listed = await objs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        tracker = Tracker()
        follower = asyncio.create_task(
            _follow(objs, namespace, listed["metadata"]["resourceVersion"], tracker))
        ticker = asyncio.create_task(_ticker(tracker, on_progress))
        try:
            requests_before = apiserver.request_counts(await apiserver.scrape(ctx.config))
            for name in PEAK_RSS:
                ctx.processes.reset_peak_rss(name)
            cpu_before = ctx.processes.snapshot()
            first, last_create = await _create_all(objs, namespace, tracker, rate=rate,
                                                   orders=orders, skus=sku_names(skus))
            tracker.creating = False
            await _wait_finished(tracker, ctx.stall_timeout, follower)
            await asyncio.sleep(ctx.settle_s)  # trailing writes: finalizers, Events
            cpu = ctx.processes.snapshot().minus(cpu_before)
            requests = apiserver.delta(
                apiserver.request_counts(await apiserver.scrape(ctx.config)), requests_before)
        finally:
            for task in (ticker, follower):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        on_progress(len(tracker.created) + tracker.create_errors, tracker.outcomes())
        peaks = {name: mib for name in PEAK_RSS
                 if (mib := ctx.processes.peak_rss_mib(name)) is not None}
        restarted = ctx.restarted()
        if restarted:
            ctx.on_note(f"restarted during the point (their CPU is not comparable): "
                        f"{', '.join(restarted)}")
        items = (await objs.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                          PLURAL))["items"]
    finally:
        if not await delete_namespace(core, namespace):
            ctx.on_note(f"namespace {namespace} is still terminating; going on")
    status_bytes, object_bytes, sample = _sizes(items)
    sagas, queued = saga_durations(items)
    ends = [t for t, _ in tracker.finished.values()]
    measurement = PointMeasurement(
        system=OURS, offered_rate=rate, planned=orders, created=len(tracker.created),
        outcomes=dict(tracker.outcomes()), elapsed_s=(max(ends) - first) if ends else 0.0,
        latencies_s=sorted(t - tracker.created[n] for n, (t, _) in tracker.finished.items()
                           if n in tracker.created),
        cpu_s=cpu.cpu_s, window_s=cpu.at, create_errors=tracker.create_errors,
        unfinished=len(set(tracker.created) - set(tracker.finished)),
        create_span_s=last_create - first, machine_busy_s=cpu.machine_busy_s,
        writes=dict(apiserver.writes_by_resource(requests)),
        conflicts=dict(apiserver.conflicts_by_resource(requests)),
        reads=dict(apiserver.reads_by_resource(requests)),
        status_bytes=status_bytes, object_bytes=object_bytes, peak_rss_mib=peaks,
        restarted=restarted, first_terminal_s=(min(ends) - first) if ends else None,
        saga_latencies_s=sagas, queued=queued)
    return PointResult(measurement, sample)
