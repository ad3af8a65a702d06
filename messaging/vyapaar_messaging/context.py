"""The message context of the current task: correlation id (the order uid), message id and type,
and the trace id of the message (its envelope's traceparent).

Set by the consumer for each message it handles (:func:`bind_message_context`) and by the
services' HTTP middleware from ``X-Correlation-Id``; read by the JSON log formatter, so
every log line of a handler names the order it is about.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Final

__all__ = [
    "bind_message_context",
    "correlation_id_var",
    "get_correlation_id",
    "message_id_var",
    "message_type_var",
    "trace_id_var",
]

correlation_id_var: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "vyapaar_correlation_id", default=None
)
message_id_var: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "vyapaar_message_id", default=None
)
message_type_var: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "vyapaar_message_type", default=None
)
trace_id_var: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "vyapaar_trace_id", default=None
)
"""The trace id (32 hex) of the message being handled; logged as ``traceId`` when no
OpenTelemetry span is current (tracing off)."""


def get_correlation_id() -> str | None:
    return correlation_id_var.get()


@contextlib.contextmanager
def bind_message_context(
    correlation_id: str | None,
    message_id: str | None = None,
    message_type: str | None = None,
    trace_id: str | None = None,
) -> Iterator[None]:
    """Set the correlation id (and message id/type, trace id) for log records in this
    context."""
    tokens = (
        correlation_id_var.set(correlation_id),
        message_id_var.set(message_id),
        message_type_var.set(message_type),
        trace_id_var.set(trace_id),
    )
    try:
        yield
    finally:
        trace_id_var.reset(tokens[3])
        message_type_var.reset(tokens[2])
        message_id_var.reset(tokens[1])
        correlation_id_var.reset(tokens[0])
