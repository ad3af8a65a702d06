"""Payment service, end to end: charges and refunds over RabbitMQ, the ledger in
PostgreSQL, replies through the outbox; deterministic tokens and fault injection."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vyapaar_messaging import Envelope, Publisher, Topology, contracts, dlq
from vyapaar_services.payment.app import create_app

CUSTOMER = contracts.Customer(id="cust-1", email="asha@example.com", name="Asha")


def new_order() -> str:
    return str(uuid.uuid4())


def charge(uid: str, amount: int = 2599, token: str = "tok_visa") -> Envelope:
    return Envelope.create(
        contracts.ChargePayment(amount=amount, currency="INR", token=token, customer=CUSTOMER),
        correlation_id=uid,
        subject="shop/order",
        idempotency_key=contracts.idempotency_key(uid, "pay"),
    )


def refund(uid: str) -> Envelope:
    return Envelope.create(
        contracts.RefundPayment(),
        correlation_id=uid,
        subject="shop/order",
        idempotency_key=contracts.idempotency_key(uid, "pay"),  # same key as the charge
    )


def retried(envelope: Envelope) -> Envelope:
    return envelope.model_copy(update={"id": str(uuid.uuid4())})


@pytest.fixture(scope="module")
async def payment(service_runner: Any) -> Any:
    return await service_runner(create_app, "payment")


async def ledger(payment: Any, uid: str) -> dict[str, Any]:
    response = await payment.client.get("/api/v1/ledger", params={"order": uid})
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_a_charge_is_captured_once_in_the_ledger(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    cmd = charge(uid, amount=2599)

    await publisher.send_command(cmd)

    [reply] = await replies.wait(uid)
    assert reply.type == "PaymentCaptured"
    assert reply.causation_id == cmd.id
    assert reply.payload["amount"] == 2599
    assert reply.payload["currency"] == "INR"
    book = await ledger(payment, uid)
    [entry] = book["entries"]
    assert entry["kind"] == "charge"
    assert entry["id"] == reply.payload["chargeId"]
    assert book["totals"] == {"INR": {"charged": 2599, "refunded": 0, "net": 2599}}


async def test_a_redelivered_or_retried_charge_never_charges_twice(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    cmd = charge(uid)
    await publisher.send_command(cmd)
    await replies.wait(uid, 1)

    await publisher.send_command(cmd)  # same message id
    await publisher.send_command(retried(cmd))  # new message id, same key
    await publisher.send_command(retried(cmd))

    results = await replies.wait(uid, 4)
    assert {r.id for r in results} == {results[0].id}  # the original reply each time
    assert len((await ledger(payment, uid))["entries"]) == 1


async def test_a_charge_that_arrives_after_it_expired_is_not_acted_on(
    payment: Any, publisher: Publisher, replies: Any, topology: Topology, amqp_connection: Any,
) -> None:
    """The saga may have given up on it and sent the refund: charging now would be a charge
    and a refund the customer sees. Dropped unanswered, acked, not dead-lettered."""
    uid = new_order()
    past = datetime.now(UTC) - timedelta(seconds=1)
    late = charge(uid).model_copy(update={"expires": past})
    await publisher.send_command(late)
    await publisher.send_command(refund(uid))  # the saga's compensation, right behind it
    [answer] = await replies.wait(uid)
    assert answer.type == "PaymentRefunded"
    assert answer.payload == {"refundId": None, "amount": 0, "noop": True}
    assert (await processor_record(payment, uid))["operations"] == []
    assert (await ledger(payment, uid))["entries"] == []
    assert await dlq.show_message(amqp_connection, topology.command_queue("payment"),
                                  late.id) is None


async def test_an_expired_retry_of_a_charge_already_made_gets_the_original_answer(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    first = charge(uid)
    await publisher.send_command(first)
    [captured] = await replies.wait(uid)
    past = datetime.now(UTC) - timedelta(seconds=1)
    await publisher.send_command(retried(first).model_copy(update={"expires": past}))
    _, again = await replies.wait(uid, 2)
    assert again.id == captured.id  # the stored reply, replayed: a reply to any attempt counts


@pytest.mark.parametrize(
    ("token", "reason"),
    [("tok_decline", "CARD_DECLINED"), ("tok_insufficient_funds", "INSUFFICIENT_FUNDS")],
)
async def test_test_tokens_decline_deterministically_and_move_no_money(
    payment: Any, publisher: Publisher, replies: Any, token: str, reason: str
) -> None:
    uid = new_order()
    await publisher.send_command(charge(uid, token=token))
    [reply] = await replies.wait(uid)
    assert reply.type == "PaymentDeclined"
    assert reply.payload == {"reason": reason}
    book = await ledger(payment, uid)
    assert book["entries"] == []
    assert book["payments"][0]["status"] == "declined"


def fraud_check(uid: str, token: str = "tok_visa") -> Envelope:
    return Envelope.create(
        contracts.CheckFraud(amount=2599, currency="INR", token=token, customer=CUSTOMER),
        correlation_id=uid,
        subject="shop/order",
        idempotency_key=contracts.idempotency_key(uid, "fraud-check"),
    )


@pytest.mark.parametrize(("token", "answer", "score"), [
    ("tok_visa", "FraudCheckPassed", 5), ("tok_fraud", "FraudSuspected", 95)])
async def test_a_fraud_check_screens_the_payment_and_moves_no_money(
    payment: Any, publisher: Publisher, replies: Any, token: str, answer: str, score: int
) -> None:
    uid = new_order()
    cmd = fraud_check(uid, token)

    await publisher.send_command(cmd)
    await publisher.send_command(retried(cmd))  # a retry gets the same answer

    first, second = await replies.wait(uid, count=2)
    assert [first.type, second.type] == [answer, answer]
    assert first.payload["score"] == second.payload["score"] == score
    if answer == "FraudSuspected":
        assert first.payload["reason"] == "FRAUD_SUSPECTED"
    assert (await ledger(payment, uid))["entries"] == []


async def test_a_refund_returns_the_whole_capture_and_is_idempotent(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    await publisher.send_command(charge(uid, amount=1000))
    await replies.wait(uid, 1)

    undo = refund(uid)
    await publisher.send_command(undo)
    await publisher.send_command(retried(undo))

    _, refunded, again = await replies.wait(uid, 3)
    assert refunded.type == "PaymentRefunded"
    assert refunded.payload["amount"] == 1000
    assert refunded.payload["noop"] is False
    assert refunded.payload["refundId"].startswith("re_")
    assert again.id == refunded.id
    book = await ledger(payment, uid)
    assert sorted(e["kind"] for e in book["entries"]) == ["charge", "refund"]
    assert book["totals"]["INR"] == {"charged": 1000, "refunded": 1000, "net": 0}


async def test_a_refund_before_any_charge_is_a_noop_and_the_late_charge_is_refused(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    await publisher.send_command(refund(uid))
    [refunded] = await replies.wait(uid)
    assert refunded.payload == {"refundId": None, "amount": 0, "noop": True}

    await publisher.send_command(charge(uid))
    _, refused = await replies.wait(uid, 2)
    assert refused.type == "PaymentDeclined"
    assert refused.payload == {"reason": "ALREADY_COMPENSATED"}
    book = await ledger(payment, uid)
    assert book["entries"] == []
    assert [p["status"] for p in book["payments"]] == ["tombstone"]


async def test_a_refund_of_a_declined_charge_is_a_noop(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    uid = new_order()
    await publisher.send_command(charge(uid, token="tok_decline"))
    await replies.wait(uid, 1)
    await publisher.send_command(refund(uid))
    _, refunded = await replies.wait(uid, 2)
    assert refunded.payload == {"refundId": None, "amount": 0, "noop": True}


async def test_an_injected_processor_error_is_transient_retried_then_redrivable(
    payment: Any,
    publisher: Publisher,
    replies: Any,
    topology: Topology,
    amqp_connection: Any,
    wait_until: Any,
) -> None:
    client = payment.client
    response = await client.put("/admin/faults", json={"errorRate": 1.0, "latencyMs": 0})
    assert await response.json() == {"errorRate": 1.0, "latencyMs": 0, "lostCommitRate": 0.0,
                                     "operations": []}
    queue = topology.command_queue("payment")
    uid = new_order()
    cmd = charge(uid)
    try:
        await publisher.send_command(cmd)

        async def dead_lettered() -> bool:
            return await dlq.show_message(amqp_connection, queue, cmd.id) is not None

        await wait_until(dead_lettered, within=15)  # after every delay tier
    finally:
        await client.put("/admin/faults", json={"errorRate": 0.0, "latencyMs": 0})

    shown = await dlq.show_message(amqp_connection, queue, cmd.id)
    assert shown is not None
    assert shown.reason == "exhausted"
    assert shown.attempts == 3
    assert "InjectedFault" in (shown.error or "")
    assert replies.for_order(uid) == []  # a processor error is not a decline
    assert (await ledger(payment, uid))["payments"] == []

    assert await dlq.redrive(amqp_connection, queue, [cmd.id]) == 1
    [captured] = await replies.wait(uid)
    assert captured.type == "PaymentCaptured"
    assert len((await ledger(payment, uid))["entries"]) == 1


async def processor_record(payment: Any, uid: str) -> dict[str, Any]:
    response = await payment.client.get("/api/v1/processor", params={"order": uid})
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


@pytest.mark.parametrize("operation", ["charge", "refund"])
async def test_a_failure_between_the_processor_and_the_commit_never_moves_money_twice(
    payment: Any, publisher: Publisher, replies: Any, topology: Topology, amqp_connection: Any,
    wait_until: Any, operation: str,
) -> None:
    queue = topology.command_queue("payment")
    uid = new_order()
    if operation == "refund":
        await publisher.send_command(charge(uid, amount=4200))
        await replies.wait(uid)
    cmd = charge(uid, amount=4200) if operation == "charge" else refund(uid)
    await payment.client.put("/admin/faults", json={"lostCommitRate": 1.0})
    try:
        await publisher.send_command(cmd)

        async def dead_lettered() -> bool:
            return await dlq.show_message(amqp_connection, queue, cmd.id) is not None

        await wait_until(dead_lettered, within=15)  # every attempt failed after the call
    finally:
        await payment.client.put("/admin/faults", json={"lostCommitRate": 0.0})

    # The processor acted (once, though it was called on every attempt); the ledger knows
    # nothing of it yet: this is the gap only the idempotency key bridges.
    outside = await processor_record(payment, uid)
    done = [o for o in outside["operations"] if o["operation"] == operation]
    assert len(done) == 1
    assert len((await ledger(payment, uid))["entries"]) == (0 if operation == "charge" else 1)

    assert await dlq.redrive(amqp_connection, queue, [cmd.id]) == 1
    await replies.wait(uid, 1 if operation == "charge" else 2)
    book = await ledger(payment, uid)
    outside = await processor_record(payment, uid)
    assert len(outside["operations"]) == len(book["entries"])
    assert {o["id"] for o in outside["operations"]} == {e["id"] for e in book["entries"]}
    assert outside["totals"]["INR"] == {
        "captured": book["totals"]["INR"]["charged"],
        "refunded": book["totals"]["INR"]["refunded"],
    }


async def test_a_refund_after_a_charge_whose_commit_failed_refunds_what_the_processor_took(
    payment: Any, publisher: Publisher, replies: Any, topology: Topology, amqp_connection: Any,
    wait_until: Any,
) -> None:
    """The processor captured, the service's commit failed, and the saga gave up on the
    charge before its retry came back: the refund must return the money, not tombstone it."""
    queue = topology.command_queue("payment")
    uid = new_order()
    cmd = charge(uid, amount=2598)
    await payment.client.put("/admin/faults", json={"lostCommitRate": 1.0})
    try:
        await publisher.send_command(cmd)

        async def dead_lettered() -> bool:
            return await dlq.show_message(amqp_connection, queue, cmd.id) is not None

        await wait_until(dead_lettered, within=15)
    finally:
        await payment.client.put("/admin/faults", json={"lostCommitRate": 0.0})
    assert (await ledger(payment, uid))["entries"] == []  # the money moved; no record here

    await publisher.send_command(refund(uid))
    [refunded] = await replies.wait(uid)
    assert refunded.type == "PaymentRefunded"
    assert refunded.payload["noop"] is False and refunded.payload["amount"] == 2598
    assert await dlq.redrive(amqp_connection, queue, [cmd.id]) == 1  # the late charge
    await replies.wait(uid, 2)
    book = await ledger(payment, uid)
    outside = await processor_record(payment, uid)
    assert outside["totals"]["INR"] == {"captured": 2598, "refunded": 2598}
    assert book["totals"]["INR"] == {"charged": 2598, "refunded": 2598, "net": 0}
    assert {o["id"] for o in outside["operations"]} == {e["id"] for e in book["entries"]}


async def test_latency_injection_slows_the_processor(
    payment: Any, publisher: Publisher, replies: Any
) -> None:
    await payment.client.put("/admin/faults", json={"errorRate": 0, "latencyMs": 300})
    try:
        uid = new_order()
        started = asyncio.get_running_loop().time()
        await publisher.send_command(charge(uid))
        await replies.wait(uid)
        assert asyncio.get_running_loop().time() - started >= 0.3
    finally:
        await payment.client.put("/admin/faults", json={"errorRate": 0, "latencyMs": 0})


async def test_fault_settings_are_validated(payment: Any) -> None:
    for body in ({"errorRate": 1.5}, {"latencyMs": -1}, {"errorRate": 0.1, "chaos": True},
                 {"lostCommitRate": -0.1}, {"operations": "refund"}):
        response = await payment.client.put("/admin/faults", json=body)
        assert response.status == 422
        assert response.content_type == "application/problem+json"
    assert await (await payment.client.get("/admin/faults")).json() == {
        "errorRate": 0.0,
        "latencyMs": 0,
        "lostCommitRate": 0.0,
        "operations": [],
    }


async def test_a_fault_limited_to_refunds_lets_charges_through(
    payment: Any, publisher: Publisher, replies: Any, topology: Topology, amqp_connection: Any,
    wait_until: Any,
) -> None:
    uid = new_order()
    queue = topology.command_queue("payment")
    await payment.client.put("/admin/faults", json={"errorRate": 1.0, "operations": ["refund"]})
    try:
        await publisher.send_command(charge(uid, amount=4200))
        [captured] = await replies.wait(uid)
        assert captured.type == "PaymentCaptured"
        cmd = refund(uid)
        await publisher.send_command(cmd)

        async def dead_lettered() -> bool:
            return await dlq.show_message(amqp_connection, queue, cmd.id) is not None

        await wait_until(dead_lettered, within=15)  # a refund outage
    finally:
        await payment.client.put("/admin/faults", json={"errorRate": 0.0})
    assert [e["kind"] for e in (await ledger(payment, uid))["entries"]] == ["charge"]


async def test_a_charge_that_breaks_the_contract_is_poison_and_changes_nothing(
    payment: Any, publisher: Publisher, topology: Topology, amqp_connection: Any, wait_until: Any
) -> None:
    uid = new_order()
    bad = charge(uid).model_copy(update={"payload": {"amount": 0, "currency": "INR"}})
    await publisher.send_command(bad)
    queue = topology.command_queue("payment")

    async def dead_lettered() -> bool:
        return await dlq.show_message(amqp_connection, queue, bad.id) is not None

    await wait_until(dead_lettered)
    shown = await dlq.show_message(amqp_connection, queue, bad.id)
    assert shown is not None
    assert shown.reason == "poison"
    assert (await ledger(payment, uid))["payments"] == []
