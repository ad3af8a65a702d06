"""SQL of the notification service (schema ``notification`` by default)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg

__all__ = ["get_by_key", "insert_notification", "list_notifications"]


async def get_by_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM notifications WHERE idempotency_key = $1", key
    )
    return row


async def insert_notification(
    conn: asyncpg.Connection,
    *,
    order_uid: str,
    key: str,
    template: str,
    customer: dict[str, Any],
    recipient: str | None,
    subject: str,
    body: str,
    data: dict[str, Any],
) -> uuid.UUID:
    notification_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO notifications (id, order_uid, idempotency_key, template, customer_id,
                                      recipient, subject, body, customer, data)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb)""",
        notification_id,
        order_uid,
        key,
        template,
        str(customer["id"]),
        recipient,
        subject,
        body,
        json.dumps(customer),
        json.dumps(data),
    )
    return notification_id


async def list_notifications(
    conn: asyncpg.Connection | asyncpg.Pool, order_uid: str | None, limit: int = 200
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT * FROM notifications WHERE $1::text IS NULL OR order_uid = $1
           ORDER BY created_at DESC LIMIT $2""",
        order_uid,
        limit,
    )
    return [
        {
            "id": str(r["id"]),
            "orderUid": r["order_uid"],
            "idempotencyKey": r["idempotency_key"],
            "template": r["template"],
            "customerId": r["customer_id"],
            "recipient": r["recipient"],
            "subject": r["subject"],
            "body": r["body"],
            "customer": json.loads(r["customer"]),
            "data": json.loads(r["data"]),
            "createdAt": r["created_at"],
        }
        for r in rows
    ]
