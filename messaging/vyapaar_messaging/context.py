"""The message context of the current task: correlation id (the order uid), message id and type.

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

def get_correlation_id() -> str | None:
    return correlation_id_var.get()


@contextlib.contextmanager
def bind_message_context(
    correlation_id: str | None, message_id: str | None = None, message_type: str | None = None
) -> Iterator[None]:
    """Set the correlation id (and message id/type) for log records in this context."""
    tokens = (
        correlation_id_var.set(correlation_id),
        message_id_var.set(message_id),
        message_type_var.set(message_type),
    )
    try:
        yield
    finally:
        message_type_var.reset(tokens[2])
        message_id_var.reset(tokens[1])
        correlation_id_var.reset(tokens[0])
