"""Payment message handlers: CheckFraud, ChargePayment and RefundPayment.

They call the simulated processor (:mod:`~vyapaar_services.payment.processor`, an outside
party with its own records) with the step's idempotency key. Fault injection adds latency
and TRANSIENT errors to processor calls, and failures after a call and before the commit
(``lostCommitRate``); either rolls the transaction back and the message goes through the
delayed-retry path (it is not a decline), where the key makes the processor answer as
before instead of moving the money again.

* CheckFraud (saga version 2, before the charge): the processor's screening, answered as
  FraudCheckPassed or FraudSuspected; a read, so nothing is stored and it needs no undo.
* ChargePayment: a key with a tombstone -> PaymentDeclined(ALREADY_COMPENSATED); a decline
  is recorded (no money moves); a capture writes the payment and a ``charge`` ledger entry.
* RefundPayment (compensation, same key): a captured payment is refunded in full (a
  ``refund`` ledger entry, ``noop=false``); no payment -> tombstone, ``noop=true``,
  ``amount=0``; declined / already tombstoned -> ``noop=true``. "No payment" is asked of
  the processor first: a charge whose commit failed after the processor captured it (its
  retry not yet back) left no payment here but moved the money, so its capture is
  recorded now and refunded like any other -- a tombstone would have kept the money.
"""

from __future__ import annotations

import asyncpg
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import Envelope

from vyapaar_services.common.handling import CommandHandler
from vyapaar_services.payment import store
from vyapaar_services.payment.processor import SimulatedProcessor

__all__ = ["build_handlers"]


def build_handlers(processor: SimulatedProcessor) -> dict[str, CommandHandler]:
    faults = processor.faults

    async def check_fraud(
        _conn: asyncpg.Connection, _envelope: Envelope, command: contracts.CheckFraud
    ) -> contracts.FraudCheckPassed | contracts.FraudSuspected:
        screening = await processor.screen(token=command.token, amount=command.amount,
                                           currency=command.currency)
        if screening.suspected:
            return contracts.FraudSuspected(reason="FRAUD_SUSPECTED", score=screening.score)
        return contracts.FraudCheckPassed(score=screening.score)

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

        outcome = await processor.charge(
            idempotency_key=key, order_uid=envelope.correlation_id, token=command.token,
            amount=command.amount, currency=command.currency)
        faults.after_call("charge")
        if not outcome.captured:
            await store.insert_payment(
                conn,
                order_uid=envelope.correlation_id,
                key=key,
                status="declined",
                amount=command.amount,
                currency=command.currency,
                customer_id=command.customer.id,
                reason=outcome.reason,
            )
            return contracts.PaymentDeclined.model_validate({"reason": outcome.reason})
        payment_id = await store.insert_payment(
            conn,
            order_uid=envelope.correlation_id,
            key=key,
            status="captured",
            amount=command.amount,
            currency=command.currency,
            customer_id=command.customer.id,
            charge_id=outcome.id,
        )
        await store.add_ledger_entry(
            conn,
            entry_id=outcome.id,
            payment_id=payment_id,
            order_uid=envelope.correlation_id,
            kind="charge",
            amount=command.amount,
            currency=command.currency,
        )
        return contracts.PaymentCaptured(
            charge_id=outcome.id, amount=command.amount, currency=command.currency
        )

    async def refund_payment(
        conn: asyncpg.Connection, envelope: Envelope, _command: contracts.RefundPayment
    ) -> contracts.PaymentRefunded:
        key = envelope.idempotency_key
        payment = await store.get_payment_by_key(conn, key)
        if payment is None:
            payment = await capture_the_processor_made(conn, envelope.correlation_id, key)
        if payment is None:
            await store.insert_payment(
                conn, order_uid=envelope.correlation_id, key=key, status="tombstone"
            )
            return contracts.PaymentRefunded(refund_id=None, amount=0, noop=True)
        if payment["status"] == "captured":
            refund_id = await processor.refund(
                idempotency_key=key, order_uid=payment["order_uid"],
                charge_id=payment["charge_id"], amount=payment["amount"],
                currency=payment["currency"])
            faults.after_call("refund")
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

    async def capture_the_processor_made(conn: asyncpg.Connection, order_uid: str,
                                          key: str) -> asyncpg.Record | None:
        """Record the capture the processor made with ``key`` while the charge's own
        transaction failed (None if it captured nothing)."""
        made = await processor.charge_made(key)
        if made is None or not made[0].captured:
            return None
        charge, amount, currency = made
        payment_id = await store.insert_payment(
            conn, order_uid=order_uid, key=key, status="captured", amount=amount,
            currency=currency, charge_id=charge.id)
        await store.add_ledger_entry(
            conn, entry_id=charge.id, payment_id=payment_id, order_uid=order_uid,
            kind="charge", amount=amount, currency=currency)
        return await store.get_payment_by_key(conn, key)

    return {"CheckFraud": check_fraud, "ChargePayment": charge_payment,
            "RefundPayment": refund_payment}
