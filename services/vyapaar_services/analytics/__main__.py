"""``python -m vyapaar_services.analytics`` — run the analytics service;
``python -m vyapaar_services.analytics rebuild [--idle-seconds N]`` — rebuild its read model
from the event log (see :mod:`vyapaar_services.analytics.rebuild`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vyapaar_services.analytics import rebuild
from vyapaar_services.analytics.app import SERVICE, create_app
from vyapaar_services.common.service import run_service


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vyapaar_services.analytics",
        description="The analytics service (no command), or a rebuild of its read model.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{rebuild}")
    rebuild.add_arguments(commands.add_parser(
        "rebuild", help="rebuild the read model from the event log",
        description=(
            "Empty the read model and replay the event log (a RabbitMQ stream) from its "
            "first event, until no event came for --idle-seconds. Settings come from the "
            "service's VYAPAAR_* environment; a running service may stay up meanwhile."
        ),
    ))
    args = parser.parse_args(argv)
    if args.command == "rebuild":
        return rebuild.main(args.idle_seconds)
    run_service(SERVICE, create_app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
