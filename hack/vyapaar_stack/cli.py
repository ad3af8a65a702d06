"""The development commands of the `vyapaar` command line (a ``vyapaar.cli`` plugin).

vyapaar stack up [--only cluster|infra]   start the local stack (idempotent)
vyapaar stack down                        stop it and leave no processes behind
vyapaar stack status                      what runs, what answers
vyapaar stack env                         export lines for a shell: eval "$(vyapaar stack env)"
vyapaar demo                              the whole system on the local stack, with samples

The product CLI (:mod:`vyapaar_cli`) loads this module through the entry point that the
development distribution (``hack/pyproject.toml``) declares; a runtime install has neither.
While it is installed, the product commands default to the local stack's addresses
(:func:`environment_defaults`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cluster, demo, infra, system
from .config import REPO_ROOT, StackConfig
from .processes import StackError

CRDS_DIR = REPO_ROOT / "crds"


def install_crds(config: StackConfig, kubeconfig: Path | None = None) -> None:
    """Apply every CRD in crds/ (server-side) and wait until they are Established."""
    manifests = sorted(CRDS_DIR.glob("*.yaml"))
    if not manifests:
        return
    args: list[str] = ["apply", "--server-side", "--force-conflicts"]
    for path in manifests:
        args += ["-f", str(path)]
    cluster.kubectl(config, *args, kubeconfig=kubeconfig)
    cluster.kubectl(
        config,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *[a for path in manifests for a in ("-f", str(path))],
        kubeconfig=kubeconfig,
    )


def stack_up(config: StackConfig, only: str | None) -> None:
    steps: list[tuple[str, Callable[[], None]]] = []
    if only in (None, "infra"):
        steps.append(
            ("infrastructure (PostgreSQL, RabbitMQ, Redis, Prometheus)", lambda: infra.up(config))
        )
    if only in (None, "cluster"):
        steps.append(
            ("control plane (etcd, kube-apiserver, controllers, kwok)", lambda: cluster.up(config))
        )
        steps.append(("CRDs", lambda: install_crds(config)))
    for what, step in steps:
        t0 = time.monotonic()
        print(f"starting {what} ...", file=sys.stderr, flush=True)
        step()
        print(f"  ready in {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)


def stack_down(config: StackConfig) -> None:
    system.down(config)
    cluster.down(config)
    infra.down(config)


def stack_status(config: StackConfig) -> int:
    states = {**cluster.status(config), **infra.status(config), **system.status(config)}
    for name, ok in states.items():
        print(f"{name:16} {'up' if ok else 'down'}")
    return 0 if all(states.values()) else 1


def stack_env(config: StackConfig) -> None:
    for key, value in config.env().items():
        print(f"export {key}={value}")


def run_demo(config: StackConfig) -> int:
    """Bring up the whole system, run the sample orders, and show where to look."""
    stack_up(config, None)
    print("starting the services and the operator, then the sample orders ...",
          file=sys.stderr, flush=True)
    all_as_expected = demo.main(config)
    print()
    print("The local stack is up. Use it from a shell with:")
    print('  eval "$(.venv/bin/vyapaar stack env)"')
    print(f"  kubectl is at {config.cache_dir / 'bin' / 'kubectl'}")
    print(
        f"Prometheus: {config.prometheus_url}   "
        f"RabbitMQ management: {config.rabbitmq_management_url} (guest/guest)"
    )
    print(f"Logs of every process: {config.state_dir / 'run'}/")
    print("Key saga figures, live from Prometheus: .venv/bin/vyapaar top")
    print("Stop everything: make down")
    return 0 if all_as_expected else 1


STACK_EXAMPLES = """examples:
  vyapaar stack up                  # control plane + infrastructure, idempotent
  vyapaar stack up --only infra     # PostgreSQL, RabbitMQ, Redis, Prometheus only
  eval "$(vyapaar stack env)"       # KUBECONFIG and VYAPAAR_*_URL for this shell
  vyapaar stack down                # stop everything; no process is left behind
"""


def register(commands: Any) -> None:
    """Add ``stack`` and ``demo`` to the `vyapaar` command line."""
    stack = commands.add_parser(
        "stack", help="the local development stack (no cluster, no Docker)",
        epilog=STACK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    stack.set_defaults(func=run_stack)
    stack_cmds = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stack_cmds.add_parser("up", help="start the local stack",
                               epilog="example: vyapaar stack up --only cluster")
    up.add_argument("--only", choices=["cluster", "infra"], help="start only one half")
    stack_cmds.add_parser("down", help="stop the local stack", epilog="example: vyapaar stack down")
    stack_cmds.add_parser("status", help="show what runs", epilog="example: vyapaar stack status")
    stack_cmds.add_parser("env", help="print the environment to use the stack",
                          epilog='example: eval "$(vyapaar stack env)"')

    demo_cmd = commands.add_parser(
        "demo", help="bring up the whole system on the local stack and run the sample orders",
        epilog="example: vyapaar demo   # then: vyapaar top")
    demo_cmd.set_defaults(func=lambda _args: _guarded(lambda: run_demo(StackConfig())))


def environment_defaults() -> dict[str, str]:
    """The local stack's addresses, for settings the environment leaves unset."""
    return {key: value for key, value in StackConfig().env().items()
            if key.startswith("VYAPAAR_")}


def run_stack(args: argparse.Namespace) -> int:
    config = StackConfig()

    def act() -> int:
        if args.action == "up":
            stack_up(config, args.only)
        elif args.action == "down":
            stack_down(config)
        elif args.action == "status":
            return stack_status(config)
        elif args.action == "env":
            stack_env(config)
        return 0

    return _guarded(act)


def _guarded(action: Callable[[], int]) -> int:
    try:
        return action()
    except StackError as exc:
        print(f"vyapaar: error: {exc}", file=sys.stderr)
        return 1
