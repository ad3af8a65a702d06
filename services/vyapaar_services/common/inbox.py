"""Inbox (dedupe by message id) and idempotency results (dedupe by idempotency key).

Both are written in the same transaction as the business change and the outgoing reply:

* :func:`record_message` inserts the message id into ``inbox``; ``False`` means this exact
  message was already handled (a redelivery).
* :func:`lock_key` takes a transaction-scoped advisory lock on the idempotency key, so a
  forward command and its compensation (same key) — or two retries of one command — are
  handled one after the other, never interleaved, across all replicas.
* :func:`load_result` / :func:`save_result` keep the reply of each (key, command type):
  a retry with a new message id gets the original reply back and has no second effect.
"""

from __future__ import annotations

import json

import asyncpg
from vyapaar_messaging.envelope import Envelope

__all__ = ["has_result", "load_result", "lock_key", "record_message", "save_result"]


async def record_message(conn: asyncpg.Connection, envelope: Envelope) -> bool:
    """Insert the message id into the inbox; ``True`` if it was new."""
    inserted = await conn.fetchval(
        """INSERT INTO inbox (message_id, message_type, correlation_id) VALUES ($1, $2, $3)
           ON CONFLICT (message_id) DO NOTHING RETURNING true""",
        envelope.id,
        envelope.type,
        envelope.correlation_id,
    )
    return bool(inserted)


async def lock_key(conn: asyncpg.Connection, key: str) -> None:
    """Serialize work on one idempotency key until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


async def load_result(conn: asyncpg.Connection, key: str, command_type: str) -> Envelope | None:
    raw = await conn.fetchval(
        "SELECT reply FROM idempotency WHERE idempotency_key = $1 AND command_type = $2",
        key,
        command_type,
    )
    if raw is None:
        return None
    return Envelope.from_dict(json.loads(raw) if isinstance(raw, str) else raw)


async def has_result(conn: asyncpg.Connection, key: str, command_type: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM idempotency WHERE idempotency_key = $1 AND command_type = $2",
            key,
            command_type,
        )
    )


async def save_result(
    conn: asyncpg.Connection, key: str, command_type: str, command_id: str, reply: Envelope
) -> None:
    await conn.execute(
        """INSERT INTO idempotency (idempotency_key, command_type, command_id, reply_type, reply)
           VALUES ($1, $2, $3, $4, $5::jsonb)""",
        key,
        command_type,
        command_id,
        reply.type,
        json.dumps(reply.to_dict()),
    )
