"""`vyapaar chaos`: a load of orders while faults play, then every invariant checked.

Before trusting the system with money, a platform engineer runs it: orders of every kind
(completing, declined, out of stock, undeliverable, cancelled and deleted at random
moments) while components are killed, stopped, frozen, slowed and fed poison and
duplicates; then, once the last fault is over and every order has ended, the invariants of
design.md are checked from the services' own records. The verdict is a table and a JSON
report; the exit code is 0 only if every invariant held.

    vyapaar chaos --scenario broker-outage         # one named scenario (see --list)
    vyapaar chaos --random 8 --seed 42 --orders 2000 --rate 10    # the soak
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..config import StackConfig
from ..processes import StackError
from .plan import FAULT_KINDS, ORDER_KINDS, SCENARIOS, make_plan
from .run import ChaosRun, Report

EXAMPLES = """examples:
  vyapaar chaos --list                                  # scenarios and fault kinds
  vyapaar chaos --scenario broker-outage                # RabbitMQ down for 10 s under load
  vyapaar chaos --scenario flaky-processors --orders 60 --rate 6
  vyapaar chaos --random 8 --seed 7 --orders 2000 --rate 10 --report docs/chaos/soak.json

exit code: 0 every invariant held; 1 an invariant was violated (or the run timed out);
2 usage; 3 the stack is not running
"""


def register(commands: Any) -> None:
    chaos = commands.add_parser(
        "chaos", help="orders under faults, then every invariant checked from the services' "
        "records", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = chaos.add_mutually_exclusive_group()
    which.add_argument("--scenario", choices=sorted(SCENARIOS), help="a named fault schedule")
    which.add_argument("--random", type=int, metavar="N",
                       help="N random faults over the load (reproducible with --seed)")
    which.add_argument("--list", action="store_true", help="list scenarios and fault kinds")
    chaos.add_argument("--seed", type=int, default=1, help="seeds orders and faults (default 1)")
    chaos.add_argument("--orders", type=int, default=40, help="orders in the load (default 40)")
    chaos.add_argument("--rate", type=float, default=4.0, help="orders per second (default 4)")
    chaos.add_argument("--skus", type=int, default=3, help="SKUs they spread over (default 3)")
    chaos.add_argument("--bound", type=float, default=60.0,
                       help="every order must end within this many seconds of the last fault "
                            "(default 60)")
    chaos.add_argument("--report", type=Path, metavar="PATH",
                       help="write the JSON report here (default: .state/chaos/<namespace>.json)")
    chaos.add_argument("--no-plot", action="store_true",
                       help="no PNG timeline beside the report")
    chaos.add_argument("--keep", action="store_true",
                       help="keep the run's namespace and its Orders for a look afterwards")
    chaos.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.list:
        print("scenarios:")
        for name, faults in SCENARIOS.items():
            print(f"  {name:24} {'; '.join(f'@{f.at:g}s {f.describe()}' for f in faults)}")
        print("fault kinds:")
        for kind, what in FAULT_KINDS.items():
            print(f"  {kind:13} {what}")
        print(f"order kinds: {', '.join(ORDER_KINDS)}")
        return 0
    if args.scenario is None and args.random is None:
        print("vyapaar chaos: error: choose --scenario NAME or --random N (see --list)",
              file=sys.stderr)
        return 2
    try:
        plan = make_plan(seed=args.seed, orders=args.orders, rate=args.rate, skus=args.skus,
                         scenario=args.scenario, random_count=args.random or 0)
    except ValueError as exc:
        print(f"vyapaar chaos: error: {exc}", file=sys.stderr)
        return 2
    config = StackConfig()
    began = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {line}", file=sys.stderr, flush=True)

    what = args.scenario or f"{args.random} random faults"
    progress(f"{len(plan.orders)} orders at {args.rate:g}/s, {what}, seed {args.seed}")
    run = ChaosRun(config, plan, scenario=args.scenario, bound=args.bound, progress=progress,
                   keep_namespace=args.keep)
    try:
        report = asyncio.run(run.execute())
    except StackError as exc:
        print(f"vyapaar chaos: error: {exc}", file=sys.stderr)
        return 3
    path = args.report or config.state_dir / "chaos" / f"{report.namespace}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = report.to_json()
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print_report(report)
    print(f"report: {path}")
    if not args.no_plot:
        from .plot import timeline

        timeline(data, path.with_suffix(".png"))
        print(f"timeline: {path.with_suffix('.png')}")
    return 0 if report.passed else 1


def print_report(report: Report) -> None:
    data = report.to_json()
    print(f"\nchaos run {report.namespace} (seed {report.seed}, "
          f"{report.scenario or 'random faults'})")
    print(f"orders: {data['orders']['created']} created of {data['orders']['planned']}; "
          f"outcomes by kind: {data['outcomes']}")
    if not report.load_played:
        print(f"LOAD NOT PLAYED AS PLANNED: {report.create_failures} creates failed; "
              f"could not {', '.join(report.act_failures) or '-'}")
    money = data["money"]
    print(f"money: {money['captures']} captures ({money['captured']}), "
          f"{money['refunds']} refunds ({money['refunded']})")
    for sku, s in data["stock"].items():
        print(f"stock {sku}: {s['initial']} = {s['available']} available + {s['held']} held "
              f"+ {s['committed']} committed")
    for fault in data["faults"]:
        recovery = fault["recovery_seconds"]
        back = "-" if recovery is None else f"ready {recovery:.1f}s after"
        print(f"fault @{fault['at']:5.1f}s {fault['what']:38} {back}"
              + (f"  NOT PLAYED: {fault['error']}" if fault["error"] else ""))
    print(f"quiescent {report.quiescent_after:.1f}s after the last fault"
          + ("  (TIMED OUT)" if report.timed_out else ""))
    width = max(len(v.name) for v in report.verdicts)
    print(f"\n{'invariant':{width}}  verdict  checked")
    for verdict in report.verdicts:
        print(f"{verdict.name:{width}}  {'held' if verdict.held else 'VIOLATED':7}  "
              f"{verdict.checked}")
        for violation in verdict.violations[:10]:
            print(f"{'':{width}}    - {violation}")
    print(f"\nverdict: {'every invariant held' if report.passed else 'FAILED'}")
