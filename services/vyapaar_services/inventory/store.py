"""SQL of the inventory service (schema ``inventory`` by default).

Stock moves only through conditional single-row updates, so ``available`` can never go
negative even without any lock (and the CHECK constraints are the last safety net):

* reserve:  available -> held      (``... WHERE available >= q``)
* release:  held      -> available
* commit:   held      -> committed
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

__all__ = [
    "commit_items",
    "get_reservation_by_key",
    "get_stock",
    "held_reservations_for_order",
    "insert_reservation",
    "list_reservations",
    "list_stock",
    "release_items",
    "reservation_items",
    "set_available",
    "set_reservation_status",
    "sku_exists",
    "take_stock",
]


def _stock_dict(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "sku": row["sku"],
        "available": row["available"],
        "held": row["held"],
        "committed": row["committed"],
        "total": row["available"] + row["held"] + row["committed"],
        "updatedAt": row["updated_at"],
    }


async def list_stock(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM stock ORDER BY sku")
    return [_stock_dict(r) for r in rows]


async def get_stock(conn: asyncpg.Connection | asyncpg.Pool, sku: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM stock WHERE sku = $1", sku)
    return _stock_dict(row) if row else None


async def set_available(
    conn: asyncpg.Connection | asyncpg.Pool, sku: str, available: int
) -> tuple[dict[str, Any], bool]:
    """Set the available count (seeding/restocking); returns (stock, created)."""
    row = await conn.fetchrow(
        """INSERT INTO stock (sku, available) VALUES ($1, $2)
           ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available, updated_at = now()
           RETURNING *, (xmax = 0) AS created""",
        sku,
        available,
    )
    assert row is not None
    return _stock_dict(row), bool(row["created"])


async def sku_exists(conn: asyncpg.Connection, sku: str) -> bool:
    found = await conn.fetchval("SELECT true FROM stock WHERE sku = $1", sku)
    return found is True


async def take_stock(conn: asyncpg.Connection, sku: str, quantity: int) -> bool:
    """available -> held, only if enough is available. False if not (or unknown SKU)."""
    result: str = await conn.execute(
        """UPDATE stock SET available = available - $2, held = held + $2, updated_at = now()
           WHERE sku = $1 AND available >= $2""",
        sku,
        quantity,
    )
    return result == "UPDATE 1"


async def release_items(conn: asyncpg.Connection, items: Sequence[tuple[str, int]]) -> None:
    """held -> available."""
    for sku, quantity in sorted(items):
        result = await conn.execute(
            """UPDATE stock SET held = held - $2, available = available + $2, updated_at = now()
               WHERE sku = $1""",
            sku,
            quantity,
        )
        if result != "UPDATE 1":
            raise RuntimeError(f"stock row {sku!r} vanished while releasing")


async def commit_items(conn: asyncpg.Connection, items: Sequence[tuple[str, int]]) -> None:
    """held -> committed."""
    for sku, quantity in sorted(items):
        result = await conn.execute(
            """UPDATE stock SET held = held - $2, committed = committed + $2, updated_at = now()
               WHERE sku = $1""",
            sku,
            quantity,
        )
        if result != "UPDATE 1":
            raise RuntimeError(f"stock row {sku!r} vanished while committing")


async def insert_reservation(
    conn: asyncpg.Connection,
    *,
    order_uid: str,
    key: str,
    status: str,
    items: Sequence[tuple[str, int]] = (),
    reason: str | None = None,
    reason_sku: str | None = None,
) -> uuid.UUID:
    reservation_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO reservations (id, order_uid, idempotency_key, status, reason, reason_sku)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        reservation_id,
        order_uid,
        key,
        status,
        reason,
        reason_sku,
    )
    if items:
        await conn.executemany(
            "INSERT INTO reservation_items (reservation_id, sku, quantity) VALUES ($1, $2, $3)",
            [(reservation_id, sku, qty) for sku, qty in items],
        )
    return reservation_id


async def get_reservation_by_key(
    conn: asyncpg.Connection, key: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM reservations WHERE idempotency_key = $1{lock}", key
    )
    return row


async def held_reservations_for_order(
    conn: asyncpg.Connection, order_uid: str
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM reservations WHERE order_uid = $1 AND status IN ('held', 'committed')
           ORDER BY created_at FOR UPDATE""",
        order_uid,
    )
    return rows


async def reservation_items(
    conn: asyncpg.Connection, reservation_id: uuid.UUID
) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT sku, quantity FROM reservation_items WHERE reservation_id = $1 ORDER BY sku",
        reservation_id,
    )
    return [(r["sku"], r["quantity"]) for r in rows]


async def set_reservation_status(
    conn: asyncpg.Connection, reservation_id: uuid.UUID, status: str
) -> None:
    await conn.execute(
        "UPDATE reservations SET status = $2, updated_at = now() WHERE id = $1",
        reservation_id,
        status,
    )


async def list_reservations(
    conn: asyncpg.Connection | asyncpg.Pool, order_uid: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT r.*, coalesce(
                  (SELECT json_agg(json_build_object('sku', i.sku, 'quantity', i.quantity)
                                   ORDER BY i.sku)::text
                   FROM reservation_items i WHERE i.reservation_id = r.id), '[]') AS items
           FROM reservations r
           WHERE $1::text IS NULL OR r.order_uid = $1
           ORDER BY r.created_at DESC LIMIT $2""",
        order_uid,
        limit,
    )
    out: list[dict[str, Any]] = []
    for r in rows:
        out.append(
            {
                "id": str(r["id"]),
                "orderUid": r["order_uid"],
                "idempotencyKey": r["idempotency_key"],
                "status": r["status"],
                "reason": r["reason"],
                "sku": r["reason_sku"],
                "items": json.loads(r["items"]),
                "createdAt": r["created_at"],
                "updatedAt": r["updated_at"],
            }
        )
    return out
