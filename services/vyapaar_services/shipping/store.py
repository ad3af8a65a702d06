"""SQL of the shipping service (schema ``shipping`` by default)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

__all__ = ["get_shipment_by_key", "insert_shipment", "list_shipments", "set_status"]


async def get_shipment_by_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM shipments WHERE idempotency_key = $1 FOR UPDATE", key
    )
    return row


async def insert_shipment(
    conn: asyncpg.Connection,
    *,
    order_uid: str,
    key: str,
    status: str,
    tracking_id: str | None = None,
    reason: str | None = None,
    address: dict[str, Any] | None = None,
    items: list[dict[str, Any]] | None = None,
) -> uuid.UUID:
    shipment_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO shipments (id, order_uid, idempotency_key, status, tracking_id, reason,
                                  address, items)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)""",
        shipment_id,
        order_uid,
        key,
        status,
        tracking_id,
        reason,
        None if address is None else json.dumps(address),
        None if items is None else json.dumps(items),
    )
    return shipment_id


async def set_status(conn: asyncpg.Connection, shipment_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "UPDATE shipments SET status = $2, updated_at = now() WHERE id = $1",
        shipment_id,
        status,
    )


async def list_shipments(
    conn: asyncpg.Connection | asyncpg.Pool, order_uid: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT * FROM shipments WHERE $1::text IS NULL OR order_uid = $1
           ORDER BY created_at DESC LIMIT $2""",
        order_uid,
        limit,
    )
    return [
        {
            "id": str(r["id"]),
            "orderUid": r["order_uid"],
            "idempotencyKey": r["idempotency_key"],
            "status": r["status"],
            "trackingId": r["tracking_id"],
            "reason": r["reason"],
            "address": None if r["address"] is None else json.loads(r["address"]),
            "items": None if r["items"] is None else json.loads(r["items"]),
            "createdAt": r["created_at"],
            "updatedAt": r["updated_at"],
        }
        for r in rows
    ]
