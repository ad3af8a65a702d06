"""`python -m vyapaar_operator`: run the operator (settings: vyapaar_operator.settings).

Tracing is on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (:mod:`vyapaar_messaging.tracing`);
either way each log line names the order it is about (``correlationId``) and its trace
(``traceId``, and ``spanId`` when a span is current).
"""

from __future__ import annotations

import logging

import kopf
from vyapaar_messaging import tracing

from vyapaar_operator import handlers  # noqa: F401  (registers the handlers)
from vyapaar_operator.settings import OperatorSettings


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=False)
    for handler in logging.getLogger().handlers:  # kopf's JSON handler: records propagate
        handler.addFilter(tracing.TraceLogFilter())
    tracing.configure("operator")  # before kopf starts its liveness endpoint (aiohttp)
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
