"""``python -m vyapaar_services NAME``: run one service by name (what the services image runs).

One image carries the six services (inventory, payment, shipping, notification, analytics and
the gateway); the name picks one. An unknown name fails at once with the list, exit code 64
(EX_USAGE), before anything connects anywhere. Analytics takes its own commands after its
name: ``python -m vyapaar_services analytics rebuild`` (a one-shot, e.g. a Job's args).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

SERVICES = ("inventory", "payment", "shipping", "notification", "analytics", "gateway")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    name = args[0] if args else ""
    if name not in SERVICES:
        print(f"vyapaar_services: unknown service {name!r}; choose one of: "
              f"{', '.join(SERVICES)}", file=sys.stderr)
        return 64
    if name == "analytics":  # the service, or one of its commands (`analytics rebuild`)
        from vyapaar_services.analytics.__main__ import main as run_analytics

        return run_analytics(args[1:])
    if name == "gateway":  # no database, no broker: its own settings and runner
        from vyapaar_services.gateway.app import main as run_gateway

        run_gateway()
        return 0
    from vyapaar_services.common.service import run_service

    app = importlib.import_module(f"vyapaar_services.{name}.app")
    run_service(app.SERVICE, app.create_app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
