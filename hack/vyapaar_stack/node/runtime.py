"""A private containerd (Debian's 1.6) for the kubelet, and images loaded into it.

Its own configuration, socket, image store and state live under the stack's state
directory, so it never meets a containerd the machine may run. Settings that this
kind of machine needs (root without CAP_SYS_RESOURCE, cgroup v1 without systemd):
`restrict_oom_score_adj` and cgroupfs (`SystemdCgroup = false`). Images come only
from archives (`ctr images import`); nothing is ever pulled.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from ..config import REPO_ROOT, StackConfig, read_versions
from ..processes import StackError, wait_until
from . import oci
from .host import run
from .layout import NodeLayout, pause_image_ref, write_if_changed

CONTAINERD_TEMPLATE = REPO_ROOT / "hack" / "node" / "containerd.toml"
NAMESPACE = "k8s.io"  # the CRI plugin's namespace: what the kubelet sees
#: Images are imported, never pulled: a pull (an image that was not loaded) goes to a
#: closed loopback port as its proxy and fails there, without a DNS lookup or a packet
#: leaving the machine.
PULL_BLACKHOLE = "http://127.0.0.1:9"
NO_PULLS = {"HTTP_PROXY": PULL_BLACKHOLE, "HTTPS_PROXY": PULL_BLACKHOLE, "NO_PROXY": "",
            "http_proxy": PULL_BLACKHOLE, "https_proxy": PULL_BLACKHOLE, "no_proxy": ""}


def write_config(layout: NodeLayout) -> None:
    text = CONTAINERD_TEMPLATE.read_text()
    for key, value in {
        "ROOT": layout.containerd_root,
        "STATE": layout.containerd_state,
        "SOCKET": layout.containerd_socket,
        "SANDBOX_IMAGE": pause_image_ref(),
        "CNI_CONF_DIR": layout.cni_conf_dir,
    }.items():
        text = text.replace(f"@{key}@", str(value))
    write_if_changed(layout.containerd_config, text)


def ctr(layout: NodeLayout, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ctr", "--address", str(layout.containerd_socket), "--namespace", NAMESPACE,
               *args, check=check)


def answers(layout: NodeLayout) -> bool:
    return (layout.containerd_socket.exists()
            and ctr(layout, "version", check=False).returncode == 0)


def start(layout: NodeLayout) -> None:
    write_config(layout)
    proc = layout.process("containerd")
    proc.start(["containerd", "--config", str(layout.containerd_config)], env=NO_PULLS)
    wait_until(lambda: answers(layout), what="containerd", timeout=30, process=proc)


def load_image(config: StackConfig, archive: Path) -> list[str]:
    """Import an OCI or docker archive into the node's containerd (namespace k8s.io, where
    the kubelet finds it); return the image names it carried."""
    layout = NodeLayout(config)
    if not archive.is_file():
        raise StackError(f"no image archive at {archive}")
    if not answers(layout):
        raise StackError("the real node's containerd is not running: "
                         "vyapaar stack up --node real")
    out = ctr(layout, "images", "import", str(archive)).stdout
    names = re.findall(r"^unpacking (\S+) \(", out, flags=re.MULTILINE)
    if not names:
        raise StackError(f"{archive} held no named image (ctr said: {out.strip()})")
    return names


def ensure_pause_image(config: StackConfig, layout: NodeLayout) -> None:
    """The sandbox image: the pause binary hack/provision.sh compiled from Kubernetes' own
    build/pause/linux/pause.c, packed as a one-file image."""
    ref = pause_image_ref()
    if ref in ctr(layout, "images", "list", "--quiet").stdout.split():
        return
    version = read_versions()["KUBERNETES_VERSION"]
    binary = layout.binary("pause")
    spec = oci.ImageSpec(ref=ref, files={"/pause": binary}, entrypoint=["/pause"],
                         env=(), user="65535:65535")
    oci.write_archive(spec, layout.pause_archive)
    loaded = load_image(config, layout.pause_archive)
    if ref not in loaded:
        raise StackError(f"pause image {version}: expected {ref}, imported {loaded}")


def remove_containers(layout: NodeLayout) -> None:
    """Kill every task and delete every container through containerd, so that its metadata
    and snapshots stay consistent for the next start (images are kept)."""
    if not answers(layout):
        return
    for task in ctr(layout, "tasks", "list", "--quiet", check=False).stdout.split():
        ctr(layout, "tasks", "kill", "--all", "--signal", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 10
    for task in ctr(layout, "tasks", "list", "--quiet", check=False).stdout.split():
        while (ctr(layout, "tasks", "delete", task, check=False).returncode != 0
               and time.monotonic() < deadline):
            time.sleep(0.2)
    for container in ctr(layout, "containers", "list", "--quiet", check=False).stdout.split():
        ctr(layout, "containers", "delete", container, check=False)


def _cgroup_of(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stray_processes(layout: NodeLayout) -> list[int]:
    """Shims of our containerd and anything in a pod's cgroup."""
    socket_arg = f"-address {layout.containerd_socket}"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        cmdline = _cmdline(entry.name)
        if ("containerd-shim" in cmdline and socket_arg in cmdline) or \
                "/kubepods" in _cgroup_of(entry.name):
            pids.append(int(entry.name))
    return pids


def kill_strays(layout: NodeLayout) -> None:
    for _ in range(50):
        pids = stray_processes(layout)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise StackError(f"processes of the node survived SIGKILL: {stray_processes(layout)}")
