"""Best-effort Redis locks: held when Redis is there, skipped (never failing) when not."""

from __future__ import annotations

import asyncio
import time
import uuid

from vyapaar_services.common.redis_client import RedisLocks, create_redis


async def test_locks_serialise_holders_of_the_same_name(redis_url: str) -> None:
    locks = RedisLocks(create_redis(redis_url), namespace=f"test:{uuid.uuid4().hex}")
    inside = 0
    overlap = False

    async def worker() -> bool:
        nonlocal inside, overlap
        async with locks.optional_locks(["sku:HOT"]) as held:
            inside += 1
            overlap = overlap or inside > 1
            await asyncio.sleep(0.02)
            inside -= 1
            return held

    try:
        held = await asyncio.gather(*(worker() for _ in range(5)))
    finally:
        await locks.close()
    assert all(held)
    assert not overlap


async def test_an_unreachable_redis_means_proceeding_without_the_lock_quickly() -> None:
    locks = RedisLocks(create_redis("redis://127.0.0.1:1/0", timeout=0.2))
    started = time.monotonic()
    async with locks.optional_locks(["sku:A"]) as held:
        assert held is False
    # the next call does not even try while Redis is considered down
    async with locks.optional_locks(["sku:A"]) as held_again:
        assert held_again is False
    assert time.monotonic() - started < 2
    await locks.close()


async def test_no_redis_configured_means_no_locks() -> None:
    locks = RedisLocks(None)
    async with locks.optional_locks(["sku:A"]) as held:
        assert held is False
