"""`vyapaar bench-gateway`: what the gateway sustains, per kind of request.

It starts a second gateway (its own port, log ``gateway-bench.log``, a rate limit that
never bites) with one tenant whose namespace the local operator ignores (``vyn-*``), so
the figures are the gateway's and the apiserver's, not the saga's. Then, for each kind of
request, ``--clients`` concurrent clients send requests back to back for ``--seconds``:

* ``create``: ``POST /api/v1/orders`` with a fresh ``Idempotency-Key`` (Redis claim, CRD
  schema check, create with the finalizer, Redis record);
* ``replay``: the same ``POST`` again (the idempotent replay: Redis, one GET);
* ``get``: ``GET /api/v1/orders/{name}`` of the orders just created;
* ``list``: ``GET /api/v1/orders?limit=20``.

Reported per kind: requests/s, latency p50/p90/p99, and the gateway's CPU per request
(from /proc). The clients run in this process on the same machine: on two cores they
compete with the gateway and the apiserver, as a co-located load balancer would. The
orders are removed afterwards (finalizer dropped, namespace deleted).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .. import cluster, system
from ..config import StackConfig
from ..processes import Process, http_ok, wait_until
from .procstat import CLK_TCK, parse_pid_stat
from .report import percentile

PORT = int(os.environ.get("VYAPAAR_GATEWAY_BENCH_PORT", 28089))
KINDS = ("create", "replay", "get", "list")


@dataclass(frozen=True)
class KindResult:
    kind: str
    requests: int
    errors: int
    seconds: float
    per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    gateway_cpu_ms_per_request: float


def spec(sku: str) -> dict[str, Any]:
    return {"customer": {"id": "bench", "email": "bench@example.com"},
            "items": [{"sku": sku, "quantity": 1, "unitPrice": 100}], "currency": "INR",
            "paymentToken": "tok_visa",
            "shippingAddress": {"name": "Bench", "line1": "1 Road", "city": "Pune",
                                "postalCode": "411001", "country": "IN"}}


def _cpu_ticks(pid: int) -> int:
    return parse_pid_stat(Path(f"/proc/{pid}/stat").read_text()).ticks


class Run:
    def __init__(self, config: StackConfig, clients: int, seconds: float) -> None:
        self.config = config
        self.clients = clients
        self.seconds = seconds
        self.namespace = f"vyn-bench-gateway-{uuid.uuid4().hex[:6]}"
        self.token = secrets.token_urlsafe(24)
        self.url = f"http://{config.host}:{PORT}"
        self.process = Process("gateway-bench", config.state_dir / "run")
        self.created: list[str] = []

    def start(self) -> None:
        cluster.kubectl(self.config, "create", "namespace", self.namespace)
        tokens = system.gateway_dir(self.config) / "tokens-bench.yaml"
        tokens.parent.mkdir(parents=True, exist_ok=True)
        tokens.write_text(yaml.safe_dump({"tenants": [
            {"name": "bench", "namespace": self.namespace, "token": self.token}]}))
        env = {**self.config.env(), **system.tracing_env(self.config, "gateway"),
               "KUBECONFIG": str(system.gateway_kubeconfig(self.config)),
               "VYAPAAR_HTTP_HOST": self.config.host,
               "VYAPAAR_HTTP_PORT": str(PORT), "VYAPAAR_GATEWAY_TOKENS_FILE": str(tokens),
               "VYAPAAR_GATEWAY_RATE_LIMIT": "1000000/second", "VYAPAAR_LOG_LEVEL": "WARNING"}
        self.process.start([sys.executable, "-m", "vyapaar_services.gateway"], env=env)
        wait_until(lambda: http_ok(f"{self.url}/readyz"), what="the benchmark's gateway",
                   timeout=60, process=self.process)

    def stop(self) -> None:
        self.process.stop()
        out = cluster.kubectl(self.config, "get", "orders.vyapaar.dev", "-n", self.namespace,
                              "-o", "name", check=False)
        for name in out.stdout.split():
            cluster.kubectl(self.config, "patch", name, "-n", self.namespace, "--type=merge",
                            "-p", '{"metadata":{"finalizers":null}}', check=False)
        cluster.kubectl(self.config, "delete", "namespace", self.namespace, "--wait=false",
                        check=False)

    async def measure(self, kind: str) -> KindResult:
        headers = {"Authorization": f"Bearer {self.token}"}
        latencies: list[float] = []
        errors = 0
        body = spec("SKU-BENCH")
        replay_key = f"replay-{uuid.uuid4()}"
        deadline = time.monotonic() + self.seconds
        connector = aiohttp.TCPConnector(limit=self.clients)
        async with aiohttp.ClientSession(connector=connector) as http:
            if kind == "replay":
                async with http.post(f"{self.url}/api/v1/orders", json=body,
                                     headers={**headers, "Idempotency-Key": replay_key}) as r:
                    self.created.append((await r.json())["name"])

            async def one(n: int) -> int:
                if kind in ("create", "replay"):
                    key = replay_key if kind == "replay" else str(uuid.uuid4())
                    request = http.post(f"{self.url}/api/v1/orders", json=body,
                                        headers={**headers, "Idempotency-Key": key})
                elif kind == "get":
                    name = self.created[n % len(self.created)]
                    request = http.get(f"{self.url}/api/v1/orders/{name}", headers=headers)
                else:
                    request = http.get(f"{self.url}/api/v1/orders?limit=20", headers=headers)
                async with request as response:
                    payload = await response.read()
                    if kind == "create" and response.status == 201:
                        self.created.append(json.loads(payload)["name"])
                    return response.status

            async def client(offset: int) -> None:
                nonlocal errors
                n = offset
                while time.monotonic() < deadline:
                    started = time.perf_counter()
                    status = await one(n)
                    latencies.append(time.perf_counter() - started)
                    errors += status >= 400
                    n += self.clients

            pid = self.process.pid()
            assert pid is not None
            cpu0, t0 = _cpu_ticks(pid), time.monotonic()
            await asyncio.gather(*(client(i) for i in range(self.clients)))
            elapsed, cpu = time.monotonic() - t0, _cpu_ticks(pid) - cpu0
        ms = [x * 1000 for x in latencies]

        def rank(q: float) -> float:
            return round(percentile(ms, q) or 0.0, 1)

        return KindResult(kind, len(ms), errors, round(elapsed, 1),
                          round(len(ms) / elapsed, 1), rank(50), rank(90), rank(99),
                          round(cpu / CLK_TCK * 1000 / max(1, len(ms)), 2))


def print_table(results: list[KindResult]) -> None:
    print(f"{'REQUEST':8} {'REQ/S':>7} {'P50 MS':>7} {'P90 MS':>7} {'P99 MS':>7} "
          f"{'CPU MS/REQ':>10} {'ERRORS':>6}")
    for r in results:
        print(f"{r.kind:8} {r.per_second:7.1f} {r.p50_ms:7.1f} {r.p90_ms:7.1f} "
              f"{r.p99_ms:7.1f} {r.gateway_cpu_ms_per_request:10.2f} {r.errors:6d}")


def plot(results: list[KindResult], path: Path, clients: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=110, layout="constrained")
    left, right = fig.subplots(1, 2)
    kinds = [r.kind for r in results]
    left.bar(kinds, [r.per_second for r in results], color="tab:blue")
    left.set_title("requests/s")
    width = 0.27
    for i, (label, attr) in enumerate((("p50", "p50_ms"), ("p90", "p90_ms"),
                                       ("p99", "p99_ms"))):
        right.bar([k + (i - 1) * width for k in range(len(kinds))],
                  [getattr(r, attr) for r in results], width, label=label)
    right.set_xticks(range(len(kinds)), kinds)
    right.set_title("latency (ms)")
    right.legend()
    fig.suptitle(f"The gateway on the local stack: {clients} clients back to back, "
                 f"{os.cpu_count()} CPUs shared with the apiserver")
    fig.savefig(path)


def main(config: StackConfig, clients: int, seconds: float, out: Path | None,
         plots: bool) -> int:
    run = Run(config, clients, seconds)
    results: list[KindResult] = []
    try:
        run.start()
        for kind in KINDS:
            print(f"{kind}: {clients} clients for {seconds:g} s ...", file=sys.stderr,
                  flush=True)
            results.append(asyncio.run(run.measure(kind)))
            print(f"  {results[-1].per_second:.1f} req/s, p99 {results[-1].p99_ms:.1f} ms",
                  file=sys.stderr, flush=True)
    finally:
        run.stop()
    print_table(results)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"clients": clients, "seconds": seconds,
                                   "cpus": os.cpu_count(),
                                   "results": [asdict(r) for r in results]}, indent=2) + "\n")
        if plots:
            plot(results, out.with_suffix(".png"), clients)
        print(f"wrote {out}" + (f" and {out.with_suffix('.png')}" if plots else ""))
    return 1 if any(r.errors for r in results) else 0

