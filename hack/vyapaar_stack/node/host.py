"""The node's footprint on the host: bridge, netfilter rules, sysctls, mounts, cgroups.

kubelet, kube-proxy and the CNI plugins change machine-wide settings as a side
effect of running. `record` notes the host's state before the first of them
starts, and the `remove_*`/`restore` functions put it back, so that `down`
leaves the machine as `up` found it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from ..config import StackConfig
from ..processes import StackError
from .layout import FIXED_HOST_PATHS, NodeLayout

#: What kubelet (kernel tunables), kube-proxy (forwarding, localnet) and the bridge
#: plugin may change. net.bridge.* exist only while br_netfilter is loaded.
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)
#: netfilter chains made by kube-proxy and kubelet (KUBE-), the CNI plugins (CNI-) and us.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "VYAPAAR-")
GUARD_CHAIN = "VYAPAAR-NODE-FORWARD"
TABLES = ("filter", "nat", "mangle", "raw")


def require_root() -> None:
    if os.geteuid() != 0:
        raise StackError("the real node needs root (kubelet, containerd, bridges, iptables)")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise StackError(f"{shlex.join(argv)} failed: {result.stderr.strip()}")
    return result


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctls() -> dict[str, str]:
    """The current values of SYSCTLS that exist on this kernel."""
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def address_is_local(ip: str) -> bool:
    """Is `ip` assigned to an interface here (can a server bind it)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ip, 0))
        except OSError:
            return False
    return True


def record(layout: NodeLayout) -> None:
    """Note the host's state once, before the node changes it (kept across failed `up`s)."""
    if layout.host_record.exists():
        return
    layout.base.mkdir(parents=True, exist_ok=True)
    state = {
        "sysctls": read_sysctls(),
        "existing_paths": [str(p) for p in FIXED_HOST_PATHS if p.exists()],
    }
    layout.host_record.write_text(json.dumps(state, indent=2))


def recorded(layout: NodeLayout) -> dict[str, Any]:
    try:
        return dict(json.loads(layout.host_record.read_text()))
    except FileNotFoundError:
        return {"sysctls": {}, "existing_paths": [str(p) for p in FIXED_HOST_PATHS]}


def restore_sysctls(layout: NodeLayout) -> None:
    for name, value in recorded(layout)["sysctls"].items():
        path = _sysctl_path(name)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)


# --- the bridge -------------------------------------------------------------------------------


def bridge_exists(config: StackConfig) -> bool:
    return Path("/sys/class/net", config.node.bridge).exists()


def create_bridge(config: StackConfig) -> None:
    """Our bridge with the node address: the gateway of the pod subnet, the node's InternalIP,
    and where the host's services listen for pods."""
    net = config.node
    if not bridge_exists(config):
        run("ip", "link", "add", net.bridge, "type", "bridge")
    # A fixed MAC: a bridge with a kernel-chosen one takes its lowest port's, so it changes
    # whenever a pod goes away, and the other pods' ARP entries for the gateway go stale
    # (their connections to the host stall until they ask again).
    run("ip", "link", "set", net.bridge, "address", bridge_mac(config))
    if not address_is_local(net.node_ip):
        run("ip", "addr", "add", f"{net.node_ip}/{net.prefix_length}", "dev", net.bridge)
    run("ip", "link", "set", net.bridge, "up")
    _guard_forwarding(config)


def bridge_mac(config: StackConfig) -> str:
    """A locally administered MAC derived from the node address."""
    octets = [int(o) for o in config.node_ip.split(".")]
    return "02:76:" + ":".join(f"{o:02x}" for o in octets)


def _guard_forwarding(config: StackConfig) -> None:
    """Pods talk to each other and to the host, and to nothing beyond: forwarded traffic
    that enters or leaves the bridge from or to another interface is dropped."""
    bridge = config.node.bridge
    run("iptables", "-N", GUARD_CHAIN, check=False)
    run("iptables", "-F", GUARD_CHAIN)
    for rule in (["-i", bridge, "-o", bridge, "-j", "RETURN"],
                 ["-i", bridge, "-j", "DROP"], ["-o", bridge, "-j", "DROP"]):
        run("iptables", "-A", GUARD_CHAIN, *rule)
    if run("iptables", "-C", "FORWARD", "-j", GUARD_CHAIN, check=False).returncode != 0:
        run("iptables", "-I", "FORWARD", "1", "-j", GUARD_CHAIN)


def remove_bridge(config: StackConfig) -> None:
    bridge = config.node.bridge
    if not bridge_exists(config):
        return
    for port in Path("/sys/class/net", bridge, "brif").glob("*"):
        run("ip", "link", "del", port.name, check=False)
    run("ip", "link", "del", bridge, check=False)


# --- netfilter --------------------------------------------------------------------------------


def _our_chain(name: str) -> bool:
    return name.startswith(CHAIN_PREFIXES)


def leftover_chains() -> list[str]:
    """`<tool>:<table>:<chain>` for every KUBE-/CNI-/VYAPAAR- chain still present."""
    found = []
    for cmd in ("iptables", "ip6tables"):
        for table in TABLES:
            dump = run(f"{cmd}-save", "-t", table, check=False).stdout
            found += [f"{cmd}:{table}:{line[1:].split()[0]}" for line in dump.splitlines()
                      if line.startswith(":") and _our_chain(line[1:])]
    return found


def remove_chains() -> None:
    """Delete the jumps into our chains from the built-in ones, then the chains."""
    for cmd in ("iptables", "ip6tables"):
        if shutil.which(cmd) is None:
            continue
        for table in TABLES:
            dump = run(f"{cmd}-save", "-t", table, check=False).stdout.splitlines()
            chains = [line[1:].split()[0] for line in dump if line.startswith(":")]
            ours = [c for c in chains if _our_chain(c)]
            if not ours:
                continue
            for line in dump:
                if not line.startswith("-A "):
                    continue
                spec = shlex.split(line)[1:]
                if not _our_chain(spec[0]) and any(_our_chain(word) for word in spec[1:]):
                    run(cmd, "-t", table, "-D", *spec, check=False)
            for chain in ours:
                run(cmd, "-t", table, "-F", chain, check=False)
            for chain in ours:
                run(cmd, "-t", table, "-X", chain, check=False)


# --- mounts, network namespaces, cgroups, paths -----------------------------------------------


def mounts_under(roots: list[Path]) -> list[str]:
    """Mount points at or below any of `roots`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(roots: list[Path]) -> None:
    for _ in range(3):  # a mount may hide another below it
        points = mounts_under(roots)
        if not points:
            return
        for point in points:
            if run("umount", point, check=False).returncode != 0:
                run("umount", "-l", point, check=False)


def remove_cni_netns() -> None:
    """CRI names its pod network namespaces cni-<uuid> under /run/netns."""
    for ns in Path("/run/netns").glob("cni-*"):
        run("umount", str(ns), check=False)
        with contextlib.suppress(OSError):
            ns.unlink()


def kubepods_cgroups() -> list[Path]:
    """The cgroups kubelet made (cgroupfs driver: /kubepods in every hierarchy)."""
    return [p for p in Path("/sys/fs/cgroup").glob("*/kubepods") if p.is_dir()]


def remove_cgroups() -> None:
    for top in kubepods_cgroups():
        for path in sorted((p for p in top.rglob("*") if p.is_dir()),
                           key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                path.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def remove_created_paths(layout: NodeLayout) -> None:
    """Remove the fixed host paths the node created (never ones that existed before)."""
    existing = set(recorded(layout)["existing_paths"])
    for path in FIXED_HOST_PATHS:
        if str(path) in existing or not path.exists():
            continue
        if mounts_under([path]):
            raise StackError(f"{path} still has mounts: {mounts_under([path])}")
        shutil.rmtree(path, ignore_errors=True)
