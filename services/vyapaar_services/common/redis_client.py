"""Redis client helpers: an optional client and best-effort locks.

Locks here are an OPTIMISATION (fewer transactions fighting over one hot row), never a
safety mechanism: they have no fencing, so correctness always comes from the database
(conditional updates and constraints). When Redis is not configured, unreachable or slow,
:func:`optional_locks` yields ``False`` and the caller proceeds without the lock. After a
connection failure Redis is skipped for a short back-off period so an outage does not add
a connect timeout to every message.

Env: ``VYAPAAR_REDIS_URL`` (optional).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import LockError, RedisError

__all__ = ["RedisLocks", "create_redis"]

log = logging.getLogger(__name__)


def create_redis(url: str | None, *, timeout: float = 0.5) -> aioredis.Redis | None:
    """A client for ``url`` (None when not configured). Connects lazily."""
    if not url:
        return None
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
    )
    return client


class RedisLocks:
    """Best-effort named locks on an optional Redis client."""

    def __init__(
        self,
        client: aioredis.Redis | None,
        *,
        namespace: str = "vyapaar",
        ttl: float = 5.0,
        wait: float = 2.0,
        backoff: float = 5.0,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl = ttl
        self.wait = wait
        self.backoff = backoff
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._down_until

    async def ping(self) -> bool:
        if self.client is None:
            return False
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    @contextlib.asynccontextmanager
    async def optional_locks(self, names: Iterable[str]) -> AsyncIterator[bool]:
        """Hold ``names`` (acquired in sorted order) if possible; yields whether all are held.
        Never raises because of Redis."""
        held: list[Any] = []
        acquired = False
        if self.available and self.client is not None:
            try:
                for name in sorted(set(names)):
                    lock = self.client.lock(
                        f"{self.namespace}:lock:{name}",
                        timeout=self.ttl,
                        blocking_timeout=self.wait,
                        sleep=0.01,
                    )
                    if not await lock.acquire():
                        break
                    held.append(lock)
                else:
                    acquired = True
            except (RedisError, OSError) as exc:
                self._down_until = time.monotonic() + self.backoff
                log.warning("redis unavailable, proceeding without locks: %s", exc)
        try:
            yield acquired
        finally:
            for lock in reversed(held):
                with contextlib.suppress(LockError, RedisError, OSError):
                    await lock.release()

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
