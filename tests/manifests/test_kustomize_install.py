"""`kubectl apply -k` of the kustomize base gives the same running system as `helm install`.

An overlay over manifests/kustomize/base (written here, as a user would write theirs) puts it
in a namespace of its own on the local stack's real node, with the product images built
locally and the stack's infrastructure isolated for it; the operator then completes a
sample order. The CRD is left out of the overlay: the session has it installed already,
and `kubectl delete -k` must not take every Order of the cluster with it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from vyapaar_stack import demo, release
from vyapaar_stack.config import REPO_ROOT, StackConfig
from vyapaar_stack.processes import StackError
from vyapaar_stack.release import Release
from vyapaar_stack.testing import HELM_NAMESPACE_PREFIX

pytestmark = [pytest.mark.slow, pytest.mark.node]

BASE = REPO_ROOT / "manifests" / "kustomize" / "base"
SAMPLE = REPO_ROOT / "manifests" / "samples" / "order-completed.yaml"
GATEWAY_TOKEN = "overlay-test-token-0123456789"


def overlay(folder: Path, namespace: str, tag: str, urls: dict[str, str]) -> Path:
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [os.path.relpath(BASE, folder)],
        "images": [{"name": f"ghcr.io/vyapaar-nexus/{name}",
                    "newName": f"localhost/vyapaar/{name}", "newTag": tag}
                   for name in ("operator", "services")],
        "patches": [
            {"target": {"kind": "Deployment"}, "patch": yaml.safe_dump([
                {"op": "replace", "path": "/spec/template/spec/containers/0/imagePullPolicy",
                 "value": "Never"}])},
            {"patch": yaml.safe_dump({  # env is merged by name: only this one changes
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "vyapaar-nexus-operator", "namespace": "vyapaar-system"},
                "spec": {"template": {"spec": {"containers": [{
                    "name": "operator",
                    "env": [{"name": "VYAPAAR_NAMESPACES", "value": namespace}]}]}}}})},
            {"patch": yaml.safe_dump({"apiVersion": "apiextensions.k8s.io/v1",
                                      "kind": "CustomResourceDefinition",
                                      "metadata": {"name": "orders.vyapaar.dev"},
                                      "$patch": "delete"})},
            {"patch": yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": "vyapaar-system"},
                                      "$patch": "delete"})},
        ],
        "secretGenerator": [
            {"name": release.INFRA_SECRET, "options": {"disableNameSuffixHash": True},
             "literals": [f"{k}={v}" for k, v in urls.items()]},
            {"name": "vyapaar-gateway-tokens", "options": {"disableNameSuffixHash": True},
             "literals": ["tokens.yaml=" + yaml.safe_dump({"tenants": [
                 {"name": "overlay", "namespace": namespace, "token": GATEWAY_TOKEN}]})]},
        ],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def applied(real_node: StackConfig, product_images: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Release, Path]]:
    system = Release(real_node, f"{HELM_NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}",
                     name="vyapaar-nexus")  # the base's release: objects vyapaar-nexus-*
    folder = overlay(tmp_path_factory.mktemp("overlay"), system.namespace, product_images,
                     system.isolate())
    system.kubectl("create", "namespace", system.namespace)
    system.kubectl("label", "namespace", system.namespace,
                   "pod-security.kubernetes.io/enforce=restricted")
    try:
        system.kubectl("apply", "-k", str(folder))
        yield system, folder
    finally:
        with contextlib.suppress(StackError):
            system.kubectl("delete", "-k", str(folder), "--ignore-not-found", "--wait=false")
        system.delete()


def test_the_overlay_watches_only_its_namespace(applied: tuple[Release, Path]) -> None:
    system, _ = applied
    operator = yaml.safe_load(system.kubectl(
        "get", "deployment", "vyapaar-nexus-operator", "-n", system.namespace, "-o", "yaml"))
    env = {e["name"]: e.get("value") for e in
           operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VYAPAAR_NAMESPACES"] == system.namespace


def test_the_base_runs_the_system_and_completes_an_order(
        applied: tuple[Release, Path]) -> None:
    system, _ = applied
    system.kubectl("rollout", "status", "deployment", "-n", system.namespace, "--timeout=300s")
    pods = system.pods()
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {
        "operator", "inventory", "payment", "shipping", "notification", "analytics", "gateway"}
    assert {p["spec"]["nodeName"] for p in pods} == {system.config.node.node_name}
    system.put_stock(demo.load_stock())
    system.kubectl("apply", "-n", system.namespace, "-f", str(SAMPLE))
    name = yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]
    assert system.wait_terminal([name]) == {name: "Completed"}
