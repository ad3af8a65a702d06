"""Per-process CPU seconds and peak RSS, read from /proc.

Why /proc rather than each process's metrics: Go, Erlang, PostgreSQL, Redis and Python
then count on the same clock (the kernel's ticks), processes without a metrics endpoint
count too, and a delta over one load point needs no scrape interval.

A component is a set of root pids and everything they forked: PostgreSQL's backends and
RabbitMQ's Erlang VM count for their server. Each process counts
``utime + stime + cutime + cstime``: a child that exits during a point (a PostgreSQL
backend) moves its time into its parent's ``cutime``, so the delta still holds it once.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..config import StackConfig
from ..processes import Process

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: the name under which the benchmark's own process (the load generator) is counted
BENCH_CLIENT = "bench client"


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat that the benchmark uses; times in clock ticks."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int

    @property
    def ticks(self) -> int:
        """CPU of the process and of its reaped children."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_pid_stat(text: str) -> ProcStat:
    """Parse one /proc/<pid>/stat line (the command name may hold spaces and parentheses)."""
    head, _, rest = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = rest.split()  # fields[0] is field 3 of proc(5): the state
    return ProcStat(pid=int(pid), comm=comm, state=fields[0], ppid=int(fields[1]),
                    utime=int(fields[11]), stime=int(fields[12]),
                    cutime=int(fields[13]), cstime=int(fields[14]))


@dataclass(frozen=True)
class MachineCpu:
    """All CPUs together, from the ``cpu`` line of /proc/stat; in clock ticks."""

    busy: int
    idle: int


def parse_proc_stat(text: str) -> MachineCpu:
    """busy = user + nice + system + irq + softirq + steal (guest time is inside user);
    idle = idle + iowait."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]] + [0] * 10
            user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
            return MachineCpu(busy=user + nice + system + irq + softirq + steal,
                              idle=idle + iowait)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def parse_status_kib(text: str, key: str) -> int | None:
    """A ``Key:   123 kB`` value of /proc/<pid>/status (VmHWM, VmRSS), in KiB."""
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return None


def read_table(proc: Path = PROC) -> dict[int, ProcStat]:
    """Every live process; ones that exit while being read are skipped."""
    table: dict[int, ProcStat] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            table[int(entry.name)] = parse_pid_stat((entry / "stat").read_text())
    return table


def tree(roots: Iterable[int], table: Mapping[int, ProcStat]) -> set[int]:
    """The live `roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for stat in table.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return found


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far of each component and of the whole machine, at `at` (monotonic)."""

    at: float
    cpu_s: dict[str, float]
    machine_busy_s: float

    def minus(self, before: Snapshot) -> Snapshot:
        """The delta from `before`: elapsed seconds in `at`. A component restarted in between
        would show a negative delta: it shows 0 (the caller reports the restart)."""
        return Snapshot(at=self.at - before.at,
                        cpu_s={k: max(0.0, v - before.cpu_s.get(k, 0.0))
                               for k, v in self.cpu_s.items()},
                        machine_busy_s=self.machine_busy_s - before.machine_busy_s)


@dataclass
class ProcessSet:
    """Named components of the running system, each the process trees of its root pids."""

    roots: dict[str, list[int]]
    proc: Path = PROC
    clock: Callable[[], float] = field(default=time.monotonic)

    def snapshot(self) -> Snapshot:
        """Each pid counts for the first component whose tree holds it."""
        table = read_table(self.proc)
        claimed: set[int] = set()
        cpu: dict[str, float] = {}
        for name, roots in self.roots.items():
            pids = tree(roots, table) - claimed
            claimed |= pids
            cpu[name] = sum(table[pid].ticks for pid in pids) / CLK_TCK
        machine = parse_proc_stat((self.proc / "stat").read_text())
        return Snapshot(at=self.clock(), cpu_s=cpu, machine_busy_s=machine.busy / CLK_TCK)

    def peak_rss_mib(self, name: str) -> float | None:
        """VmHWM of the component's first root: its peak resident memory."""
        pid = next(iter(self.roots.get(name, ())), None)
        if pid is None:
            return None
        try:
            kib = parse_status_kib((self.proc / str(pid) / "status").read_text(), "VmHWM")
        except OSError:
            return None
        return None if kib is None else kib / 1024

    def reset_peak_rss(self, name: str) -> bool:
        """Reset VmHWM to the current RSS (``5 > clear_refs``) so the next peak is one
        point's; False where the kernel or the permissions refuse."""
        pid = next(iter(self.roots.get(name, ())), None)
        if pid is None:
            return False
        try:
            (self.proc / str(pid) / "clear_refs").write_text("5")
        except OSError:
            return False
        return True


# -- the stack's processes ------------------------------------------------------------------

#: component -> names of its pid files in .state/run (started by hack/vyapaar_stack)
RUN_DIR_COMPONENTS: dict[str, tuple[str, ...]] = {
    "operator": ("operator",),
    "inventory": ("inventory",),
    "payment": ("payment",),
    "shipping": ("shipping",),
    "notification": ("notification",),
    "analytics": ("analytics",),
    "gateway": ("gateway",),
    "rabbitmq": ("rabbitmq", "epmd"),
    "postgres": ("postgres",),
    "redis": ("redis",),
    "prometheus": ("prometheus",),
    "jaeger": ("jaeger",),  # the trace backend: its CPU is tracing's cost too
}
#: component -> name of its pid file in kwokctl's cluster folder
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler",
                 "kwok-controller")


def _cmdline(pid: int, proc: Path) -> list[str]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _matches(component: str, argv: list[str]) -> bool:
    """Recognise a component by its command line (when it has no pid file)."""
    if not argv:
        return False
    program = Path(argv[0]).name
    if component in CONTROL_PLANE or component in ("redis", "prometheus", "jaeger"):
        return program == {"redis": "redis-server"}.get(component, component)
    if component == "rabbitmq":
        return program == "beam.smp" and any("rabbit" in arg for arg in argv)
    if component == "postgres":
        return program == "postgres" and "-D" in argv  # the postmaster, not a backend
    module = "vyapaar_operator" if component == "operator" else f"vyapaar_services.{component}"
    return "-m" in argv and module in argv


def _pid_file(path: Path, proc: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        if (proc / str(pid)).exists():
            return pid
    return None


def discover(config: StackConfig, proc: Path = PROC) -> ProcessSet:
    """The local stack's components from their pid files, else by command line; the
    benchmark's own process last, as `BENCH_CLIENT`."""
    roots: dict[str, list[int]] = {}
    cluster_pids = config.state_dir / "kwok" / "clusters" / config.cluster_name / "pids"
    for name in CONTROL_PLANE:
        pid = _pid_file(cluster_pids / f"{name}.pid", proc)
        roots[name] = [pid] if pid is not None else []
    run_dir = config.state_dir / "run"
    for name, files in RUN_DIR_COMPONENTS.items():
        roots[name] = [pid for f in files if (pid := Process(f, run_dir).pid()) is not None]
    missing = [name for name, pids in roots.items() if not pids]
    if missing:
        for entry in proc.iterdir():
            if entry.name.isdigit():
                argv = _cmdline(int(entry.name), proc)
                for name in missing:
                    if _matches(name, argv) and int(entry.name) != os.getpid():
                        roots[name].append(int(entry.name))
    roots[BENCH_CLIENT] = [os.getpid()]
    return ProcessSet(roots={name: pids for name, pids in roots.items() if pids}, proc=proc)
