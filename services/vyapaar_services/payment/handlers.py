"""Payment message handlers: ChargePayment, RefundPayment, and the simulated processor.

Simulated processor, deterministic by token: ``tok_decline`` -> CARD_DECLINED,
``tok_insufficient_funds`` -> INSUFFICIENT_FUNDS, any other token (e.g. ``tok_visa``)
succeeds. Fault injection (:class:`~vyapaar_services.common.faults.FaultInjector`) adds
latency and TRANSIENT errors to processor calls; such an error rolls the transaction back
and the message goes through the delayed-retry path (it is not a decline).

* ChargePayment: a key with a tombstone -> PaymentDeclined(ALREADY_COMPENSATED); a decline
  is recorded (no money moves); a capture writes the payment and a ``charge`` ledger entry.
* RefundPayment (compensation, same key): a captured payment is refunded in full (a
  ``refund`` ledger entry, ``noop=false``); no payment -> tombstone, ``noop=true``,
  ``amount=0``; declined / already tombstoned -> ``noop=true``.
"""

from __future__ import annotations

import uuid
from typing import Literal

import asyncpg
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import Envelope

from vyapaar_services.common import metrics
from vyapaar_services.common.faults import FaultInjector
from vyapaar_services.common.handling import CommandHandler
from vyapaar_services.payment import store

__all__ = ["SimulatedProcessor", "build_handlers"]

DeclineReason = Literal["CARD_DECLINED", "INSUFFICIENT_FUNDS"]
DECLINING_TOKENS: dict[str, DeclineReason] = {
    "tok_decline": "CARD_DECLINED",
    "tok_insufficient_funds": "INSUFFICIENT_FUNDS",
}


class SimulatedProcessor:
    def __init__(self, faults: FaultInjector) -> None:
        self.faults = faults

    async def charge(self, token: str, amount: int, currency: str) -> str | DeclineReason:
        """A charge id, or the decline reason. Raises InjectedFault (transient)."""
        await self.faults.call("charge")
        reason = DECLINING_TOKENS.get(token)
        if reason is not None:
            metrics.PROCESSOR_CALLS.labels("payment", "charge", "declined").inc()
            return reason
        metrics.PROCESSOR_CALLS.labels("payment", "charge", "ok").inc()
        return f"ch_{uuid.uuid4().hex}"

    async def refund(self, charge_id: str, amount: int) -> str:
        await self.faults.call("refund")
        metrics.PROCESSOR_CALLS.labels("payment", "refund", "ok").inc()
        return f"re_{uuid.uuid4().hex}"


def build_handlers(faults: FaultInjector) -> dict[str, CommandHandler]:
    processor = SimulatedProcessor(faults)

    async def charge_payment(
        conn: asyncpg.Connection, envelope: Envelope, command: contracts.ChargePayment
    ) -> contracts.PaymentCaptured | contracts.PaymentDeclined:
        key = envelope.idempotency_key
        existing = await store.get_payment_by_key(conn, key)
        if existing is not None:
            if existing["status"] in ("captured", "refunded"):
                return contracts.PaymentCaptured(
                    charge_id=existing["charge_id"],
                    amount=existing["amount"],
                    currency=existing["currency"],
                )
            if existing["status"] == "declined":
                return contracts.PaymentDeclined(reason=existing["reason"])
            return contracts.PaymentDeclined(reason="ALREADY_COMPENSATED")

        outcome = await processor.charge(command.token, command.amount, command.currency)
        if outcome in DECLINING_TOKENS.values():
            await store.insert_payment(
                conn,
                order_uid=envelope.correlation_id,
                key=key,
                status="declined",
                amount=command.amount,
                currency=command.currency,
                customer_id=command.customer.id,
                reason=outcome,
            )
            return contracts.PaymentDeclined.model_validate({"reason": outcome})
        payment_id = await store.insert_payment(
            conn,
            order_uid=envelope.correlation_id,
            key=key,
            status="captured",
            amount=command.amount,
            currency=command.currency,
            customer_id=command.customer.id,
            charge_id=outcome,
        )
        await store.add_ledger_entry(
            conn,
            entry_id=outcome,
            payment_id=payment_id,
            order_uid=envelope.correlation_id,
            kind="charge",
            amount=command.amount,
            currency=command.currency,
        )
        return contracts.PaymentCaptured(
            charge_id=outcome, amount=command.amount, currency=command.currency
        )

    async def refund_payment(
        conn: asyncpg.Connection, envelope: Envelope, _command: contracts.RefundPayment
    ) -> contracts.PaymentRefunded:
        key = envelope.idempotency_key
        payment = await store.get_payment_by_key(conn, key)
        if payment is None:
            await store.insert_payment(
                conn, order_uid=envelope.correlation_id, key=key, status="tombstone"
            )
            return contracts.PaymentRefunded(refund_id=None, amount=0, noop=True)
        if payment["status"] == "captured":
            refund_id = await processor.refund(payment["charge_id"], payment["amount"])
            await store.add_ledger_entry(
                conn,
                entry_id=refund_id,
                payment_id=payment["id"],
                order_uid=payment["order_uid"],
                kind="refund",
                amount=payment["amount"],
                currency=payment["currency"],
            )
            await store.mark_refunded(conn, payment["id"], refund_id)
            return contracts.PaymentRefunded(
                refund_id=refund_id, amount=payment["amount"], noop=False
            )
        if payment["status"] == "refunded":
            return contracts.PaymentRefunded(
                refund_id=payment["refund_id"], amount=payment["amount"], noop=False
            )
        return contracts.PaymentRefunded(refund_id=None, amount=0, noop=True)

    return {"ChargePayment": charge_payment, "RefundPayment": refund_payment}
