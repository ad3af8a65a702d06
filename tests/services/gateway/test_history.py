"""The phase history an order's event stream sends is read from any one version of its
status, and a later version only ever extends it: that is what makes a resumed stream
miss nothing and repeat nothing."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from vyapaar_operator.saga import (
    PHASE_CHANGES,
    STEPS,
    TERMINAL_PHASES,
    CancelRequested,
    Event,
    OrderSpec,
    Recover,
    Reply,
    Resume,
    SagaConfig,
    SagaState,
    Start,
    StepState,
    Tick,
    decide,
)
from vyapaar_services.gateway import history
from vyapaar_services.gateway.history import cancellation_refusal, phase_history

UID = "5f0c1c9e-0000-4000-8000-00000000abcd"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = SagaConfig(step_timeout=timedelta(seconds=5), max_attempts=2,
                    backoff_base=timedelta(seconds=1), backoff_max=timedelta(seconds=2),
                    compensation_timeout=timedelta(seconds=5), compensation_max_attempts=2,
                    compensation_backoff_base=timedelta(seconds=1),
                    compensation_backoff_max=timedelta(seconds=2), timeline_limit=6)
SPEC = {"customer": {"id": "c1", "email": "c1@example.com"},
        "items": [{"sku": "SKU-A", "quantity": 1, "unitPrice": 500}], "currency": "INR",
        "paymentToken": "tok_visa",
        "shippingAddress": {"name": "C", "line1": "1 Road", "city": "Pune",
                            "postalCode": "411001", "country": "IN"}}


def order(state: SagaState | None) -> dict[str, Any]:
    return {"metadata": {"name": "o1", "uid": UID, "creationTimestamp": "2026-01-01T12:00:00Z"},
            "spec": SPEC, "status": state.to_status() if state else {}}


def phases(state: SagaState | None) -> list[str]:
    return [t.phase for t in phase_history(order(state))]


class Saga:
    def __init__(self, config: SagaConfig = CONFIG) -> None:
        self.now = T0
        self.config = config
        self.state = SagaState.new(UID, OrderSpec.from_manifest(SPEC))
        self.versions: list[SagaState] = []

    def apply(self, event: Event) -> None:
        self.state = decide(self.state, event, self.config).state
        self.versions.append(self.state)

    def later(self, ms: int = 20) -> datetime:
        self.now += timedelta(milliseconds=ms)
        return self.now

    def answer(self, step: str, ok: bool = True) -> None:
        definition = STEPS[step]
        current = self.state.step(step)
        if current.state is StepState.COMPENSATING:
            kind, payload = definition.compensation_reply or "", {}
        elif ok or definition.rejection is None:
            kind, payload = definition.success, _ids(step)
        else:
            kind, payload = definition.rejection, {"reason": "NOPE"}
        self.apply(Reply(message_type=kind, idempotency_key=f"{UID}:{step}", payload=payload,
                         message_id=f"m{len(self.versions)}", now=self.later()))


def _ids(step: str) -> dict[str, Any]:
    return {key: f"{key}-1" for key in STEPS[step].ids if key != "refundId"}


def test_a_new_order_is_pending_since_its_creation() -> None:
    [pending] = phase_history(order(None))
    assert (pending.seq, pending.phase, pending.time) == (1, "Pending", "2026-01-01T12:00:00Z")


def test_a_completed_order_shows_every_phase_of_the_forward_path_in_order() -> None:
    saga = Saga()
    saga.apply(Start(saga.later()))
    for step in ("reserve", "pay", "ship", "commit", "notify"):
        saga.answer(step)
    assert phases(saga.state) == ["Pending", "Reserving", "Paying", "Shipping", "Completing",
                                  "Completed"]
    times = [datetime.fromisoformat(t.time) for t in phase_history(order(saga.state))]
    assert times == sorted(times)


def test_a_saga_of_version_2_shows_its_fraud_check_between_reserving_and_paying() -> None:
    saga = Saga(replace(CONFIG, version=2))
    saga.apply(Start(saga.later()))
    for step in ("reserve", "fraud-check", "pay", "ship", "commit", "notify"):
        saga.answer(step)
    assert phases(saga.state) == ["Pending", "Reserving", "CheckingFraud", "Paying",
                                  "Shipping", "Completing", "Completed"]


def test_a_declined_payment_shows_the_turnaround_and_the_failure() -> None:
    saga = Saga()
    saga.apply(Start(saga.later()))
    saga.answer("reserve")
    saga.answer("pay", ok=False)
    saga.answer("reserve")  # released
    saga.answer("notify-failed")
    history_ = phase_history(order(saga.state))
    assert [t.phase for t in history_] == ["Pending", "Reserving", "Paying", "Compensating",
                                           "Failed"]
    assert history_[-1].reason == "OrderFailed"


def test_the_gateway_reads_every_phase_change_the_saga_announces() -> None:
    assert {reason: phase.value for reason, phase in PHASE_CHANGES.items()} == history._ANNOUNCED


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("answer"), st.sampled_from(sorted(STEPS)), st.booleans()),
        st.tuples(st.just("tick"), st.integers(1, 30), st.just(False)),
        st.tuples(st.just("cancel"), st.just(0), st.just(False)),
        st.tuples(st.just("resume"), st.just(0), st.just(False)),
        st.tuples(st.just("recover"), st.just(0), st.just(False)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ACTIONS)
def test_every_later_version_extends_the_history_of_an_earlier_one(
    actions: list[tuple[str, Any, bool]],
) -> None:
    saga = Saga()
    saga.apply(Start(saga.later()))
    for kind, arg, ok in actions:
        if kind == "answer":
            if saga.state.has_step(arg) and saga.state.step(arg).waiting:
                saga.answer(arg, ok)
        elif kind == "tick":
            saga.apply(Tick(saga.later(arg * 1000)))
        elif kind == "cancel":
            saga.apply(CancelRequested(saga.later()))
        elif kind == "resume":
            saga.apply(Resume(saga.later()))
        else:
            saga.apply(Recover(saga.later()))
    seen: list[history.Transition] = phase_history(order(None))
    for version in saga.versions:
        now = phase_history(order(version))
        assert now[:len(seen)] == seen, "a later version rewrote the history"
        assert now[-1].phase == version.phase.value, "the history ends in the current phase"
        assert all(a.phase != b.phase for a, b in itertools.pairwise(now))
        assert [t.seq for t in now] == list(range(1, len(now) + 1))
        seen = now


def test_an_order_can_be_cancelled_until_the_pivot() -> None:
    for phase in ("Pending", "Reserving", "Paying", "Shipping"):
        assert cancellation_refusal({"status": {"phase": phase}}) is None
    assert cancellation_refusal({"status": {}}) is None


def test_past_the_pivot_or_after_the_end_a_cancellation_is_refused_with_the_reason() -> None:
    assert cancellation_refusal({"status": {"phase": "Completing"}})[0] == "past-pivot"  # type: ignore[index]
    assert cancellation_refusal({"status": {"phase": "Completed"}})[0] == "past-pivot"  # type: ignore[index]
    for phase in ("Failed", "Cancelled", "CompensationFailed"):
        assert cancellation_refusal({"status": {"phase": phase}})[0] == "order-finished"  # type: ignore[index]
    assert cancellation_refusal(
        {"status": {"phase": "Compensating"}})[0] == "order-rolling-back"  # type: ignore[index]


def test_asking_again_for_a_cancellation_already_asked_is_not_refused() -> None:
    assert cancellation_refusal({"spec": {"cancel": True}, "status": {"phase": "Completed"}}
                                ) is None


def test_the_terminal_phases_are_the_sagas() -> None:
    assert {p.value for p in TERMINAL_PHASES} == history.TERMINAL_PHASES
