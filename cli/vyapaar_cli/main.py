"""`vyapaar`: the entry point — one parser, the product commands, the plugins' commands.

Every failure a person can cause or meet (a refused connection, a missing queue, a bad
flag) ends in one line on stderr and a non-zero exit code, never a traceback; set
``VYAPAAR_DEBUG=1`` to see the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vyapaar_cli import dlq, order, orders, plugins, top
from vyapaar_cli.errors import CliError
from vyapaar_cli.settings import Settings

__all__ = ["build_parser", "main"]

EPILOG = """examples:
  vyapaar dlq list                 # dead-lettered messages per queue
  vyapaar top                      # the key saga figures, live from Prometheus
  vyapaar order watch NAME         # an order's saga, live, through the gateway
  vyapaar order trace NAME         # its spans in every service, as a tree (Jaeger)
  vyapaar orders pause -n shop -l campaign=diwali    # hold many sagas at once (resume, retry)
  vyapaar COMMAND --help           # the flags and examples of one command

settings come from flags, else VYAPAAR_* environment variables (VYAPAAR_AMQP_URL,
VYAPAAR_PROMETHEUS_URL, VYAPAAR_GATEWAY_URL, VYAPAAR_GATEWAY_TOKEN, VYAPAAR_TRACES_URL,
...); Kubernetes
commands use KUBECONFIG as kubectl does.
"""


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    modules = plugins.load()
    settings = settings or Settings(plugins.environment_defaults(modules))
    parser = argparse.ArgumentParser(
        prog="vyapaar",
        description="Operate Vyapaar Nexus, the Kubernetes-native saga orchestrator.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dlq.add_arguments(commands, settings)
    order.add_arguments(commands, settings)
    orders.add_arguments(commands, settings)
    top.add_arguments(commands, settings)
    plugins.register_all(modules, commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"vyapaar: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one line, not a traceback
        if os.environ.get("VYAPAAR_DEBUG"):
            raise
        print(f"vyapaar: error: {type(exc).__name__}: {exc} (VYAPAAR_DEBUG=1 shows where)",
              file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
