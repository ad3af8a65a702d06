"""Run the sample orders through the whole system and print how each one ended."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import yaml

from . import cluster, system
from .config import REPO_ROOT, StackConfig
from .processes import StackError

SAMPLES = REPO_ROOT / "manifests" / "samples"
NAMESPACE = "vyapaar-demo"
#: where `vyapaar demo --cluster` installs the chart (its operator watches only this one)
CLUSTER_NAMESPACE = "vyapaar-cluster-demo"
CLUSTER_IMAGE_TAG = "demo"
TERMINAL = {"Completed", "Failed", "Cancelled", "CompensationFailed"}

#: sample file -> the phase it must end in
EXPECTED = {
    "order-completed": "Completed",
    "order-declined": "Failed",
    "order-out-of-stock": "Failed",
    "order-undeliverable": "Failed",
    "order-cancelled": "Cancelled",
    "order-cancel-too-late": "Completed",
}
LATE_CANCEL = "order-cancel-too-late"


def seed_stock(config: StackConfig, stock: dict[str, int]) -> None:
    base = system.service_url(config, "inventory")
    for sku, available in stock.items():
        request = urllib.request.Request(
            f"{base}/api/v1/stock/{sku}", method="PUT",
            data=json.dumps({"available": available}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            if resp.status >= 300:
                raise StackError(f"seeding {sku} failed: HTTP {resp.status}")


def load_stock() -> dict[str, int]:
    data = yaml.safe_load((SAMPLES / "stock" / "stock.yaml").read_text())
    return {str(k): int(v) for k, v in data["stock"].items()}


def _orders(config: StackConfig, namespace: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl(config, "get", "orders.vyapaar.dev", "-n", namespace, "-o", "json")
    return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}


def run_samples(config: StackConfig, namespace: str = NAMESPACE,
                timeout: float = 180) -> list[dict[str, str]]:
    """Apply every sample, cancel the late one after its pivot, wait for all to finish."""
    cluster.kubectl(config, "create", "namespace", namespace, check=False)
    names: dict[str, str] = {}
    for sample, _ in EXPECTED.items():
        path = SAMPLES / f"{sample}.yaml"
        names[sample] = yaml.safe_load(path.read_text())["metadata"]["name"]
        cluster.kubectl(config, "apply", "-n", namespace, "-f", str(path))
    late_cancelled = False
    deadline = time.monotonic() + timeout
    while True:
        orders = _orders(config, namespace)
        phases = {s: (orders.get(n, {}).get("status") or {}).get("phase") for s, n in names.items()}
        late = phases.get(LATE_CANCEL)
        if not late_cancelled and late in ("Completing", "Completed"):
            cluster.kubectl(config, "patch", "orders.vyapaar.dev", names[LATE_CANCEL],
                            "-n", namespace, "--type=merge", "-p", '{"spec":{"cancel":true}}')
            late_cancelled = True
        if late_cancelled and all(p in TERMINAL for p in phases.values()):
            time.sleep(1)  # let the late cancellation's refusal land
            break
        if time.monotonic() > deadline:
            break
    orders = _orders(config, namespace)
    rows = []
    for sample, expected in EXPECTED.items():
        status = orders.get(names[sample], {}).get("status") or {}
        notes = [c["type"] for c in status.get("conditions", [])
                 if c["type"] != "Ready" and c["status"] == "True"]
        rows.append({"order": names[sample], "expected": expected,
                     "phase": status.get("phase") or "-", "reason": status.get("reason") or "-",
                     "conditions": ",".join(notes) or "-"})
    return rows


def print_table(rows: list[dict[str, str]]) -> bool:
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    header = "  ".join(k.upper().ljust(widths[k]) for k in widths)
    print(header + "  OK")
    ok = True
    for row in rows:
        good = row["phase"] == row["expected"]
        ok &= good
        print("  ".join(row[k].ljust(widths[k]) for k in widths) + ("  yes" if good else "  NO"))
    return ok


#: the idempotency key of the demo's order through the gateway: a second demo replays it
GATEWAY_KEY = "vyapaar-demo-gateway-order"


def gateway_request(config: StackConfig, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One call to the local gateway as the demo tenant."""
    request = urllib.request.Request(
        f"{system.gateway_url(config)}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {system.demo_token(config)}",
                 "Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def run_gateway_order(config: StackConfig, timeout: float = 120) -> dict[str, str]:
    """The completed sample's spec, placed through the gateway as a storefront would."""
    spec = yaml.safe_load((SAMPLES / "order-completed.yaml").read_text())["spec"]
    order = gateway_request(config, "POST", "/api/v1/orders", spec,
                     headers={"Idempotency-Key": GATEWAY_KEY})
    deadline = time.monotonic() + timeout
    while (order["status"].get("phase") not in TERMINAL
           and time.monotonic() < deadline):
        time.sleep(0.5)
        order = gateway_request(config, "GET", f"/api/v1/orders/{order['name']}")
    status = order["status"]
    return {"order": f"{order['name']} (gateway)", "expected": "Completed",
            "phase": status.get("phase") or "-", "reason": status.get("reason") or "-",
            "conditions": "-"}


def main(config: StackConfig) -> bool:
    system.up(config)
    seed_stock(config, load_stock())
    rows = run_samples(config)
    rows.append(run_gateway_order(config))
    print()
    return print_table(rows)


def main_cluster(config: StackConfig) -> bool:
    """The cluster path on the real node: images built from the Dockerfile and loaded, the
    chart installed (the stack's infrastructure as bring-your-own, isolated), the samples.

    The local processes are stopped first: their operator watches every namespace and
    would race the chart's operator for the same Orders.
    """
    from . import images, node, release

    system.down(config)
    for archive in images.build_product_images(config, CLUSTER_IMAGE_TAG).values():
        node.load_image(config, archive)
    chart = release.Release(config, CLUSTER_NAMESPACE, name="vyapaar-nexus")
    chart.delete()  # a fresh release every time
    cluster.kubectl(config, "wait", "--for=delete", f"namespace/{CLUSTER_NAMESPACE}",
                    "--timeout=180s", check=False)
    chart.install(release.LOCAL_VALUES, sets=release.product_images(CLUSTER_IMAGE_TAG))
    chart.put_stock(load_stock())
    rows = run_samples(config, namespace=CLUSTER_NAMESPACE)
    print()
    return print_table(rows)
