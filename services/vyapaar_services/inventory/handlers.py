"""Inventory message handlers: ReserveStock, ReleaseStock, CommitStock.

Each runs inside the transaction opened by
:class:`~vyapaar_services.common.handling.CommandProcessor` (inbox + idempotency + outbox
in the same transaction) and returns the reply payload.

* ReserveStock: every item moves available -> held with a conditional update; if one item
  cannot (OUT_OF_STOCK / UNKNOWN_SKU) the savepoint is rolled back, so nothing moves, and a
  ``rejected`` reservation is recorded. A reservation key that already carries a tombstone
  is refused with ALREADY_COMPENSATED.
* ReleaseStock (compensation, same key as ReserveStock): held -> available; for a key with
  no reservation it records a tombstone and replies ``noop=true``; for a rejected or already
  released reservation ``noop=true``. Releasing a committed reservation is a contract
  violation (compensation after the pivot) -> permanent error (DLQ).
* CommitStock (own key, e.g. ``uid:commit``): every held reservation of the order
  (correlation id) moves held -> committed; already committed -> success again. An order
  with no held or committed reservation -> permanent error (DLQ).

A best-effort Redis lock per SKU (:func:`sku_locks`) is held around ReserveStock to reduce
contention on hot rows; it is never needed for correctness.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from vyapaar_messaging import contracts
from vyapaar_messaging.consumer import PermanentError
from vyapaar_messaging.envelope import Envelope

from vyapaar_services.common.handling import AroundHook, CommandHandler
from vyapaar_services.common.service import ServiceRuntime
from vyapaar_services.inventory import store

__all__ = ["build_handlers", "sku_locks"]


class _Rejected(Exception):
    def __init__(self, reason: str, sku: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sku = sku


def merged_items(items: list[contracts.Item]) -> list[tuple[str, int]]:
    """Quantities summed per SKU, sorted by SKU (a fixed lock order: no deadlocks)."""
    totals: dict[str, int] = {}
    for item in items:
        totals[item.sku] = totals.get(item.sku, 0) + item.quantity
    return sorted(totals.items())


async def reserve_stock(
    conn: asyncpg.Connection, envelope: Envelope, command: contracts.ReserveStock
) -> contracts.StockReserved | contracts.StockRejected:
    key = envelope.idempotency_key
    existing = await store.get_reservation_by_key(conn, key, for_update=True)
    if existing is not None:
        if existing["status"] == "tombstone":
            return contracts.StockRejected(reason="ALREADY_COMPENSATED")
        if existing["status"] == "rejected":
            return contracts.StockRejected.model_validate(
                {"reason": existing["reason"], "sku": existing["reason_sku"]}
            )
        return contracts.StockReserved(reservation_id=str(existing["id"]))

    items = merged_items(command.items)
    try:
        async with conn.transaction():  # savepoint: all items or none
            for sku, quantity in items:
                if not await store.take_stock(conn, sku, quantity):
                    reason = "OUT_OF_STOCK" if await store.sku_exists(conn, sku) else "UNKNOWN_SKU"
                    raise _Rejected(reason, sku)
    except _Rejected as rejected:
        await store.insert_reservation(
            conn,
            order_uid=envelope.correlation_id,
            key=key,
            status="rejected",
            items=items,
            reason=rejected.reason,
            reason_sku=rejected.sku,
        )
        return contracts.StockRejected.model_validate(
            {"reason": rejected.reason, "sku": rejected.sku}
        )
    reservation_id = await store.insert_reservation(
        conn, order_uid=envelope.correlation_id, key=key, status="held", items=items
    )
    return contracts.StockReserved(reservation_id=str(reservation_id))


async def release_stock(
    conn: asyncpg.Connection, envelope: Envelope, _command: contracts.ReleaseStock
) -> contracts.StockReleased:
    key = envelope.idempotency_key
    existing = await store.get_reservation_by_key(conn, key, for_update=True)
    if existing is None:
        await store.insert_reservation(
            conn, order_uid=envelope.correlation_id, key=key, status="tombstone"
        )
        return contracts.StockReleased(noop=True)
    status = existing["status"]
    if status == "held":
        await store.release_items(conn, await store.reservation_items(conn, existing["id"]))
        await store.set_reservation_status(conn, existing["id"], "released")
        return contracts.StockReleased(noop=False)
    if status == "committed":
        raise PermanentError(
            f"reservation {existing['id']} ({key}) is committed and cannot be released"
        )
    return contracts.StockReleased(noop=True)  # rejected, released, tombstone


async def commit_stock(
    conn: asyncpg.Connection, envelope: Envelope, _command: contracts.CommitStock
) -> contracts.StockCommitted:
    reservations = await store.held_reservations_for_order(conn, envelope.correlation_id)
    if not reservations:
        raise PermanentError(f"order {envelope.correlation_id} has no held reservation to commit")
    for reservation in reservations:
        if reservation["status"] == "held":
            items = await store.reservation_items(conn, reservation["id"])
            await store.commit_items(conn, items)
            await store.set_reservation_status(conn, reservation["id"], "committed")
    return contracts.StockCommitted()


def build_handlers() -> dict[str, CommandHandler]:
    return {
        "ReserveStock": reserve_stock,
        "ReleaseStock": release_stock,
        "CommitStock": commit_stock,
    }


def sku_locks(runtime: ServiceRuntime) -> AroundHook:
    """Around-hook: best-effort Redis locks on the SKUs of a ReserveStock."""

    @contextlib.asynccontextmanager
    async def around(envelope: Envelope, payload: Any) -> AsyncIterator[None]:
        if isinstance(payload, contracts.ReserveStock):
            names = [f"sku:{item.sku}" for item in payload.items]
            async with runtime.locks.optional_locks(names):
                yield
        else:
            yield

    return around
