"""Specifications of the Order saga, one path at a time (pure: no I/O, no clock).

Each test drives ``decide`` through a small :class:`Saga` harness that keeps the
state and a fake clock, and answers commands the way the services would.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from vyapaar_operator.saga import (
    FLOWS,
    PHASE_CHANGES,
    BreakerClosed,
    CancelRequested,
    Command,
    Decision,
    Deleted,
    Event,
    Flow,
    Held,
    InvalidOrderSpec,
    NotSent,
    OrderSpec,
    PauseChanged,
    Phase,
    Queued,
    Recover,
    Reply,
    Resume,
    SagaConfig,
    SagaState,
    Start,
    StepState,
    Tick,
    UnknownSagaVersion,
    decide,
    forget_published,
    next_deadline,
    unknown_version_status,
)

UID = "6d1f3c9e-1b0a-4c55-9e0e-0d5b7f2a9c41"
T0 = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
CONFIG = SagaConfig(
    step_timeout=timedelta(seconds=10),
    max_attempts=3,
    backoff_base=timedelta(seconds=1),
    backoff_max=timedelta(seconds=8),
    compensation_timeout=timedelta(seconds=20),
    compensation_max_attempts=2,
    compensation_backoff_base=timedelta(seconds=2),
    compensation_backoff_max=timedelta(seconds=30),
    timeline_limit=100,
)
CONFIG_V2 = replace(CONFIG, version=2)
CUSTOMER = {"id": "cust-42", "email": "asha@example.in", "name": "Asha Rao"}
ADDRESS = {
    "name": "Asha Rao",
    "line1": "12 MG Road",
    "city": "Bengaluru",
    "postalCode": "560001",
    "country": "IN",
}


def manifest(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "customer": CUSTOMER,
        "items": [
            {"sku": "SKU-LAPTOP", "quantity": 1, "unitPrice": 5_499_900},
            {"sku": "SKU-MOUSE", "quantity": 2, "unitPrice": 79_900},
        ],
        "currency": "INR",
        "paymentToken": "tok_visa",
        "shippingAddress": ADDRESS,
        "cancel": False,
    }
    spec.update(overrides)
    return spec


TOTAL = 5_499_900 + 2 * 79_900

SUCCESS = {
    "ReserveStock": ("StockReserved", {"reservationId": "res-1"}),
    "CheckFraud": ("FraudCheckPassed", {"score": 5}),
    "ChargePayment": ("PaymentCaptured", {"chargeId": "ch-1", "amount": TOTAL, "currency": "INR"}),
    "CreateShipment": ("ShipmentCreated", {"shipmentId": "shp-1", "trackingId": "TRK-1"}),
    "CommitStock": ("StockCommitted", {}),
    "SendNotification": ("NotificationSent", {"notificationId": "ntf-1"}),
    "ReleaseStock": ("StockReleased", {"noop": False}),
    "RefundPayment": ("PaymentRefunded", {"refundId": "rf-1", "amount": TOTAL, "noop": False}),
    "VoidShipment": ("ShipmentVoided", {"noop": False}),
}


@dataclass
class Saga:
    """A saga under test: its state, a clock, and everything it has sent and reported."""

    state: SagaState
    now: datetime = T0
    config: SagaConfig = CONFIG
    sent: list[Command] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    last: Decision | None = None

    @classmethod
    def new(cls, config: SagaConfig = CONFIG, **spec: Any) -> Saga:
        return cls(SagaState.new(UID, OrderSpec.from_manifest(manifest(**spec))), config=config)

    def apply(self, event: Event) -> Decision:
        self.last = decide(self.state, event, self.config)
        self.state = self.last.state
        self.sent.extend(self.last.commands)
        self.reasons.extend(t.reason for t in self.last.transitions)
        return self.last

    def start(self) -> Decision:
        return self.apply(Start(self.now))

    def reply(self, message_type: str, step: str, **payload: Any) -> Decision:
        self.now += timedelta(milliseconds=250)
        return self.apply(
            Reply(
                message_type=message_type,
                idempotency_key=f"{UID}:{step}",
                payload=payload,
                message_id=f"msg-{len(self.sent)}-{message_type}",
                now=self.now,
            )
        )

    def succeed(self, command_type: str) -> Decision:
        """Answer the newest command of this type as the service would on success."""
        command = next(c for c in reversed(self.sent) if c.message_type == command_type)
        message_type, payload = SUCCESS[command_type]
        return self.reply(message_type, command.step, **payload)

    def tick_at(self, moment: datetime) -> Decision:
        self.now = moment
        return self.apply(Tick(moment))

    def tick_after(self, seconds: float) -> Decision:
        return self.tick_at(self.now + timedelta(seconds=seconds))

    def expire(self) -> Decision:
        """Let the next deadline pass."""
        deadline = next_deadline(self.state)
        assert deadline is not None, "nothing is waiting on time"
        return self.tick_at(deadline)

    def cancel(self) -> Decision:
        self.state = replace(self.state, spec=replace(self.state.spec, cancel=True))
        self.now += timedelta(seconds=1)
        return self.apply(CancelRequested(self.now))

    def step_state(self, name: str) -> StepState:
        return self.state.step(name).state

    def sent_types(self) -> list[str]:
        return [c.message_type for c in self.sent]

    def run_to(self, phase: Phase) -> Saga:
        """Drive the happy path until the saga enters ``phase``."""
        self.start()
        for command_type in ("ReserveStock", "CheckFraud", "ChargePayment", "CreateShipment"):
            if command_type not in self.sent_types():
                continue  # a step of the other flow
            if self.state.phase is phase:
                break
            self.succeed(command_type)
        assert self.state.phase is phase
        return self


def commands(decision: Decision) -> list[tuple[str, str, bool]]:
    return [(c.message_type, c.idempotency_key, c.compensation) for c in decision.commands]


def key(step: str) -> str:
    return f"{UID}:{step}"


# --- the happy path --------------------------------------------------------------------


def test_happy_path_sends_each_command_once_in_saga_order() -> None:
    saga = Saga.new()

    assert commands(saga.start()) == [("ReserveStock", key("reserve"), False)]
    assert commands(saga.succeed("ReserveStock")) == [("ChargePayment", key("pay"), False)]
    assert commands(saga.succeed("ChargePayment")) == [("CreateShipment", key("ship"), False)]
    assert commands(saga.succeed("CreateShipment")) == [
        ("CommitStock", key("commit"), False),
        ("SendNotification", key("notify"), False),
    ]
    assert commands(saga.succeed("CommitStock")) == []
    assert commands(saga.succeed("SendNotification")) == []

    assert saga.state.phase is Phase.COMPLETED
    assert saga.state.is_terminal
    assert next_deadline(saga.state) is None


def test_happy_path_commands_carry_the_order_as_payload() -> None:
    saga = Saga.new()
    saga.run_to(Phase.COMPLETING)
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    payloads = {c.message_type: c.payload for c in saga.sent}

    lines = [{"sku": "SKU-LAPTOP", "quantity": 1}, {"sku": "SKU-MOUSE", "quantity": 2}]
    assert payloads["ReserveStock"] == {"items": lines}
    assert payloads["ChargePayment"] == {
        "amount": TOTAL, "currency": "INR", "token": "tok_visa", "customer": CUSTOMER,
    }
    assert payloads["CreateShipment"] == {"address": ADDRESS, "items": lines}
    assert payloads["CommitStock"] == {}
    assert payloads["SendNotification"] == {"template": "order-confirmed", "customer": CUSTOMER}
    assert {c.service for c in saga.sent} == {"inventory", "payment", "shipping", "notification"}


def test_happy_path_walks_the_phases_and_records_the_services_ids() -> None:
    saga = Saga.new()
    assert saga.state.phase is Phase.PENDING
    phases = []
    saga.start()
    phases.append(saga.state.phase)
    for command_type in ("ReserveStock", "ChargePayment", "CreateShipment", "CommitStock",
                         "SendNotification"):
        saga.succeed(command_type)
        phases.append(saga.state.phase)

    assert phases == [Phase.RESERVING, Phase.PAYING, Phase.SHIPPING, Phase.COMPLETING,
                      Phase.COMPLETING, Phase.COMPLETED]
    status = saga.state.to_status()
    assert status["steps"]["reserve"]["reservationId"] == "res-1"
    assert status["steps"]["pay"]["chargeId"] == "ch-1"
    assert status["steps"]["ship"]["trackingId"] == "TRK-1"
    assert status["steps"]["ship"]["shipmentId"] == "shp-1"
    assert status["steps"]["notify"]["notificationId"] == "ntf-1"
    assert all(step["state"] == "Succeeded" for step in status["steps"].values())
    assert status["total"] == TOTAL and status["currency"] == "INR"
    assert status["reason"] == "OrderCompleted"
    ready = saga.state.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert saga.reasons == ["SagaStarted", "StockReserved", "PaymentCaptured", "ShipmentCreated",
                            "StockCommitted", "NotificationSent", "OrderCompleted"]


def test_completion_waits_for_both_commit_and_notify_in_either_order() -> None:
    saga = Saga.new().run_to(Phase.COMPLETING)
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.COMPLETING
    saga.succeed("CommitStock")
    assert saga.state.phase is Phase.COMPLETED


# --- business failures -----------------------------------------------------------------


def test_payment_declined_releases_stock_then_fails_with_an_order_failed_notification() -> None:
    saga = Saga.new(paymentToken="tok_decline").run_to(Phase.PAYING)

    declined = saga.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")
    assert commands(declined) == [("ReleaseStock", key("reserve"), True)]
    assert saga.state.phase is Phase.COMPENSATING
    assert saga.state.reason == "CardDeclined"
    assert saga.step_state("pay") is StepState.FAILED
    assert saga.step_state("ship") is StepState.SKIPPED

    released = saga.succeed("ReleaseStock")
    assert [(c.message_type, c.payload) for c in released.commands] == [
        ("SendNotification", {"template": "order-failed", "customer": CUSTOMER})
    ]
    assert released.commands[0].idempotency_key == key("notify-failed")
    assert saga.state.phase is Phase.COMPENSATING  # until the customer has been told

    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert saga.state.reason == "CardDeclined"
    assert saga.state.is_terminal
    assert "RefundPayment" not in saga.sent_types()  # nothing was captured
    assert saga.step_state("reserve") is StepState.COMPENSATED
    compensating = saga.state.condition("Compensating")
    assert compensating is not None and compensating.status == "False"


def test_out_of_stock_fails_with_nothing_to_compensate() -> None:
    """A rejection is a known outcome: nothing was applied, so there is nothing to undo.

    (The service remembers its answer under the key, so a retried or late ReserveStock
    gets the same rejection; no tombstone is needed.)
    """
    saga = Saga.new()
    saga.start()

    rejected = saga.reply("StockRejected", "reserve", reason="OUT_OF_STOCK", sku="SKU-LAPTOP")

    assert commands(rejected) == [("SendNotification", key("notify-failed"), False)]
    assert saga.state.reason == "OutOfStock"
    assert "SKU-LAPTOP" in saga.state.message
    assert saga.state.step("reserve").last_error == "OUT_OF_STOCK (SKU-LAPTOP)"
    assert [saga.step_state(s) for s in ("pay", "ship", "commit", "notify")] == [
        StepState.SKIPPED] * 4
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert [c.message_type for c in saga.sent] == ["ReserveStock", "SendNotification"]


def test_unknown_sku_fails_with_its_own_reason() -> None:
    saga = Saga.new()
    saga.start()
    saga.reply("StockRejected", "reserve", reason="UNKNOWN_SKU", sku="SKU-NOPE")
    assert saga.state.reason == "UnknownSku"


def test_undeliverable_address_refunds_then_releases_one_at_a_time() -> None:
    saga = Saga.new(shippingAddress={**ADDRESS, "line1": "UNDELIVERABLE"}).run_to(Phase.SHIPPING)

    rejected = saga.reply("ShipmentRejected", "ship", reason="UNDELIVERABLE_ADDRESS")
    assert commands(rejected) == [("RefundPayment", key("pay"), True)]
    assert saga.state.reason == "UndeliverableAddress"

    refunded = saga.succeed("RefundPayment")
    assert commands(refunded) == [("ReleaseStock", key("reserve"), True)]
    assert saga.state.step("pay").refund_id == "rf-1"

    released = saga.succeed("ReleaseStock")
    assert commands(released) == [("SendNotification", key("notify-failed"), False)]
    saga.succeed("SendNotification")

    assert saga.state.phase is Phase.FAILED
    assert "VoidShipment" not in saga.sent_types()  # a rejected shipment needs no void
    assert saga.reasons[-6:] == ["ShipmentRejected", "CompensationStarted", "PaymentRefunded",
                                 "StockReleased", "NotificationSent", "OrderFailed"]


# --- cancellation ----------------------------------------------------------------------


def test_cancel_at_creation_cancels_without_touching_any_service() -> None:
    saga = Saga.new(cancel=True)
    started = saga.start()

    assert [(c.message_type, c.payload["template"]) for c in started.commands] == [
        ("SendNotification", "order-cancelled")
    ]
    assert saga.state.phase is Phase.COMPENSATING
    assert saga.state.reason == "CancellationRequested"
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED
    assert saga.sent_types() == ["SendNotification"]
    assert all(saga.step_state(s) is StepState.SKIPPED
               for s in ("reserve", "pay", "ship", "commit", "notify"))


def test_cancel_while_reserving_releases_the_reservation_whose_outcome_is_unknown() -> None:
    saga = Saga.new().run_to(Phase.RESERVING)

    cancelled = saga.cancel()

    # ReserveStock has not answered: the release, with the same key, undoes it or leaves a
    # tombstone that refuses it.
    assert commands(cancelled) == [("ReleaseStock", key("reserve"), True)]
    assert saga.step_state("reserve") is StepState.COMPENSATING
    saga.reply("StockReleased", "reserve", noop=True)
    assert saga.state.step("reserve").compensation_noop is True
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED
    assert saga.sent[-1].payload["template"] == "order-cancelled"


def test_cancel_while_paying_refunds_then_releases() -> None:
    saga = Saga.new().run_to(Phase.PAYING)

    assert commands(saga.cancel()) == [("RefundPayment", key("pay"), True)]
    assert commands(saga.succeed("RefundPayment")) == [("ReleaseStock", key("reserve"), True)]
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED
    assert saga.state.reason == "CancellationRequested"


def test_cancel_while_shipping_waits_for_the_shipment_then_cancels_if_it_was_not_created() -> None:
    saga = Saga.new().run_to(Phase.SHIPPING)

    pending = saga.cancel()
    assert commands(pending) == []  # no VoidShipment for a shipment that may yet be created
    assert [t.reason for t in pending.transitions] == ["CancellationPending"]
    assert saga.state.cancel_requested

    saga.reply("ShipmentRejected", "ship", reason="UNDELIVERABLE_ADDRESS")
    saga.succeed("RefundPayment")
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED
    assert saga.sent[-1].payload["template"] == "order-cancelled"


def test_cancel_while_shipping_cancels_if_the_shipment_never_answers() -> None:
    saga = Saga.new().run_to(Phase.SHIPPING)
    saga.cancel()
    for _ in range(CONFIG.max_attempts):
        saga.expire()

    assert saga.sent[-1].message_type == "VoidShipment"
    saga.succeed("VoidShipment")
    saga.succeed("RefundPayment")
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED
    assert saga.state.reason == "CancellationRequested"
    assert "CreateShipment got no reply" in saga.state.message


def test_cancel_while_shipping_is_refused_if_the_shipment_is_created() -> None:
    saga = Saga.new().run_to(Phase.SHIPPING)
    saga.cancel()

    created = saga.succeed("CreateShipment")

    assert [c.message_type for c in created.commands] == ["CommitStock", "SendNotification"]
    assert "CancellationRefused" in [t.reason for t in created.transitions]
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.COMPLETED
    refused = saga.state.condition("CancellationRefused")
    assert refused is not None and refused.status == "True" and refused.reason == "PastPivot"


def test_cancel_after_the_pivot_is_refused_and_the_order_completes() -> None:
    saga = Saga.new().run_to(Phase.COMPLETING)

    refused = saga.cancel()

    assert refused.commands == ()
    assert [(t.reason, t.type) for t in refused.transitions] == [("CancellationRefused", "Warning")]
    assert saga.state.phase is Phase.COMPLETING
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.COMPLETED
    assert "refused" in saga.state.message
    assert not any(c.compensation for c in saga.sent)


def test_cancel_of_a_completed_order_is_refused_too() -> None:
    saga = Saga.new().run_to(Phase.COMPLETING)
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")

    refused = saga.cancel()

    assert refused.commands == ()
    assert saga.state.phase is Phase.COMPLETED
    assert saga.state.condition("CancellationRefused") is not None


def test_cancel_is_level_triggered_from_the_spec() -> None:
    """A CancelRequested the operator missed is still noticed on the next event."""
    saga = Saga.new().run_to(Phase.PAYING)
    saga.state = replace(saga.state, spec=replace(saga.state.spec, cancel=True))

    ticked = saga.tick_after(1)

    assert commands(ticked) == [("RefundPayment", key("pay"), True)]
    assert commands(saga.apply(CancelRequested(saga.now))) == []  # seen once, acted on once


def test_deleting_before_the_pivot_cancels() -> None:
    saga = Saga.new().run_to(Phase.PAYING)

    deleted = saga.apply(Deleted(saga.now))

    assert commands(deleted) == [("RefundPayment", key("pay"), True)]
    assert saga.state.reason == "DeletionRequested"
    saga.succeed("RefundPayment")
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED


def test_deleting_a_finished_order_changes_nothing() -> None:
    saga = Saga.new()
    saga.start()
    saga.reply("StockRejected", "reserve", reason="OUT_OF_STOCK")
    saga.succeed("SendNotification")
    before = saga.state

    deleted = saga.apply(Deleted(saga.now))

    assert deleted == Decision(before)


def test_deleting_a_completed_order_changes_nothing() -> None:
    saga = Saga.new().run_to(Phase.COMPLETING)
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    assert saga.apply(Deleted(saga.now)) == Decision(saga.state)


def test_cancel_during_compensation_keeps_the_failure_as_the_outcome() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.reply("PaymentDeclined", "pay", reason="INSUFFICIENT_FUNDS")

    noted = saga.cancel()

    assert noted.commands == ()
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert saga.state.reason == "InsufficientFunds"
    assert saga.sent[-1].payload["template"] == "order-failed"


# --- timeouts and retries --------------------------------------------------------------


def test_a_timeout_resends_the_same_command_with_the_same_key_and_growing_backoff() -> None:
    saga = Saga.new()
    first = saga.start().commands[0]
    # deadline = sentAt + step_timeout + backoff(attempt), backoff = 1s, 2s, 4s ... <= 8s
    assert saga.state.step("reserve").deadline == T0 + timedelta(seconds=11)
    assert next_deadline(saga.state) == T0 + timedelta(seconds=11)

    assert saga.tick_at(T0 + timedelta(seconds=10.9)).commands == ()

    retry = saga.tick_at(T0 + timedelta(seconds=11)).commands
    assert len(retry) == 1
    assert (retry[0].message_type, retry[0].idempotency_key, retry[0].payload) == (
        first.message_type, first.idempotency_key, first.payload)
    assert retry[0].attempt == 2
    step = saga.state.step("reserve")
    assert step.attempts == 2
    assert step.deadline == T0 + timedelta(seconds=11 + 12)
    assert step.last_error is not None and "No reply to ReserveStock" in step.last_error
    assert saga.last is not None
    assert [t.reason for t in saga.last.transitions] == ["Retrying"]

    saga.expire()
    assert saga.state.step("reserve").deadline == T0 + timedelta(seconds=11 + 12 + 14)


def test_a_forward_command_expires_when_the_saga_may_have_given_up_on_its_step() -> None:
    saga = Saga.new()
    reserve = saga.start().commands[0]
    # attempt 1's deadline, then the waits of attempts 2 and 3: 11 s + 12 s + 14 s
    assert reserve.expires == T0 + timedelta(seconds=11 + 12 + 14)
    retry = saga.expire().commands[0]
    assert retry.expires == reserve.expires  # retries on time: the same point of giving up
    last = saga.expire().commands[0]
    assert last.attempt == CONFIG.max_attempts
    assert last.expires == saga.state.step("reserve").deadline


def test_compensations_and_steps_retried_until_they_succeed_never_expire() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    refused = saga.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")
    assert [(c.message_type, c.expires) for c in refused.commands] == [("ReleaseStock", None)]
    completing = Saga.new().run_to(Phase.COMPLETING)
    assert completing.last is not None
    assert [c.expires for c in completing.last.commands] == [None, None]


def test_a_reply_to_an_earlier_attempt_still_counts() -> None:
    saga = Saga.new()
    saga.start()
    saga.expire()  # attempt 2 is out
    saga.succeed("ReserveStock")  # ...but the answer to attempt 1 arrives first
    assert saga.state.phase is Phase.PAYING
    assert saga.state.step("reserve").last_error is None


def test_an_exhausted_retry_budget_compensates_the_step_whose_outcome_is_unknown() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    for _ in range(CONFIG.max_attempts - 1):
        saga.expire()
    assert saga.state.step("pay").attempts == CONFIG.max_attempts

    gave_up = saga.expire()

    # No capture was ever confirmed, yet the refund goes out: it undoes a capture whose
    # reply was lost, or leaves a tombstone that refuses a late ChargePayment.
    assert commands(gave_up) == [("RefundPayment", key("pay"), True)]
    assert saga.state.reason == "PaymentTimedOut"
    assert saga.state.step("pay").last_error == "No reply after 3 attempts; outcome unknown"

    late = saga.succeed("ChargePayment")  # the lost capture finally answers: not resurrected
    assert late == Decision(late.state) and saga.step_state("pay") is StepState.COMPENSATING

    refunded = saga.reply("PaymentRefunded", "pay", refundId="rf-9", amount=TOTAL, noop=False)
    assert commands(refunded) == [("ReleaseStock", key("reserve"), True)]
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert saga.state.reason == "PaymentTimedOut"


def test_a_shipment_with_unknown_outcome_is_voided_before_refund_and_release() -> None:
    saga = Saga.new().run_to(Phase.SHIPPING)
    for _ in range(CONFIG.max_attempts):
        saga.expire()

    assert saga.sent[-1].message_type == "VoidShipment"
    assert saga.sent[-1].idempotency_key == key("ship")
    assert saga.state.reason == "ShipmentTimedOut"
    assert commands(saga.succeed("VoidShipment")) == [("RefundPayment", key("pay"), True)]
    assert commands(saga.succeed("RefundPayment")) == [("ReleaseStock", key("reserve"), True)]
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert saga.step_state("ship") is StepState.COMPENSATED


def test_commit_and_notify_are_retried_forever_with_capped_backoff() -> None:
    saga = Saga.new().run_to(Phase.COMPLETING)
    for _ in range(25):
        saga.expire()

    commit = saga.state.step("commit")
    assert commit.attempts > CONFIG.max_attempts
    assert commit.sent_at is not None and commit.deadline is not None
    assert commit.deadline - commit.sent_at == CONFIG.step_timeout + CONFIG.backoff_max
    assert saga.state.phase is Phase.COMPLETING
    assert not any(c.compensation for c in saga.sent)
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.COMPLETED


def test_the_failure_notification_is_retried_forever_too() -> None:
    saga = Saga.new(cancel=True)
    saga.start()
    for _ in range(10):
        saga.expire()
    assert saga.state.phase is Phase.COMPENSATING
    assert saga.sent_types() == ["SendNotification"] * 11
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED


# --- compensation failure and repair ---------------------------------------------------


def stuck_in_compensation_failed() -> Saga:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")  # ReleaseStock goes out
    for _ in range(CONFIG.compensation_max_attempts):
        saga.expire()
    return saga


def test_a_compensation_that_exhausts_its_budget_ends_in_compensation_failed() -> None:
    saga = stuck_in_compensation_failed()

    assert saga.sent_types().count("ReleaseStock") == CONFIG.compensation_max_attempts
    assert saga.state.phase is Phase.COMPENSATION_FAILED
    assert saga.state.is_terminal and saga.state.needs_repair
    assert saga.step_state("reserve") is StepState.COMPENSATION_FAILED
    assert next_deadline(saga.state) is None
    failed = saga.state.condition("CompensationFailed")
    assert failed is not None and failed.status == "True"
    assert "ReleaseStock" in saga.state.message and "inventory" in saga.state.message
    assert saga.last is not None and saga.last.transitions[-1].type == "Warning"
    assert saga.tick_after(3600).commands == ()  # no more automatic retries


def test_resume_resets_the_compensation_budget_and_resends_the_compensation() -> None:
    saga = stuck_in_compensation_failed()

    resumed = saga.apply(Resume(saga.now))

    assert commands(resumed) == [("ReleaseStock", key("reserve"), True)]
    assert saga.state.phase is Phase.COMPENSATING
    assert saga.state.reason == "CardDeclined"  # the original cause is back
    assert saga.state.step("reserve").compensation_attempts == 1
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert saga.state.reason == "CardDeclined"
    failed = saga.state.condition("CompensationFailed")
    assert failed is not None and failed.status == "False"


def test_resume_does_nothing_unless_the_saga_is_in_compensation_failed() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    before = saga.state
    assert saga.apply(Resume(saga.now)) == Decision(before)


def test_a_late_compensation_reply_heals_compensation_failed() -> None:
    saga = stuck_in_compensation_failed()

    healed = saga.succeed("ReleaseStock")

    assert commands(healed) == [("SendNotification", key("notify-failed"), False)]
    assert saga.state.phase is Phase.COMPENSATING
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED


# --- replies that no longer apply ------------------------------------------------------


def test_a_duplicate_reply_changes_nothing() -> None:
    saga = Saga.new()
    saga.start()
    first = saga.succeed("ReserveStock")

    again = saga.apply(Reply(message_type="StockReserved", idempotency_key=key("reserve"),
                             payload={"reservationId": "res-1"}, message_id="msg-dup",
                             now=saga.now + timedelta(seconds=1)))

    assert again == Decision(first.state)


def test_a_late_reply_for_a_compensated_step_is_ignored() -> None:
    saga = Saga.new().run_to(Phase.RESERVING)
    saga.cancel()
    saga.reply("StockReleased", "reserve", noop=True)
    before = saga.state

    late = saga.succeed("ReserveStock")  # refused by the tombstone in reality; ignored here

    assert late == Decision(before)
    assert saga.step_state("reserve") is StepState.COMPENSATED


def test_a_late_rejection_after_a_compensation_started_is_ignored() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.cancel()
    before = saga.state
    late = saga.reply("PaymentDeclined", "pay", reason="ALREADY_COMPENSATED")
    assert late == Decision(before)


def test_replies_out_of_order_apply_only_when_they_fit() -> None:
    saga = Saga.new()
    saga.start()
    # A PaymentCaptured before the charge was even sent does not apply...
    early = saga.reply("PaymentCaptured", "pay", chargeId="ch-x", amount=TOTAL, currency="INR")
    assert early.commands == () and saga.step_state("pay") is StepState.PENDING
    # ...and the saga carries on normally afterwards.
    saga.succeed("ReserveStock")
    assert saga.state.phase is Phase.PAYING


@pytest.mark.parametrize(
    ("message_type", "idempotency_key"),
    [
        ("StockReserved", "another-order:reserve"),  # another order's reply
        ("StockReserved", f"{UID}:teleport"),  # a step this saga does not have
        ("PaymentCaptured", f"{UID}:reserve"),  # a reply type of another step
        ("StockReserved", "no-colon"),
    ],
)
def test_replies_that_do_not_belong_to_a_waiting_step_are_ignored(
    message_type: str, idempotency_key: str
) -> None:
    saga = Saga.new()
    saga.start()
    before = saga.state
    ignored = saga.apply(Reply(message_type=message_type, idempotency_key=idempotency_key,
                               payload={}, message_id="m", now=saga.now))
    assert ignored == Decision(before)


# --- restart ---------------------------------------------------------------------------


def restarted(saga: Saga) -> Saga:
    """The operator crashed and came back: state only from the stored status."""
    stored = json.loads(json.dumps(saga.state.to_status()))
    state = SagaState.from_status(UID, saga.state.spec, stored)
    return Saga(state, now=saga.now + timedelta(seconds=1))


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.RESERVING, [("ReserveStock", key("reserve"), False)]),
        (Phase.PAYING, [("ChargePayment", key("pay"), False)]),
        (Phase.SHIPPING, [("CreateShipment", key("ship"), False)]),
        (Phase.COMPLETING, [("CommitStock", key("commit"), False),
                            ("SendNotification", key("notify"), False)]),
    ],
)
def test_recover_resends_every_command_in_flight(
    phase: Phase, expected: list[tuple[str, str, bool]]
) -> None:
    saga = restarted(Saga.new().run_to(phase))
    before = saga.state

    recovered = saga.apply(Recover(saga.now))

    assert commands(recovered) == expected
    assert [t.reason for t in recovered.transitions] == ["Recovered"]
    assert recovered.state.steps == before.steps  # a re-send is not a new attempt


# --- commands the broker did not take ----------------------------------------------------


def not_sent(saga: Saga, command: Command) -> Decision:
    saga.now += timedelta(milliseconds=10)
    return saga.apply(NotSent(step=command.step, compensation=command.compensation,
                              attempt=command.attempt, now=saga.now))


def test_a_command_that_could_not_be_published_goes_out_again_without_using_an_attempt() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    charge = saga.sent[-1]

    noted = not_sent(saga, charge)

    step = saga.state.step("pay")
    assert noted.commands == ()
    assert (step.attempts, step.unsent, step.publish_failures) == (1, True, 1)
    assert step.deadline == saga.now + CONFIG.backoff_base  # a pause, not a timeout
    assert [(t.reason, t.announced) for t in noted.transitions] == [("CommandNotSent", False)]

    again = saga.expire()
    assert commands(again) == [("ChargePayment", key("pay"), False)]
    assert again.commands[0].attempt == 1
    step = saga.state.step("pay")
    assert (step.attempts, step.unsent) == (1, False)
    assert step.deadline == saga.now + CONFIG.forward_wait(1)  # a timeout again


def test_a_broker_outage_longer_than_every_budget_costs_time_not_the_order() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    pauses = []
    for _ in range(CONFIG.max_attempts * 4):
        not_sent(saga, saga.sent[-1])
        step = saga.state.step("pay")
        assert step.deadline is not None
        pauses.append(step.deadline - saga.now)
        saga.expire()  # publishes the same attempt again
    assert saga.state.phase is Phase.PAYING
    assert saga.state.step("pay").attempts == 1
    assert pauses[:4] == [timedelta(seconds=s) for s in (1, 2, 4, 8)]
    assert max(pauses) == CONFIG.backoff_max
    saga.succeed("ChargePayment")
    assert saga.state.phase is Phase.SHIPPING


def test_after_a_publish_goes_through_a_lost_reply_still_counts_the_attempt() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    not_sent(saga, saga.sent[-1])
    saga.expire()  # published
    retry = saga.expire()  # no reply within the timeout: that attempt counted
    assert [c.attempt for c in retry.commands] == [2]
    assert saga.state.step("pay").publish_failures == 0  # a new attempt starts afresh


def test_not_sent_for_an_attempt_that_is_over_changes_nothing() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    first = saga.sent[-1]
    saga.expire()  # attempt 2 is out
    assert not_sent(saga, first) == Decision(saga.state)
    saga.succeed("ChargePayment")
    assert not_sent(saga, saga.sent[-2]) == Decision(saga.state)  # the step has settled
    unsent = not_sent(saga, saga.sent[-1])
    assert not_sent(saga, saga.sent[-1]) == Decision(unsent.state)  # known already


def test_an_unsent_compensation_goes_out_again_within_its_own_budget() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")
    release = saga.sent[-1]
    assert release.compensation
    not_sent(saga, release)
    step = saga.state.step("reserve")
    assert (step.compensation_attempts, step.unsent) == (1, True)
    assert step.deadline == saga.now + CONFIG.compensation_backoff_base
    again = saga.expire()
    assert commands(again) == [("ReleaseStock", key("reserve"), True)]
    assert saga.state.step("reserve").compensation_attempts == 1


def test_recover_publishes_an_unsent_command_and_its_deadline_is_a_timeout_again() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    not_sent(saga, saga.sent[-1])
    saga = restarted(saga)
    recovered = saga.apply(Recover(saga.now))
    assert commands(recovered) == [("ChargePayment", key("pay"), False)]
    step = saga.state.step("pay")
    assert (step.attempts, step.unsent) == (1, False)
    assert step.deadline == saga.now + CONFIG.forward_wait(1)


def test_recover_resends_a_compensation_in_flight() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")
    saga = restarted(saga)
    assert commands(saga.apply(Recover(saga.now))) == [("ReleaseStock", key("reserve"), True)]


def test_recover_after_a_long_outage_retries_overdue_commands_once() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga = restarted(saga)
    saga.now += timedelta(minutes=5)

    recovered = saga.apply(Recover(saga.now))

    assert commands(recovered) == [("ChargePayment", key("pay"), False)]
    assert saga.state.step("pay").attempts == 2
    assert [t.reason for t in recovered.transitions] == ["Retrying"]


def test_recover_with_nothing_in_flight_does_nothing() -> None:
    saga = Saga.new()
    assert saga.apply(Recover(saga.now)) == Decision(saga.state)
    saga = stuck_in_compensation_failed()
    assert saga.apply(Recover(saga.now)).commands == ()


# --- pause ---------------------------------------------------------------------------------


def pause(saga: Saga, paused: bool = True, after: float = 1.0) -> Decision:
    saga.state = replace(saga.state, spec=replace(saga.state.spec, paused=paused))
    saga.now += timedelta(seconds=after)
    return saga.apply(PauseChanged(saga.now))


def test_a_paused_saga_records_replies_but_publishes_nothing_until_it_carries_on() -> None:
    saga = Saga.new()
    saga.start()
    decision = pause(saga)
    assert saga.state.is_paused and decision.commands == ()
    paused = saga.state.condition("Paused")
    assert paused is not None and paused.status == "True"
    assert next_deadline(saga.state) is None  # nothing waits on time

    assert commands(saga.succeed("ReserveStock")) == []  # the reply is a fact: recorded
    assert saga.step_state("reserve") is StepState.SUCCEEDED
    assert saga.state.phase is Phase.PAYING and saga.state.step("pay").unsent

    decision = pause(saga, paused=False, after=3600)
    assert commands(decision) == [("ChargePayment", key("pay"), False)]
    assert saga.state.step("pay").attempts == 1  # held, not retried
    resumed = saga.state.condition("Paused")
    assert resumed is not None and (resumed.status, resumed.reason) == ("False", "Resumed")
    assert saga.reasons[-1] == "Resumed" and "Paused" in saga.reasons


def test_a_pause_longer_than_any_timeout_counts_as_no_timeout() -> None:
    saga = Saga.new()
    saga.start()
    deadline = saga.state.step("reserve").deadline
    assert deadline is not None
    pause(saga, after=0)
    assert saga.tick_after(86_400).commands == ()  # a day of ticks: nothing fires
    assert saga.state.step("reserve").attempts == 1

    # The command in flight goes out again, the same attempt: it may have expired meanwhile.
    decision = pause(saga, paused=False)
    assert commands(decision) == [("ReserveStock", key("reserve"), False)]
    assert decision.commands[0].attempt == 1
    expires = decision.commands[0].expires
    assert expires is not None and expires > saga.now
    restarted = saga.state.step("reserve").deadline
    assert restarted == saga.now + (deadline - T0)  # the whole timeout, from now
    assert saga.tick_at(restarted - timedelta(seconds=1)).commands == ()
    assert commands(saga.tick_at(restarted)) == [("ReserveStock", key("reserve"), False)]
    assert saga.state.step("reserve").attempts == 2  # only now a retry


def test_an_order_created_paused_starts_when_it_carries_on() -> None:
    saga = Saga.new(paused=True)
    assert commands(saga.start()) == []
    assert saga.state.is_paused and saga.state.step("reserve").unsent
    assert commands(pause(saga, paused=False)) == [("ReserveStock", key("reserve"), False)]


def test_a_cancellation_while_paused_compensates_once_it_carries_on() -> None:
    saga = Saga.new()
    saga.run_to(Phase.PAYING)
    pause(saga)
    assert saga.cancel().commands == ()
    assert saga.succeed("ChargePayment").commands == ()  # the charge came in meanwhile
    assert commands(pause(saga, paused=False)) == [("RefundPayment", key("pay"), True)]


def test_a_saga_that_finishes_while_paused_ends_its_pause() -> None:
    saga = Saga.new()
    saga.run_to(Phase.COMPLETING)
    pause(saga)
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.COMPLETED and not saga.state.is_paused
    condition = saga.state.condition("Paused")
    assert condition is not None and condition.reason == "SagaFinished"


def test_pausing_a_finished_order_changes_nothing() -> None:
    saga = Saga.new()
    saga.run_to(Phase.COMPLETING)
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")
    before = saga.state
    decision = pause(saga)
    assert decision.transitions == () and saga.state == replace(
        before, spec=replace(before.spec, paused=True))


def test_the_pause_survives_an_operator_restart() -> None:
    saga = Saga.new()
    saga.start()
    pause(saga)
    saga.succeed("ReserveStock")
    stored = json.loads(json.dumps(saga.state.to_status()))
    saga.state = SagaState.from_status(UID, saga.state.spec, stored)
    assert saga.state.is_paused
    assert saga.apply(Recover(saga.now)).commands == ()  # still held
    assert commands(pause(saga, paused=False)) == [("ChargePayment", key("pay"), False)]


# --- circuit breakers ------------------------------------------------------------------


def test_a_command_held_by_a_breaker_waits_unsent_and_costs_no_attempt() -> None:
    saga = Saga.new()
    saga.start()
    until = T0 + timedelta(seconds=30)
    held = saga.apply(Held(step="reserve", attempt=1, until=until, now=T0))
    assert held.commands == () and held.transitions[0].routine  # counted, not announced
    step = saga.state.step("reserve")
    assert (step.unsent, step.deadline, step.attempts) == (True, until, 1)
    assert next_deadline(saga.state) == until
    decision = saga.tick_at(until)  # the breaker probes: the same attempt goes out
    assert commands(decision) == [("ReserveStock", key("reserve"), False)]
    assert decision.commands[0].attempt == 1 and not saga.state.step("reserve").unsent


def test_when_the_breaker_closes_what_it_held_goes_out_at_once() -> None:
    saga = Saga.new()
    saga.run_to(Phase.PAYING)
    saga.apply(Held(step="pay", attempt=1, until=T0 + timedelta(minutes=5), now=saga.now))
    assert saga.apply(BreakerClosed(service="inventory", now=saga.now)).commands == ()
    decision = saga.apply(BreakerClosed(service="payment", now=saga.now))
    assert commands(decision) == [("ChargePayment", key("pay"), False)]
    assert saga.state.step("pay").deadline == saga.now + CONFIG.forward_wait(1)


def test_a_hold_for_an_attempt_that_is_over_changes_nothing() -> None:
    saga = Saga.new()
    saga.start()
    saga.succeed("ReserveStock")
    before = saga.state
    assert saga.apply(Held(step="reserve", attempt=1, until=T0, now=saga.now)).state == before


# --- saga versions ---------------------------------------------------------------------


def test_version_2_screens_the_payment_for_fraud_between_reserving_and_paying() -> None:
    saga = Saga.new(CONFIG_V2)

    assert commands(saga.start()) == [("ReserveStock", key("reserve"), False)]
    assert saga.state.version == 2
    assert commands(saga.succeed("ReserveStock")) == [("CheckFraud", key("fraud-check"), False)]
    assert saga.state.phase is Phase.CHECKING_FRAUD
    assert commands(saga.succeed("CheckFraud")) == [("ChargePayment", key("pay"), False)]
    saga.succeed("ChargePayment")
    saga.succeed("CreateShipment")
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")

    assert saga.state.phase is Phase.COMPLETED
    status = saga.state.to_status()
    assert status["sagaVersion"] == 2
    assert list(status["steps"]) == ["reserve", "fraud-check", "pay", "ship", "commit", "notify"]
    check = next(c for c in saga.sent if c.message_type == "CheckFraud")
    assert check.service == "payment"
    assert check.payload == {"amount": TOTAL, "currency": "INR", "token": "tok_visa",
                             "customer": CUSTOMER}


def test_version_1_never_sends_a_fraud_check() -> None:
    saga = Saga.new().run_to(Phase.COMPLETING)
    assert saga.state.version == 1
    assert "CheckFraud" not in saga.sent_types()
    assert "fraud-check" not in saga.state.to_status()["steps"]


def test_suspected_fraud_releases_the_stock_and_charges_nothing() -> None:
    saga = Saga.new(CONFIG_V2).run_to(Phase.CHECKING_FRAUD)

    decision = saga.reply("FraudSuspected", "fraud-check", reason="FRAUD_SUSPECTED", score=95)

    assert commands(decision) == [("ReleaseStock", key("reserve"), True)]
    assert saga.state.reason == "FraudSuspected"
    assert saga.step_state("fraud-check") is StepState.FAILED
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED
    assert "ChargePayment" not in saga.sent_types()


def test_a_fraud_check_that_never_answers_is_given_up_with_nothing_to_undo() -> None:
    saga = Saga.new(CONFIG_V2).run_to(Phase.CHECKING_FRAUD)
    for _ in range(CONFIG.max_attempts):
        saga.expire()

    assert saga.sent_types().count("CheckFraud") == CONFIG.max_attempts
    assert saga.state.reason == "FraudCheckTimedOut"
    assert saga.step_state("fraud-check") is StepState.FAILED
    assert saga.last is not None
    assert [c.message_type for c in saga.last.commands] == ["ReleaseStock"]
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.FAILED


def test_a_cancel_during_the_fraud_check_releases_the_stock_and_cancels() -> None:
    saga = Saga.new(CONFIG_V2).run_to(Phase.CHECKING_FRAUD)
    assert commands(saga.cancel()) == [("ReleaseStock", key("reserve"), True)]
    saga.reply("FraudCheckPassed", "fraud-check", score=5)  # late: the saga turned around
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")
    assert saga.state.phase is Phase.CANCELLED
    assert "ChargePayment" not in saga.sent_types()


def test_a_saga_finishes_on_the_flow_it_started_on_whatever_new_sagas_start_on() -> None:
    saga = Saga.new().run_to(Phase.PAYING)  # started on version 1
    restarted = SagaState.from_status(UID, saga.state.spec, saga.state.to_status())
    saga = Saga(restarted, now=saga.now, sent=saga.sent, config=CONFIG_V2)  # new release
    saga.apply(Recover(saga.now))
    saga.succeed("ChargePayment")
    saga.succeed("CreateShipment")
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")

    assert saga.state.phase is Phase.COMPLETED
    assert saga.state.version == 1 and saga.state.to_status()["sagaVersion"] == 1
    assert "CheckFraud" not in saga.sent_types()


def test_a_queued_saga_starts_on_the_version_in_force_when_it_starts() -> None:
    saga = Saga.new()
    saga.apply(Queued(limit=16, now=saga.now))
    assert "sagaVersion" not in saga.state.to_status()  # not started: no flow chosen yet
    saga.config = CONFIG_V2
    saga.start()
    saga.succeed("ReserveStock")
    assert saga.state.version == 2 and saga.sent_types()[-1] == "CheckFraud"


def test_a_cancel_before_the_start_records_the_version_in_force() -> None:
    saga = Saga.new(CONFIG_V2)
    saga.cancel()
    assert saga.state.version == 2
    assert saga.state.step("fraud-check").state is StepState.SKIPPED


def test_a_saga_started_before_versions_were_recorded_runs_version_1() -> None:
    status = Saga.new().run_to(Phase.PAYING).state.to_status()
    del status["sagaVersion"]
    state = SagaState.from_status(UID, OrderSpec.from_manifest(manifest()), status)
    assert state.version == 1 and state.flow is FLOWS[1]


@pytest.mark.parametrize("version", [3, 0, "2"])
def test_a_version_this_operator_does_not_know_is_refused_and_said_once(version: Any) -> None:
    status = {**Saga.new(CONFIG_V2).run_to(Phase.PAYING).state.to_status(),
              "sagaVersion": version}
    with pytest.raises(UnknownSagaVersion) as refused:
        SagaState.from_status(UID, OrderSpec.from_manifest(manifest()), status)

    said = unknown_version_status(status, refused.value, T0)
    assert said is not None
    condition = said["conditions"][-1]
    assert (condition["type"], condition["status"]) == ("UnknownSagaVersion", "True")
    assert "not known to this operator" in condition["message"]
    assert {k: v for k, v in said.items() if k != "conditions"} == {
        k: v for k, v in status.items() if k != "conditions"}  # the saga log is untouched
    assert unknown_version_status(said, refused.value, T0 + timedelta(seconds=5)) is None


def test_an_operator_that_knows_the_version_clears_the_refusal_and_carries_on() -> None:
    saga = Saga.new(CONFIG_V2).run_to(Phase.PAYING)
    status = {**saga.state.to_status(), "sagaVersion": 2}
    refused = unknown_version_status(status, UnknownSagaVersion(2), T0)
    assert refused is not None
    saga = Saga(SagaState.from_status(UID, saga.state.spec, refused), now=saga.now,
                config=CONFIG_V2)
    saga.reply("PaymentCaptured", "pay", chargeId="ch-1", amount=TOTAL, currency="INR")

    condition = saga.state.condition("UnknownSagaVersion")
    assert condition is not None and (condition.status, condition.reason) == ("False",
                                                                               "KnownVersion")
    assert saga.state.phase is Phase.SHIPPING


def test_a_flow_ends_with_its_one_pivot_and_the_config_names_a_known_flow() -> None:
    with pytest.raises(ValueError, match="pivot"):
        Flow(3, ("reserve", "pay"))
    with pytest.raises(ValueError, match="version"):
        SagaConfig(version=9)


# --- the status ------------------------------------------------------------------------


def every_intermediate_state() -> list[SagaState]:
    states = []
    happy = Saga.new()
    happy.start()
    states.append(happy.state)
    for command_type in ("ReserveStock", "ChargePayment", "CreateShipment", "CommitStock"):
        happy.succeed(command_type)
        states.append(happy.state)
    happy.cancel()
    happy.succeed("SendNotification")
    states.append(happy.state)
    states.append(Saga.new().state)
    stuck = stuck_in_compensation_failed()
    states.append(stuck.state)
    stuck.apply(Resume(stuck.now))
    states.append(stuck.state)
    timed_out = Saga.new().run_to(Phase.SHIPPING)
    for _ in range(CONFIG.max_attempts):
        timed_out.expire()
    states.append(timed_out.state)
    timed_out.reply("ShipmentVoided", "ship", noop=True)
    states.append(timed_out.state)
    unsent = Saga.new().run_to(Phase.PAYING)
    not_sent(unsent, unsent.sent[-1])
    states.append(unsent.state)
    v2 = Saga.new(CONFIG_V2).run_to(Phase.CHECKING_FRAUD)
    states.append(v2.state)
    v2.reply("FraudSuspected", "fraud-check", reason="FRAUD_SUSPECTED", score=95)
    states.append(v2.state)
    paused = Saga.new()
    paused.start()
    pause(paused)
    paused.succeed("ReserveStock")
    states.append(paused.state)
    pause(paused, paused=False)
    states.append(paused.state)
    return states


@pytest.mark.parametrize("state", every_intermediate_state(), ids=lambda s: s.phase.value)
def test_the_status_round_trips_exactly(state: SagaState) -> None:
    status = state.to_status()
    assert SagaState.from_status(UID, state.spec, status) == state
    # Through JSON, with a field the operator adds, and with explicit nulls:
    stored = {"finishedAt": None, **json.loads(json.dumps(status)), "observedGeneration": 3}
    rebuilt = SagaState.from_status(UID, state.spec, stored)
    assert rebuilt == state
    assert rebuilt.to_status() == status
    assert "null" not in json.dumps(status)  # as the apiserver stores it: no spurious writes


@pytest.mark.parametrize("status", [None, {}, {"observedGeneration": 1}])
def test_an_empty_status_is_a_fresh_saga(status: dict[str, Any] | None) -> None:
    spec = OrderSpec.from_manifest(manifest())
    assert SagaState.from_status(UID, spec, status) == SagaState.new(UID, spec)


def test_the_status_uses_camel_case_and_rfc3339_utc_times() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.now += timedelta(microseconds=1500)
    saga.succeed("ChargePayment")
    status = saga.state.to_status()

    assert set(status) == {"phase", "reason", "message", "total", "currency", "cancelRequested",
                           "sagaVersion", "startedAt", "steps", "conditions", "timeline",
                           "eventSeq", "outbox"}
    assert list(status["steps"]) == ["reserve", "pay", "ship", "commit", "notify"]
    assert set(status["steps"]["pay"]) == {
        "state", "attempts", "startedAt", "finishedAt", "chargeId"}
    # unset fields (deadline, lastError, refundId, ...) are left out, and so are the ones
    # the reader defaults: sentAt while it equals startedAt, compensationAttempts while 0
    assert status["steps"]["ship"]["deadline"] == "2025-03-14T09:27:04.501500Z"
    assert status["startedAt"] == "2025-03-14T09:26:53Z"
    assert status["steps"]["pay"]["finishedAt"] == "2025-03-14T09:26:53.501500Z"
    assert status["conditions"][0].keys() == {"type", "status", "reason", "message",
                                              "lastTransitionTime"}


def test_a_condition_moves_its_transition_time_only_when_its_status_changes() -> None:
    saga = Saga.new()
    saga.start()
    began = saga.state.condition("Ready")
    assert began is not None and began.status == "False"

    saga.now += timedelta(minutes=1)
    saga.succeed("ReserveStock")
    still = saga.state.condition("Ready")
    assert still is not None and still.reason == "ChargingPayment"
    assert still.last_transition_time == began.last_transition_time

    for command_type in ("ChargePayment", "CreateShipment", "CommitStock", "SendNotification"):
        saga.succeed(command_type)
    ready = saga.state.condition("Ready")
    assert ready is not None and ready.status == "True"
    assert ready.last_transition_time == saga.now


def test_the_timeline_keeps_the_newest_entries_and_the_phase_changes_longest() -> None:
    def run(config: SagaConfig) -> SagaState:
        state = SagaState.new(UID, OrderSpec.from_manifest(manifest()))
        for minute in range(8):
            state = decide(state, Tick(T0 + timedelta(minutes=minute)), config).state
            if minute == 0:
                state = decide(state, Start(T0), config).state
        return state

    everything = run(CONFIG).timeline
    phase_changes = [e for e in everything if e.reason in PHASE_CHANGES]
    others = [e for e in everything if e.reason not in PHASE_CHANGES]
    assert len(phase_changes) == 2 and len(others) == 3  # CompensationStarted, ...Failed
    # the newest entries, the phase changes kept longest (they make the phase history)
    kept = run(replace(CONFIG, timeline_limit=4)).timeline
    assert kept == tuple(e for e in everything if e in phase_changes or e in others[-2:])
    assert run(replace(CONFIG, timeline_limit=1)).timeline == everything[-1:]
    assert run(replace(CONFIG, timeline_limit=0)).timeline == ()


def test_the_forward_path_going_as_planned_is_not_announced() -> None:
    # The step entries record progress; Events and the timeline tell what a person must see.
    happy = Saga.new().run_to(Phase.COMPLETING)
    happy.succeed("CommitStock")
    happy.succeed("SendNotification")
    assert [e.reason for e in happy.state.timeline] == ["OrderCompleted"]

    declined = Saga.new().run_to(Phase.PAYING)
    declined.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")
    declined.succeed("ReleaseStock")
    declined.succeed("SendNotification")
    assert [e.reason for e in declined.state.timeline] == [
        "PaymentDeclined", "CompensationStarted", "StockReleased", "OrderFailed"]
    assert declined.reasons[:2] == ["SagaStarted", "StockReserved"]  # still transitions


def test_a_completed_one_item_order_keeps_a_small_status() -> None:
    # The apiserver's cost of every write grows with the object (issue 9: at most 1.5 KB).
    # The outbox carries only the events of one write: the operator drops them once the
    # broker confirmed them (in its next write; after the last one, in a write of its own).
    saga = Saga.new()
    outboxes: list[int] = []

    def written() -> None:
        outboxes.append(len(saga.state.outbox))
        saga.state = forget_published(saga.state, saga.state.event_seq)

    saga.start()
    written()
    saga.reply("StockReserved", "reserve", reservationId=str(uuid.uuid4()))
    written()
    saga.reply("PaymentCaptured", "pay", chargeId="ch_" + uuid.uuid4().hex, amount=TOTAL,
               currency="INR")
    written()
    saga.reply("ShipmentCreated", "ship", shipmentId=str(uuid.uuid4()), trackingId="VN0123456789")
    written()
    saga.reply("StockCommitted", "commit")
    written()
    saga.reply("NotificationSent", "notify", notificationId=str(uuid.uuid4()))
    written()
    assert saga.state.phase is Phase.COMPLETED
    assert max(outboxes) <= 2
    status = {**saga.state.to_status(), "observedGeneration": 1}
    assert len(json.dumps(status, separators=(",", ":"))) <= 1536


def test_a_decision_is_a_pure_function_of_state_and_event() -> None:
    state = Saga.new().run_to(Phase.PAYING).state
    event = Tick(T0 + timedelta(hours=1))
    assert decide(state, event, CONFIG) == decide(state, event, CONFIG)


def test_event_times_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(Saga.new().state, Start(datetime(2025, 1, 1)), CONFIG)


def test_start_twice_starts_once() -> None:
    saga = Saga.new()
    saga.start()
    assert saga.start() == Decision(saga.state)


def test_events_before_start_do_nothing() -> None:
    saga = Saga.new()
    assert saga.tick_after(60) == Decision(saga.state)
    assert next_deadline(saga.state) is None


# --- the order spec --------------------------------------------------------------------


def test_the_order_total_is_an_integer_in_minor_units() -> None:
    spec = OrderSpec.from_manifest(manifest())
    assert spec.total == TOTAL
    assert spec.to_manifest() == manifest()
    assert OrderSpec.from_manifest(spec.to_manifest()) == spec


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"items": []}, "spec.items"),
        ({"items": [{"sku": "A1", "quantity": 0, "unitPrice": 1}]}, "quantity"),
        ({"items": [{"sku": "A1", "quantity": True, "unitPrice": 1}]}, "quantity"),
        ({"items": [{"sku": "A1", "quantity": 1, "unitPrice": 1.5}]}, "unitPrice"),
        ({"items": [{"sku": "A1", "quantity": 1, "unitPrice": 1}] * 2}, "repeat"),
        ({"customer": {"id": "c"}}, "spec.customer.email"),
        ({"shippingAddress": None}, "spec.shippingAddress"),
        ({"cancel": "yes"}, "spec.cancel"),
        ({"paused": 1}, "spec.paused"),
        ({"paymentToken": ""}, "spec.paymentToken"),
    ],
)
def test_an_invalid_spec_is_refused_with_a_clear_message(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOrderSpec, match=message):
        OrderSpec.from_manifest(manifest(**overrides))


def test_backoff_is_capped_even_after_very_many_attempts() -> None:
    config = SagaConfig(backoff_base=timedelta(days=1), backoff_max=timedelta(days=30))
    assert config.forward_wait(1) == config.step_timeout + timedelta(days=1)
    assert config.forward_wait(3) == config.step_timeout + timedelta(days=4)
    assert config.forward_wait(100_000) == config.step_timeout + timedelta(days=30)
    assert SagaConfig(backoff_base=timedelta(0)).forward_wait(50) == SagaConfig().step_timeout


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="budgets"):
        SagaConfig(max_attempts=0)
    with pytest.raises(ValueError, match="step_timeout"):
        SagaConfig(step_timeout=timedelta(0))
    with pytest.raises(ValueError, match="timeline_limit"):
        SagaConfig(timeline_limit=101)  # the CRD keeps at most 100 entries


# --- domain events: every transition, in the status outbox until published ----------------


def test_every_transition_becomes_a_numbered_event_in_the_outbox() -> None:
    saga = Saga.new().run_to(Phase.SHIPPING)
    saga.succeed("CreateShipment")
    saga.succeed("CommitStock")
    saga.succeed("SendNotification")

    events = saga.state.outbox
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert saga.state.event_seq == len(events)
    assert [e.reason for e in events] == saga.reasons
    assert events[0].reason == "SagaStarted" and events[-1].reason == "OrderCompleted"
    assert events[-1].phase is Phase.COMPLETED
    pay = next(e for e in events if e.reason == "PaymentCaptured")
    assert pay.step == "pay"


def test_the_announced_events_are_the_timeline() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    saga.reply("PaymentDeclined", "pay", reason="CARD_DECLINED")
    saga.succeed("ReleaseStock")
    saga.succeed("SendNotification")

    announced = [(e.time, e.reason, e.message) for e in saga.state.outbox if e.announced]
    assert announced == [(t.time, t.reason, t.message) for t in saga.state.timeline]
    assert any(not e.announced for e in saga.state.outbox)  # the routine forward path


def test_money_events_net_to_what_the_payment_ledger_holds() -> None:
    captured = Saga.new().run_to(Phase.SHIPPING)
    captured.reply("ShipmentRejected", "ship", reason="UNDELIVERABLE_ADDRESS")
    captured.succeed("RefundPayment")
    moved = [(e.reason, e.captured, e.refunded) for e in captured.state.outbox
             if e.captured or e.refunded]
    assert moved == [("PaymentCaptured", TOTAL, 0), ("PaymentRefunded", 0, TOTAL)]


def test_a_refund_of_a_capture_the_saga_never_heard_of_reports_both() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    for _ in range(CONFIG.max_attempts):
        saga.expire()  # the capture's replies are lost; the saga refunds what it cannot know
    saga.reply("PaymentRefunded", "pay", refundId="rf-9", amount=TOTAL, noop=False)

    refund = saga.state.outbox[-1]
    assert (refund.reason, refund.captured, refund.refunded) == ("PaymentRefunded", TOTAL, TOTAL)


def test_a_refund_with_nothing_to_undo_moves_no_money() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    for _ in range(CONFIG.max_attempts):
        saga.expire()
    saga.reply("PaymentRefunded", "pay", refundId=None, amount=0, noop=True)
    assert (saga.state.outbox[-1].captured, saga.state.outbox[-1].refunded) == (0, 0)


def test_the_operators_delivery_trouble_is_not_an_event() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    before = saga.state.event_seq

    noted = not_sent(saga, saga.sent[-1])

    assert [t.reason for t in noted.transitions] == ["CommandNotSent"]
    assert saga.state.event_seq == before


def test_published_events_leave_the_outbox_but_keep_their_numbers() -> None:
    saga = Saga.new().run_to(Phase.PAYING)
    upto = saga.state.event_seq

    saga.state = forget_published(saga.state, upto)
    assert saga.state.outbox == ()
    saga.succeed("ChargePayment")

    assert [e.seq for e in saga.state.outbox] == [upto + 1]
    assert forget_published(saga.state, upto) is saga.state  # nothing of those left to drop


def test_the_outbox_survives_the_status_round_trip() -> None:
    saga = Saga.new().run_to(Phase.SHIPPING)
    saga.reply("ShipmentRejected", "ship", reason="UNDELIVERABLE_ADDRESS")
    status = json.loads(json.dumps(saga.state.to_status()))

    assert SagaState.from_status(UID, saga.state.spec, status) == saga.state
    assert status["eventSeq"] == len(status["outbox"])


def test_an_empty_optional_field_counts_as_absent() -> None:
    # The CRD (and so the gateway) lets an optional text be "": the saga must still run it.
    spec = OrderSpec.from_manifest(manifest(
        customer={**CUSTOMER, "name": ""}, shippingAddress={**ADDRESS, "line2": ""}))
    assert spec.customer.name is None and spec.shipping_address.line2 is None
