"""What an observed Order asks of its saga (the operator is level-triggered)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from vyapaar_operator import saga
from vyapaar_operator.observe import RESUME_ANNOTATION, implied_event, spec_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = "0b7e6c1e-0000-4000-8000-000000000001"


def spec(**overrides: Any) -> dict[str, Any]:
    return {
        "customer": {"id": "c", "email": "c@example.com", "name": "C"},
        "items": [{"sku": "SKU-A", "quantity": 1, "unitPrice": 100}],
        "currency": "INR", "paymentToken": "tok_visa",
        "shippingAddress": {"name": "C", "line1": "1 Road", "city": "Pune",
                            "postalCode": "411001", "country": "IN"},
        "cancel": False, **overrides,
    }


def observed(state: saga.SagaState | None, *, cancel: bool = False, deleting: bool = False,
             annotations: dict[str, str] | None = None, paused: bool = False,
             ) -> tuple[dict[str, Any], saga.SagaState]:
    manifest_spec = spec(cancel=cancel, paused=paused)
    current = state or saga.SagaState.new(UID, saga.OrderSpec.from_manifest(manifest_spec))
    current = replace(current, spec=saga.OrderSpec.from_manifest(manifest_spec))
    meta: dict[str, Any] = {"uid": UID, "name": "o", "namespace": "n",
                            "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = current.to_status() if state else {}
    return {"metadata": meta, "spec": manifest_spec, "status": status}, current


def started(**spec_overrides: Any) -> saga.SagaState:
    fresh = saga.SagaState.new(UID, saga.OrderSpec.from_manifest(spec(**spec_overrides)))
    return saga.decide(fresh, saga.Start(now=NOW), saga.SagaConfig()).state


def test_a_new_order_starts_its_saga() -> None:
    obj, state = observed(None)
    assert isinstance(implied_event(obj, state, NOW, first_sight=True), saga.Start)


def test_an_unchanged_running_order_asks_nothing() -> None:
    obj, state = observed(started())
    assert implied_event(obj, state, NOW, first_sight=False) is None


def test_after_a_restart_a_running_order_re_sends_what_is_in_flight() -> None:
    obj, state = observed(started())
    assert isinstance(implied_event(obj, state, NOW, first_sight=True), saga.Recover)


def test_spec_cancel_asks_for_cancellation_once() -> None:
    obj, state = observed(started(), cancel=True)
    assert isinstance(implied_event(obj, state, NOW, first_sight=False), saga.CancelRequested)
    cancelled = saga.decide(state, saga.CancelRequested(now=NOW), saga.SagaConfig()).state
    obj, state = observed(cancelled, cancel=True)
    assert implied_event(obj, state, NOW, first_sight=False) is None


def test_deletion_of_a_running_order_asks_for_compensation() -> None:
    obj, state = observed(started(), deleting=True)
    assert isinstance(implied_event(obj, state, NOW, first_sight=False), saga.Deleted)


def test_the_resume_annotation_only_resumes_an_order_awaiting_repair() -> None:
    obj, state = observed(started(), annotations={RESUME_ANNOTATION: "now"})
    assert not isinstance(implied_event(obj, state, NOW, first_sight=False), saga.Resume)


def test_spec_paused_asks_for_a_pause_once_and_unpausing_for_carrying_on() -> None:
    obj, state = observed(started(), paused=True)
    event = implied_event(obj, state, NOW, first_sight=False)
    assert isinstance(event, saga.PauseChanged)
    paused = saga.decide(state, event, saga.SagaConfig()).state
    obj, state = observed(paused, paused=True)
    assert implied_event(obj, state, NOW, first_sight=False) is None
    obj, state = observed(paused, paused=False)
    assert isinstance(implied_event(obj, state, NOW, first_sight=False), saga.PauseChanged)


def test_pausing_a_finished_order_asks_nothing() -> None:
    state = started()
    finished = replace(state, phase=saga.Phase.COMPLETED)
    obj, state = observed(finished, paused=True)
    assert implied_event(obj, state, NOW, first_sight=False) is None


def test_a_deletion_ends_a_pause_so_that_the_order_can_go() -> None:
    obj, state = observed(started(), paused=True)
    paused = saga.decide(state, saga.PauseChanged(now=NOW), saga.SagaConfig()).state
    assert paused.is_paused
    obj, state = observed(paused, paused=True, deleting=True)
    assert spec_of(obj).paused is False
    event = implied_event(obj, replace(state, spec=spec_of(obj)), NOW, first_sight=False)
    assert isinstance(event, saga.Deleted)
    after = saga.decide(replace(state, spec=spec_of(obj)), event, saga.SagaConfig())
    assert not after.state.is_paused and after.commands  # the compensation goes out
