"""Bring the real node up, report on it, and take it down leaving nothing behind.

Order matters both ways. Up: the bridge first (the infrastructure listens on its
address), then the runtime, the sandbox image and the CNI configuration, then the
kubelet (it registers the node), kube-proxy and DNS. Down: the agents first (so
nothing restarts what we stop), then containers, containerd and its shims, then
everything they left on the host.
"""

from __future__ import annotations

import json
import shutil

from .. import cluster
from ..config import StackConfig
from ..processes import StackError, wait_until
from . import agents, dns, host, pki, runtime
from .layout import NodeLayout


def check_control_plane(config: StackConfig) -> None:
    """Refuse a cluster created without the settings a real node needs (cluster.py)."""
    problems = cluster.node_ready_problems(config)
    if problems:
        raise StackError(
            "this control plane cannot take a real node (" + "; ".join(problems)
            + "); recreate it: vyapaar stack down && vyapaar stack up --node real")


def prepare_network(config: StackConfig) -> None:
    """Record the host's state and create the bridge: run before the infrastructure starts,
    so that PostgreSQL, RabbitMQ and Redis also listen on the node address."""
    host.require_root()
    layout = NodeLayout(config)
    host.record(layout)
    layout.up_marker.touch()
    host.create_bridge(config)


def node_object(config: StackConfig) -> dict[str, object] | None:
    got = cluster.kubectl(config, "get", "node", config.node.node_name, "-o", "json",
                          check=False)
    return dict(json.loads(got.stdout)) if got.returncode == 0 else None


def node_ready(config: StackConfig) -> bool:
    node = node_object(config)
    if node is None:
        return False
    conditions = node.get("status", {}).get("conditions", [])  # type: ignore[attr-defined]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def up(config: StackConfig, timeout: float = 180.0) -> None:
    """Start the real node on a running control plane and wait until it is Ready,
    kube-proxy is healthy and the cluster DNS answers."""
    check_control_plane(config)
    prepare_network(config)
    layout = NodeLayout(config)
    kubeconfigs = pki.node_kubeconfigs(config, layout)
    serving = pki.kubelet_serving_cert(config, layout)

    runtime.start(layout)
    runtime.ensure_pause_image(config, layout)
    agents.write_cni_config(config, layout)

    dns.publish(config)
    dns.start(config, layout, kubeconfigs["coredns"])
    agents.start_kube_proxy(config, layout, kubeconfigs["kube-proxy"])
    agents.start_kubelet(config, layout, kubeconfigs["kubelet"], serving)

    wait_until(lambda: node_ready(config), what="the real node (kubelet)", timeout=timeout,
               process=layout.process("kubelet"))
    wait_until(agents.kube_proxy_healthy, what="kube-proxy", timeout=60,
               process=layout.process("kube-proxy"))
    wait_until(dns.ready, what="CoreDNS", timeout=60, process=layout.process("coredns"))
    cluster.taint_fake_nodes(config, True)


def down(config: StackConfig) -> None:
    """Stop the node and undo its changes to the host; harmless when nothing is up."""
    layout = NodeLayout(config)
    if not layout.up_marker.exists() and not any(p.is_running() for p in layout.processes()):
        return
    host.require_root()
    if cluster.ready(config):
        cluster.kubectl(config, "delete", "node", config.node.node_name, "--ignore-not-found",
                        "--wait=false", check=False)
        dns.unpublish(config)
        cluster.taint_fake_nodes(config, False)
    for proc in layout.processes()[:-1]:  # coredns, kube-proxy, kubelet
        proc.stop(timeout=5)
    runtime.remove_containers(layout)
    layout.process("containerd").stop(timeout=10)
    runtime.kill_strays(layout)

    agents.kube_proxy_cleanup(layout)
    host.remove_chains()
    host.remove_cni_netns()
    host.unmount_all(layout.mount_roots())
    remaining = host.mounts_under(layout.mount_roots())
    if remaining:
        raise StackError(f"could not unmount {remaining}")
    host.remove_bridge(config)
    host.remove_cgroups()
    host.restore_sysctls(layout)
    shutil.rmtree(layout.kubelet_root, ignore_errors=True)
    shutil.rmtree(layout.containerd_state, ignore_errors=True)
    for sock in (layout.containerd_socket, layout.containerd_socket.with_suffix(".sock.ttrpc")):
        sock.unlink(missing_ok=True)
    host.remove_created_paths(layout)
    layout.host_record.unlink(missing_ok=True)
    layout.up_marker.unlink(missing_ok=True)


def status(config: StackConfig) -> dict[str, bool]:
    """Only reported once the node was asked for (`up --node real`)."""
    layout = NodeLayout(config)
    if not layout.up_marker.exists():
        return {}
    return {
        "containerd": runtime.answers(layout),
        "kubelet": agents.kubelet_healthy(),
        "kube-proxy": agents.kube_proxy_healthy(),
        "coredns": dns.ready(),
        "node Ready": cluster.ready(config) and node_ready(config),
    }

