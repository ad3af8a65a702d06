"""The gateway's RBAC as the real API server enforces it, checked by impersonation.

The chart's gateway ServiceAccount and RBAC, rendered for two tenants, are applied to the
local stack's kube-apiserver; then, acting as that ServiceAccount (`kubectl --as=...`):

- in each tenant namespace it can create, get, list, watch and patch orders.vyapaar.dev,
  and `kubectl auth can-i --list` shows exactly that on top of what any ServiceAccount may;
- it cannot update or delete Orders, touch orders/status, or read Secrets, ConfigMaps or
  Pods, anywhere;
- bound per namespace (the default), it can do nothing to Orders in a namespace that is no
  tenant's, nor in its own; bound cluster-wide (`gateway.rbac.scope=cluster`), Orders are
  reachable everywhere but nothing else is.

An Order created as the ServiceAccount (server dry-run: authorized like a real request,
nothing left behind) is accepted in a tenant namespace and forbidden elsewhere.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vyapaar_stack import chart
from vyapaar_stack.testing import order_manifest

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
Render = Callable[..., list[dict[str, Any]]]

CI = chart.CHART / "ci"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
ORDERS = "orders.vyapaar.dev"
ALLOWED = ("create", "get", "list", "watch", "patch")
#: what the gateway must never do to Orders
FORBIDDEN_ON_ORDERS = ("update", "delete", "deletecollection")
#: (verb, resource, subresource) it must never have
FORBIDDEN_ELSEWHERE = [
    *((verb, ORDERS, "status") for verb in ("get", "update", "patch")),
    *((verb, resource, "") for verb in ("get", "list", "watch")
      for resource in ("secrets", "configmaps", "pods")),
    ("create", "pods", ""), ("create", "events", ""), ("list", "namespaces", ""),
    ("get", "customresourcedefinitions.apiextensions.k8s.io", ""),
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tenant_namespaces(kubectl: Kubectl) -> Iterator[tuple[str, str, str]]:
    """Two tenants' namespaces and one that is nobody's (removed after)."""
    names = (unique("t-shop-a"), unique("t-shop-b"), unique("t-other"))
    for name in names:
        kubectl("create", "namespace", name)
        kubectl("label", "namespace", name, "vyapaar.dev/test=true")
    yield names
    kubectl("delete", "namespace", *names, "--wait=false", "--ignore-not-found", check=False)


def can(kubectl: Kubectl, user: str, verb: str, resource: str, namespace: str,
        subresource: str = "") -> bool:
    args = ["auth", "can-i", verb, resource, "-n", namespace, f"--as={user}"]
    if subresource:
        args.append(f"--subresource={subresource}")
    result = kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


_ROW = re.compile(r"^(\S*)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")


def can_list(kubectl: Kubectl, user: str, namespace: str) -> set[tuple[str, str]]:
    """(resource or URL, verb) pairs of `kubectl auth can-i --list`."""
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


def render_gateway_rbac(render: Render, tmp_path: Path, release: str, namespace: str,
                        tenants: tuple[str, str], *extra: str) -> list[dict[str, Any]]:
    """The gateway's ServiceAccount and RBAC of a release with a tenant in each namespace."""
    values = tmp_path / "tenants.yaml"
    values.write_text(yaml.safe_dump({"gateway": {"tenants": [
        {"name": "storefront-a", "namespace": tenants[0], "tokenSha256": "a" * 64},
        {"name": "storefront-b", "namespace": tenants[1], "token": "b" * 32}]}}))
    objects = render(CI / "byo-values.yaml", values, release=release, namespace=namespace,
                     set_values=extra)
    return [o for o in objects if o["kind"] in RBAC_KINDS
            and o["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]


def submit(kubectl: Kubectl, command: str, objects: list[dict[str, Any]], *flags: str
           ) -> subprocess.CompletedProcess[str]:
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    return kubectl(command, *flags, "-f", "-", input=document, check=False)


@pytest.mark.parametrize("scope", ["namespaces", "cluster"])
def test_the_gateway_account_can_do_exactly_its_five_verbs_on_orders(
        render: Render, kubectl: Kubectl, crds: Path, namespace: str,
        tenant_namespaces: tuple[str, str, str], tmp_path: Path, scope: str) -> None:
    shop_a, shop_b, other = tenant_namespaces
    release = unique("gw")
    rbac = render_gateway_rbac(render, tmp_path, release, namespace, (shop_a, shop_b),
                               f"gateway.rbac.scope={scope}")
    kinds = sorted((o["kind"], o["metadata"].get("namespace", "")) for o in rbac)
    if scope == "namespaces":
        assert kinds == sorted([("ClusterRole", ""), ("RoleBinding", shop_a),
                                ("RoleBinding", shop_b), ("ServiceAccount", namespace)])
    else:
        assert kinds == sorted([("ClusterRole", ""), ("ClusterRoleBinding", ""),
                                ("ServiceAccount", namespace)])
    account = f"system:serviceaccount:{namespace}:{release}-vyapaar-nexus-gateway"
    kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    nobody = f"system:serviceaccount:{namespace}:nobody"
    try:
        result = submit(kubectl, "apply", rbac)
        assert result.returncode == 0, result.stderr

        # the tenants' namespaces: the five verbs, and nothing more than anybody has
        reaches = (shop_a, shop_b, other, namespace) if scope == "cluster" else (shop_a, shop_b)
        for ns in reaches:
            for verb in ALLOWED:
                assert can(kubectl, account, verb, ORDERS, ns), (verb, ns)
            extra = can_list(kubectl, account, ns) - can_list(kubectl, nobody, ns)
            assert extra == {(ORDERS, verb) for verb in ALLOWED}, ns

        # bound per namespace: nothing at all on Orders anywhere else (its own namespace too)
        if scope == "namespaces":
            for ns in (other, namespace, "default"):
                for verb in (*ALLOWED, *FORBIDDEN_ON_ORDERS):
                    assert not can(kubectl, account, verb, ORDERS, ns), (verb, ns)
                assert can_list(kubectl, account, ns) == can_list(kubectl, nobody, ns), ns

        # never: replacing or deleting Orders, their status, Secrets, ConfigMaps, Pods, ...
        for ns in (shop_a, shop_b, other, namespace):
            for verb in FORBIDDEN_ON_ORDERS:
                assert not can(kubectl, account, verb, ORDERS, ns), (verb, ns)
            for verb, resource, subresource in FORBIDDEN_ELSEWHERE:
                assert not can(kubectl, account, verb, resource, ns, subresource), (
                    verb, resource, subresource, ns)

        # a real (dry-run) request as the account: authorized in a tenant's namespace only
        order = order_manifest(unique("gw-order"), sku="SKU-GATEWAY")
        for ns, allowed in ((shop_a, True), (other, scope == "cluster")):
            created = submit(kubectl, "create",
                             [{**order, "metadata": {**order["metadata"], "namespace": ns}}],
                             "--dry-run=server", f"--as={account}")
            if allowed:
                assert created.returncode == 0, created.stderr
            else:
                assert created.returncode != 0 and "forbidden" in created.stderr, created.stderr
    finally:
        cluster_scoped = [f"{o['kind'].lower()}/{o['metadata']['name']}" for o in rbac
                          if o["kind"].startswith("Cluster")]
        kubectl("delete", *cluster_scoped, "--ignore-not-found", check=False)
        left = kubectl("get", "clusterroles,clusterrolebindings", "-l",
                       f"app.kubernetes.io/instance={release}", "-o", "name", check=False)
        assert left.stdout.strip() == "", f"cluster-scoped objects left: {left.stdout}"
