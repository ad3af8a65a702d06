"""W3C traceparent primitives (``00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``).

Re-exported by :mod:`vyapaar_messaging.envelope`; a module of their own so that
:mod:`vyapaar_messaging.tracing` and the envelope can both use them.
"""

from __future__ import annotations

import re
import secrets
from typing import Final

__all__ = [
    "TRACEPARENT_ANNOTATION",
    "TRACEPARENT_RE",
    "new_span_id",
    "new_trace_id",
    "new_traceparent",
]

TRACEPARENT_RE: Final = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
TRACEPARENT_ANNOTATION: Final = "vyapaar.dev/traceparent"
"""Where an Order keeps the trace its creator started (the gateway sets it from the
caller's ``traceparent``), so the saga's messages join that trace."""


def new_trace_id() -> str:
    while True:
        value = secrets.token_hex(16)
        if value != "0" * 32:
            return value


def new_span_id() -> str:
    while True:
        value = secrets.token_hex(8)
        if value != "0" * 16:
            return value


def new_traceparent(trace_id: str | None = None) -> str:
    """A W3C traceparent ``00-<trace id>-<new span id>-01`` (new trace id if not given)."""
    return f"00-{trace_id or new_trace_id()}-{new_span_id()}-01"
