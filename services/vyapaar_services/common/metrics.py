"""The services' own Prometheus metrics: HTTP (RED), inbox, idempotency, outbox, database
pool and the simulated processors. The messaging metrics (published, consumed, retried,
dead-lettered) live with the messaging library in :mod:`vyapaar_messaging.metrics`.

Naming: prefix ``vyapaar_``, base units (seconds), ``_total`` for counters (the client adds
the suffix), no per-order labels. Labels are bounded: ``type`` is a contract message type (or
``unknown``), ``route`` is the aiohttp route template (or ``unmatched``).
The catalogue with types and labels is in docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import Counter, Gauge, Histogram
from vyapaar_messaging.metrics import LATENCY_BUCKETS, message_type_label

__all__ = [
    "COMMANDS_EXPIRED",
    "DB_POOL_IN_USE",
    "DB_POOL_SIZE",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_DURATION",
    "IDEMPOTENT_REPLAYS",
    "INBOX_DUPLICATES",
    "OUTBOX_OLDEST_UNSENT_AGE",
    "OUTBOX_PENDING",
    "OUTBOX_PUBLISHED",
    "PROCESSOR_CALLS",
    "init_service_consumer",
]


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
    buckets=LATENCY_BUCKETS,
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
COMMANDS_EXPIRED: Final = Counter(
    "vyapaar_commands_expired",
    "Commands that arrived after their expiry (the saga may have given up on them) and were "
    "not acted on, by service and type.",
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
    "(ok|replayed|declined|rejected|injected_error|lost_commit).",
    ["service", "operation", "outcome"],
)


def init_service_consumer(service: str, message_types: Iterable[str]) -> None:
    """Create, at zero, the inbox and idempotency series of ``service`` for ``message_types``."""
    for message_type in message_types:
        label = message_type_label(message_type)
        INBOX_DUPLICATES.labels(service, label)
        IDEMPOTENT_REPLAYS.labels(service, label)
        COMMANDS_EXPIRED.labels(service, label)
