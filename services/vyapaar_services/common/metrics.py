"""Every Prometheus metric of the services and the messaging library, in one place.

Naming: prefix ``vyapaar_``, base units (seconds), ``_total`` for counters (the client adds
the suffix), no per-order labels. Labels are bounded: ``queue`` and ``exchange`` are topology
names, ``type`` is a contract message type (or ``unknown``), ``route`` is the aiohttp route
template (or ``unmatched``).

Series whose labels are known when a component starts are created at zero by
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

from vyapaar_services import contracts

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = [
    "DB_POOL_IN_USE",
    "DB_POOL_SIZE",
    "DLQ_MESSAGES",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "IDEMPOTENT_REPLAYS",
    "INBOX_DUPLICATES",
    "MESSAGES_CONSUMED",
    "MESSAGES_DEAD_LETTERED",
    "MESSAGES_PUBLISHED",
    "MESSAGES_REDELIVERED",
    "MESSAGES_RETRIED",
    "MESSAGE_HANDLING_DURATION",
    "OUTBOX_OLDEST_UNSENT_AGE",
    "OUTBOX_PENDING",
    "OUTBOX_PUBLISHED",
    "PROCESSOR_CALLS",
    "init_consumer",
    "message_type_label",
]

_LATENCY_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def message_type_label(message_type: str | None) -> str:
    """A bounded ``type`` label: the contract type, or ``unknown``."""
    if message_type and message_type in contracts.MESSAGE_MODELS:
        return message_type
    return "unknown"


# HTTP (RED) ---------------------------------------------------------------------------------
HTTP_REQUESTS: Final = Counter(
    "vyapaar_http_requests",
    "HTTP requests handled, by method, route template and status code.",
    ["service", "method", "route", "status"],
)
HTTP_REQUEST_DURATION: Final = Histogram(
    "vyapaar_http_request_duration_seconds",
    "HTTP request duration, by method and route template.",
    ["service", "method", "route"],
    buckets=_LATENCY_BUCKETS,
)

# Messaging ----------------------------------------------------------------------------------
MESSAGES_PUBLISHED: Final = Counter(
    "vyapaar_messages_published",
    "Messages published with publisher confirms, by exchange, type and outcome (confirmed|failed).",
    ["exchange", "type", "outcome"],
)
MESSAGES_CONSUMED: Final = Counter(
    "vyapaar_messages_consumed",
    "Messages consumed, by queue, type and outcome (ok|retry|dead_lettered).",
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
    buckets=_LATENCY_BUCKETS,
)
DLQ_MESSAGES: Final = Gauge(
    "vyapaar_dlq_messages",
    "Messages waiting in a dead-letter queue (sampled by its consumer).",
    ["queue"],
)

# Inbox / idempotency / outbox ---------------------------------------------------------------
INBOX_DUPLICATES: Final = Counter(
    "vyapaar_inbox_duplicates",
    "Messages whose id was already in the inbox (exact redeliveries), by service and type.",
    ["service", "type"],
)
IDEMPOTENT_REPLAYS: Final = Counter(
    "vyapaar_idempotent_replays",
    "Commands answered from the stored result of their idempotency key (no second effect).",
    ["service", "type"],
)
OUTBOX_PENDING: Final = Gauge(
    "vyapaar_outbox_pending_messages",
    "Outbox rows not yet published.",
    ["service"],
)
OUTBOX_OLDEST_UNSENT_AGE: Final = Gauge(
    "vyapaar_outbox_oldest_unsent_age_seconds",
    "Age of the oldest unpublished outbox row (0 when the outbox is drained).",
    ["service"],
)
OUTBOX_PUBLISHED: Final = Counter(
    "vyapaar_outbox_published_messages",
    "Outbox rows published and marked sent by the relay.",
    ["service"],
)

# Database pool ------------------------------------------------------------------------------
DB_POOL_SIZE: Final = Gauge(
    "vyapaar_db_pool_connections",
    "Connections currently open in the asyncpg pool.",
    ["service"],
)
DB_POOL_IN_USE: Final = Gauge(
    "vyapaar_db_pool_connections_in_use",
    "Connections of the asyncpg pool currently acquired.",
    ["service"],
)

# Simulated external processors (payment processor, carrier) ---------------------------------
PROCESSOR_CALLS: Final = Counter(
    "vyapaar_processor_calls",
    "Calls to a simulated external processor, by service, operation and outcome "
    "(ok|declined|rejected|injected_error).",
    ["service", "operation", "outcome"],
)


def init_consumer(queue: str, message_types: Iterable[str], *, service: str | None = None) -> None:
    """Create, at zero, the series of a consumer of ``queue`` handling ``message_types``
    (and, for a service's command queue, its inbox and idempotency series)."""
    for message_type in message_types:
        label = message_type_label(message_type)
        MESSAGES_REDELIVERED.labels(queue, label)
        if service is not None:
            INBOX_DUPLICATES.labels(service, label)
            IDEMPOTENT_REPLAYS.labels(service, label)
