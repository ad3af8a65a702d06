"""The report as pictures (PNG, matplotlib's Agg backend: no display needed).

Four charts answer the questions a reader brings: does it keep up (throughput against
offered load, with the y = x line it should follow), how slow does it get (latency
percentiles, log scale), where does the CPU of an order go (stacked by process), and how
does it compare with the peers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .procstat import BENCH_CLIENT
from .report import OURS, PointSummary, points_of

#: a process whose share stays under this at every point is drawn as "other"
MINOR_SHARE = 0.03
PERCENTILES = (("p50", "-"), ("p90", "--"), ("p99", ":"))
#: tab20's strong colours first, then the pale ones: neighbours in a stack stay apart
COLOR_ORDER = (*range(0, 20, 2), *range(1, 20, 2))


def _figure() -> Figure:
    return Figure(figsize=(8, 5), dpi=110, layout="constrained")


def throughput(systems: Mapping[str, Sequence[PointSummary]], path: Path) -> None:
    fig = _figure()
    ax = fig.subplots()
    top = max((p.offered_rate for ps in systems.values() for p in ps), default=1.0)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1,
            label="achieved = offered")
    for name, points in systems.items():
        ax.plot([p.offered_rate for p in points], [p.throughput for p in points], marker="o",
                linewidth=2 if name == OURS else 1.5, label=name)
    ax.set_xlabel("offered load (orders/s)")
    ax.set_ylabel("achieved throughput (completed orders/s)")
    ax.set_title("Throughput against offered load")
    ax.set_xlim(0, top * 1.05)
    ax.set_ylim(0, top * 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path)


def latency(systems: Mapping[str, Sequence[PointSummary]], path: Path) -> None:
    fig = _figure()
    ax = fig.subplots()
    colors = {name: f"C{i}" for i, name in enumerate(systems)}
    for name, points in systems.items():
        for key, style in PERCENTILES:
            shown = [p for p in points if p.latency_s[key] is not None]
            ax.plot([p.offered_rate for p in shown], [1000 * (p.latency_s[key] or 0)
                                                      for p in shown],
                    color=colors[name], linestyle=style, marker="o", markersize=4,
                    label=f"{name} {key}")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 else 3.0
    subs = (1.0, 2.0, 3.0, 5.0, 7.0) if decades < 1.5 else (1.0, 2.0, 5.0) if decades < 3 \
        else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(_duration))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(left=0)
    ax.set_xlabel("offered load (orders/s)")
    ax.set_ylabel("create → terminal phase (log scale)")
    ax.set_title("Order latency against offered load")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small", ncols=max(1, len(systems)))
    fig.savefig(path)


def _duration(ms: float, _: object = None) -> str:
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _stack_order(points: Sequence[PointSummary]) -> list[str]:
    """Processes by their largest cost, the minor ones left out (drawn as "other")."""
    peak: dict[str, float] = {}
    for p in points:
        total = sum(v for k, v in p.cpu_ms_per_order_net.items() if k != BENCH_CLIENT) or 1.0
        for name, ms in p.cpu_ms_per_order_net.items():
            if name != BENCH_CLIENT:
                peak[name] = max(peak.get(name, 0.0), ms / total)
    return sorted((n for n, share in peak.items() if share >= MINOR_SHARE),
                  key=lambda n: -peak[n])


def cpu_per_order(points: Sequence[PointSummary], path: Path) -> None:
    shown = [p for p in points if p.completed]
    fig = _figure()
    ax = fig.subplots()
    names = _stack_order(shown)
    x = list(range(len(shown)))
    bottom = [0.0] * len(shown)
    cmap = matplotlib.colormaps["tab20"]
    for i, name in enumerate([*names, "other"]):
        if name == "other":
            values = [sum(v for k, v in p.cpu_ms_per_order_net.items()
                          if k not in names and k != BENCH_CLIENT) for p in shown]
            color: Any = "lightgrey"
        else:
            values = [p.cpu_ms_per_order_net.get(name, 0.0) for p in shown]
            color = cmap(COLOR_ORDER[i % len(COLOR_ORDER)])
        ax.bar(x, values, bottom=bottom, label=name, color=color, width=0.6)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.plot(x, [p.cpu_ms_per_order_total or 0.0 for p in shown], linestyle="none",
            marker="D", color="black", label="gross (incl. idle CPU)")
    ax.set_xticks(x, [f"{p.offered_rate:g}/s\n({p.throughput:.1f} done/s)" for p in shown])
    ax.set_xlabel("offered load")
    ax.set_ylabel("CPU ms per completed order")
    ax.set_title("Where an order's CPU goes (net of idle; load generator excluded)")
    ax.grid(alpha=0.3, axis="y")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], fontsize="small", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))  # top of the stack first
    fig.savefig(path)


def comparison(comp: Mapping[str, Any], path: Path) -> None:
    systems = list(comp["systems"])
    rate = comp["common_rate"]
    at = f"at {rate:g}/s" if rate is not None else "(no common sustained rate)"
    panels = (("saturation_throughput", "most orders/s achieved (saturation)", 1.0),
              ("p99_s_at_common_rate", f"p99 latency ms {at}", 1000.0),
              ("cpu_ms_per_order_at_common_rate", f"CPU ms per order {at} (gross)", 1.0))
    fig = Figure(figsize=(11, 4), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (key, title, scale) in zip(axes, panels, strict=True):
        values = [(comp["systems"][s][key] or 0.0) * scale for s in systems]
        bars = ax.bar(systems, values, color=[f"C{i}" for i in range(len(systems))])
        ax.bar_label(bars, fmt="%.1f", fontsize="small")
        ax.set_title(title, fontsize="medium")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Vyapaar Nexus and its peers on the same machine")
    fig.savefig(path)


def write_all(report: Mapping[str, Any], directory: Path) -> list[Path]:
    """Every chart the report supports, as PNG files in `directory`; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    systems = {OURS: points_of(report)}
    for name, peer in report.get("peers", {}).items():
        if "points" in peer:
            systems[name] = points_of(report, name)
    written = [directory / name for name in ("throughput.png", "latency.png",
                                             "cpu_per_order.png")]
    throughput(systems, written[0])
    latency(systems, written[1])
    cpu_per_order(systems[OURS], written[2])
    if report.get("comparison"):
        comparison(report["comparison"], directory / "comparison.png")
        written.append(directory / "comparison.png")
    return written
