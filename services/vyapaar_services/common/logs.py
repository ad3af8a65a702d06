"""Structured logging: one JSON object per line on stderr.

Fields: ``time`` (RFC 3339 UTC), ``level``, ``service``, ``logger``, ``message``, and when
known ``correlationId`` (the order uid), ``messageId``, ``messageType``, ``traceId`` (the
current span's trace; with tracing off, the trace of the message being handled) and
``spanId`` (the current span, tracing on); ``exception`` with the traceback; plus anything
passed as ``extra={...}``.

The correlation id is carried in a context variable, set by the consumer for each message
(:func:`bind_message_context`) and by the HTTP middleware from ``X-Correlation-Id``.

Env: ``VYAPAAR_LOG_LEVEL`` (default INFO).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

from vyapaar_messaging import tracing
from vyapaar_messaging.context import (
    bind_message_context,
    correlation_id_var,
    get_correlation_id,
    message_id_var,
    message_type_var,
)

__all__ = [
    "JsonFormatter",
    "bind_message_context",
    "configure_logging",
    "correlation_id_var",
    "get_correlation_id",
]

_RESERVED: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (
            ("correlationId", correlation_id_var),
            ("messageId", message_id_var),
            ("messageType", message_type_var),
        ):
            value = var.get()
            if value is not None:
                entry[key] = value
        trace_id, span_id = tracing.log_ids()
        if trace_id is not None:
            entry["traceId"] = trace_id
        if span_id is not None:
            entry["spanId"] = span_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(service: str, level: str | int = "INFO") -> None:
    """Route the root logger to stderr as JSON lines (replacing existing handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Quieten chatty libraries at INFO.
    for noisy in ("aiormq", "aio_pika", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
