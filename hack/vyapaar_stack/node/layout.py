"""Where the real node keeps its files, and which host paths it cannot move.

Everything we can place lives under `<state dir>/node/` (configuration, PKI,
containerd's image store and state, the kubelet's root directory, the CNI
configuration). A few paths are fixed by the tools themselves; `up` records
which of them already existed so that `down` removes only what the node made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..cluster import tool
from ..config import StackConfig, read_versions
from ..processes import Process, StackError

#: Paths the tools hard-code: the kubelet's pod and container logs, libcni's cache and
#: host-local's leases, containerd's shim sockets and runc state, CRI's network namespaces.
FIXED_HOST_PATHS = (
    Path("/var/log/pods"),
    Path("/var/log/containers"),
    Path("/var/lib/cni"),
    Path("/run/containerd"),
    Path("/run/netns"),
)

#: The kubelet's node label for the real node (charts and tests can select it).
NODE_LABEL = "vyapaar.dev/node"
#: Readiness endpoints bound to loopback (one real node per machine, so fixed ports).
COREDNS_READY_PORT = 18181
KUBE_PROXY_HEALTH_PORT = 10256
KUBELET_HEALTH_PORT = 10248


def write_if_changed(path: Path, text: str) -> None:
    """Replace a configuration file atomically, and only when its content changes: kube-proxy
    exits when its file is rewritten under it, and a running `up` must stay idempotent."""
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def pause_image_ref() -> str:
    return f"vyapaar.local/pause:{read_versions()['KUBERNETES_VERSION']}"


@dataclass(frozen=True)
class NodeLayout:
    """The node's files for one stack."""

    config: StackConfig

    @property
    def base(self) -> Path:
        return self.config.state_dir / "node"

    @property
    def up_marker(self) -> Path:
        """Exists from the start of `up` to the end of `down`."""
        return self.base / "up"

    @property
    def host_record(self) -> Path:
        """The host's state before `up`: sysctl values and which fixed paths existed."""
        return self.base / "host.json"

    @property
    def pki(self) -> Path:
        return self.base / "pki"

    @property
    def containerd_dir(self) -> Path:
        return self.base / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def containerd_root(self) -> Path:
        """containerd's content and snapshots: imported images survive `down`."""
        return self.containerd_dir / "root"

    @property
    def containerd_state(self) -> Path:
        """Running containers' rootfs mounts and sandbox files: emptied by `down`."""
        return self.containerd_dir / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.base / "cni"

    @property
    def kubelet_root(self) -> Path:
        return self.base / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.base / "kubelet.yaml"

    @property
    def kube_proxy_config(self) -> Path:
        return self.base / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.base / "Corefile"

    @property
    def resolv_conf(self) -> Path:
        """Pods' resolver with dnsPolicy Default: our CoreDNS, never the machine's."""
        return self.base / "resolv.conf"

    @property
    def pause_archive(self) -> Path:
        return self.base / "images" / "pause.tar"

    def kubeconfig(self, who: str) -> Path:
        return self.base / f"{who}.kubeconfig"

    def mount_roots(self) -> list[Path]:
        """Every tree under which the node mounts something on the host (CRI's network
        namespaces under /run/netns are handled one by one: the folder may be shared)."""
        return [self.kubelet_root, self.containerd_state, self.containerd_root,
                Path("/run/containerd")]

    def process(self, name: str) -> Process:
        return Process(name, self.config.state_dir / "run")

    def processes(self) -> list[Process]:
        """In stop order: DNS and the proxy first, the runtime last."""
        return [self.process(n) for n in ("coredns", "kube-proxy", "kubelet", "containerd")]

    def binary(self, name: str) -> Path:
        try:
            return tool(self.config, name)
        except StackError as exc:
            raise StackError(f"{exc} (the real node's tools come from hack/provision.sh go)"
                             ) from exc
