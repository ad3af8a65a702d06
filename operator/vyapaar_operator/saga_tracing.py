"""The operator's spans: one ``saga <Event>`` span per event the engine applied.

Used by :class:`vyapaar_operator.engine.SagaEngine` only while tracing is on
(:data:`vyapaar_messaging.tracing.ENABLED`); off, :func:`attempt` and :func:`untraced` are
shared no-op context managers and nothing here imports OpenTelemetry.

The shape, per Order (one trace: the one its creator started -- the annotation
``vyapaar.dev/traceparent`` -- else one whose id is the Order's UID without dashes):

- a span is made only once the status write holding the decision succeeded, so a 409
  Conflict (the attempt is decided again) leaves no span; the write itself, and any call
  to the apiserver before it, run outside every trace and are recorded afterwards, as
  ``PUT orders/status`` / ``PATCH orders`` children of the first event's span;
- ``saga <Event>`` (INTERNAL; a Reply is named by its message type, e.g.
  ``saga StockReserved``) starts when the event was decided, and its parent is the context
  the event arrived with -- the ``process <Reply>`` span of a reply, the order root for a
  watch event -- when that context is in the Order's trace, else the order root
  (:func:`vyapaar_messaging.tracing.order_root_traceparent`: deadline ticks, a saga woken
  by another Order's breaker);
- the first decision that leaves Pending of an Order without the annotation **is** the
  root: no parent, and the ids of the order root (``root_ids``), so every span parented to
  the order root before or after hangs under it;
- the commands of an event are published inside its span (``send <Type>``, PRODUCER, made
  by the bus); the domain events, the Kubernetes Events and the rest of the batch's work
  run inside the first event's span.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from vyapaar_messaging import tracing
from vyapaar_messaging.context import correlation_id_var, trace_id_var
from vyapaar_messaging.envelope import TRACEPARENT_ANNOTATION

from vyapaar_operator import saga
from vyapaar_operator.bus import order_trace_id

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span

__all__ = ["Attempt", "attempt", "event_name", "for_command", "logged_as", "untraced"]

_NULL: Final = contextlib.nullcontext()

Observed = tuple[saga.SagaState, saga.Event, saga.Decision]


def event_name(event: saga.Event) -> str:
    """``StockReserved`` for a Reply (its message type), else the event's class: ``Tick``."""
    if isinstance(event, saga.Reply):
        return event.message_type
    return type(event).__name__


def _event_attributes(event: saga.Event) -> dict[str, Any]:
    attributes: dict[str, Any] = {"vyapaar.event": type(event).__name__}
    match event:
        case saga.Reply():
            attributes["messaging.message.id"] = event.message_id
            attributes["vyapaar.message.type"] = event.message_type
        case saga.NotSent() | saga.Held():
            attributes["vyapaar.step"] = event.step
            attributes["vyapaar.attempt"] = event.attempt
        case saga.BreakerClosed():
            attributes["vyapaar.service"] = event.service
        case saga.Queued():
            attributes["vyapaar.in_flight_limit"] = event.limit
    return attributes


@dataclass
class _Call:
    name: str
    start: int
    end: int


@dataclass
class Attempt:
    """One attempt at applying a batch of events (tracing on): what was decided when, and,
    once the status write succeeded (:meth:`open`), the spans."""

    started: list[int] = field(default_factory=list)
    """When each observed event was decided (ns since the epoch)."""
    sources: list[int] = field(default_factory=list)
    """Which maker (and so which arrival context) each observed event came from."""
    owners: list[int] = field(default_factory=list)
    """Which observed event each command comes from, in the order of the commands."""
    calls: list[_Call] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    _token: Token[Context] | None = None

    def decided(self, source: int, started: int, decision: saga.Decision) -> None:
        self.owners.extend([len(self.started)] * len(decision.commands))
        self.started.append(started)
        self.sources.append(source)

    def open(self, obj: Mapping[str, Any], observed: Sequence[Observed],
             contexts: Sequence[Context | None]) -> None:
        """The status write succeeded: make the spans, and the first event's span (else
        the batch's parent) current for the rest of the attempt."""
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        meta = obj["metadata"]
        root = tracing.order_root_traceparent(meta)
        _, trace_hex, span_hex, flags = root.split("-")
        annotated = (meta.get("annotations") or {}).get(TRACEPARENT_ANNOTATION)
        own_root = not (isinstance(annotated, str) and annotated.strip() == root)
        root_context = trace.set_span_in_context(trace.NonRecordingSpan(trace.SpanContext(
            trace_id=int(trace_hex, 16), span_id=int(span_hex, 16), is_remote=True,
            trace_flags=trace.TraceFlags(int(flags, 16)))))

        def parent(source: int) -> Context:
            context = contexts[source] if source < len(contexts) else None
            if context is not None:
                current = trace.get_current_span(context).get_span_context()
                if current.is_valid and current.trace_id == int(trace_hex, 16):
                    return context
            return root_context

        tracer = tracing.tracer()
        order = {"vyapaar.order.uid": meta["uid"],
                 "vyapaar.order": f"{meta['namespace']}/{meta['name']}"}
        first_call = min((call.start for call in self.calls), default=None)
        for index, (before, event, decision) in enumerate(observed):
            start = self.started[index]
            if index == 0 and first_call is not None:
                start = min(start, first_call)
            attributes = {**order, **_event_attributes(event),
                          "vyapaar.phase": decision.state.phase.value,
                          "vyapaar.changed": decision.state != before}
            if decision.state.phase is not before.phase:
                attributes["vyapaar.phase.before"] = before.phase.value
            if decision.transitions:
                attributes["vyapaar.transitions"] = [t.reason for t in decision.transitions]
            name = f"saga {event_name(event)}"
            if (own_root and before.phase is saga.Phase.PENDING
                    and decision.state.phase is not saga.Phase.PENDING):
                own_root = False  # the first decision leaving Pending: the order's root
                with tracing.root_ids(trace_hex, span_hex):
                    span = tracer.start_span(name, context=otel_context.Context(),
                                             attributes=attributes, start_time=start)
            else:
                span = tracer.start_span(name, context=parent(self.sources[index]),
                                         attributes=attributes, start_time=start)
            self.spans.append(span)
        current = (trace.set_span_in_context(self.spans[0]) if self.spans
                   else parent(0))
        for call in self.calls:
            method, _, resource = call.name.partition(" ")
            tracer.start_span(call.name, context=current, kind=trace.SpanKind.CLIENT,
                              start_time=call.start,
                              attributes={**order, "http.request.method": method,
                                          "k8s.resource": resource}).end(end_time=call.end)
        self._token = otel_context.attach(current)

    def command(self, index: int) -> contextlib.AbstractContextManager[Any]:
        """The span of the event that made command ``index`` current (to publish it)."""
        if not self.spans or index >= len(self.owners):
            return _NULL
        from opentelemetry import trace

        return trace.use_span(self.spans[self.owners[index]], end_on_exit=False,
                              record_exception=False, set_status_on_exception=False)

    def close(self, error: BaseException | None) -> None:
        if self._token is None:
            return  # the write never happened: no span
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        otel_context.detach(self._token)
        self._token = None
        if error is not None and self.spans:
            self.spans[0].record_exception(error)
            self.spans[0].set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        for span in self.spans:
            span.end()


@contextlib.contextmanager
def _attempt() -> Iterator[Attempt]:
    current = Attempt()
    try:
        yield current
    except BaseException as exc:
        current.close(exc)
        raise
    current.close(None)


def attempt() -> contextlib.AbstractContextManager[Attempt | None]:
    """Around one attempt at a batch: yields an :class:`Attempt` when tracing is on (else
    None); its spans end when the block does."""
    if not tracing.ENABLED:
        return _NULL
    return _attempt()


@contextlib.contextmanager
def _untraced(current: Attempt, name: str) -> Iterator[None]:
    from opentelemetry import context as otel_context

    token = otel_context.attach(otel_context.Context())  # no parent: the sampler drops it
    start = time.time_ns()
    try:
        yield
    finally:
        otel_context.detach(token)
    current.calls.append(_Call(name, start, time.time_ns()))


def untraced(current: Attempt | None, name: str) -> contextlib.AbstractContextManager[None]:
    """Run an apiserver call of the attempt outside every trace; if it succeeds, it is
    recorded as the span ``name`` once the attempt's spans exist."""
    if current is None:
        return _NULL
    return _untraced(current, name)


def for_command(current: Attempt | None, index: int) -> contextlib.AbstractContextManager[Any]:
    """Publish command ``index`` inside the span of the event that made it (no-op off)."""
    return _NULL if current is None else current.command(index)


@contextlib.contextmanager
def logged_as(obj: Mapping[str, Any]) -> Iterator[None]:
    """Log records in the block name the Order ``obj`` (``correlationId``: its UID) and its
    trace (``traceId``, used when no span is current: tracing off), whatever the path that
    brought the event (a reply binds them too; a watch event or a deadline does not)."""
    meta = obj["metadata"]
    tokens = correlation_id_var.set(meta["uid"]), trace_id_var.set(order_trace_id(meta))
    try:
        yield
    finally:
        trace_id_var.reset(tokens[1])
        correlation_id_var.reset(tokens[0])
