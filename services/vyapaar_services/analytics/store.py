"""SQL of the analytics service (schema ``analytics`` by default): the read model's tables
are written only here, and every write is commutative (see :func:`insert_event`)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any, TypeAlias

import asyncpg
from vyapaar_messaging import contracts

from vyapaar_services.analytics.readmodel import (
    TERMINAL_PHASES,
    OutcomeReasons,
    StepCount,
    StepDurations,
    revenue_day,
)

__all__ = [
    "add_revenue",
    "get_order",
    "insert_event",
    "order_history",
    "revenue",
    "step_counts",
    "step_durations",
    "truncate_read_model",
    "upsert_order",
]

#: reads run on a pool or inside a caller's transaction
Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool


async def insert_event(
    conn: asyncpg.Connection, uid: str, event_id: str, event: contracts.OrderEvent
) -> bool:
    """Add the event to the order's history; ``False`` if it is there already.

    Everything else follows from a new history row only, so applying an event twice, or a
    set of events in any order, leaves the same tables.
    """
    inserted = await conn.fetchval(
        """INSERT INTO order_events (uid, seq, event_id, occurred_at, reason, message, severity,
                                     step, step_started_at, phase, announced, captured, refunded)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT DO NOTHING RETURNING true""",
        uid, event.seq, uuid.UUID(event_id), event.occurred_at, event.reason, event.message,
        event.severity, event.step, event.step_started_at, event.phase, event.announced,
        event.captured, event.refunded,
    )  # fmt: skip
    return bool(inserted)


async def add_revenue(conn: asyncpg.Connection, event: contracts.OrderEvent) -> None:
    """Add the money the event moved to its UTC day (call only for a new history row)."""
    if not event.captured and not event.refunded:
        return
    await conn.execute(
        """INSERT INTO revenue_daily AS r (day, currency, captured, refunded)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (day, currency) DO UPDATE
              SET captured = r.captured + excluded.captured,
                  refunded = r.refunded + excluded.refunded""",
        revenue_day(event.occurred_at), event.currency, event.captured, event.refunded,
    )  # fmt: skip


async def upsert_order(
    conn: asyncpg.Connection,
    uid: str,
    namespace: str | None,
    name: str | None,
    event: contracts.OrderEvent,
) -> None:
    """Fold a new history row into the order's row.

    The latest fields come from the event with the highest seq (an older event arriving
    late changes none of them); ``started_at`` and ``finished_at`` are read back from the
    history (seq 1; the lowest seq in a terminal phase), so they do not depend on the
    order of arrival either. The caller holds the order's lock.
    """
    await conn.execute(
        """INSERT INTO orders AS o (uid, namespace, name, phase, reason, saga_version, total,
                                    currency, last_seq, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (uid) DO UPDATE
              SET namespace = coalesce(o.namespace, excluded.namespace),
                  name = coalesce(o.name, excluded.name),
                  phase = excluded.phase, reason = excluded.reason,
                  saga_version = excluded.saga_version, total = excluded.total,
                  currency = excluded.currency, last_seq = excluded.last_seq,
                  updated_at = excluded.updated_at
              WHERE excluded.last_seq > o.last_seq""",
        uid, namespace, name, event.phase, event.reason, event.saga_version, event.total,
        event.currency, event.seq, event.occurred_at,
    )  # fmt: skip
    await conn.execute(
        """UPDATE orders
              SET started_at = (SELECT occurred_at FROM order_events WHERE uid = $1 AND seq = 1),
                  finished_at = (SELECT occurred_at FROM order_events
                                 WHERE uid = $1 AND phase = ANY($2::text[])
                                 ORDER BY seq LIMIT 1)
            WHERE uid = $1""",
        uid, sorted(TERMINAL_PHASES),
    )  # fmt: skip


async def truncate_read_model(conn: asyncpg.Connection) -> None:
    """Empty the read model and the inbox together (a rebuild's first step).

    The tables are locked in the order an apply writes them (inbox first), so a live
    service's transaction either ends before the truncate or starts after it: never a
    deadlock with one that holds the inbox and waits for the history.
    """
    await conn.execute("TRUNCATE inbox, order_events, revenue_daily, orders")


# -- reads -------------------------------------------------------------------------------------


async def get_order(db: Executor, uid: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM orders WHERE uid = $1", uid)
    if row is None:
        return None
    return {
        "uid": row["uid"],
        "namespace": row["namespace"],
        "name": row["name"],
        "phase": row["phase"],
        "reason": row["reason"],
        "sagaVersion": row["saga_version"],
        "total": row["total"],
        "currency": row["currency"],
        "startedAt": row["started_at"],
        "finishedAt": row["finished_at"],
        "lastSeq": row["last_seq"],
        "updatedAt": row["updated_at"],
    }


async def order_history(db: Executor, uid: str) -> list[dict[str, Any]]:
    rows = await db.fetch("SELECT * FROM order_events WHERE uid = $1 ORDER BY seq", uid)
    return [
        {
            "seq": r["seq"],
            "eventId": str(r["event_id"]),
            "occurredAt": r["occurred_at"],
            "reason": r["reason"],
            "message": r["message"],
            "severity": r["severity"],
            "step": r["step"],
            "stepStartedAt": r["step_started_at"],
            "phase": r["phase"],
            "announced": r["announced"],
            "captured": r["captured"],
            "refunded": r["refunded"],
        }
        for r in rows
    ]


async def revenue(
    db: Executor, first: date | None, last: date | None, currency: str | None
) -> list[dict[str, Any]]:
    """Days (inclusive bounds, each optional) and currencies, oldest first."""
    rows = await db.fetch(
        """SELECT day, currency, captured, refunded FROM revenue_daily
           WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2)
             AND ($3::text IS NULL OR currency = $3)
           ORDER BY day, currency""",
        first, last, currency,
    )  # fmt: skip
    return [
        {
            "day": r["day"],
            "currency": r["currency"],
            "captured": r["captured"],
            "refunded": r["refunded"],
            "net": r["captured"] - r["refunded"],
        }
        for r in rows
    ]


async def step_counts(db: Executor) -> list[StepCount]:
    rows = await db.fetch(
        """SELECT step, reason, severity, count(*) AS n FROM step_outcomes
           GROUP BY step, reason, severity"""
    )
    return [StepCount(r["step"], r["reason"], r["severity"], r["n"]) for r in rows]


async def step_durations(db: Executor, reasons: OutcomeReasons) -> list[StepDurations]:
    """Average and continuous percentiles (``percentile_cont``) of forward outcomes."""
    rows = await db.fetch(
        """SELECT step, count(duration_seconds) AS n, avg(duration_seconds) AS avg,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds) AS p50,
                  percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds) AS p95
           FROM step_outcomes
           WHERE reason = ANY($1::text[]) AND duration_seconds IS NOT NULL
           GROUP BY step""",
        sorted(reasons.forward),
    )
    return [StepDurations(r["step"], r["n"], r["avg"], r["p50"], r["p95"]) for r in rows]
