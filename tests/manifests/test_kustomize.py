"""manifests/kustomize: the chart's rendering for people without Helm, kept equal to it.

The base is generated (`python -m vyapaar_stack.chart sync`) from `helm template` with
manifests/kustomize/chart-values.yaml; these specs check that the checked-in files are a
fresh render, that `kubectl kustomize` reads them back as exactly the chart's objects, and
that the local overlay builds and is accepted by the API server.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from vyapaar_stack import chart, cluster
from vyapaar_stack.cluster import StackError
from vyapaar_stack.config import REPO_ROOT, StackConfig

OVERLAY = chart.KUSTOMIZE / "overlays" / "local"
FIX = "run: .venv/bin/python -m vyapaar_stack.chart sync"


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


@pytest.fixture(scope="module")
def helm_path() -> Path:
    try:
        return chart.helm_binary()
    except StackError as error:
        pytest.fail(str(error))


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` (kubectl's built-in kustomize; needs no cluster)."""
    result = cluster.kubectl(StackConfig(), "kustomize", str(path), check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_checked_in_base_is_a_fresh_render_of_the_chart(helm_path: Path) -> None:
    wanted = {p: t.encode() for p, t in chart.expected_kustomize_base(helm_path).items()}
    stale = [p for p in chart.stale_files(wanted) if chart.KUSTOMIZE_BASE in p.parents]
    assert not stale, f"stale {[str(p.relative_to(REPO_ROOT)) for p in stale]}; {FIX}"


def test_the_base_builds_to_exactly_the_charts_objects(helm_path: Path) -> None:
    built = {key(o): o for o in kustomize(chart.KUSTOMIZE_BASE)}
    rendered = {key(o): chart.without_helm_labels(o)
                for o in chart.template(chart.KUSTOMIZE_VALUES, helm=helm_path)
                if not chart.is_hook(o)}
    namespace = built.pop(("Namespace", "", chart.BASE_NAMESPACE))
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert built.keys() == rendered.keys()
    for k, obj in rendered.items():
        assert built[k] == obj, k


def test_the_local_overlay_points_at_local_images_and_the_stacks_infrastructure() -> None:
    objects = kustomize(OVERLAY)
    containers = [c for o in objects if o["kind"] == "Deployment"
                  for c in o["spec"]["template"]["spec"]["containers"]]
    assert {c["image"].rsplit(":", 1)[0] for c in containers} == {
        "localhost/vyapaar/operator", "localhost/vyapaar/services"}
    assert {c["imagePullPolicy"] for c in containers} == {"Never"}
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    assert set(secrets) == {"vyapaar-infrastructure", "vyapaar-gateway-tokens"}
    assert set(secrets["vyapaar-infrastructure"]["data"]) == {
        "amqp-url", "database-url", "redis-url"}
    tokens = yaml.safe_load(base64.b64decode(secrets["vyapaar-gateway-tokens"]["data"][
        "tokens.yaml"]))
    assert tokens["tenants"][0]["tokenSha256"] == hashlib.sha256(
        b"local-development-token").hexdigest()


def test_the_local_overlay_is_accepted_by_the_api_server(
        kubectl: Any, crds: Path, namespace: str) -> None:
    """Server dry-run, moved into a test namespace that enforces `restricted`."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted", "--overwrite")
    objects = []
    for obj in kustomize(OVERLAY):
        if obj["kind"] == "Namespace":
            continue
        if "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
        objects.append(obj)
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=document, check=False)
    assert result.returncode == 0, result.stderr
    assert "violate PodSecurity" not in result.stderr, result.stderr
