"""The simulated card processor: an outside party with a memory of its own.

A real processor is another company's system. The money moves when it answers, not when the
payment service commits; if the service fails in between, only an idempotency key stops
the retry from capturing again. So this one keeps its own record (``processor_operations``,
each call committed at once on a connection of its own, outside the service's transaction)
and honours the key the service passes with every call: the same key gets the first answer
again. It has a small connection pool of its own, as a remote system would, so a handler
that holds one of the service's connections can always reach it. The invariant checks
compare this record with the service's ledger: no money moved that the ledger does not show.

Deterministic by token: ``tok_decline`` -> CARD_DECLINED, ``tok_insufficient_funds`` ->
INSUFFICIENT_FUNDS, any other token (e.g. ``tok_visa``) is captured; its fraud screening
scores ``tok_fraud`` as suspected and any other token as clean. Fault injection adds
latency and transient errors before the processor acts.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from vyapaar_services.common import db, metrics
from vyapaar_services.common.faults import FaultInjector

__all__ = ["DECLINING_TOKENS", "SUSPECTED_TOKENS", "Charge", "DeclineReason", "Screening",
           "SimulatedProcessor", "operations"]

DeclineReason = Literal["CARD_DECLINED", "INSUFFICIENT_FUNDS"]
DECLINING_TOKENS: dict[str, DeclineReason] = {
    "tok_decline": "CARD_DECLINED",
    "tok_insufficient_funds": "INSUFFICIENT_FUNDS",
}

SUSPECTED_TOKENS = frozenset({"tok_fraud"})
SUSPECTED_FROM = 80
"""Risk scores from here on are refused as suspected fraud."""


@dataclass(frozen=True)
class Screening:
    """The processor's fraud screening of a payment: a risk score from 0 to 100."""

    score: int

    @property
    def suspected(self) -> bool:
        return self.score >= SUSPECTED_FROM


@dataclass(frozen=True)
class Charge:
    """The processor's answer to a charge: captured (``id``) or declined (``reason``)."""

    id: str
    captured: bool
    reason: DeclineReason | None = None


class SimulatedProcessor:
    def __init__(self, faults: FaultInjector, database_url: str, schema: str,
                 pool_size: int = 4) -> None:
        self.faults = faults
        self.database_url = database_url
        self.schema = schema
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await db.create_pool(
                    self.database_url, self.schema, min_size=0, max_size=self.pool_size,
                    application_name="vyapaar-payment-processor")
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def charge(self, *, idempotency_key: str, order_uid: str, token: str, amount: int,
                     currency: str) -> Charge:
        """Capture ``amount`` (or decline); the same key answers as it did the first time.
        Raises InjectedFault (transient) before acting."""
        await self.faults.call("charge")
        reason = DECLINING_TOKENS.get(token)
        row = await self._record(
            idempotency_key, "charge", order_uid=order_uid,
            id=f"dc_{uuid.uuid4().hex}" if reason else f"ch_{uuid.uuid4().hex}",
            outcome="declined" if reason else "captured", amount=amount, currency=currency,
            reason=reason)
        return Charge(row["id"], row["outcome"] == "captured", row["reason"])

    async def charge_made(self, idempotency_key: str) -> tuple[Charge, int, str] | None:
        """The charge the processor made with this key (with its amount and currency), if
        any: a read, as a real processor lets a merchant look a key up."""
        async with (await self.pool()).acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM processor_operations"
                " WHERE idempotency_key = $1 AND operation = 'charge'", idempotency_key)
        if row is None:
            return None
        charge = Charge(row["id"], row["outcome"] == "captured", row["reason"])
        return charge, int(row["amount"]), str(row["currency"])

    async def screen(self, *, token: str, amount: int, currency: str) -> Screening:
        """Score the fraud risk of a payment before it is charged.  A read: nothing moves and
        nothing is recorded, so asking again gets the same score.  Raises InjectedFault
        (transient) before answering."""
        await self.faults.call("screen")
        screening = Screening(95 if token in SUSPECTED_TOKENS else 5)
        outcome = "declined" if screening.suspected else "ok"
        metrics.PROCESSOR_CALLS.labels("payment", "screen", outcome).inc()
        return screening

    async def refund(self, *, idempotency_key: str, order_uid: str, charge_id: str,
                     amount: int, currency: str) -> str:
        """Refund a capture in full; the same key answers with the same refund id."""
        await self.faults.call("refund")
        row = await self._record(
            idempotency_key, "refund", order_uid=order_uid, id=f"re_{uuid.uuid4().hex}",
            outcome="refunded", amount=amount, currency=currency, charge_id=charge_id)
        return str(row["id"])

    async def _record(self, key: str, operation: str, **values: Any) -> asyncpg.Record:
        async with (await self.pool()).acquire() as conn:
            row = await conn.fetchrow(
                """INSERT INTO processor_operations
                       (id, idempotency_key, operation, order_uid, outcome, amount, currency,
                        reason, charge_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (idempotency_key, operation) DO NOTHING RETURNING *""",
                values["id"], key, operation, values["order_uid"], values["outcome"],
                values["amount"], values["currency"], values.get("reason"),
                values.get("charge_id"))
            replayed = row is None
            if replayed:
                row = await conn.fetchrow(
                    "SELECT * FROM processor_operations"
                    " WHERE idempotency_key = $1 AND operation = $2", key, operation)
        assert row is not None
        outcome = "replayed" if replayed else ("declined" if row["outcome"] == "declined"
                                               else "ok")
        metrics.PROCESSOR_CALLS.labels("payment", operation, outcome).inc()
        return row


async def operations(conn: asyncpg.Connection | asyncpg.Pool, order_uid: str | None,
                     limit: int = 1000) -> dict[str, Any]:
    """What the processor did (for one order, or everything), and per-currency totals."""
    rows = await conn.fetch(
        """SELECT * FROM processor_operations WHERE $1::text IS NULL OR order_uid = $1
           ORDER BY created_at DESC LIMIT $2""", order_uid, limit)
    totals = await conn.fetch(
        """SELECT currency,
                  coalesce(sum(amount) FILTER (WHERE outcome = 'captured'), 0) AS captured,
                  coalesce(sum(amount) FILTER (WHERE outcome = 'refunded'), 0) AS refunded
           FROM processor_operations WHERE $1::text IS NULL OR order_uid = $1
           GROUP BY currency ORDER BY currency""", order_uid)
    return {
        "operations": [
            {"id": r["id"], "idempotencyKey": r["idempotency_key"], "operation": r["operation"],
             "orderUid": r["order_uid"], "outcome": r["outcome"], "amount": r["amount"],
             "currency": r["currency"], "reason": r["reason"], "chargeId": r["charge_id"],
             "createdAt": r["created_at"]}
            for r in rows
        ],
        "totals": {t["currency"]: {"captured": int(t["captured"]),
                                   "refunded": int(t["refunded"])} for t in totals},
    }
