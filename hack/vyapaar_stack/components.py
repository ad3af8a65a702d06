"""Each process of the local stack by name, to stop, start, restart or signal on its own.

A platform engineer trying the system's failure modes (and `vyapaar chaos`) needs one
component down while the rest runs on: `vyapaar stack restart rabbitmq`, `vyapaar stack
kill operator --signal KILL`, `vyapaar stack kill operator --signal STOP` (then `CONT`).

A component comes back the way the stack started it, with the same log file:

- the product (operator, gateway, services) and the real node's processes: the command and
  full environment of their last start, from their launch record -- so the test suite's
  operator, with its short timeouts, comes back as itself and not as the demo's;
- the infrastructure: its own start function (idempotent: it only starts what is down);
- the control plane: the command kwokctl's configuration gives the process, with the pid
  written back to kwokctl's pid file so that `kwokctl` keeps managing it.
"""

from __future__ import annotations

import functools
import os
import signal
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import cluster, infra, system
from .config import StackConfig
from .node import agents, dns, runtime
from .node.layout import NodeLayout
from .processes import Process, StackError, http_ok, wait_until


@dataclass(frozen=True)
class Component:
    """One restartable part of the stack: its processes, how to start it, when it is ready."""

    name: str
    group: str
    processes: Callable[[], list[Process]]
    start: Callable[[], object]
    ready: Callable[[], bool]
    startup_timeout: float = 60.0

    def running(self) -> bool:
        return all(p.is_running() for p in self.processes())


def _relaunched(name: str, group: str, proc: Process, ready: Callable[[], bool],
                startup_timeout: float = 60.0) -> Component:
    """A component of one process, started again the way it was last started."""
    return Component(name, group, lambda: [proc], proc.relaunch, ready, startup_timeout)


# -- the product: relaunched from its launch record ----------------------------------------------


def _product(config: StackConfig, name: str, health_url: str) -> Component:
    return _relaunched(name, "product", Process(name, config.state_dir / "run"),
                       functools.partial(http_ok, health_url))


def _product_components(config: StackConfig) -> list[Component]:
    found = [_product(config, name, f"{system.service_url(config, name)}/readyz")
             for name in system.SERVICES]
    found.append(_product(config, "gateway", f"{system.gateway_url(config)}/readyz"))
    found.append(_product(
        config, "operator", f"http://{config.host}:{system.PORTS.operator_health}/healthz"))
    return found


# -- the infrastructure: its own start function ---------------------------------------------------


def _infra_components(config: StackConfig) -> list[Component]:
    return [
        Component(comp.name, "infrastructure", functools.partial(comp.processes, config),
                  functools.partial(comp.start, config), functools.partial(comp.ready, config),
                  comp.startup_timeout)
        for comp in infra.COMPONENTS
    ]


# -- the control plane: kwokctl's processes -------------------------------------------------------

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "kwok-controller")


@dataclass(frozen=True)
class KwokProcess(Process):
    """A control-plane process kwokctl started: its pid in ``pids/``, its log in ``logs/`` of
    the cluster's folder, its command in the cluster's configuration (``kwok.yaml``)."""

    cluster_dir: Path = Path()

    @property
    def log_file(self) -> Path:
        return self.cluster_dir / "logs" / f"{self.name}.log"

    def relaunch(self) -> int:
        spec = self.spec()
        env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("envs") or ()}}
        return self._launch([spec["binary"], *(spec.get("args") or ())], env,
                            spec.get("workDir") or str(self.cluster_dir), spec.get("user"))

    def spec(self) -> dict[str, Any]:
        try:
            documents = list(yaml.safe_load_all((self.cluster_dir / "kwok.yaml").read_text()))
        except FileNotFoundError:
            raise StackError("the control plane was never created here") from None
        for document in documents:
            if (document or {}).get("kind") != "KwokctlConfiguration":
                continue
            for component in document.get("components") or ():
                if component.get("name") == self.name:
                    return dict(component)
        raise StackError(f"kwokctl's configuration has no component {self.name}")


def _control_plane_components(config: StackConfig) -> list[Component]:
    folder = cluster.cluster_dir(config)
    found = []
    for name in CONTROL_PLANE:
        proc = KwokProcess(name, folder / "pids", cluster_dir=folder)
        if name == "kube-apiserver":
            ready: Callable[[], bool] = functools.partial(cluster.ready, config)
        elif name == "etcd":
            ready = functools.partial(_etcd_ready, proc)
        else:
            ready = proc.is_running
        found.append(_relaunched(name, "control plane", proc, ready, startup_timeout=90))
    return found


def _etcd_ready(proc: KwokProcess) -> bool:
    """etcd's /health on the client URL kwokctl gave it."""
    try:
        args = proc.spec().get("args") or ()
    except StackError:
        return False
    urls = [a.partition("=")[2] for a in args if a.startswith("--advertise-client-urls=")]
    if not urls:
        return False
    url = urllib.parse.urlsplit(urls[0].split(",")[0])
    host = "127.0.0.1" if url.hostname in (None, "0.0.0.0") else url.hostname
    return http_ok(f"http://{host}:{url.port}/health")


# -- the real node: relaunched from its launch record --------------------------------------------


def _node_components(config: StackConfig) -> list[Component]:
    layout = NodeLayout(config)
    if not layout.up_marker.exists():
        return []
    checks: dict[str, Callable[[], bool]] = {
        "containerd": functools.partial(runtime.answers, layout),
        "kubelet": agents.kubelet_healthy,
        "kube-proxy": agents.kube_proxy_healthy,
        "coredns": dns.ready,
    }
    return [_relaunched(name, "node", layout.process(name), check)
            for name, check in checks.items()]


# -- what the CLI does with them ------------------------------------------------------------------


def components(config: StackConfig) -> dict[str, Component]:
    """Every component of this stack by name (the real node's only while it is up)."""
    found = [*_infra_components(config), *_control_plane_components(config),
             *_node_components(config), *_product_components(config)]
    return {c.name: c for c in found}


def find(config: StackConfig, name: str) -> Component:
    known = components(config)
    if name not in known:
        raise StackError(f"no component {name!r}; one of: {', '.join(known)}")
    return known[name]


def stop(config: StackConfig, name: str) -> bool:
    """Stop it (its stop signal, SIGKILL after a grace period); True if it was running."""
    stopped = False
    for proc in reversed(find(config, name).processes()):
        stopped = proc.stop() or stopped
    return stopped


def start(config: StackConfig, name: str) -> float:
    """Start it unless it runs and wait until it is ready; return the seconds that took."""
    component = find(config, name)
    began = time.monotonic()
    component.start()
    wait_until(component.ready, what=name, timeout=component.startup_timeout,
               process=component.processes()[-1])
    return time.monotonic() - began


def restart(config: StackConfig, name: str) -> float:
    stop(config, name)
    return start(config, name)


def kill(config: StackConfig, name: str, sig: signal.Signals) -> bool:
    """Send `sig` to each of its processes' groups (SIGKILL: no graceful shutdown; SIGSTOP
    and SIGCONT freeze and thaw it); True if it was running."""
    signalled = False
    for proc in find(config, name).processes():
        signalled = proc.signal(sig) or signalled
    return signalled


def parse_signal(text: str) -> signal.Signals:
    """`KILL`, `SIGKILL` or `9` -> SIGKILL; ValueError for anything else."""
    name = text.strip().upper()
    if name.isdigit():
        return signal.Signals(int(name))
    try:
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except KeyError:
        raise ValueError(f"unknown signal {text!r} (e.g. KILL, TERM, STOP, CONT)") from None


__all__ = ["Component", "components", "find", "kill", "parse_signal", "restart", "start", "stop"]
