"""A chaos run as a picture: orders created and ended over time, with the faults shaded.

What a reader wants from a long run at a glance: did the system keep finishing orders
through each fault, and how quickly did it catch up after it (PNG, matplotlib's Agg
backend: no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure


def timeline(report: dict[str, Any], path: Path) -> None:
    created = sorted(report["timeline"]["created"])
    finished = sorted(report["timeline"]["finished"])
    fig = Figure(figsize=(9, 4.5), dpi=110, layout="constrained")
    ax = fig.subplots()
    for i, fault in enumerate(report["faults"]):
        ax.axvspan(fault["at"], max(fault["ended"], fault["at"] + 0.5), color=f"C{i % 10}",
                   alpha=0.18, label=fault["what"])
    ax.step(created, range(1, len(created) + 1), where="post", color="black", linewidth=1.2,
            label="created")
    ax.step(finished, range(1, len(finished) + 1), where="post", color="C2", linewidth=1.8,
            label="ended (terminal or gone)")
    ax.set_xlabel("seconds since the load started")
    ax.set_ylabel("orders")
    verdict = "every invariant held" if report["passed"] else "INVARIANTS VIOLATED"
    ax.set_title(f"chaos {report['scenario'] or 'random faults'}, seed {report['seed']}: "
                 f"{verdict}")
    ax.legend(fontsize=7, loc="upper left", ncols=2)
    ax.grid(alpha=0.3)
    fig.savefig(path)
