"""Measure peer points from the command line (the benchmark calls :func:`run_point` itself).

    .venv/bin/python -m vyapaar_stack.bench.peers --peer dbos --orders 300 --rate 50
    .venv/bin/python -m vyapaar_stack.bench.peers --peer temporal --orders 100 --rate 5

Why: to look at one peer alone, without the whole sweep. Prints one line per point:
throughput, latency percentiles and CPU seconds by process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from ...config import StackConfig
from . import PEERS, PeerPoint, available, run_point, shutdown


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]  # nearest rank


def summary(point: PeerPoint) -> dict[str, object]:
    """The figures worth a line: outcomes, throughput, latency percentiles, CPU."""
    return {
        "peer": point.peer, "offered_rate": point.offered_rate, "orders": point.orders,
        "completed": point.completed, "failed": point.failed,
        "elapsed_s": round(point.elapsed_s, 3),
        "throughput_per_s": round(point.completed / point.elapsed_s, 2) if point.elapsed_s
        else None,
        "latency_s": {f"p{q}": round(_percentile(point.latencies_s, q), 4)
                      for q in (50, 90, 99)},
        "cpu_s": {name: round(value, 2) for name, value in point.cpu_s_by_process.items()},
    }


async def _main(args: argparse.Namespace) -> int:
    url = args.database_url or StackConfig().database_url
    try:
        for peer in args.peer:
            reason = available(peer)
            if reason:
                print(json.dumps({"peer": peer, "skipped": reason}), flush=True)
                continue
            for rate in args.rate:
                point = await run_point(peer, database_url=url, orders=args.orders, rate=rate,
                                        skus=args.skus)
                print(json.dumps(summary(point)), flush=True)
    finally:
        await shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vyapaar_stack.bench.peers",
                                     description="Measure load points of the saga's peers.")
    parser.add_argument("--peer", action="append", choices=PEERS,
                        help="a peer to measure (repeatable; default: all)")
    parser.add_argument("--rate", type=float, action="append",
                        help="offered orders/s (repeatable; default: 5)")
    parser.add_argument("--orders", type=int, default=100, help="orders per point")
    parser.add_argument("--skus", type=int, default=50)
    parser.add_argument("--database-url", help="default: the local stack's PostgreSQL")
    args = parser.parse_args(argv)
    args.peer = args.peer or list(PEERS)
    args.rate = args.rate or [5.0]
    logging.basicConfig(level=logging.WARNING)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
