"""The gateway's own metrics; its HTTP RED metrics are the services' ``vyapaar_http_*``
(label ``service="gateway"``). ``tenant`` is a tenant name of the tokens file (bounded)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

__all__ = ["IDEMPOTENT_REPLAYS", "ORDERS_CREATED", "RATE_LIMITED", "STREAMS_OPEN"]

ORDERS_CREATED: Final = Counter(
    "vyapaar_gateway_orders_created",
    "Orders created through the gateway, by tenant.",
    ["tenant"],
)
IDEMPOTENT_REPLAYS: Final = Counter(
    "vyapaar_gateway_idempotent_replays",
    "Order creations answered with the order an earlier request of the same "
    "Idempotency-Key created, by tenant.",
    ["tenant"],
)
RATE_LIMITED: Final = Counter(
    "vyapaar_gateway_rate_limited_requests",
    "Requests refused with 429 by the per-token rate limit, by tenant.",
    ["tenant"],
)
STREAMS_OPEN: Final = Gauge(
    "vyapaar_gateway_event_streams",
    "Server-sent-event streams of order transitions open now.",
)
