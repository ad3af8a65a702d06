"""What every peer shares: the tables, the SQL effects of each saga step, the saga itself,
the open-loop load generator and the CPU meter.

Why one copy: the comparison is only fair if each peer does the same database work per
order as our services (services/vyapaar_services/*/store.py and handlers.py): the same
conditional stock update, the same rows with the same idempotency-key checks, in one
transaction per step. Only the orchestration around the steps differs. The tables are our
services' own migrations applied into the peer's own schema (``peer_dbos``,
``peer_temporal``), so a peer never touches our services' rows; notifications are rendered
by the notification service's own ``render``.

Not mirrored: our services' inbox/outbox/idempotency bookkeeping rows (the peers' durable
logs play that part) and the Redis SKU locks (best effort, not needed for correctness).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from vyapaar_messaging import contracts
from vyapaar_services.common.db import load_migrations, migrate
from vyapaar_services.notification import handlers as notification

__all__ = [
    "COMPLETED",
    "CpuMeter",
    "Db",
    "Effects",
    "LoadResult",
    "Order",
    "SagaSteps",
    "asyncpg_db",
    "drive",
    "ensure_schema",
    "make_orders",
    "order_saga",
    "postgres_pids",
    "postmaster_pid",
    "seed_stock",
    "sku_names",
]

#: the outcome of a saga that reached its pivot and completed
COMPLETED = "Completed"
#: a failed saga's outcome is ``FAILED_PREFIX + reason``
FAILED_PREFIX = "Failed:"
#: stock put on every benchmark SKU before each point: never the limit
GENEROUS_STOCK = 1_000_000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


# --- orders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """One order, as plain fields: both DBOS (pickle) and Temporal (JSON) can carry it."""

    uid: str
    sku: str
    quantity: int = 1
    unit_price: int = 100
    currency: str = "INR"
    payment_token: str = "tok_visa"
    customer_id: str = "bench"
    customer_email: str = "bench@example.com"
    customer_name: str = "Bench"
    address_name: str = "Bench"
    address_line1: str = "1 Loop Road"
    address_city: str = "Pune"
    address_postal_code: str = "411001"
    address_country: str = "IN"

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price

    def items(self) -> list[tuple[str, int]]:
        return [(self.sku, self.quantity)]

    def customer(self) -> dict[str, Any]:
        return {"id": self.customer_id, "email": self.customer_email, "name": self.customer_name}

    def address(self) -> dict[str, Any]:
        return {"name": self.address_name, "line1": self.address_line1,
                "city": self.address_city, "postalCode": self.address_postal_code,
                "country": self.address_country}

    def item_payloads(self) -> list[dict[str, Any]]:
        return [{"sku": self.sku, "quantity": self.quantity, "unitPrice": self.unit_price}]


def sku_names(skus: int) -> list[str]:
    """The same names as our benchmark's SKUs (in the peer's own schema)."""
    return [f"SKU-BENCH-{i:03d}" for i in range(skus)]


def make_orders(prefix: str, orders: int, skus: int, *, token: str = "tok_visa") -> list[Order]:
    """``orders`` one-item orders spread round-robin over ``skus`` SKUs."""
    names = sku_names(skus)
    return [Order(uid=f"{prefix}-{i:05d}", sku=names[i % len(names)], payment_token=token)
            for i in range(orders)]


# --- the database -------------------------------------------------------------------------


class Db(Protocol):
    """The two calls the effects need, with asyncpg-style ``$n`` parameters.

    Why a protocol: DBOS runs its transactions on a SQLAlchemy session (psycopg) that it
    opens and commits together with its checkpoint, Temporal's activities on asyncpg; the
    SQL must be the same text on both.
    """

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it touched."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        """Run a query; its rows."""
        ...


class _AsyncpgDb:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._conn.execute(sql, *args)
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        rows = await self._conn.fetch(sql, *args)
        return [dict(r) for r in rows]


def asyncpg_db(conn: asyncpg.Connection) -> Db:
    """A :class:`Db` on an asyncpg connection (already in a transaction if need be)."""
    return _AsyncpgDb(conn)


def _check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


SERVICES = ("inventory", "payment", "shipping", "notification")


async def ensure_schema(database_url: str, schema: str) -> None:
    """Our services' own migrations, applied into the peer's schema: the same tables,
    exactly (their inbox/outbox tables come along unused). Idempotent, and safe to race."""
    migrations = [m for service in SERVICES
                  for m in load_migrations(f"vyapaar_services.{service}.migrations", service)]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        await migrate(pool, _check_identifier(schema), migrations)
    finally:
        await pool.close()


async def seed_stock(database_url: str, schema: str, skus: Sequence[str],
                     available: int = GENEROUS_STOCK) -> None:
    """Put ``available`` on every SKU, as our benchmark does before a point."""
    s = _check_identifier(schema)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(
            f"""INSERT INTO {s}.stock (sku, available) VALUES ($1, $2)
                ON CONFLICT (sku) DO UPDATE SET available = EXCLUDED.available,
                                                updated_at = now()""",
            [(sku, available) for sku in skus])
    finally:
        await conn.close()


# --- the SQL effects of the steps -----------------------------------------------------------


def _first(rows: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return rows[0] if rows else None


def _key(order: Order, step: str) -> str:
    """The idempotency key of a step and its compensation, as our operator makes it."""
    return f"{order.uid}:{step}"


def render(template: str, order: Order, data: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) exactly as our notification service renders them."""
    return notification.render(contracts.NotificationTemplate(template),
                               contracts.Customer(**order.customer()), order.uid, dict(data))


class Effects:
    """Each step's SQL, one transaction each (the caller owns the transaction).

    Forward steps return ``None`` on success or the rejection reason, like our services'
    replies; compensations return nothing. Every step first looks its idempotency key up,
    as our handlers do, so an at-least-once runner (Temporal's activities) stays exact.
    """

    def __init__(self, schema: str) -> None:
        self.schema = _check_identifier(schema)

    async def reserve(self, db: Db, order: Order) -> str | None:
        s, key = self.schema, _key(order, "reserve")
        existing = _first(await db.fetch(
            f"SELECT id, status, reason FROM {s}.reservations WHERE idempotency_key = $1 "
            "FOR UPDATE", key))
        if existing is not None:
            if existing["status"] == "tombstone":
                return "ALREADY_COMPENSATED"
            return str(existing["reason"]) if existing["status"] == "rejected" else None
        items = sorted(order.items())
        taken: list[tuple[str, int]] = []
        rejection: tuple[str, str] | None = None
        for sku, quantity in items:
            moved = await db.execute(
                f"""UPDATE {s}.stock SET available = available - $2, held = held + $2,
                           updated_at = now()
                    WHERE sku = $1 AND available >= $2""", sku, quantity)
            if moved != 1:
                known = await db.fetch(f"SELECT true AS found FROM {s}.stock WHERE sku = $1", sku)
                rejection = ("OUT_OF_STOCK" if known else "UNKNOWN_SKU", sku)
                break
            taken.append((sku, quantity))
        for sku, quantity in taken if rejection else ():  # all items or none
            await db.execute(
                f"""UPDATE {s}.stock SET available = available + $2, held = held - $2
                    WHERE sku = $1""", sku, quantity)
        reservation_id = uuid.uuid4()
        await db.execute(
            f"""INSERT INTO {s}.reservations (id, order_uid, idempotency_key, status, reason,
                                              reason_sku)
                VALUES ($1, $2, $3, $4, $5, $6)""",
            reservation_id, order.uid, key, "rejected" if rejection else "held",
            rejection[0] if rejection else None, rejection[1] if rejection else None)
        for sku, quantity in items:
            await db.execute(
                f"""INSERT INTO {s}.reservation_items (reservation_id, sku, quantity)
                    VALUES ($1, $2, $3)""", reservation_id, sku, quantity)
        return rejection[0] if rejection else None

    async def release(self, db: Db, order: Order) -> None:
        s, key = self.schema, _key(order, "reserve")
        existing = _first(await db.fetch(
            f"SELECT id, status FROM {s}.reservations WHERE idempotency_key = $1 FOR UPDATE",
            key))
        if existing is None:
            await db.execute(
                f"""INSERT INTO {s}.reservations (id, order_uid, idempotency_key, status)
                    VALUES ($1, $2, $3, 'tombstone')""", uuid.uuid4(), order.uid, key)
            return
        if existing["status"] != "held":
            return
        for row in await db.fetch(
                f"SELECT sku, quantity FROM {s}.reservation_items WHERE reservation_id = $1 "
                "ORDER BY sku", existing["id"]):
            await db.execute(
                f"""UPDATE {s}.stock SET held = held - $2, available = available + $2,
                           updated_at = now() WHERE sku = $1""", row["sku"], row["quantity"])
        await db.execute(
            f"UPDATE {s}.reservations SET status = 'released', updated_at = now() WHERE id = $1",
            existing["id"])

    async def commit(self, db: Db, order: Order) -> None:
        s = self.schema
        reservations = await db.fetch(
            f"""SELECT id, status FROM {s}.reservations
                WHERE order_uid = $1 AND status IN ('held', 'committed')
                ORDER BY created_at FOR UPDATE""", order.uid)
        if not reservations:
            raise RuntimeError(f"order {order.uid} has no held reservation to commit")
        for reservation in reservations:
            if reservation["status"] != "held":
                continue
            for row in await db.fetch(
                    f"SELECT sku, quantity FROM {s}.reservation_items WHERE reservation_id = $1 "
                    "ORDER BY sku", reservation["id"]):
                await db.execute(
                    f"""UPDATE {s}.stock SET held = held - $2, committed = committed + $2,
                               updated_at = now() WHERE sku = $1""", row["sku"], row["quantity"])
            await db.execute(
                f"""UPDATE {s}.reservations SET status = 'committed', updated_at = now()
                    WHERE id = $1""", reservation["id"])

    async def pay(self, db: Db, order: Order) -> str | None:
        s, key = self.schema, _key(order, "pay")
        existing = _first(await db.fetch(
            f"SELECT status, reason FROM {s}.payments WHERE idempotency_key = $1 FOR UPDATE",
            key))
        if existing is not None:
            if existing["status"] in ("captured", "refunded"):
                return None
            return str(existing["reason"] or "ALREADY_COMPENSATED")
        payment_id = uuid.uuid4()
        decline = {"tok_decline": "CARD_DECLINED",
                   "tok_insufficient_funds": "INSUFFICIENT_FUNDS"}.get(order.payment_token)
        charge_id = None if decline else f"ch_{uuid.uuid4().hex}"
        await db.execute(
            f"""INSERT INTO {s}.payments (id, order_uid, idempotency_key, status, amount,
                                          currency, customer_id, reason, charge_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            payment_id, order.uid, key, "declined" if decline else "captured", order.amount,
            order.currency, order.customer_id, decline, charge_id)
        if decline:
            return decline
        await db.execute(
            f"""INSERT INTO {s}.ledger_entries (entry_id, payment_id, order_uid, kind, amount,
                                                currency)
                VALUES ($1, $2, $3, 'charge', $4, $5)""",
            charge_id, payment_id, order.uid, order.amount, order.currency)
        return None

    async def refund(self, db: Db, order: Order) -> None:
        s, key = self.schema, _key(order, "pay")
        payment = _first(await db.fetch(
            f"""SELECT id, status, amount, currency, order_uid FROM {s}.payments
                WHERE idempotency_key = $1 FOR UPDATE""", key))
        if payment is None:
            await db.execute(
                f"""INSERT INTO {s}.payments (id, order_uid, idempotency_key, status)
                    VALUES ($1, $2, $3, 'tombstone')""", uuid.uuid4(), order.uid, key)
            return
        if payment["status"] != "captured":
            return
        refund_id = f"re_{uuid.uuid4().hex}"
        await db.execute(
            f"""INSERT INTO {s}.ledger_entries (entry_id, payment_id, order_uid, kind, amount,
                                                currency)
                VALUES ($1, $2, $3, 'refund', $4, $5)""",
            refund_id, payment["id"], payment["order_uid"], payment["amount"],
            payment["currency"])
        await db.execute(
            f"""UPDATE {s}.payments SET status = 'refunded', refund_id = $2, updated_at = now()
                WHERE id = $1 AND status = 'captured'""", payment["id"], refund_id)

    async def ship(self, db: Db, order: Order) -> tuple[str | None, str | None]:
        """(tracking id, None) or (None, rejection reason)."""
        s, key = self.schema, _key(order, "ship")
        existing = _first(await db.fetch(
            f"SELECT status, tracking_id FROM {s}.shipments WHERE idempotency_key = $1 "
            "FOR UPDATE", key))
        if existing is not None:
            if existing["status"] in ("created", "voided"):
                return str(existing["tracking_id"]), None
            reason = "UNDELIVERABLE_ADDRESS" if existing["status"] == "rejected" else (
                "ALREADY_COMPENSATED")
            return None, reason
        marker = "UNDELIVERABLE"
        rejected = (marker in order.address_name.upper() or marker in order.address_line1.upper()
                    or order.address_country == "AQ")
        tracking_id = None if rejected else "VN" + secrets.token_hex(6).upper()
        await db.execute(
            f"""INSERT INTO {s}.shipments (id, order_uid, idempotency_key, status, tracking_id,
                                           reason, address, items)
                VALUES ($1, $2, $3, $4, $5, $6, CAST($7 AS jsonb), CAST($8 AS jsonb))""",
            uuid.uuid4(), order.uid, key, "rejected" if rejected else "created", tracking_id,
            "UNDELIVERABLE_ADDRESS" if rejected else None, json.dumps(order.address()),
            json.dumps(order.item_payloads()))
        return (None, "UNDELIVERABLE_ADDRESS") if rejected else (tracking_id, None)

    async def void(self, db: Db, order: Order) -> None:
        s, key = self.schema, _key(order, "ship")
        shipment = _first(await db.fetch(
            f"SELECT id, status FROM {s}.shipments WHERE idempotency_key = $1 FOR UPDATE",
            key))
        if shipment is None:
            await db.execute(
                f"""INSERT INTO {s}.shipments (id, order_uid, idempotency_key, status)
                    VALUES ($1, $2, $3, 'tombstone')""", uuid.uuid4(), order.uid, key)
            return
        if shipment["status"] == "created":
            await db.execute(
                f"UPDATE {s}.shipments SET status = 'voided', updated_at = now() WHERE id = $1",
                shipment["id"])

    async def notify(self, db: Db, order: Order, template: str,
                     data: Mapping[str, Any]) -> None:
        s = self.schema
        step = {"order-confirmed": "notify", "order-failed": "notify-failed"}.get(
            template, "notify-cancelled")
        key = _key(order, step)
        if await db.fetch(f"SELECT id FROM {s}.notifications WHERE idempotency_key = $1", key):
            return
        subject, body = render(template, order, data)
        await db.execute(
            f"""INSERT INTO {s}.notifications (id, order_uid, idempotency_key, template,
                                               customer_id, recipient, subject, body,
                                               customer, data)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CAST($9 AS jsonb), CAST($10 AS jsonb))""",
            uuid.uuid4(), order.uid, key, template, order.customer_id, order.customer_email,
            subject, body, json.dumps(order.customer()), json.dumps(dict(data)))


# --- the saga ---------------------------------------------------------------------------------


class SagaSteps(Protocol):
    """The steps as the orchestrator runs them: each one durable, one transaction each."""

    async def reserve(self, order: Order) -> str | None: ...
    async def release(self, order: Order) -> None: ...
    async def pay(self, order: Order) -> str | None: ...
    async def refund(self, order: Order) -> None: ...
    async def ship(self, order: Order) -> tuple[str | None, str | None]: ...
    async def void(self, order: Order) -> None: ...
    async def commit(self, order: Order) -> None: ...
    async def notify(self, order: Order, template: str, data: dict[str, Any]) -> None: ...


async def order_saga(order: Order, steps: SagaSteps) -> str:
    """Our saga's plan: reserve, pay, ship (pivot), then commit and notify; on a rejection
    before the pivot, compensate what was done in reverse order and send order-failed.

    Deterministic (no clock, no randomness): Temporal replays it as workflow code.
    """
    reason = await steps.reserve(order)
    if reason is not None:
        await steps.notify(order, "order-failed", {"reason": reason})
        return FAILED_PREFIX + reason
    reason = await steps.pay(order)
    if reason is not None:
        await steps.release(order)
        await steps.notify(order, "order-failed", {"reason": reason})
        return FAILED_PREFIX + reason
    tracking_id, reason = await steps.ship(order)
    if reason is not None:
        await steps.void(order)
        await steps.refund(order)
        await steps.release(order)
        await steps.notify(order, "order-failed", {"reason": reason})
        return FAILED_PREFIX + reason
    await steps.commit(order)
    await steps.notify(order, "order-confirmed", {"trackingId": tracking_id})
    return COMPLETED


# --- the load ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """Outcome counts and timings of one open-loop point."""

    completed: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def drive(run_one: Callable[[Order], Awaitable[str]], orders: Sequence[Order],
                rate: float, *, timeout_s: float = 600.0) -> LoadResult:
    """Start order i at ``t0 + i / rate`` whatever the earlier ones are doing (open loop).

    Each latency runs from the order's planned start, not from when the start call got
    going, so a client that falls behind shows in the figures (no coordinated omission).
    An order still running after ``timeout_s`` counts as failed.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    loop = asyncio.get_running_loop()
    result = LoadResult()
    t0 = loop.time() + 0.05
    last_end = t0

    async def one(i: int, order: Order) -> None:
        nonlocal last_end
        planned = t0 + i / rate
        await asyncio.sleep(max(0.0, planned - loop.time()))
        try:
            outcome = await asyncio.wait_for(run_one(order), timeout_s)
        except Exception as exc:  # counted, and the first few kept for the report
            outcome = f"{FAILED_PREFIX}{type(exc).__name__}: {exc}"
            if len(result.errors) < 5:
                result.errors.append(f"{order.uid}: {type(exc).__name__}: {exc}")
        end = loop.time()
        last_end = max(last_end, end)
        result.latencies_s.append(end - planned)
        if outcome == COMPLETED:
            result.completed += 1
        else:
            result.failed += 1

    await asyncio.gather(*(one(i, order) for i, order in enumerate(orders)))
    result.elapsed_s = last_end - t0
    return result


# --- CPU ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # [0] is field 3 of proc(5): the state


def _ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: a reaped child (a closed backend) still counts."""
    fields = _stat_fields(pid)
    return 0 if fields is None else sum(int(f) for f in fields[11:15])


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == ppid:
                out.append(int(entry.name))
    return out


def postgres_pids(postmaster: int | None) -> Callable[[], list[int]]:
    """The postmaster and all its children, looked up anew at every sample.

    The postmaster comes first: :class:`CpuMeter` re-reads the first pid of a group after
    the others and samples again if it changed (a child was reaped mid-sample and would
    count twice or not at all).
    """
    if postmaster is None:
        return list  # another PID namespace: not measurable from here
    return lambda: [postmaster, *_children(postmaster)]


class CpuMeter:
    """CPU seconds by named process group, between :meth:`start` and :meth:`stop`.

    A group is a function returning its current pids, so processes born during the point
    (a new PostgreSQL backend) count from zero and ones that die are in their parent's
    ``cutime`` — the delta stays right.
    """

    def __init__(self, groups: Mapping[str, Callable[[], Sequence[int]]]) -> None:
        self._groups = dict(groups)
        self._before: dict[str, int] = {}

    @staticmethod
    def _group_ticks(pids: Sequence[int]) -> int:
        total = 0
        for _ in range(5):
            if not pids:
                return 0
            first = _ticks(pids[0])
            total = first + sum(_ticks(pid) for pid in pids[1:])
            if _ticks(pids[0]) == first:
                break
        return total

    def _sample(self) -> dict[str, int]:
        return {name: self._group_ticks(pids()) for name, pids in self._groups.items()}

    def start(self) -> None:
        self._before = self._sample()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        return {name: max(0, after[name] - self._before.get(name, 0)) / CLK_TCK
                for name in self._groups}


async def postmaster_pid(database_url: str) -> int | None:
    """The pid of the PostgreSQL server behind ``database_url``: the parent of a backend,
    read while that backend lives (None if it is not visible from this PID namespace)."""
    conn = await asyncpg.connect(database_url)
    try:
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        fields = _stat_fields(backend)
        return int(fields[1]) if fields is not None else None
    finally:
        await conn.close()


def run_tag() -> str:
    """A short unique prefix for a point's order ids (points reuse the same tables)."""
    return f"{time.strftime('%H%M%S')}{secrets.token_hex(2)}"
