"""The analytics rules that need no database or broker: what an event's subject, time and
reason mean for the read model, and which envelopes are refused."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from vyapaar_messaging import Envelope, PermanentError, contracts
from vyapaar_services.analytics.handlers import parse_event
from vyapaar_services.analytics.metrics import reason_label
from vyapaar_services.analytics.readmodel import (
    OutcomeReasons,
    StepCount,
    StepDurations,
    revenue_day,
    split_subject,
    summarise_steps,
)
from vyapaar_services.analytics.rebuild import RebuildSummary
from vyapaar_services.common.config import Settings
from vyapaar_services.common.service import ServiceRuntime, Subscription

REASONS = OutcomeReasons.from_contracts()


def test_the_subject_names_the_orders_namespace_and_name() -> None:
    assert split_subject("shop/order-1") == ("shop", "order-1")
    assert split_subject("order-1") == (None, "order-1")
    assert split_subject("") == (None, None)


def test_money_counts_on_the_utc_day_it_moved() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    assert revenue_day(datetime(2030, 2, 3, 4, 0, tzinfo=india)) == date(2030, 2, 2)
    assert revenue_day(datetime(2030, 2, 3, 0, 0, tzinfo=UTC)) == date(2030, 2, 3)


def test_step_outcomes_are_defined_by_the_reply_contracts() -> None:
    assert REASONS.succeeded == {"StockReserved", "FraudCheckPassed", "PaymentCaptured",
                                 "ShipmentCreated", "StockCommitted", "NotificationSent"}
    assert REASONS.compensated == {"StockReleased", "PaymentRefunded", "ShipmentVoided"}
    assert REASONS.forward == REASONS.succeeded | {"StockRejected", "FraudSuspected",
                                                   "PaymentDeclined", "ShipmentRejected"}


@pytest.mark.parametrize(
    ("reason", "severity", "outcome"),
    [
        ("PaymentCaptured", "Normal", "succeeded"),
        ("PaymentRefunded", "Normal", "compensated"),
        ("PaymentDeclined", "Warning", "failed"),
        ("Retrying", "Warning", "failed"),
        ("CompensationFailed", "Warning", "failed"),
        ("CommandHeld", "Normal", None),
    ],
)
def test_each_step_event_has_at_most_one_outcome(
    reason: str, severity: str, outcome: str | None
) -> None:
    assert REASONS.classify(reason, severity) == outcome


def test_steps_are_summarised_by_name_with_failures_most_frequent_first() -> None:
    counts = [
        StepCount("ship", "ShipmentCreated", "Normal", 3),
        StepCount("ship", "Retrying", "Warning", 2),
        StepCount("ship", "ShipmentRejected", "Warning", 5),
        StepCount("ship", "CommandHeld", "Normal", 9),
        StepCount("pay", "PaymentRefunded", "Normal", 1),
    ]
    durations = [StepDurations("ship", 8, 2.0, 1.5, 4.0), StepDurations("reserve", 1, 1, 1, 1)]

    summary = summarise_steps(counts, durations, REASONS)

    assert [s["step"] for s in summary] == ["pay", "reserve", "ship"]
    pay, reserve, ship = summary
    assert (pay["compensated"], pay["duration"]["count"], pay["duration"]["avgSeconds"]) == (
        1, 0, None)
    assert (reserve["succeeded"], reserve["duration"]["count"]) == (0, 1)
    assert (ship["succeeded"], ship["failed"], ship["compensated"]) == (3, 7, 0)
    assert ship["failureReasons"] == [{"reason": "ShipmentRejected", "count": 5},
                                      {"reason": "Retrying", "count": 2}]
    assert ship["duration"] == {"count": 8, "avgSeconds": 2.0, "p50Seconds": 1.5,
                                "p95Seconds": 4.0}


def order_event(uid: str, **changes: Any) -> Envelope:
    event = contracts.OrderEvent(seq=1, occurred_at=datetime(2030, 1, 1, tzinfo=UTC),
                                 reason="SagaStarted", phase="Reserving", announced=False,
                                 total=100, currency="INR")
    created = Envelope.create(event, correlation_id=uid,
                              idempotency_key=contracts.event_idempotency_key(uid, 1))
    return created.model_copy(update={"id": contracts.event_id(uid, 1), **changes})


def test_an_event_of_the_contract_is_accepted() -> None:
    uid = str(uuid.uuid4())
    assert parse_event(order_event(uid)).seq == 1


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"type": "ReserveStock"}, "not an OrderEvent"),
        ({"payload": {"schemaVersion": 2}}, "invalid OrderEvent payload"),
        ({"id": str(uuid.uuid4())}, "is not event_id(uid, seq)"),
    ],
)
def test_an_envelope_that_breaks_the_event_contract_is_refused(
    change: dict[str, Any], why: str
) -> None:
    uid = str(uuid.uuid4())
    envelope = order_event(uid)
    if "payload" in change:
        change = {"payload": {**envelope.payload, **change["payload"]}}
    with pytest.raises(PermanentError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_event(envelope.model_copy(update=change))


def test_a_rebuild_summary_says_what_became_of_the_events() -> None:
    summary = RebuildSummary(read=120, applied=100, duplicates=18, rejected=2, seconds=2.0)
    assert summary.rate == 60
    assert summary.describe() == "120 events read, 100 applied, 18 duplicates, 2 rejected; " \
                                 "60 events/s"
    assert RebuildSummary().rate == 0


def test_a_service_has_command_handlers_or_a_subscription_not_both() -> None:
    settings = Settings(service="analytics", database_url="postgresql://x/y",
                        amqp_url="amqp://x/")

    def subscribe(_runtime: ServiceRuntime) -> Subscription:
        raise AssertionError("not called before start")

    with pytest.raises(ValueError, match="not both"):
        ServiceRuntime(settings, migrations=[], handlers={"X": object()},  # type: ignore[dict-item]
                       subscribe=subscribe)
    assert ServiceRuntime(settings, migrations=[], subscribe=subscribe).subscribe is subscribe


def test_the_applied_metric_is_labelled_by_reason_names_only() -> None:
    assert reason_label("PaymentCaptured") == "PaymentCaptured"
    assert reason_label("payment captured for order 42") == "Other"
    assert reason_label("X" * 65) == "Other"
