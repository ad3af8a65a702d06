"""The chart against the real API server of the local stack.

- Every ci/ scenario passes `kubectl apply --dry-run=server` into a namespace that enforces
  (and warns about) the `restricted` Pod Security Standard. Admission enforces it on Pods
  only, so besides the workloads each pod template is also submitted as a Pod (with the
  namespace's default ServiceAccount); a violation would be refused. ServiceMonitor and
  PrometheusRule are checked against minimal CRDs installed for the test (the kinds exist;
  their spec is not validated by the server).
- The operator's RBAC, applied for real, gives exactly the expected permissions:
  `kubectl auth can-i --list` as its ServiceAccount, minus what any ServiceAccount may do.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from vyapaar_stack import chart

CI = chart.CHART / "ci"
WATCHED = ("vyapaar-ci-orders-a", "vyapaar-ci-orders-b")
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
POD_KINDS = {"Deployment", "StatefulSet"}


@pytest.fixture(scope="module")
def watched_namespaces(kubectl: Any) -> Any:
    """The namespaces ci/namespaced-values.yaml names (created if missing, removed after)."""
    created = [ns for ns in WATCHED if kubectl("get", "namespace", ns, check=False).returncode]
    for ns in created:
        kubectl("create", "namespace", ns)
    yield WATCHED
    for ns in created:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def restricted_namespace(kubectl: Any, namespace: str) -> str:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted", "--overwrite")
    return namespace


def pods_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each workload's pod template as a Pod, so Pod Security admission enforces on it."""
    pods = []
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            template = obj["spec"]["template"]
            # the ServiceAccount admission plugin wants an existing account even in a dry
            # run; which account a pod uses does not matter to Pod Security
            spec = {k: v for k, v in template["spec"].items() if k != "serviceAccountName"}
            pods.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": f"{obj['metadata']['name']}-probe",
                                      "namespace": obj["metadata"]["namespace"],
                                      "labels": template["metadata"].get("labels", {})},
                         "spec": spec})
    return pods


def apply(kubectl: Any, objects: list[dict[str, Any]], *flags: str) -> Any:
    document = {"apiVersion": "v1", "kind": "List", "items": objects}
    return kubectl("apply", *flags, "-f", "-", input=json.dumps(document), check=False)


def test_every_scenario_passes_a_server_dry_run_under_restricted_pod_security(
        render, kubectl: Any, crds: Path, monitoring_crds: None, watched_namespaces: Any,
        restricted_namespace: str, release_name: str, scenario: Path) -> None:
    objects = render(scenario, release=release_name, namespace=restricted_namespace)
    result = apply(kubectl, objects + pods_of(objects), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    assert "violate PodSecurity" not in result.stderr, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects) + len(pods_of(objects))


def test_a_pod_that_breaks_restricted_is_refused_there(
        render, kubectl: Any, restricted_namespace: str) -> None:
    """The check above can fail: the same namespace refuses a non-compliant pod."""
    objects = render(CI / "byo-values.yaml", namespace=restricted_namespace)
    (pod,) = pods_of([o for o in objects if o["kind"] == "Deployment"][:1])
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    result = apply(kubectl, [pod], "--dry-run=server")
    assert result.returncode != 0 and "violates PodSecurity" in result.stderr, result.stderr


_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def can_i(kubectl: Any, namespace: str, user: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs of `kubectl auth can-i --list` (non-resource URLs as URL, verb)."""
    result = kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={user}", "--no-headers")
    pairs = set()
    for line in result.stdout.splitlines():
        match = _ROW.match(line)
        assert match, f"unexpected can-i line: {line!r}"
        resource, urls, names, verbs = match.groups()
        assert not names, f"resourceNames granted: {line}"
        for verb in verbs.split():
            for what in [resource] if resource else urls.split():
                pairs.add((what, verb))
    return pairs


ORDERS = {("orders.vyapaar.dev", v) for v in ("get", "list", "watch", "patch")} | {
    ("orders.vyapaar.dev/status", "update"), ("events", "create")}
OBSERVE_CRDS = {("customresourcedefinitions.apiextensions.k8s.io", v) for v in ("list", "watch")}
OBSERVE_NAMESPACES = {("namespaces", v) for v in ("list", "watch")}


@pytest.mark.parametrize(("watch_own_namespace", "expected_home", "expected_elsewhere"), [
    (False, ORDERS | OBSERVE_CRDS, ORDERS | OBSERVE_CRDS),
    (True, ORDERS | OBSERVE_CRDS | OBSERVE_NAMESPACES, OBSERVE_CRDS | OBSERVE_NAMESPACES),
], ids=["cluster-wide", "namespaced"])
def test_each_service_account_can_do_exactly_what_its_component_needs(
        render, kubectl: Any, namespace: str, release_name: str, watch_own_namespace: bool,
        expected_home: set[tuple[str, str]], expected_elsewhere: set[tuple[str, str]]) -> None:
    extra = (f"operator.watchNamespaces={{{namespace}}}",) if watch_own_namespace else ()
    objects = render(CI / "byo-values.yaml", release=release_name, namespace=namespace,
                     set_values=extra)
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    try:
        result = apply(kubectl, rbac)
        assert result.returncode == 0, result.stderr
        baseline = can_i(kubectl, namespace, f"system:serviceaccount:{namespace}:nobody")
        fullname = f"{release_name}-vyapaar-nexus"
        operator = f"system:serviceaccount:{namespace}:{fullname}-operator"
        assert can_i(kubectl, namespace, operator) - baseline == expected_home
        assert can_i(kubectl, "default", operator) - baseline == expected_elsewhere
        for service in ("inventory", "payment", "shipping", "notification", "analytics"):
            account = f"system:serviceaccount:{namespace}:{fullname}-{service}"
            assert can_i(kubectl, namespace, account) == baseline, service
    finally:
        cluster_scoped = [f"{o['kind'].lower()}/{o['metadata']['name']}" for o in rbac
                          if o["kind"].startswith("Cluster")]
        kubectl("delete", *cluster_scoped, "--ignore-not-found", check=False)
