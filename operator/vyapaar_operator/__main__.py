"""`python -m vyapaar_operator`: run the operator (settings: vyapaar_operator.settings)."""

from __future__ import annotations

import kopf

from vyapaar_operator import handlers  # noqa: F401  (registers the handlers)
from vyapaar_operator.settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=False)
    liveness = (
        f"http://{settings.host}:{settings.health_port}/healthz" if settings.health_port else None
    )
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )


if __name__ == "__main__":
    main()
