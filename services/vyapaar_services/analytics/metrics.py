"""Metrics of the analytics service (naming as in :mod:`vyapaar_services.common.metrics`).

``reason`` is the event's reason: the saga's vocabulary (``PaymentCaptured``,
``OrderFailed``, ...), never an order's identity; anything that is not such a name is
counted as ``Other``, so a stray publisher cannot grow the series without bound.
"""

from __future__ import annotations

import re
from typing import Final

from prometheus_client import Counter

__all__ = ["EVENTS_APPLIED", "EVENTS_DUPLICATE", "reason_label"]

_REASON_RE: Final = re.compile(r"^[A-Z][A-Za-z]{0,63}$")


def reason_label(reason: str) -> str:
    return reason if _REASON_RE.match(reason) else "Other"


EVENTS_APPLIED: Final = Counter(
    "vyapaar_analytics_events_applied",
    "Order events applied to the read model, by the event's reason.",
    ["reason"],
)
EVENTS_DUPLICATE: Final = Counter(
    "vyapaar_analytics_events_duplicate",
    "Order events not applied because the read model already had them (a redelivery, or "
    "an event the operator published again).",
)
