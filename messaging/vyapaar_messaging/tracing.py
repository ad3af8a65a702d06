"""Distributed tracing (OpenTelemetry): one trace per order, across the gateway, the
operator and the four services.

**Off unless** ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set. Off, :func:`configure` returns False without importing the SDK, every helper here
returns a shared no-op context manager, and envelopes get their traceparents exactly as
without tracing (``new_traceparent(trace_id)``). On, the process exports spans in batches
over OTLP/HTTP (protobuf) to that endpoint; the standard ``OTEL_*`` variables apply
(``OTEL_SERVICE_NAME`` overrides the name given to :func:`configure`,
``OTEL_BSP_SCHEDULE_DELAY`` / ``OTEL_BSP_MAX_QUEUE_SIZE`` tune the batching).

The envelope's ``traceparent`` is the single source of truth between processes (the AMQP
header is only its mirror). Spans, by name:

- ``POST /api/v1/orders`` (SERVER, gateway; aiohttp-server instrumentation): the Order's
  annotation ``vyapaar.dev/traceparent`` names this span;
- ``saga <Event>`` (INTERNAL, operator): one per applied saga event; the first decision of
  an Order created without that annotation is the trace's root, with the ids of
  :func:`order_root_traceparent` (trace id = the Order UID's hex, span id derived from it);
- ``send <Type>`` (PRODUCER, :func:`producer_span`): the sender builds the envelope inside
  it, so the envelope's traceparent is this span;
- ``process <Type>`` (CONSUMER, :func:`consumer_span`): the consumer's handling of one
  delivery, parent = the envelope's traceparent, including its ack, retry or dead-letter
  republish; a reply built inside it carries it as parent;
- ``publish <Type>`` (PRODUCER): the outbox relay's publish of a stored envelope, a child
  of that envelope's span (the envelope is not changed);
- SQL (CLIENT; asyncpg instrumentation, named by the statement's first word) and the
  apiserver calls of our own HTTP sessions (CLIENT; :func:`aiohttp_trace_configs`).

Sampling: a trace starts only with SERVER, CONSUMER or INTERNAL spans (parentless SQL or
publishes are dropped); below a sampled parent everything is kept except asyncpg's pool
reset statement. Common attributes: ``vyapaar.order.uid``, ``vyapaar.order``
(namespace/name), ``vyapaar.step``, ``vyapaar.attempt``, ``vyapaar.outcome``,
``messaging.system=rabbitmq``, ``messaging.destination.name``, ``messaging.message.id``,
``messaging.message.conversation_id`` (the Order UID).

Logs: :class:`TraceLogFilter` (and the services' JSON formatter) add ``traceId`` and
``spanId`` (current span; off: ``traceId`` of the message being handled) and
``correlationId`` (the Order UID).

API::

    ENABLED                                   # True once configure() turned tracing on
    endpoint_configured() -> bool             # an OTLP endpoint is set in the environment
    configure(service, *, exporter=None) -> bool
    shutdown() -> None
    tracer() -> opentelemetry.trace.Tracer
    context_from(traceparent) -> ContextManager[None]      # make it the current parent
    current_context() -> Context | None                    # to carry across tasks
    current_traceparent(fallback_trace_id=None, *, same_trace=False) -> str
    order_root_traceparent(meta) -> str
    root_ids(trace_id, span_id) -> ContextManager[None]
    span(name, *, context=None, kind="internal", attributes=None, start_time=None)
    producer_span(message_type, *, context=None, name=None, destination=None,
                  correlation_id=None, subject=None, attributes=None)
    consumer_span(envelope, queue, attempt)
    set_outcome(span, outcome, error=None)
    add_event(name, attributes=None)                       # on the current span
    TraceLogFilter
    log_ids() -> (trace id | None, span id | None)         # what a log line names
    aiohttp_trace_configs() -> list[aiohttp.TraceConfig]

The span helpers yield the span (``None`` when off), so callers write
``if span is not None: span.set_attribute(...)``. A ``context`` argument is a traceparent
string, a :class:`opentelemetry.context.Context` (from :func:`current_context`), or None
for the current context.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from vyapaar_messaging.context import correlation_id_var, trace_id_var
from vyapaar_messaging.traceparent import TRACEPARENT_ANNOTATION, TRACEPARENT_RE, new_traceparent

if TYPE_CHECKING:
    import aiohttp
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from vyapaar_messaging.envelope import Envelope

__all__ = [
    "ENABLED",
    "TraceLogFilter",
    "add_event",
    "aiohttp_trace_configs",
    "configure",
    "consumer_span",
    "context_from",
    "current_context",
    "current_traceparent",
    "endpoint_configured",
    "log_ids",
    "order_root_traceparent",
    "producer_span",
    "root_ids",
    "set_outcome",
    "shutdown",
    "span",
    "tracer",
]

log = logging.getLogger(__name__)

ENABLED: bool = False
"""True once :func:`configure` turned tracing on (read it as ``tracing.ENABLED``, not
``from ... import ENABLED``, which copies the value at import time)."""

TRACER_NAME: Final = "vyapaar"
_NULL: Final = contextlib.nullcontext()
_ENDPOINT_VARS: Final = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

#: the ids :func:`root_ids` sets for the next parentless span: [trace id, span id, state]
root_ids_var: Final[contextvars.ContextVar[list[int] | None]] = contextvars.ContextVar(
    "vyapaar_root_ids", default=None
)

_provider: TracerProvider | None = None
_instrumentors: list[Any] = []
_tracer: Tracer | None = None
_atexit_registered = False

SpanKindName = Literal["internal", "server", "client", "producer", "consumer"]


# -- setup ------------------------------------------------------------------------------


def endpoint_configured() -> bool:
    """True when an OTLP endpoint is set, i.e. :func:`configure` would turn tracing on."""
    return any(os.environ.get(name, "").strip() for name in _ENDPOINT_VARS)


def configure(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on for this process if an OTLP endpoint is set (or ``exporter`` is
    given: tests pass an ``InMemorySpanExporter``, exported synchronously). Returns whether
    tracing is on. Off, nothing of OpenTelemetry is imported.

    Call it before the aiohttp application is created: it instruments aiohttp's server
    (``web.Application`` gets a tracing middleware; health and metrics URLs excluded) and
    asyncpg. Idempotent.
    """
    global ENABLED, _provider, _instrumentors, _tracer, _atexit_registered
    if ENABLED:
        return True
    if exporter is None and not endpoint_configured():
        return False
    from vyapaar_messaging import _otel

    _provider, _instrumentors = _otel.setup(service, exporter)
    _tracer = _provider.get_tracer(TRACER_NAME)
    ENABLED = True
    if not _atexit_registered:
        atexit.register(shutdown)
        _atexit_registered = True
    log.info("tracing on (service %s)", service)
    return True


def shutdown() -> None:
    """Flush the spans not yet exported and turn tracing off again (removing the
    instrumentations). Call it on process cleanup; safe to call when off or twice."""
    global ENABLED, _provider, _instrumentors, _tracer
    if not ENABLED or _provider is None:
        return
    from vyapaar_messaging import _otel

    provider, instrumentors = _provider, _instrumentors
    ENABLED, _provider, _instrumentors, _tracer = False, None, [], None
    try:
        _otel.teardown(provider, instrumentors)
    except Exception:
        log.warning("tracing shutdown failed", exc_info=True)


def tracer() -> Tracer:
    """Our tracer (a no-op tracer of the API when off: prefer the helpers below, which
    cost nothing when off)."""
    if _tracer is not None:
        return _tracer
    from opentelemetry import trace

    return trace.NoOpTracer()


# -- context ----------------------------------------------------------------------------


def _parse(traceparent: str | None) -> tuple[str, str, str] | None:
    match = TRACEPARENT_RE.match((traceparent or "").strip())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), match.group(3)


def _remote_context(traceparent: str | None) -> Context | None:
    """A context whose current span is the (remote) span named by ``traceparent``."""
    parsed = _parse(traceparent)
    if parsed is None:
        return None
    from opentelemetry import trace

    span_context = trace.SpanContext(
        trace_id=int(parsed[0], 16),
        span_id=int(parsed[1], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(parsed[2], 16) & 0xFF),
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


def _parent(context: Context | str | None) -> Context | None:
    if isinstance(context, str):
        return _remote_context(context)
    return context


@contextlib.contextmanager
def _attached(context: Context) -> Iterator[None]:
    from opentelemetry import context as otel_context

    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def context_from(traceparent: str | None) -> contextlib.AbstractContextManager[None]:
    """Make the span named by ``traceparent`` the current parent for the block (no-op when
    off or when ``traceparent`` is not a valid W3C traceparent)."""
    if not ENABLED:
        return _NULL
    context = _remote_context(traceparent)
    return _NULL if context is None else _attached(context)


def current_context() -> Context | None:
    """The current OpenTelemetry context (None when off), to use as ``context=`` later,
    e.g. from another task."""
    if not ENABLED:
        return None
    from opentelemetry import context as otel_context

    return otel_context.get_current()


def current_traceparent(fallback_trace_id: str | None = None, *, same_trace: bool = False) -> str:
    """The traceparent naming the current span when tracing is on and a span is current;
    else, as without tracing, ``new_traceparent(fallback_trace_id)`` (a new span id in that
    trace, or a new trace). With ``same_trace``, the current span is used only if it is in
    the trace ``fallback_trace_id`` (so a reply never leaves its request's trace)."""
    if ENABLED:
        from opentelemetry import trace

        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid and (
            not same_trace
            or fallback_trace_id is None
            or f"{span_context.trace_id:032x}" == fallback_trace_id
        ):
            return (
                f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
                f"-{int(span_context.trace_flags):02x}"
            )
    return new_traceparent(fallback_trace_id)


def order_root_traceparent(meta: Mapping[str, Any]) -> str:
    """The traceparent an Order's saga hangs from: the annotation
    ``vyapaar.dev/traceparent`` (its creator's span, e.g. the gateway's request) when valid;
    else the Order's own root, ``00-<UID hex>-<sha256(UID)[:16]>-01``, which any process
    can compute from the UID alone (the operator starts that span with :func:`root_ids`)."""
    annotated = (meta.get("annotations") or {}).get(TRACEPARENT_ANNOTATION)
    if isinstance(annotated, str) and _parse(annotated) is not None:
        return annotated.strip()
    uid = str(meta["uid"])
    trace_id = uid.replace("-", "").lower()
    span_id = hashlib.sha256(uid.encode()).hexdigest()[:16]
    if span_id == "0" * 16:  # pragma: no cover - one in 2**64
        span_id = "0" * 15 + "1"
    return f"00-{trace_id}-{span_id}-01"


@contextlib.contextmanager
def root_ids(trace_id: str, span_id: str) -> Iterator[None]:
    """The next span started **without a parent** in this block gets these ids (32 and 16
    hex), e.g. ``root_ids(*order_root_traceparent(meta).split("-")[1:3])`` around the
    operator's first ``saga`` span of an Order that has no annotation. Start that span with
    ``context=`` an empty ``opentelemetry.context.Context()`` so it has no parent. Spans
    with a parent are not affected. Harmless when off."""
    token = root_ids_var.set([int(trace_id, 16), int(span_id, 16), 0])
    try:
        yield
    finally:
        root_ids_var.reset(token)


# -- spans ------------------------------------------------------------------------------


def _kind(name: SpanKindName) -> Any:
    from opentelemetry.trace import SpanKind

    return {
        "internal": SpanKind.INTERNAL,
        "server": SpanKind.SERVER,
        "client": SpanKind.CLIENT,
        "producer": SpanKind.PRODUCER,
        "consumer": SpanKind.CONSUMER,
    }[name]


@contextlib.contextmanager
def _span(
    name: str,
    *,
    context: Context | str | None,
    kind: SpanKindName,
    attributes: Mapping[str, Any] | None,
    start_time: int | None = None,
) -> Iterator[Span]:
    assert _tracer is not None
    with _tracer.start_as_current_span(
        name,
        context=_parent(context),
        kind=_kind(kind),
        attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        start_time=start_time,
    ) as current:
        yield current


def span(
    name: str,
    *,
    context: Context | str | None = None,
    kind: SpanKindName = "internal",
    attributes: Mapping[str, Any] | None = None,
    start_time: int | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span made current for the block (``start_time`` in ns since the epoch, e.g.
    ``time.time_ns()`` noted earlier). Yields None when off. An exception escaping the
    block is recorded and sets status ERROR."""
    if not ENABLED:
        return _NULL
    return _span(name, context=context, kind=kind, attributes=attributes, start_time=start_time)


def producer_span(
    message_type: str,
    *,
    context: Context | str | None = None,
    name: str | None = None,
    destination: str | None = None,
    correlation_id: str | None = None,
    subject: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """PRODUCER span ``send <message_type>`` (or ``name``). Build the envelope inside it
    with ``traceparent=current_traceparent(...)`` so the envelope names this span, then
    publish. ``destination`` is the exchange or queue, ``correlation_id`` the Order UID,
    ``subject`` namespace/name. Yields None when off."""
    if not ENABLED:
        return _NULL
    attrs: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "send",
        "messaging.destination.name": destination,
        "messaging.message.conversation_id": correlation_id,
        "vyapaar.order.uid": correlation_id,
        "vyapaar.order": subject or None,
        "vyapaar.message.type": message_type,
    }
    attrs.update(attributes or {})
    return _span(name or f"send {message_type}", context=context, kind="producer", attributes=attrs)


def consumer_span(
    envelope: Envelope, queue: str, attempt: int
) -> contextlib.AbstractContextManager[Span | None]:
    """CONSUMER span ``process <Type>`` around the handling of one delivery of
    ``envelope`` from ``queue`` (``attempt`` is 1-based); parent = the envelope's
    traceparent. Yields None when off; see :func:`set_outcome`."""
    if not ENABLED:
        return _NULL
    return _span(
        f"process {envelope.type}",
        context=envelope.traceparent,
        kind="consumer",
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": envelope.id,
            "messaging.message.conversation_id": envelope.correlation_id,
            "vyapaar.order.uid": envelope.correlation_id,
            "vyapaar.order": envelope.subject or None,
            "vyapaar.message.type": envelope.type,
            "vyapaar.step": envelope.step or None,
            "vyapaar.attempt": attempt,
        },
    )


def set_outcome(span: Span | None, outcome: str, error: str | None = None) -> None:
    """Record ``vyapaar.outcome`` (ok | ignored | retry | dead_lettered | ...) on ``span``;
    with ``error``, also status ERROR with that description. No-op for None."""
    if span is None or not span.is_recording():
        return
    span.set_attribute("vyapaar.outcome", outcome)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, error[:500]))


def add_event(name: str, attributes: Mapping[str, Any] | None = None) -> None:
    """An event on the current span, if tracing is on and it records."""
    if not ENABLED:
        return
    from opentelemetry import trace

    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(name, {k: v for k, v in (attributes or {}).items() if v is not None})


# -- logs -------------------------------------------------------------------------------


def log_ids() -> tuple[str | None, str | None]:
    """(trace id, span id) for a log line: the current span's when tracing is on and one
    is current, else the trace id of the message being handled (and no span id)."""
    if ENABLED:
        from opentelemetry import trace

        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"
    return trace_id_var.get(), None


class TraceLogFilter(logging.Filter):
    """Adds ``traceId``, ``spanId`` and ``correlationId`` (the Order UID) to each record
    that does not carry them yet (attributes left out when unknown). Install it on a
    **handler** (records propagate past logger filters), e.g. kopf's JSON handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id, span_id = log_ids()
        if trace_id is not None and not hasattr(record, "traceId"):
            record.traceId = trace_id
        if span_id is not None and not hasattr(record, "spanId"):
            record.spanId = span_id
        correlation_id = correlation_id_var.get()
        if correlation_id is not None and not hasattr(record, "correlationId"):
            record.correlationId = correlation_id
        return True


# -- HTTP clients -----------------------------------------------------------------------


def _client_span_name(method: str, path: str) -> str:
    """``PUT orders/status`` for ``/apis/vyapaar.dev/v1/namespaces/ns/orders/x/status``."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts:
        at = parts.index("namespaces")
        rest = parts[at + 2 :] or ["namespaces"]
        resource = rest[0]
        sub = rest[2] if len(rest) > 2 else ""
        return f"{method} {resource}/{sub}" if sub else f"{method} {resource}"
    return f"{method} {path or '/'}"


def aiohttp_trace_configs() -> list[aiohttp.TraceConfig]:
    """``trace_configs`` for an ``aiohttp.ClientSession`` we create (e.g. the apiserver
    client): a CLIENT span per request under the current span, named like
    ``PUT orders/status``. Empty when off. Do not use it on sessions of libraries (kopf)."""
    if not ENABLED:
        return []
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    def request_hook(span: Span, params: aiohttp.TraceRequestStartParams) -> None:
        if span.is_recording():
            span.update_name(_client_span_name(params.method, params.url.path))

    return [create_trace_config(request_hook=request_hook, tracer_provider=_provider)]
