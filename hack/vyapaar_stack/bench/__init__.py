"""`vyapaar bench`: the benchmark that explains itself.

It sweeps offered load over the running local system and reports, per rate, what was
achieved, how long orders took, and what each completed order cost — CPU by process,
apiserver writes by resource, the size of its status — plus a calibration that prices one
status write, so the cost of an order reads as "N minimal status writes". Optional peers
(DBOS, Temporal; :mod:`vyapaar_stack.bench.peers`) run the same sweep on the same machine.

This module only declares the command: the benchmark's imports (matplotlib among them)
load when it runs, not on every `vyapaar` invocation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..config import REPO_ROOT

DEFAULT_RATES = (2.0, 5.0, 10.0, 20.0, 40.0)
DEFAULT_OUT = REPO_ROOT / "docs" / "bench" / "report.json"
DEFAULT_SECONDS_PER_POINT = 30.0
DEFAULT_SKUS = 50
DEFAULT_CALIBRATION_WRITES = 200
DEFAULT_IDLE_SECONDS = 10.0
DEFAULT_STALL_TIMEOUT = 60.0
DEFAULT_GATEWAY_OUT = REPO_ROOT / "docs" / "bench" / "gateway.json"

EXAMPLES = """examples:
  vyapaar bench                                   # 2,5,10,20,40 orders/s, 30 s each
  vyapaar bench --rates 5,10,20 --orders-per-point 100
  vyapaar bench --peers dbos,temporal             # the same sweep on the peers too
  vyapaar bench --out /tmp/bench/report.json --no-plots

It needs the system running (make demo). Each point runs in a fresh namespace bench-*,
deleted after; the calibration uses a vyn-bench-calib-* namespace, which the operator
must ignore (VYAPAAR_NAMESPACES='!vyn-*', the local stack's default) or it is skipped.
Writes the JSON report and PNG plots (default docs/bench/), then prints a table.
"""


GATEWAY_EXAMPLES = """examples:
  vyapaar bench-gateway                      # 4 clients, 15 s per kind of request
  vyapaar bench-gateway --clients 8 --seconds 30 --out /tmp/gateway.json

It needs the system running (make demo). It starts a gateway of its own; its orders go to a
vyn-bench-gateway-* namespace the operator ignores, removed afterwards.
"""


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError("rates must be positive numbers, e.g. 2,5,10")
    return sorted(set(rates))


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def register(commands: Any) -> None:
    """Add ``bench`` to the `vyapaar` command line."""
    bench = commands.add_parser(
        "bench", help="sweep offered load over the running system; report what an order costs",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--rates", type=_rates, metavar="R1,R2,...", default=list(DEFAULT_RATES),
                       help="offered rates in orders/s, comma-separated (default: "
                            f"{','.join(f'{r:g}' for r in DEFAULT_RATES)})")
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--orders-per-point", type=_positive_int, metavar="N",
                      help="orders at each rate (default: rate x --seconds-per-point)")
    size.add_argument("--seconds-per-point", type=float, metavar="S",
                      default=DEFAULT_SECONDS_PER_POINT,
                      help="how long each rate is offered (default: %(default)g)")
    bench.add_argument("--skus", type=_positive_int, metavar="N", default=DEFAULT_SKUS,
                       help="SKUs the orders are spread over (default: %(default)s)")
    bench.add_argument("--out", type=Path, metavar="PATH", default=DEFAULT_OUT,
                       help="the JSON report; plots go beside it (default: docs/bench/"
                            "report.json)")
    bench.add_argument("--calibration-writes", type=int, metavar="K",
                       default=DEFAULT_CALIBRATION_WRITES,
                       help="status writes of each size to price one write; 0 skips "
                            "(default: %(default)s)")
    bench.add_argument("--idle-seconds", type=float, metavar="S", default=DEFAULT_IDLE_SECONDS,
                       help="how long to measure the idle system first (default: %(default)g)")
    bench.add_argument("--stall-timeout", type=float, metavar="S", default=DEFAULT_STALL_TIMEOUT,
                       help="give up on a point's remaining orders after this many seconds "
                            "without one finishing (default: %(default)g)")
    bench.add_argument("--peers", type=_names, metavar="P1,P2", default=[],
                       help="also run the sweep on these peers, e.g. dbos,temporal")
    bench.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    bench.set_defaults(func=run)

    gateway = commands.add_parser(
        "bench-gateway", help="requests/s and latency of the gateway, per kind of request",
        epilog=GATEWAY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    gateway.add_argument("--clients", type=_positive_int, default=4, metavar="N",
                         help="concurrent clients (default: %(default)s)")
    gateway.add_argument("--seconds", type=float, default=15.0, metavar="S",
                         help="per kind of request (default: %(default)g)")
    gateway.add_argument("--out", type=Path, metavar="PATH", default=DEFAULT_GATEWAY_OUT,
                         help="the JSON report; a PNG goes beside it (default: "
                              "docs/bench/gateway.json)")
    gateway.add_argument("--no-plots", action="store_true", help="write no PNG")
    gateway.set_defaults(func=run_gateway)


def run_gateway(args: argparse.Namespace) -> int:
    from ..config import StackConfig
    from ..processes import StackError
    from .gateway import main

    try:
        return main(StackConfig(), args.clients, args.seconds, args.out, not args.no_plots)
    except StackError as exc:
        print(f"vyapaar: error: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    from .sweep import Options, main

    return main(Options(
        rates=args.rates, orders_per_point=args.orders_per_point,
        seconds_per_point=args.seconds_per_point, skus=args.skus, out=args.out,
        calibration_writes=args.calibration_writes, idle_seconds=args.idle_seconds,
        peers=args.peers, plots=not args.no_plots, stall_timeout=args.stall_timeout))
