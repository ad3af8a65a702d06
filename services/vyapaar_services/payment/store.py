"""SQL of the payment service (schema ``payment`` by default): payments and the ledger."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

__all__ = [
    "add_ledger_entry",
    "get_payment_by_key",
    "insert_payment",
    "ledger",
    "mark_refunded",
]


async def get_payment_by_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM payments WHERE idempotency_key = $1 FOR UPDATE", key
    )
    return row


async def insert_payment(
    conn: asyncpg.Connection,
    *,
    order_uid: str,
    key: str,
    status: str,
    amount: int = 0,
    currency: str | None = None,
    customer_id: str | None = None,
    reason: str | None = None,
    charge_id: str | None = None,
) -> uuid.UUID:
    payment_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO payments (id, order_uid, idempotency_key, status, amount, currency,
                                 customer_id, reason, charge_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        payment_id,
        order_uid,
        key,
        status,
        amount,
        currency,
        customer_id,
        reason,
        charge_id,
    )
    return payment_id


async def add_ledger_entry(
    conn: asyncpg.Connection,
    *,
    entry_id: str,
    payment_id: uuid.UUID,
    order_uid: str,
    kind: str,
    amount: int,
    currency: str,
) -> None:
    await conn.execute(
        """INSERT INTO ledger_entries (entry_id, payment_id, order_uid, kind, amount, currency)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        entry_id,
        payment_id,
        order_uid,
        kind,
        amount,
        currency,
    )


async def mark_refunded(conn: asyncpg.Connection, payment_id: uuid.UUID, refund_id: str) -> None:
    await conn.execute(
        """UPDATE payments SET status = 'refunded', refund_id = $2, updated_at = now()
           WHERE id = $1 AND status = 'captured'""",
        payment_id,
        refund_id,
    )


async def ledger(
    conn: asyncpg.Connection | asyncpg.Pool, order_uid: str | None, limit: int = 1000
) -> dict[str, Any]:
    """Entries, payments and per-currency totals (of one order, or of everything)."""
    entries = await conn.fetch(
        """SELECT * FROM ledger_entries WHERE $1::text IS NULL OR order_uid = $1
           ORDER BY id DESC LIMIT $2""",
        order_uid,
        limit,
    )
    payments = await conn.fetch(
        """SELECT * FROM payments WHERE $1::text IS NULL OR order_uid = $1
           ORDER BY created_at DESC LIMIT $2""",
        order_uid,
        limit,
    )
    totals = await conn.fetch(
        """SELECT currency,
                  coalesce(sum(amount) FILTER (WHERE kind = 'charge'), 0) AS charged,
                  coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0) AS refunded
           FROM ledger_entries WHERE $1::text IS NULL OR order_uid = $1
           GROUP BY currency ORDER BY currency""",
        order_uid,
    )
    return {
        "entries": [
            {
                "id": e["entry_id"],
                "orderUid": e["order_uid"],
                "paymentId": str(e["payment_id"]),
                "kind": e["kind"],
                "amount": e["amount"],
                "currency": e["currency"],
                "createdAt": e["created_at"],
            }
            for e in entries
        ],
        "payments": [
            {
                "id": str(p["id"]),
                "orderUid": p["order_uid"],
                "idempotencyKey": p["idempotency_key"],
                "status": p["status"],
                "amount": p["amount"],
                "currency": p["currency"],
                "customerId": p["customer_id"],
                "reason": p["reason"],
                "chargeId": p["charge_id"],
                "refundId": p["refund_id"],
                "createdAt": p["created_at"],
                "updatedAt": p["updated_at"],
            }
            for p in payments
        ],
        "totals": {
            t["currency"]: {
                "charged": int(t["charged"]),
                "refunded": int(t["refunded"]),
                "net": int(t["charged"]) - int(t["refunded"]),
            }
            for t in totals
        },
    }
