"""From raw measurements to the figures the benchmark reports: JSON and a printed table.

Everything here is pure (no I/O but writing the file), so what a figure means is pinned
by unit tests:

- throughput is completed orders over the time from the first create to the last
  terminal phase;
- a rate is *sustained* when orders finish as fast as they are offered: the completion
  rate, (finished - 1) / (last terminal phase - first terminal phase), reaches 95% of the
  offered rate. Throughput itself would not do on a finite point: N orders at rate r take
  (N - 1) / r plus one latency, so even a perfect system shows less than r; the
  completion rate leaves that one latency out, and a saturated system still shows its
  capacity in it; and at least 95% of the orders created must complete. (For a peer,
  whose results hold no timestamps, the first terminal phase is taken one minimum latency
  after the first start.)
- CPU "net" subtracts what each process burns idle over the same window: the marginal
  cost of the orders.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .procstat import BENCH_CLIENT

SCHEMA = "vyapaar-bench/1"
OURS = "vyapaar"
#: completion rate / offered rate from which a rate counts as sustained
SUSTAINED = 0.95
#: the control-plane processes whose CPU a status write costs
CONTROL_PLANE_WRITE = ("kube-apiserver", "etcd")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), interpolated linearly between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_max(values: Sequence[int]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": float(percentile(values, 50) or 0), "max": float(max(values))}


def completion_rate(completed: int, elapsed_s: float, first_terminal_s: float) -> float | None:
    """Orders finished per second between the first and the last terminal phase."""
    span = elapsed_s - first_terminal_s
    return (completed - 1) / span if completed > 1 and span > 0 else None


@dataclass
class IdleBaseline:
    """What the system does with no orders: CPU seconds per second and writes per second."""

    seconds: float
    cpu_s_per_s: dict[str, float]
    machine_busy_per_s: float
    writes_per_s: dict[str, float] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)  # processes restarted meanwhile

    @classmethod
    def none(cls) -> IdleBaseline:
        return cls(seconds=0.0, cpu_s_per_s={}, machine_busy_per_s=0.0)


@dataclass
class PointMeasurement:
    """What one load point observed, before any arithmetic."""

    system: str
    offered_rate: float
    planned: int
    created: int
    outcomes: dict[str, int]  # terminal phase -> orders
    elapsed_s: float  # first create -> last terminal phase
    latencies_s: list[float]  # create call -> terminal phase, per finished order
    cpu_s: dict[str, float]  # process -> CPU seconds over the window
    window_s: float = 0.0  # the CPU window (the elapsed time plus the settling)
    create_errors: int = 0
    unfinished: int = 0
    create_span_s: float = 0.0
    machine_busy_s: float | None = None
    writes: dict[str, int] = field(default_factory=dict)
    conflicts: dict[str, int] = field(default_factory=dict)
    reads: dict[str, int] = field(default_factory=dict)
    status_bytes: list[int] = field(default_factory=list)
    object_bytes: list[int] = field(default_factory=list)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    restarted: list[str] = field(default_factory=list)  # processes restarted meanwhile
    #: first create -> first terminal phase (None: take the shortest latency)
    first_terminal_s: float | None = None
    #: the saga alone: its start -> its end as the operator recorded them (status.startedAt ->
    #: finishedAt), without the wait in the queue of the in-flight limit
    saga_latencies_s: list[float] = field(default_factory=list)
    queued: int = 0  # Orders that waited for a saga slot (the Queued condition)


@dataclass
class PointSummary:
    """One load point as reported (the JSON of a point)."""

    system: str
    offered_rate: float
    planned: int
    created: int
    create_errors: int
    create_rate: float | None
    completed: int
    failed: int
    unfinished: int
    outcomes: dict[str, int]
    elapsed_s: float
    throughput: float
    completion_rate: float | None
    sustained: bool
    latency_s: dict[str, float | None]
    saga_latency_s: dict[str, float | None]  # status.startedAt -> finishedAt (no queue)
    queued: int  # Orders that waited for a saga slot
    cpu_ms_per_order: dict[str, float]
    cpu_ms_per_order_net: dict[str, float]
    cpu_ms_per_order_total: float | None
    cpu_ms_per_order_total_net: float | None
    machine_busy_ms_per_order: float | None
    writes_per_order: dict[str, float]
    writes_per_order_total: float | None
    writes_per_order_total_net: float | None
    conflicts_per_order: dict[str, float]
    reads_per_order: dict[str, float]
    status_bytes: dict[str, float] | None
    object_bytes: dict[str, float] | None
    peak_rss_mib: dict[str, float]
    window_s: float
    restarted: list[str] = field(default_factory=list)

    @property
    def control_plane_write_ms_per_order(self) -> float | None:
        """kube-apiserver + etcd CPU per completed order, net of idle."""
        if self.cpu_ms_per_order_total_net is None:
            return None
        return sum(self.cpu_ms_per_order_net.get(p, 0.0) for p in CONTROL_PLANE_WRITE)


def _per(values: Mapping[str, float], n: int) -> dict[str, float]:
    return {k: v / n for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if v}


def summarize(m: PointMeasurement, idle: IdleBaseline) -> PointSummary:
    """Derive the reported figures of one point (per *completed* order)."""
    completed = m.outcomes.get("Completed", 0)
    failed = sum(m.outcomes.values()) - completed
    throughput = completed / m.elapsed_s if m.elapsed_s > 0 else 0.0
    first = m.first_terminal_s if m.first_terminal_s is not None else min(m.latencies_s,
                                                                            default=0.0)
    finishing = completion_rate(sum(m.outcomes.values()), m.elapsed_s, first)
    window = m.window_s or m.elapsed_s
    net_cpu = {p: max(0.0, s - idle.cpu_s_per_s.get(p, 0.0) * window)
               for p, s in m.cpu_s.items()}
    n = max(completed, 1)
    ms = {p: 1000 * s / n for p, s in m.cpu_s.items()} if completed else {}
    ms_net = {p: 1000 * s / n for p, s in net_cpu.items()} if completed else {}
    writes_total = sum(m.writes.values())
    background = sum(idle.writes_per_s.values()) * window
    return PointSummary(
        system=m.system, offered_rate=m.offered_rate, planned=m.planned, created=m.created,
        create_errors=m.create_errors,
        create_rate=(m.created - 1) / m.create_span_s if m.create_span_s > 0 else None,
        completed=completed, failed=failed, unfinished=m.unfinished,
        outcomes=dict(sorted(m.outcomes.items())), elapsed_s=m.elapsed_s,
        throughput=throughput, completion_rate=finishing,
        sustained=(finishing is not None and finishing >= SUSTAINED * m.offered_rate
                   and completed >= SUSTAINED * m.created),
        latency_s={f"p{q}": percentile(m.latencies_s, q) for q in (50, 90, 99)}
        | {"max": max(m.latencies_s, default=None)},
        saga_latency_s={f"p{q}": percentile(m.saga_latencies_s, q) for q in (50, 90, 99)},
        queued=m.queued,
        cpu_ms_per_order=_per(ms, 1), cpu_ms_per_order_net=_per(ms_net, 1),
        cpu_ms_per_order_total=(sum(v for p, v in ms.items() if p != BENCH_CLIENT)
                                if completed else None),
        cpu_ms_per_order_total_net=(sum(v for p, v in ms_net.items() if p != BENCH_CLIENT)
                                    if completed else None),
        machine_busy_ms_per_order=(1000 * m.machine_busy_s / n
                                   if completed and m.machine_busy_s is not None else None),
        writes_per_order=_per(m.writes, n) if completed else {},
        writes_per_order_total=writes_total / n if completed and m.writes else None,
        writes_per_order_total_net=(max(0.0, writes_total - background) / n
                                    if completed and m.writes else None),
        conflicts_per_order=_per(m.conflicts, n) if completed else {},
        reads_per_order=_per(m.reads, n) if completed else {},
        status_bytes=median_max(m.status_bytes), object_bytes=median_max(m.object_bytes),
        peak_rss_mib=m.peak_rss_mib, window_s=window, restarted=list(m.restarted),
    )


# -- calibration ------------------------------------------------------------------------------


@dataclass
class WriteCost:
    """K status writes of one kind, and what kube-apiserver and etcd burnt doing them."""

    variant: str  # "full" (a completed Order's status) or "minimal"
    writes: int
    status_bytes: int
    wall_s: float
    cpu_s: dict[str, float]  # process -> CPU seconds, net of idle
    #: requests the apiserver served meanwhile besides these writes: others' noise
    other_requests: int = 0

    def ms_per_write(self, process: str) -> float:
        return 1000 * self.cpu_s.get(process, 0.0) / max(self.writes, 1)

    @property
    def control_plane_ms_per_write(self) -> float:
        return sum(self.ms_per_write(p) for p in CONTROL_PLANE_WRITE)

    def to_json(self) -> dict[str, Any]:
        return {"writes": self.writes, "status_bytes": self.status_bytes,
                "wall_ms_per_write": 1000 * self.wall_s / max(self.writes, 1),
                "apiserver_ms_per_write": self.ms_per_write("kube-apiserver"),
                "etcd_ms_per_write": self.ms_per_write("etcd"),
                "control_plane_ms_per_write": self.control_plane_ms_per_write,
                "other_requests": self.other_requests}


def reference_point(points: Sequence[PointSummary]) -> PointSummary | None:
    """The point the headline speaks of: the highest sustained rate, else the busiest."""
    done = [p for p in points if p.completed]
    sustained = [p for p in done if p.sustained]
    if sustained:
        return max(sustained, key=lambda p: p.offered_rate)
    return max(done, key=lambda p: p.throughput, default=None)


def calibration_json(full: WriteCost | None, minimal: WriteCost,
                     points: Sequence[PointSummary], namespace: str) -> dict[str, Any]:
    """The calibration section: ms per write, and each point's CPU per order in units of
    one minimal status write (kube-apiserver + etcd)."""
    unit = minimal.control_plane_ms_per_write
    multiples = [{"offered_rate": p.offered_rate,
                  "cpu_ms_per_order_net": p.cpu_ms_per_order_total_net,
                  "minimal_writes": p.cpu_ms_per_order_total_net / unit}
                 for p in points if p.cpu_ms_per_order_total_net is not None and unit > 0]
    ref = reference_point(points)
    headline = next((m for m in multiples if ref and m["offered_rate"] == ref.offered_rate),
                    None)
    return {"namespace": namespace, "unit": "kube-apiserver + etcd CPU of one minimal status "
            "write", "full": full.to_json() if full else None, "minimal": minimal.to_json(),
            "per_order": multiples, "headline": headline}


# -- comparison with peers -------------------------------------------------------------------


def saturation(points: Sequence[PointSummary]) -> float:
    """Throughput at saturation: the most any point achieved."""
    return max((p.throughput for p in points), default=0.0)


def common_rate(systems: Mapping[str, Sequence[PointSummary]]) -> float | None:
    """The highest offered rate that every system sustains (see the module docstring)."""
    rates: set[float] | None = None
    for points in systems.values():
        ok = {p.offered_rate for p in points if p.sustained}
        rates = ok if rates is None else rates & ok
    return max(rates) if rates else None


def _at(points: Sequence[PointSummary], rate: float | None) -> PointSummary | None:
    return next((p for p in points if p.offered_rate == rate), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def comparison(systems: Mapping[str, Sequence[PointSummary]]) -> dict[str, Any]:
    """Per system: saturation throughput, p99 and CPU per order at the common rate; for each
    peer, ours divided by theirs (throughput: higher is better; p99 and CPU: lower)."""
    rate = common_rate(systems)
    out: dict[str, Any] = {"common_rate": rate, "systems": {}}
    for name, points in systems.items():
        at = _at(points, rate)
        out["systems"][name] = {
            "saturation_throughput": saturation(points),
            "p99_s_at_common_rate": at.latency_s["p99"] if at else None,
            "cpu_ms_per_order_at_common_rate": at.cpu_ms_per_order_total if at else None,
        }
    ours = out["systems"].get(OURS)
    if ours:
        for name, figures in out["systems"].items():
            if name != OURS:
                figures["ours_over_theirs"] = {
                    key: _ratio(ours[key], figures[key]) for key in
                    ("saturation_throughput", "p99_s_at_common_rate",
                     "cpu_ms_per_order_at_common_rate")}
    return out


# -- the report --------------------------------------------------------------------------------


def build(*, settings: Mapping[str, Any], operator: Mapping[str, Any], idle: IdleBaseline,
          points: Sequence[PointSummary], calibration: Mapping[str, Any] | None,
          peers: Mapping[str, Sequence[PointSummary] | str], started_at: str,
          finished_at: str, plots: Sequence[str] = (),
          tracing: bool | None = None) -> dict[str, Any]:
    """The whole report as JSON-ready data. A peer maps to its points or to the reason it
    did not run. `tracing`: whether the measured system exported spans (None: not known)."""
    systems: dict[str, Sequence[PointSummary]] = {OURS: points}
    systems.update({n: p for n, p in peers.items() if not isinstance(p, str)})
    return {
        "schema": SCHEMA, "started_at": started_at, "finished_at": finished_at,
        "host": {"cpus": _cpus(), "kernel": platform.release(),
                 "python": platform.python_version()},
        "settings": dict(settings), "operator": dict(operator),
        "tracing": None if tracing is None else ("on" if tracing else "off"),
        "idle": asdict(idle),
        "points": [asdict(p) for p in points],
        "calibration": dict(calibration) if calibration is not None else None,
        "peers": {n: ({"skipped": p} if isinstance(p, str) else
                      {"points": [asdict(x) for x in p]}) for n, p in peers.items()},
        "comparison": comparison(systems) if len(systems) > 1 else None,
        "plots": list(plots),
    }


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def write(path: Path, report: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")


def points_of(report: Mapping[str, Any], system: str = OURS) -> list[PointSummary]:
    """The points of `system` back from a report (for plotting a saved report)."""
    raw = report["points"] if system == OURS else report["peers"][system].get("points", [])
    return [PointSummary(**p) for p in raw]


# -- the printed table -------------------------------------------------------------------------


def _f(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def table(report: Mapping[str, Any]) -> str:
    """A short, markdown-friendly summary of the report."""
    points = points_of(report)
    lines = ["| offered/s | created | completed | failed | achieved/s | p50 ms | p90 ms | "
             "p99 ms | saga p99 ms | queued | CPU ms/order | of it apiserver+etcd | "
             "writes/order | status bytes | operator peak MiB |", "|" + " --- |" * 15]
    for p in points:
        lines.append(
            f"| {p.offered_rate:g} | {p.created} | {p.completed} | {p.failed + p.unfinished} | "
            f"{p.throughput:.1f}{'' if p.sustained else ' *'} | "
            f"{_f(p.latency_s['p50'], 1000, 0)} | {_f(p.latency_s['p90'], 1000, 0)} | "
            f"{_f(p.latency_s['p99'], 1000, 0)} | {_f(p.saga_latency_s.get('p99'), 1000, 0)} | "
            f"{p.queued} | {_f(p.cpu_ms_per_order_total_net)} | "
            f"{_f(p.control_plane_write_ms_per_order)} | {_f(p.writes_per_order_total_net)} | "
            f"{_f((p.status_bytes or {}).get('median'), 1, 0)} | "
            f"{_f(p.peak_rss_mib.get('operator'))} |")
    lines.append("")
    lines.append("achieved/s: completed orders / (first create to last terminal phase); "
                 "* = not sustained (orders finished at under 95% of the offered rate). "
                 "p50/p90/p99: create to terminal phase, seen by the client; saga p99: the "
                 "saga alone (status.startedAt to finishedAt), without the wait of the queued "
                 "Orders (queued: Orders that waited for a slot of the in-flight limit). "
                 "CPU ms/order: all processes of the system, net of their idle CPU (the load "
                 "generator excluded); writes/order: apiserver POST/PATCH/PUT, net of the idle "
                 "background; status bytes: compact JSON of a completed Order's status.")
    if report.get("tracing") == "on":
        lines.append("Tracing: on (every process exported spans to the trace backend, whose "
                     "own CPU is the `jaeger` row below).")
    elif report.get("tracing") == "off":
        lines.append("Tracing: off (no process exported spans).")
    lines += _cpu_by_process(points)
    lines += _calibration_lines(report.get("calibration"))
    lines += _comparison_lines(report.get("comparison"), report.get("peers", {}))
    return "\n".join(lines)


def _cpu_by_process(points: Sequence[PointSummary]) -> list[str]:
    shown = [p for p in points if p.completed]
    if not shown:
        return []
    names = sorted({n for p in shown for n in p.cpu_ms_per_order_net},
                   key=lambda n: -max(p.cpu_ms_per_order_net.get(n, 0.0) for p in shown))
    lines = ["", "CPU ms per completed order by process (net of idle):", "",
             "| process | " + " | ".join(f"{p.offered_rate:g}/s" for p in shown) + " |",
             "|" + " --- |" * (len(shown) + 1)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(
            _f(p.cpu_ms_per_order_net.get(name, 0.0)) for p in shown) + " |")
    return lines


def _calibration_lines(cal: Mapping[str, Any] | None) -> list[str]:
    if not cal:
        return []
    if "skipped" in cal:
        return ["", f"Calibration skipped: {cal['skipped']}"]
    lines = [""]
    for variant in ("full", "minimal"):
        cost = cal.get(variant)
        if cost:
            lines.append(
                f"Status write, {variant} ({cost['status_bytes']} bytes): kube-apiserver "
                f"{cost['apiserver_ms_per_write']:.2f} ms + etcd {cost['etcd_ms_per_write']:.2f} ms"
                f" CPU per write ({cost['writes']} writes, {cost['wall_ms_per_write']:.1f} ms "
                f"each on the wall; {cost.get('other_requests', 0)} other requests meanwhile)")
    head = cal.get("headline")
    if head:
        lines.append(f"CPU per order = {head['minimal_writes']:.0f}x a minimal status write "
                     f"(at {head['offered_rate']:g}/s: {head['cpu_ms_per_order_net']:.1f} ms of "
                     "CPU per order across all processes)")
    return lines


def _comparison_lines(comp: Mapping[str, Any] | None, peers: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, peer in peers.items():
        if "skipped" in peer:
            lines += ["", f"Peer {name} skipped: {peer['skipped']}"]
    if not comp:
        return lines
    rate = comp["common_rate"]
    at = f"{rate:g}/s" if rate is not None else "(no rate all sustain)"
    lines += ["", f"| system | saturation orders/s | p99 ms at {at} | CPU ms/order at {at} "
              "(gross) | ours / theirs (throughput, p99, CPU) |", "|" + " --- |" * 5]
    for name, fig in comp["systems"].items():
        ratio = fig.get("ours_over_theirs")
        ratios = ", ".join(_f(ratio[k], 1, 2) for k in (
            "saturation_throughput", "p99_s_at_common_rate",
            "cpu_ms_per_order_at_common_rate")) if ratio else "-"
        lines.append(f"| {name} | {fig['saturation_throughput']:.1f} | "
                     f"{_f(fig['p99_s_at_common_rate'], 1000, 0)} | "
                     f"{_f(fig['cpu_ms_per_order_at_common_rate'])} | {ratios} |")
    return lines
