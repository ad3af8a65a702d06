"""What the operator's metrics derive from decisions (pure: saga.decide, no I/O)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY
from vyapaar_operator import metrics, saga

UID = "0b7c43a6-2a55-4a4b-9d4c-8ad1f3a1a001"
T0 = datetime(2025, 3, 14, 9, 0, 0, tzinfo=UTC)
CONFIG = saga.SagaConfig(
    step_timeout=timedelta(seconds=10), max_attempts=2, backoff_base=timedelta(seconds=1),
    backoff_max=timedelta(seconds=4), compensation_timeout=timedelta(seconds=10),
    compensation_max_attempts=2, compensation_backoff_base=timedelta(seconds=1),
    compensation_backoff_max=timedelta(seconds=4),
)
SPEC = saga.OrderSpec.from_manifest({
    "customer": {"id": "c", "email": "c@example.com"},
    "items": [{"sku": "SKU-1", "quantity": 1, "unitPrice": 100}],
    "currency": "INR", "paymentToken": "tok_visa",
    "shippingAddress": {"name": "N", "line1": "L", "city": "C", "postalCode": "1",
                        "country": "IN"},
})


def value(name: str, **labels: str) -> float:
    got = REGISTRY.get_sample_value(name, labels)
    return 0.0 if got is None else got


class Run:
    def __init__(self, uid: str = UID, config: saga.SagaConfig = CONFIG) -> None:
        self.state = saga.SagaState.new(uid, SPEC)
        self.config = config
        self.now = T0

    def apply(self, event: saga.Event) -> saga.Decision:
        before = self.state
        decision = saga.decide(before, event, self.config)
        changed = decision.state.to_status() != before.to_status()
        metrics.observe_decision(before, event, decision, changed=changed)
        self.state = decision.state
        return decision

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now

    def reply(self, seconds: float, step: str, type_: str, **payload: Any) -> saga.Decision:
        return self.apply(saga.Reply(message_type=type_, idempotency_key=f"{self.state.uid}:{step}",
                                     payload=payload, message_id=f"m-{type_}-{seconds}",
                                     now=self.at(seconds)))


def test_a_completed_saga_counts_its_outcome_duration_steps_and_replies() -> None:
    finished = value("vyapaar_saga_orders_finished_total", outcome="Completed")
    durations = value("vyapaar_saga_duration_seconds_count", outcome="Completed")
    pay = value("vyapaar_saga_step_duration_seconds_count", step="pay", outcome="succeeded")
    applied = value("vyapaar_saga_replies_total", type="StockReserved", result="applied")
    ignored = value("vyapaar_saga_replies_total", type="StockReserved", result="ignored")
    run = Run("uid-complete")
    run.apply(saga.Start(now=run.at(0)))
    run.reply(1, "reserve", "StockReserved", reservationId="r")
    run.reply(1.5, "reserve", "StockReserved", reservationId="r")  # duplicate
    run.reply(2, "pay", "PaymentCaptured", chargeId="ch", amount=100, currency="INR")
    run.reply(3, "ship", "ShipmentCreated", shipmentId="s", trackingId="t")
    run.reply(4, "commit", "StockCommitted")
    run.reply(5, "notify", "NotificationSent", notificationId="n")
    assert run.state.phase is saga.Phase.COMPLETED
    assert value("vyapaar_saga_orders_finished_total", outcome="Completed") == finished + 1
    assert value("vyapaar_saga_duration_seconds_count", outcome="Completed") == durations + 1
    assert value("vyapaar_saga_step_duration_seconds_count", step="pay",
                 outcome="succeeded") == pay + 1
    assert value("vyapaar_saga_replies_total", type="StockReserved",
                 result="applied") == applied + 1
    assert value("vyapaar_saga_replies_total", type="StockReserved",
                 result="ignored") == ignored + 1


def test_a_declined_payment_compensates_the_reservation_with_its_reason() -> None:
    started = value("vyapaar_saga_compensations_total", step="reserve", reason="CardDeclined")
    undone = value("vyapaar_saga_compensations_completed_total", step="reserve", result="undone")
    failed = value("vyapaar_saga_orders_finished_total", outcome="Failed")
    run = Run("uid-declined")
    run.apply(saga.Start(now=run.at(0)))
    run.reply(1, "reserve", "StockReserved", reservationId="r")
    run.reply(2, "pay", "PaymentDeclined", reason="CARD_DECLINED")
    run.reply(3, "reserve", "StockReleased", noop=False)
    run.reply(4, "notify-failed", "NotificationSent", notificationId="n")
    assert run.state.phase is saga.Phase.FAILED
    assert value("vyapaar_saga_compensations_total", step="reserve",
                 reason="CardDeclined") == started + 1
    assert value("vyapaar_saga_compensations_completed_total", step="reserve",
                 result="undone") == undone + 1
    assert value("vyapaar_saga_orders_finished_total", outcome="Failed") == failed + 1


def test_a_version_2_saga_counts_its_start_by_version_and_a_fraud_check_given_up_as_unknown(
) -> None:
    started = value("vyapaar_saga_started_total", version="2")
    unknown = value("vyapaar_saga_step_duration_seconds_count", step="fraud-check",
                    outcome="unknown")
    timeouts = value("vyapaar_saga_timeouts_total", step="fraud-check", kind="forward")
    released = value("vyapaar_saga_compensations_total", step="reserve",
                     reason="FraudCheckTimedOut")
    run = Run("uid-v2", replace(CONFIG, version=2))
    run.apply(saga.Start(now=run.at(0)))
    run.reply(1, "reserve", "StockReserved", reservationId="r")
    while run.state.phase is saga.Phase.CHECKING_FRAUD:
        deadline = saga.next_deadline(run.state)
        assert deadline is not None
        run.apply(saga.Tick(now=deadline))
    assert run.state.step("fraud-check").state is saga.StepState.FAILED
    assert value("vyapaar_saga_started_total", version="2") == started + 1
    assert value("vyapaar_saga_step_duration_seconds_count", step="fraud-check",
                 outcome="unknown") == unknown + 1
    assert value("vyapaar_saga_timeouts_total", step="fraud-check",
                 kind="forward") == timeouts + CONFIG.max_attempts
    assert value("vyapaar_saga_compensations_total", step="reserve",
                 reason="FraudCheckTimedOut") == released + 1


def test_timeouts_retries_and_an_exhausted_compensation() -> None:
    retries = value("vyapaar_saga_retries_total", step="reserve", kind="forward", reason="timeout")
    fwd = value("vyapaar_saga_timeouts_total", step="reserve", kind="forward")
    comp = value("vyapaar_saga_timeouts_total", step="reserve", kind="compensation")
    cretries = value("vyapaar_saga_retries_total", step="reserve", kind="compensation",
                     reason="timeout")
    failures = value("vyapaar_saga_compensation_failures_total", step="reserve")
    unknown = value("vyapaar_saga_step_duration_seconds_count", step="reserve", outcome="unknown")
    timed_out = value("vyapaar_saga_compensations_total", step="reserve",
                      reason="ReservationTimedOut")
    run = Run("uid-timeouts")
    run.apply(saga.Start(now=run.at(0)))
    for _ in range(20):  # tick at every deadline until the saga stops
        deadline = saga.next_deadline(run.state)
        if deadline is None:
            break
        run.apply(saga.Tick(now=deadline))
    assert run.state.phase is saga.Phase.COMPENSATION_FAILED
    assert value("vyapaar_saga_retries_total", step="reserve", kind="forward",
                 reason="timeout") == retries + 1
    assert value("vyapaar_saga_timeouts_total", step="reserve", kind="forward") == fwd + 2
    assert value("vyapaar_saga_step_duration_seconds_count", step="reserve",
                 outcome="unknown") == unknown + 1
    assert value("vyapaar_saga_compensations_total", step="reserve",
                 reason="ReservationTimedOut") == timed_out + 1
    assert value("vyapaar_saga_retries_total", step="reserve", kind="compensation",
                 reason="timeout") == cretries + 1
    assert value("vyapaar_saga_timeouts_total", step="reserve", kind="compensation") == comp + 2
    assert value("vyapaar_saga_compensation_failures_total", step="reserve") == failures + 1
    # Resume after a repair: the compensation goes out again, not counted as a new one.
    run.apply(saga.Resume(now=run.at(1000)))
    assert value("vyapaar_saga_compensations_total", step="reserve",
                 reason="ReservationTimedOut") == timed_out + 1


def test_recovery_resends_are_retries_with_reason_recovery() -> None:
    before = value("vyapaar_saga_retries_total", step="reserve", kind="forward",
                   reason="recovery")
    run = Run("uid-recover")
    run.apply(saga.Start(now=run.at(0)))
    run.apply(saga.Recover(now=run.at(1)))
    assert value("vyapaar_saga_retries_total", step="reserve", kind="forward",
                 reason="recovery") == before + 1


def test_stuck_sagas_are_counted_against_the_deadline_and_phases_tracked() -> None:
    stuck = value("vyapaar_saga_stuck", phase="Reserving")
    run = Run("uid-stuck")
    run.apply(saga.Start(now=datetime.now(UTC) - timedelta(hours=2)))
    assert value("vyapaar_saga_stuck", phase="Reserving") == stuck + 1
    assert value("vyapaar_saga_oldest_age_seconds", phase="Reserving") >= 7200
    assert value("vyapaar_saga_deadline_seconds") > 0
    run.reply(7201, "reserve", "StockRejected", reason="OUT_OF_STOCK", sku="SKU-1")
    run.reply(7202, "notify-failed", "NotificationSent", notificationId="n")
    assert run.state.phase is saga.Phase.FAILED
    assert value("vyapaar_saga_stuck", phase="Reserving") == stuck


def test_track_phase_keeps_the_gauges_exact() -> None:
    from vyapaar_operator.orders import OrderRef

    ref = OrderRef("ns", "o")
    base = value("vyapaar_saga_in_flight", phase="Paying")
    repair = value("vyapaar_saga_awaiting_repair")
    metrics.track_phase(ref, "Paying")
    assert value("vyapaar_saga_in_flight", phase="Paying") == base + 1
    metrics.track_phase(ref, "CompensationFailed")
    metrics.forget(ref)
    assert value("vyapaar_saga_in_flight", phase="Paying") == base
    assert value("vyapaar_saga_awaiting_repair") == repair + 1
    metrics.track_phase(ref, "Compensating")
    assert value("vyapaar_saga_awaiting_repair") == repair
    metrics.forget(ref)


def test_saga_deadline_is_every_forward_stage_of_the_longest_flow_spending_its_budget() -> None:
    # waits: 10+1, 10+2 -> 23 s per stage; version 2: 4 steps to the pivot, then one stage
    assert metrics.saga_deadline(CONFIG) == 5 * 23
