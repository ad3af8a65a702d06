"""The messaging metrics: what every publisher and consumer counts, operator and services alike.

Naming: prefix ``vyapaar_``, base units (seconds), ``_total`` for counters (the client adds
the suffix), no per-order labels. Labels are bounded: ``queue`` and ``exchange`` are topology
names, ``type`` is a contract message type (or ``unknown``).

Series whose labels are known when a consumer starts are created at zero by
:func:`init_consumer`, so the first event is visible to ``rate()`` and dashboards show 0
rather than "No data". ``*_created`` series are disabled: Prometheus 2 ignores them, and
they add one series to every counter and histogram child.
The catalogue with types and labels is in docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from vyapaar_messaging import contracts

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = [
    "DLQ_MESSAGES",
    "LATENCY_BUCKETS",
    "MESSAGES_CONSUMED",
    "MESSAGES_DEAD_LETTERED",
    "MESSAGES_PUBLISHED",
    "MESSAGES_REDELIVERED",
    "MESSAGES_RETRIED",
    "MESSAGE_HANDLING_DURATION",
    "init_consumer",
    "message_type_label",
]

#: seconds; shared with the services' HTTP histograms so dashboards compare like with like
LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def message_type_label(message_type: str | None) -> str:
    """A bounded ``type`` label: the contract type, or ``unknown``."""
    if message_type and message_type in contracts.MESSAGE_MODELS:
        return message_type
    return "unknown"


MESSAGES_PUBLISHED: Final = Counter(
    "vyapaar_messages_published",
    "Messages published with publisher confirms, by exchange, type and outcome (confirmed|failed).",
    ["exchange", "type", "outcome"],
)
MESSAGES_CONSUMED: Final = Counter(
    "vyapaar_messages_consumed",
    "Messages consumed, by queue, type and outcome (ok|ignored|retry|dead_lettered).",
    ["queue", "type", "outcome"],
)
MESSAGES_REDELIVERED: Final = Counter(
    "vyapaar_messages_redelivered",
    "Messages the broker delivered again (redelivered flag set: a consumer died or nacked "
    "before acking), by queue and type.",
    ["queue", "type"],
)
MESSAGES_RETRIED: Final = Counter(
    "vyapaar_messages_retried",
    "Messages sent to a delay queue for a later attempt, by queue, type and delay tier.",
    ["queue", "type", "tier"],
)
MESSAGES_DEAD_LETTERED: Final = Counter(
    "vyapaar_messages_dead_lettered",
    "Messages moved to a dead-letter queue, by queue, type and reason "
    "(poison|permanent|exhausted).",
    ["queue", "type", "reason"],
)
MESSAGE_HANDLING_DURATION: Final = Histogram(
    "vyapaar_message_handling_duration_seconds",
    "Time spent in the message handler, by queue and type.",
    ["queue", "type"],
    buckets=LATENCY_BUCKETS,
)
DLQ_MESSAGES: Final = Gauge(
    "vyapaar_dlq_messages",
    "Messages waiting in a dead-letter queue (sampled by its consumer).",
    ["queue"],
)


def init_consumer(queue: str, message_types: Iterable[str]) -> None:
    """Create, at zero, the series of a consumer of ``queue`` handling ``message_types``."""
    for message_type in message_types:
        MESSAGES_REDELIVERED.labels(queue, message_type_label(message_type))
