"""``Idempotency-Key``: the same create, asked for twice, creates one Order.

A key is scoped to its tenant and kept in Redis for ``VYAPAAR_GATEWAY_IDEMPOTENCY_TTL_SECONDS``
with the fingerprint (sha256) of the request body and, once created, the Order's name:

* the first request claims the key (``SET NX``, a short claim that expires if the gateway
  dies mid-request), creates the Order and records it;
* a request with the same key and the same body gets that Order back, marked as a replay
  (``Idempotent-Replayed: true``); one that arrives while the first is still creating
  waits for it (up to :data:`WAIT_FOR_CLAIM`, then 409 with ``Retry-After``);
* the same key with another body is refused with 422: it is a client bug, and creating or
  returning either order would hide it;
* a request that created nothing (refused as invalid) releases the key.

Redis is the fast path, not the safety net: the Order's *name* is derived from the tenant
and the key, so even if Redis lost the key (restart, eviction, expiry) a repeated create
meets the apiserver's name uniqueness (409 AlreadyExists) and the fingerprint on the
existing Order decides replay or 422 the same way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis

from vyapaar_services.common.http import Problem

__all__ = [
    "CLAIM_SECONDS",
    "FINGERPRINT_ANNOTATION",
    "WAIT_FOR_CLAIM",
    "Claim",
    "IdempotencyKeys",
    "fingerprint",
    "order_name",
    "parse_key",
]

FINGERPRINT_ANNOTATION: Final = "gateway.vyapaar.dev/request-sha256"
CLAIM_SECONDS: Final = 30
WAIT_FOR_CLAIM: Final = 10.0
_KEY: Final = re.compile(r"^[\x21-\x7e]{1,255}$")


def parse_key(header: str | None) -> str | None:
    """The ``Idempotency-Key`` header's value (None if absent), or a 400 problem."""
    if header is None:
        return None
    if not _KEY.match(header):
        raise Problem(400, "Invalid Idempotency-Key",
                      "Idempotency-Key must be 1 to 255 visible ASCII characters, e.g. a UUID.",
                      type_="invalid-idempotency-key")
    return header


def fingerprint(body: Any) -> str:
    """sha256 of the body's canonical JSON: key order and spacing do not matter."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def order_name(namespace: str, key: str) -> str:
    """The Order name a key always maps to (a DNS label: ``order-`` + 16 base32 chars)."""
    digest = hashlib.sha256(f"{namespace}\0{key}".encode()).digest()
    return "order-" + base64.b32encode(digest).decode().lower().rstrip("=")[:16]


@dataclass(frozen=True, slots=True)
class Claim:
    """What a request with a key should do: create (``replay_of`` None) or replay."""

    redis_key: str
    fingerprint: str
    replay_of: str | None = None


class IdempotencyKeys:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds

    @staticmethod
    def _redis_key(tenant: str, key: str) -> str:
        return f"vyapaar:gateway:idempotency:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def claim(self, tenant: str, key: str, body_fingerprint: str) -> Claim:
        """Claim ``key`` for a new create, or learn the order it already created."""
        redis_key = self._redis_key(tenant, key)
        claim = json.dumps({"state": "creating", "fingerprint": body_fingerprint})
        deadline = time.monotonic() + WAIT_FOR_CLAIM
        while True:
            if await self.redis.set(redis_key, claim, nx=True, ex=CLAIM_SECONDS):
                return Claim(redis_key, body_fingerprint)
            raw = await self.redis.get(redis_key)
            if raw is None:
                continue  # released or expired between the two calls: claim again
            record = json.loads(raw)
            if record["fingerprint"] != body_fingerprint:
                raise reused_key()
            if record["state"] == "created":
                return Claim(redis_key, body_fingerprint, replay_of=record["name"])
            if time.monotonic() > deadline:
                raise Problem(409, "Request in progress",
                              "An earlier request with this Idempotency-Key is still being "
                              "processed; retry shortly.", type_="idempotency-key-in-use",
                              headers={"Retry-After": "1"})
            await asyncio.sleep(0.05)

    async def record(self, claim: Claim, name: str) -> None:
        value = json.dumps({"state": "created", "fingerprint": claim.fingerprint, "name": name})
        await self.redis.set(claim.redis_key, value, ex=self.ttl)

    async def release(self, claim: Claim) -> None:
        """Nothing was created: a corrected request may use the key."""
        await self.redis.delete(claim.redis_key)


def reused_key() -> Problem:
    return Problem(422, "Idempotency-Key reused",
                   "This Idempotency-Key was already used with a different request body; "
                   "use a new key for a new order.", type_="idempotency-key-reused")
