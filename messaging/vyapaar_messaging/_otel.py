"""The OpenTelemetry SDK side of :mod:`vyapaar_messaging.tracing`.

Imported only by :func:`vyapaar_messaging.tracing.configure` when tracing is on, so a
process with ``OTEL_EXPORTER_OTLP_ENDPOINT`` unset never loads the SDK, the exporter or the
instrumentations. Not a public API.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from vyapaar_messaging.tracing import root_ids_var

#: health and metrics endpoints: scraped every few seconds, never worth a trace
EXCLUDED_URLS: Final = "healthz,readyz,livez,metrics"
#: the statement asyncpg's pool runs on every release (Connection.reset)
_POOL_RESET: Final = "SELECT pg_advisory_unlock_all"
_WORK_KINDS: Final = frozenset({SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.INTERNAL})
_DROP: Final = SamplingResult(Decision.DROP)


def _statement(attributes: Attributes) -> str:
    if not attributes:
        return ""
    value = attributes.get("db.statement") or attributes.get("db.query.text") or ""
    return value if isinstance(value, str) else ""


class StartsWork(Sampler):
    """Root sampler: a trace starts only with a span that is work (SERVER, CONSUMER or
    INTERNAL). Parentless CLIENT and PRODUCER spans (the outbox relay's polls, a pool's
    reset, kopf's own API calls) are dropped instead of each making a one-span trace."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (kind or SpanKind.INTERNAL) not in _WORK_KINDS:
            return _DROP
        return ALWAYS_ON.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "StartsWork"


class DropsNoise(Sampler):
    """Child sampler (under a sampled parent): everything but the pool's reset statement."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT and _statement(attributes).startswith(_POOL_RESET):
            return _DROP
        return ALWAYS_ON.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return "DropsNoise"


def sampler() -> Sampler:
    return ParentBased(
        root=StartsWork(), remote_parent_sampled=DropsNoise(), local_parent_sampled=DropsNoise()
    )


class OrderIds(RandomIdGenerator):
    """Random ids, except for the one root span started inside
    :func:`vyapaar_messaging.tracing.root_ids`: it gets the ids set there (the SDK asks
    for the trace id, then whether it is random, then the span id; a span with a parent
    never asks for a trace id, so it cannot take the override)."""

    def generate_trace_id(self) -> int:
        cell = root_ids_var.get()
        if cell is not None and cell[2] == 0:
            cell[2] = 1
            return cell[0]
        return super().generate_trace_id()

    def is_trace_id_random(self) -> bool:
        cell = root_ids_var.get()
        return not (cell is not None and cell[2] == 1)

    def generate_span_id(self) -> int:
        cell = root_ids_var.get()
        if cell is not None and cell[2] == 1:
            cell[2] = 2
            return cell[1]
        return super().generate_span_id()


def resource(service: str) -> Resource:
    return Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or service,
            "service.namespace": "vyapaar",
            "service.instance.id": f"{socket.gethostname()}/{os.getpid()}",
        }
    )


def setup(service: str, exporter: SpanExporter | None) -> tuple[TracerProvider, list[Any]]:
    """A provider exporting to ``exporter`` (synchronously; for tests) or, by default, in
    batches over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``; plus the
    instrumentations of aiohttp's server and of asyncpg, bound to that provider."""
    provider = TracerProvider(
        resource=resource(service), sampler=sampler(), id_generator=OrderIds()
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))

    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    os.environ.setdefault("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS", EXCLUDED_URLS)
    instrumentors: list[Any] = [
        AioHttpServerInstrumentor(),
        AsyncPGInstrumentor(),  # type: ignore[no-untyped-call]
    ]
    with warnings.catch_warnings():
        # aiohttp frowns on subclassing web.Application, which is how the instrumentation
        # adds its middleware to every application created from now on
        warnings.simplefilter("ignore", DeprecationWarning)
        for instrumentor in instrumentors:
            instrumentor.instrument(tracer_provider=provider)
    return provider, instrumentors


def teardown(provider: TracerProvider, instrumentors: list[Any]) -> None:
    for instrumentor in reversed(instrumentors):
        instrumentor.uninstrument()
    provider.force_flush()
    provider.shutdown()
