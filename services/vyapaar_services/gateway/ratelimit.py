"""Rate limits per token, shared by every gateway replica through Redis.

Each tenant gets ``VYAPAAR_GATEWAY_RATE_LIMIT``, or the ``rateLimit`` of its entry in the
tokens file.

The ``limits`` library does the counting (a sliding window counter: two Redis keys per
window and tenant, no per-request entries, and no burst of twice the limit at a window
edge as a fixed window allows). A refused request gets 429 with ``Retry-After`` (whole
seconds until the window lets it through) and the ``RateLimit-*`` fields of the IETF
draft, so a well-behaved client can pace itself without guessing.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from vyapaar_services.common.http import Problem
from vyapaar_services.gateway import metrics
from vyapaar_services.gateway.tenants import Tenant

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(self, redis_url: str, rate: str) -> None:
        self.items: list[RateLimitItem] = parse_many(rate)
        self._own: dict[str, list[RateLimitItem]] = {}  # tenants' own limits, parsed
        self._storage = RedisStorage(
            "async+" + redis_url, implementation="redispy", key_prefix="vyapaar:gateway:rate",
        )
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)

    async def check(self, tenant: Tenant) -> dict[str, str]:
        """Count one request of ``tenant``; its ``RateLimit-*`` headers, or a 429 problem.

        Requests with read-only links (order pages) have a budget of their own, so
        customers watching their orders never use up the storefront's."""
        bucket = f"{tenant.name}:links" if tenant.only_order else tenant.name
        headers: dict[str, str] = {}
        for item in self._items_of(tenant):
            allowed = await self._limiter.hit(item, bucket)
            stats = await self._limiter.get_window_stats(item, bucket)
            reset = max(1, math.ceil(stats.reset_time - time.time()))
            if not allowed:
                metrics.RATE_LIMITED.labels(tenant.name).inc()
                raise Problem(
                    429, "Too Many Requests",
                    f"Tenant {tenant.name!r} may send {item}; wait {reset} s.",
                    type_="rate-limited",
                    headers={"Retry-After": str(reset), "RateLimit-Limit": str(item.amount),
                             "RateLimit-Remaining": "0", "RateLimit-Reset": str(reset)},
                )  # fmt: skip
            if not headers or stats.remaining < int(headers["RateLimit-Remaining"]):
                headers = {"RateLimit-Limit": str(item.amount),
                           "RateLimit-Remaining": str(stats.remaining),
                           "RateLimit-Reset": str(reset)}
        return headers

    def _items_of(self, tenant: Tenant) -> list[RateLimitItem]:
        if not tenant.rate_limit:
            return self.items
        if tenant.rate_limit not in self._own:
            self._own[tenant.rate_limit] = parse_many(tenant.rate_limit)
        return self._own[tenant.rate_limit]
