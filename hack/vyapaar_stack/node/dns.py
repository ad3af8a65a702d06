"""Cluster DNS: CoreDNS as a host process behind a selectorless `kube-dns` Service.

Running CoreDNS as a pod would make DNS depend on the node it serves (and on an
image); as a host process on the node address it is up before the first pod, and
the Service (10.0.0.10, what the kubelet writes into pods' resolv.conf) reaches it
through an EndpointSlice we own. It answers for the cluster domain only: no
`forward` plugin, so no query ever leaves the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..cluster import kubectl
from ..config import StackConfig
from ..processes import http_ok
from .layout import COREDNS_READY_PORT, NodeLayout, write_if_changed
from .pki import COREDNS_USER

MANAGED_BY = "vyapaar-stack"


def corefile(config: StackConfig, kubeconfig: Path) -> str:
    domain = config.node.cluster_domain
    return f"""\
.:53 {{
    bind {config.node_ip}
    errors
    ready 127.0.0.1:{COREDNS_READY_PORT}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    cache 30
}}
"""


def start(config: StackConfig, layout: NodeLayout, kubeconfig: Path) -> None:
    write_if_changed(layout.corefile, corefile(config, kubeconfig))
    layout.process("coredns").start(
        [str(layout.binary("coredns")), "-conf", str(layout.corefile)], cwd=layout.base)


def ready() -> bool:
    return http_ok(f"http://127.0.0.1:{COREDNS_READY_PORT}/ready")


def objects(config: StackConfig) -> list[dict[str, Any]]:
    """CoreDNS's read-only RBAC, the kube-dns Service and its EndpointSlice."""
    net = config.node
    ports = [{"name": "dns", "port": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
    labels = {"k8s-app": "kube-dns", "app.kubernetes.io/managed-by": MANAGED_BY}
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "vyapaar:coredns", "labels": labels},
         "rules": [
             {"apiGroups": [""], "resources": ["services", "pods", "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "vyapaar:coredns", "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "vyapaar:coredns"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": COREDNS_USER}]},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {"clusterIP": net.cluster_dns_ip,
                  "ports": [{**p, "targetPort": 53} for p in ports]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "kube-dns-host", "namespace": "kube-system",
                      "labels": {"kubernetes.io/service-name": "kube-dns",
                                 "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [net.node_ip], "conditions": {"ready": True},
                        "nodeName": net.node_name}],
         "ports": ports},
    ]


def publish(config: StackConfig) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": objects(config)}
    kubectl(config, "apply", "--server-side", "--force-conflicts", "--field-manager",
            "vyapaar-stack", "-f", "-", input=json.dumps(doc))


def unpublish(config: StackConfig) -> None:
    for kind, name in (("endpointslice", "kube-dns-host"), ("service", "kube-dns")):
        kubectl(config, "delete", kind, name, "-n", "kube-system", "--ignore-not-found",
                "--wait=false", check=False)
