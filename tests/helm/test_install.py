"""The chart installed for real: pods on the local stack's real node run the saga.

One release with bring-your-own infrastructure (the stack's PostgreSQL, RabbitMQ and Redis,
isolated for the release: its own database, virtual host and Redis database) in a namespace
that enforces the `restricted` Pod Security profile. The specs run in file order: install,
samples, `helm test`, an upgrade under load, uninstall.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import yaml
from vyapaar_stack import demo, images, node, pods, release
from vyapaar_stack.config import REPO_ROOT, StackConfig
from vyapaar_stack.release import Release
from vyapaar_stack.testing import HELM_NAMESPACE_PREFIX, order_manifest

pytestmark = [pytest.mark.slow, pytest.mark.node]

SAMPLES = REPO_ROOT / "manifests" / "samples"
SERVICES = ("inventory", "payment", "shipping", "notification", "analytics")
RELEASE = "vyn"


@pytest.fixture(scope="module")
def installed(real_node: StackConfig, product_images: str) -> Iterator[Release]:
    byo = Release(real_node, f"{HELM_NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}", RELEASE)
    try:
        byo.install(release.LOCAL_VALUES, sets=release.product_images(product_images))
        yield byo
    finally:
        byo.delete()


def test_every_pod_is_running_and_ready_on_the_real_node(installed: Release) -> None:
    pods = installed.pods()
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component") for p in pods}
    assert components >= {"operator", *SERVICES}
    for pod in pods:
        name = pod["metadata"]["name"]
        assert pod["spec"]["nodeName"] == installed.config.node.node_name, name
        assert pod["status"]["phase"] == "Running", name
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True", name


async def test_the_samples_reach_their_phases_processed_by_the_pods(installed: Release) -> None:
    installed.put_stock(demo.load_stock())
    samples = sorted(p for p in SAMPLES.glob("*.yaml"))
    installed.kubectl("apply", "-n", installed.namespace,
                      *[a for p in samples for a in ("-f", str(p))])
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in samples]
    phases = installed.wait_terminal(names)
    assert phases == {n: demo.EXPECTED[n] for n in names}

    # The pods did it: the release's own database (no other process uses it) holds the
    # capture of the completed order, and the payment pod's log names the order.
    uid = installed.order("order-completed")["metadata"]["uid"]
    conn = await asyncpg.connect(installed.database_url)
    try:
        captured = await conn.fetchval(
            "SELECT count(*) FROM payment.ledger_entries WHERE order_uid = $1 AND kind = 'charge'",
            uid)
    finally:
        await conn.close()
    assert captured == 1
    logs = installed.kubectl("logs", "-n", installed.namespace,
                             f"deployment/{installed.fullname}-payment")
    assert uid in logs


async def assert_money_and_stock(installed: Release, phases: dict[str, str], sku: str,
                                 initial: int) -> None:
    """The ledger and the stock of these orders, read from the release's own database:
    at most one charge each, refunds equal to charges unless completed, stock conserved."""
    names = list(phases)
    uids = {installed.order(n)["metadata"]["uid"]: phases[n] for n in names}
    conn = await asyncpg.connect(installed.database_url)
    try:
        ledger = await conn.fetch(
            "SELECT order_uid, kind, count(*) AS n, sum(amount) AS amount"
            " FROM payment.ledger_entries WHERE order_uid = ANY($1::text[])"
            " GROUP BY order_uid, kind", list(uids))
        stock = await conn.fetchrow(
            "SELECT available, held, committed FROM inventory.stock WHERE sku = $1", sku)
    finally:
        await conn.close()
    entries = {(r["order_uid"], r["kind"]): (r["n"], r["amount"]) for r in ledger}
    for uid, phase in uids.items():
        charges, charged = entries.get((uid, "charge"), (0, 0))
        refunds, refunded = entries.get((uid, "refund"), (0, 0))
        assert charges <= 1, f"{uid} charged {charges} times"
        if phase == "Completed":
            assert (charges, refunds) == (1, 0), uid
        else:  # every charge of an order that did not complete was refunded, to the cent
            assert (refunds, refunded) == (charges, charged), uid
    completed = sum(1 for p in phases.values() if p == "Completed")
    # Stock is conserved, and what was committed is what the completed orders bought.
    assert stock["held"] == 0
    assert stock["available"] + stock["committed"] == initial
    assert stock["committed"] == completed


def test_helm_test_passes(installed: Release) -> None:
    out = installed.helm("test", RELEASE, "-n", installed.namespace, "--timeout", "180s")
    assert "Phase:          Succeeded" in out or "Succeeded" in out, out


def stack(*args: str) -> str:
    """`vyapaar stack ...` as a person runs it."""
    result = subprocess.run([sys.executable, "-m", "vyapaar_cli", "stack", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_orders_in_flight_survive_killed_containers_and_deleted_pods(
    installed: Release,
) -> None:
    sku, initial = "SKU-POD-FAULTS", 30
    installed.put_stock({sku: initial})
    orders = [order_manifest(f"pod-fault-{i:02d}", sku=sku,
                             token="tok_decline" if i % 6 == 0 else "tok_visa")
              for i in range(36)]  # more orders than units: some run out of stock
    restarts = pods.restarts(installed.config, installed.namespace, "operator")
    installed.kubectl("apply", "-n", installed.namespace, "-f", "-",
                      input=json.dumps({"apiVersion": "v1", "kind": "List", "items": orders}))

    out = stack("kill", "operator", "--signal", "KILL", "--namespace", installed.namespace)
    assert "KILL sent" in out  # the container's process, not the pod: the kubelet restarts it
    out = stack("restart", "payment", "--namespace", installed.namespace, "--force")
    assert "deleted (no grace period)" in out
    stack("restart", "inventory", "--namespace", installed.namespace)  # gracefully

    phases = installed.wait_terminal([o["metadata"]["name"] for o in orders], within=300)
    assert set(phases.values()) <= {"Completed", "Failed"}, phases
    assert "Completed" in phases.values()
    assert pods.restarts(installed.config, installed.namespace, "operator") > restarts
    await assert_money_and_stock(installed, phases, sku, initial)


#: the second image tag: the same sources, another build, as a release upgrade brings
UPGRADE_TAG = "e2e-next"


async def test_an_upgrade_with_orders_in_flight_loses_none_and_breaks_no_invariant(
    installed: Release,
) -> None:
    archives = images.build_product_images(installed.config, UPGRADE_TAG)
    for archive in archives.values():
        node.load_image(installed.config, archive)
    sku, initial = "SKU-UPGRADE", 40  # fewer units than orders: some run out of stock
    installed.put_stock({sku: initial})
    orders = [order_manifest(f"upgrade-{i:02d}", sku=sku,
                             token="tok_decline" if i % 7 == 0 else "tok_visa")
              for i in range(50)]
    installed.kubectl("apply", "-n", installed.namespace, "-f", "-",
                      input=json.dumps({"apiVersion": "v1", "kind": "List", "items": orders}))

    installed.helm("upgrade", RELEASE, str(release.CHART), "-n", installed.namespace,
                   "--reuse-values", "--wait", "--timeout", "300s",
                   "--set", f"operator.image.tag={UPGRADE_TAG}",
                   "--set", f"services.image.tag={UPGRADE_TAG}")
    names = [o["metadata"]["name"] for o in orders]
    phases = installed.wait_terminal(names, within=300)
    assert set(phases.values()) <= {"Completed", "Failed"}, phases

    running = {c["image"] for p in installed.pods() if p["status"]["phase"] == "Running"
               for c in p["spec"]["containers"]}
    assert running == {f"localhost/vyapaar/operator:{UPGRADE_TAG}",
                       f"localhost/vyapaar/services:{UPGRADE_TAG}"}

    await assert_money_and_stock(installed, phases, sku, initial)


def test_uninstall_leaves_only_what_is_documented(installed: Release) -> None:
    installed.uninstall()
    # the garbage collector deletes the pods of the deleted Deployments shortly after
    installed.kubectl("wait", "--for=delete", "pods", "--all", "-n", installed.namespace,
                      "--timeout=120s")
    left = json.loads(installed.kubectl(
        "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,networkpolicies,"
        "poddisruptionbudgets,horizontalpodautoscalers", "-n", installed.namespace, "-o", "json"))
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in left["items"])
    # what Kubernetes puts in every namespace, and the Secret the user brought
    assert names == ["ConfigMap/kube-root-ca.crt", f"Secret/{release.INFRA_SECRET}",
                     "ServiceAccount/default"]
    cluster_wide = installed.kubectl(
        "get", "clusterroles,clusterrolebindings", "-l",
        f"app.kubernetes.io/instance={RELEASE}", "-o", "name")
    assert cluster_wide.strip() == ""
    # Orders are the users' data: they stay, and (finished) carry no finalizer of the
    # uninstalled operator that would block their deletion.
    orders = json.loads(installed.kubectl("get", "order.vyapaar.dev", "-n", installed.namespace,
                                          "-o", "json"))["items"]
    assert orders and all(not o["metadata"].get("finalizers") for o in orders)
