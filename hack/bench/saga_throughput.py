"""Benchmark: N orders at a fixed rate through the whole system on the local stack.

    .venv/bin/python hack/bench/saga_throughput.py --orders 500 --rate 10

Needs the system running (`make demo` or `vyapaar stack up` + services and
operator). Prints: orders/s, latency from creation to Completed (p50/p90/p99,
measured client-side from the create call to the watch event showing
Completed), writes (POST/PATCH/PUT) to the apiserver per completed order read
from kube-apiserver's own `apiserver_request_total`, by resource, and the
operator's peak RSS (VmHWM). All traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from vyapaar_stack import system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.processes import Process

WRITE_VERBS = {"POST", "PATCH", "PUT"}
SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')


def apiserver_writes(cfg: StackConfig) -> Counter[str]:
    """Write requests served so far, by resource[/subresource] (from the apiserver's metrics)."""
    kubectl = cfg.cache_dir / "bin" / "kubectl"
    raw = subprocess.run([str(kubectl), "--kubeconfig", str(cfg.kubeconfig), "get", "--raw",
                          "/metrics"], capture_output=True, text=True, check=True).stdout
    writes: Counter[str] = Counter()
    for line in raw.splitlines():
        match = SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("verb") in WRITE_VERBS:
            key = labels.get("resource", "?")
            if labels.get("subresource"):
                key += "/" + labels["subresource"]
            writes[key] += int(float(match["value"]))
    return writes


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def order(name: str, sku: str) -> dict[str, Any]:
    return {
        "apiVersion": "vyapaar.dev/v1alpha1", "kind": "Order", "metadata": {"name": name},
        "spec": {
            "customer": {"id": "bench", "email": "bench@example.com", "name": "Bench"},
            "items": [{"sku": sku, "quantity": 1, "unitPrice": 100}],
            "currency": "INR", "paymentToken": "tok_visa",
            "shippingAddress": {"name": "Bench", "line1": "1 Loop Road", "city": "Pune",
                                "postalCode": "411001", "country": "IN"},
        },
    }


async def run(orders: int, rate: float, skus: int) -> None:
    cfg = StackConfig()
    operator_pid = Process("operator", cfg.state_dir / "run").pid()
    if operator_pid is None:
        raise SystemExit("the operator is not running: start the system first (make demo)")
    tag = uuid.uuid4().hex[:6].upper()
    sku_names = [f"SKU-BENCH-{tag}-{i}" for i in range(skus)]
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    async with aiohttp.ClientSession() as http:
        for sku in sku_names:
            url = f"{system.service_url(cfg, 'inventory')}/api/v1/stock/{sku}"
            async with http.put(url, json={"available": orders}) as resp:
                resp.raise_for_status()

    configuration = client.Configuration()
    await config.load_kube_config(str(cfg.kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        core, objs = client.CoreV1Api(api), client.CustomObjectsApi(api)
        await core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=namespace)))
        created: dict[str, float] = {}
        finished: dict[str, tuple[float, str]] = {}
        all_done = asyncio.Event()

        async def follow() -> None:
            w = watch.Watch()
            while not all_done.is_set():
                async with w.stream(objs.list_namespaced_custom_object, "vyapaar.dev",
                                    "v1alpha1", namespace, "orders",
                                    timeout_seconds=60) as stream:
                    async for event in stream:
                        obj = event["object"]
                        phase = (obj.get("status") or {}).get("phase")
                        name = obj["metadata"]["name"]
                        if phase in ("Completed", "Failed", "Cancelled", "CompensationFailed"):
                            finished.setdefault(name, (time.monotonic(), phase))
                            if len(finished) == orders:
                                all_done.set()
                                return

        writes_before = apiserver_writes(cfg)
        follower = asyncio.create_task(follow())
        start = time.monotonic()
        for i in range(orders):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            name = f"b{i:05d}"
            created[name] = time.monotonic()
            await objs.create_namespaced_custom_object("vyapaar.dev", "v1alpha1", namespace,
                                                       "orders", order(name, sku_names[i % skus]))
        await asyncio.wait_for(all_done.wait(), timeout=600)
        elapsed = max(t for t, _ in finished.values()) - start
        follower.cancel()
        await asyncio.sleep(2)  # let finalizer removals and events land before counting
        writes_after = apiserver_writes(cfg)
        await core.delete_namespace(namespace)

    outcomes = Counter(phase for _, phase in finished.values())
    latencies = sorted(finished[n][0] - created[n] for n in created)
    completed = outcomes.get("Completed", 0)
    delta = writes_after - writes_before
    q = statistics.quantiles(latencies, n=100)
    print(f"orders: {orders} at {rate:g}/s over {skus} SKU(s)  outcomes: {dict(outcomes)}")
    print(f"throughput: {orders / elapsed:.1f} orders/s (all finished {elapsed:.1f} s after "
          f"the first create)")
    print(f"latency create->terminal: p50 {q[49] * 1000:.0f} ms  p90 {q[89] * 1000:.0f} ms  "
          f"p99 {q[98] * 1000:.0f} ms  max {latencies[-1] * 1000:.0f} ms")
    total = sum(delta.values())
    print(f"apiserver writes (POST/PATCH/PUT) during the run: {total} "
          f"= {total / max(completed, 1):.2f} per completed order")
    for resource, count in delta.most_common():
        print(f"  {resource:32} {count:6}  {count / max(completed, 1):6.2f}/order")
    print(f"operator peak RSS (VmHWM): {peak_rss_mib(operator_pid):.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0, help="orders created per second")
    parser.add_argument("--skus", type=int, default=1,
                        help="SKUs the orders are spread over (1 = one hot SKU)")
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.rate, args.skus))


if __name__ == "__main__":
    main()
