"""The cluster path on kind (pytest-kind), where a Docker engine exists: the images built
with Docker from the same Dockerfile, loaded into kind, the chart installed in its demo mode
(bundled RabbitMQ/PostgreSQL/Redis from their official images) and a sample Order run to
Completed. Skipped, with the reason, where no Docker engine answers (as on the project's
own machines, where tests/helm/ runs the same chart on the local stack's real node).

kind and kubectl are the ones hack/provision.sh builds from Go modules; the project's pytest
plugin hands their paths to pytest-kind, so nothing is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from vyapaar_stack import demo
from vyapaar_stack.config import REPO_ROOT, StackConfig

CRDS = REPO_ROOT / "crds"
CHART = REPO_ROOT / "helm" / "vyapaar-nexus"
SAMPLE = REPO_ROOT / "manifests" / "samples" / "order-completed.yaml"
TAG = "kind"


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, timeout=1800)


@pytest.mark.docker
def test_crds_install_on_a_kind_cluster(kind_cluster: Any) -> None:
    for manifest in sorted(CRDS.glob("*.yaml")):
        kind_cluster.kubectl("apply", "--server-side", "-f", str(manifest))
    out = kind_cluster.kubectl("get", "crd", "-o", "name")
    assert "orders.vyapaar.dev" in out


@pytest.mark.docker
@pytest.mark.slow
def test_the_chart_runs_a_sample_order_to_completed_on_kind(kind_cluster: Any) -> None:
    for target in ("operator", "services"):
        image = f"localhost/vyapaar/{target}:{TAG}"
        docker("build", "--target", target, "-t", image, str(REPO_ROOT))
        kind_cluster.load_docker_image(image)
    helm = StackConfig().cache_dir / "bin" / "helm"
    subprocess.run([
        str(helm), "--kubeconfig", str(kind_cluster.kubeconfig_path), "install", "vyapaar-nexus",
        str(CHART), "-n", "vyapaar", "--create-namespace", "--wait", "--timeout", "600s",
        "-f", str(CHART / "ci" / "bundled-values.yaml"),
        "--set", "operator.image.repository=localhost/vyapaar/operator",
        "--set", "services.image.repository=localhost/vyapaar/services",
        "--set", f"operator.image.tag={TAG}", "--set", f"services.image.tag={TAG}",
        "--set", "operator.image.pullPolicy=Never", "--set", "services.image.pullPolicy=Never",
    ], check=True, timeout=900)
    for sku, available in demo.load_stock().items():
        kind_cluster.kubectl(
            "replace", "--raw",
            f"/api/v1/namespaces/vyapaar/services/http:vyapaar-nexus-inventory:http/proxy"
            f"/api/v1/stock/{sku}", "-f", "-", input=json.dumps({"available": available}))
    kind_cluster.kubectl("apply", "-n", "vyapaar", "-f", str(SAMPLE))
    deadline = time.monotonic() + 300
    phase = None
    while time.monotonic() < deadline:
        order = json.loads(kind_cluster.kubectl(
            "get", "order.vyapaar.dev", "order-completed", "-n", "vyapaar", "-o", "json"))
        phase = (order.get("status") or {}).get("phase")
        if phase in ("Completed", "Failed", "Cancelled", "CompensationFailed"):
            break
        time.sleep(2)
    assert phase == "Completed"


def test_the_plugin_hands_pytest_kind_the_binaries_built_here(
        pytestconfig: pytest.Config) -> None:
    bins = StackConfig().cache_dir / "bin"
    assert Path(pytestconfig.option.kind_bin) == bins / "kind"
    assert Path(pytestconfig.option.kind_kubectl_bin) == bins / "kubectl"
    version = subprocess.run([pytestconfig.option.kind_bin, "version"], capture_output=True,
                             text=True, check=True).stdout
    assert version.startswith("kind v0.")
