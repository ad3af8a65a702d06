"""The kubelet and kube-proxy of the real node: their configuration files and processes.

Both are built by hack/provision.sh from the same Kubernetes module as the control
plane. The settings that differ from the defaults are the ones this machine needs
(cgroup v1 without systemd, swap allowed) and the ones that keep the node to itself:
every server binds the node address or loopback, never all interfaces, and pods
resolve names only through the cluster DNS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..cluster import pki_dir
from ..config import REPO_ROOT, StackConfig
from ..processes import StackError, http_ok
from .host import run
from .layout import (
    KUBE_PROXY_HEALTH_PORT,
    KUBELET_HEALTH_PORT,
    NODE_LABEL,
    NodeLayout,
    write_if_changed,
)

CNI_TEMPLATE = REPO_ROOT / "hack" / "node" / "10-vyapaar.conflist"


def write_cni_config(config: StackConfig, layout: NodeLayout) -> None:
    text = CNI_TEMPLATE.read_text()
    for key, value in {"BRIDGE": config.node.bridge, "POD_SUBNET": config.node.pod_subnet,
                       "NODE_IP": config.node_ip}.items():
        text = text.replace(f"@{key}@", value)
    write_if_changed(layout.cni_conf_dir / CNI_TEMPLATE.name, text)


def kubelet_configuration(config: StackConfig, layout: NodeLayout, serving: tuple[Path, Path]
                          ) -> dict[str, Any]:
    net = config.node
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": net.node_ip,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTH_PORT,
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        # kube-apiserver presents kwokctl's admin certificate (CA-signed); the kubelet asks
        # kube-apiserver whether that user may do what it asks (SubjectAccessReview).
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki_dir(config) / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        # cgroup v1 without systemd, swap may be on: what this kind of machine offers.
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [net.cluster_dns_ip],
        "clusterDomain": net.cluster_domain,
        "resolvConf": str(layout.resolv_conf),
        # Images are imported, never pulled: never collect them; evict only when truly full.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "2%",
                         "imagefs.available": "2%"},
        "hairpinMode": "hairpin-veth",
        "maxPods": 110,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "10Mi",
    }


def start_kubelet(config: StackConfig, layout: NodeLayout, kubeconfig: Path,
                  serving: tuple[Path, Path]) -> None:
    write_if_changed(layout.resolv_conf, f"nameserver {config.node_ip}\n")
    write_if_changed(layout.kubelet_config,
                     json.dumps(kubelet_configuration(config, layout, serving), indent=2))
    layout.kubelet_root.mkdir(parents=True, exist_ok=True)
    layout.process("kubelet").start([
        str(layout.binary("kubelet")),
        f"--config={layout.kubelet_config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={layout.kubelet_root}",
        f"--hostname-override={config.node.node_name}",
        f"--node-ip={config.node_ip}",
        f"--node-labels={NODE_LABEL}=real",
        "--v=1",
    ])


def kubelet_healthy() -> bool:
    return http_ok(f"http://127.0.0.1:{KUBELET_HEALTH_PORT}/healthz")


def kube_proxy_configuration(config: StackConfig, kubeconfig: Path) -> dict[str, Any]:
    net = config.node
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": net.node_name,
        "bindAddress": net.node_ip,
        "clusterCIDR": net.pod_subnet,
        "healthzBindAddress": f"127.0.0.1:{KUBE_PROXY_HEALTH_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        # NodePorts open on the node address only, never on the machine's interfaces,
        # and not on loopback (which would need route_localnet).
        "nodePortAddresses": [f"{net.node_ip}/32"],
        "iptables": {"localhostNodePorts": False},
        # Zero leaves the kernel's conntrack settings as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
    }


def start_kube_proxy(config: StackConfig, layout: NodeLayout, kubeconfig: Path) -> None:
    write_if_changed(layout.kube_proxy_config,
                     json.dumps(kube_proxy_configuration(config, kubeconfig), indent=2))
    layout.process("kube-proxy").start([
        str(layout.binary("kube-proxy")), f"--config={layout.kube_proxy_config}", "--v=1"])


def kube_proxy_healthy() -> bool:
    return http_ok(f"http://127.0.0.1:{KUBE_PROXY_HEALTH_PORT}/healthz")


def kube_proxy_cleanup(layout: NodeLayout) -> None:
    """kube-proxy's own removal of its iptables, ipvs and nftables rules."""
    try:
        binary = layout.binary("kube-proxy")
    except StackError:  # not provisioned (any more): the chain sweep in host.py still runs
        return
    run(str(binary), "--cleanup", check=False)
