"""Saga commands and domain events become contract-checked envelopes; one trace per order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import Envelope
from vyapaar_operator import saga
from vyapaar_operator.bus import envelope_for, event_envelope, reply_target
from vyapaar_operator.orders import OrderRef

UID = "0b7e6c1e-0000-4000-8000-000000000001"
ORDER = {"metadata": {"uid": UID, "name": "o1", "namespace": "shop"}}


def command(payload: dict[str, object]) -> saga.Command:
    return saga.Command(step="reserve", service="inventory", message_type="ReserveStock",
                        idempotency_key=f"{UID}:reserve", payload=payload, compensation=False)


def test_a_command_carries_the_order_identity_key_and_trace() -> None:
    env = envelope_for(ORDER, command({"items": [{"sku": "SKU-A", "quantity": 2}]}))
    assert env.type == "ReserveStock"
    assert env.correlation_id == UID
    assert env.subject == "shop/o1"
    assert env.idempotency_key == f"{UID}:reserve"
    assert env.trace_id == UID.replace("-", "")
    assert reply_target(env) == OrderRef("shop", "o1")
    assert Envelope.from_json(env.to_json()) == env


def test_an_order_created_in_a_callers_trace_sends_its_commands_in_that_trace() -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = {"metadata": {**ORDER["metadata"],
                           "annotations": {"vyapaar.dev/traceparent": caller}}}
    env = envelope_for(traced, command({"items": [{"sku": "SKU-A", "quantity": 2}]}))
    assert env.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert env.span_id != "00f067aa0ba902b7"  # a span of its own in that trace


def test_a_malformed_traceparent_annotation_falls_back_to_the_orders_own_trace() -> None:
    traced = {"metadata": {**ORDER["metadata"],
                           "annotations": {"vyapaar.dev/traceparent": "not-a-trace"}}}
    env = envelope_for(traced, command({"items": [{"sku": "SKU-A", "quantity": 2}]}))
    assert env.trace_id == UID.replace("-", "")


def test_a_command_that_breaks_the_contract_never_leaves() -> None:
    with pytest.raises((ValidationError, ValueError)):
        envelope_for(ORDER, command({"items": [{"sku": "SKU-A", "quantity": 0}]}))


def paid_state() -> saga.SagaState:
    spec = saga.OrderSpec.from_manifest({
        "customer": {"id": "c1", "email": "c1@example.com", "name": "C"},
        "items": [{"sku": "SKU-A", "quantity": 2, "unitPrice": 250}],
        "currency": "EUR", "paymentToken": "tok_visa",
        "shippingAddress": {"name": "C", "line1": "1 Main St", "city": "Berlin",
                            "postalCode": "10115", "country": "DE"},
    })
    return saga.decide(saga.SagaState.new(UID, spec), saga.Start(now=T0),
                        saga.SagaConfig()).state


T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_a_domain_event_is_an_order_event_whose_id_the_order_and_seq_decide() -> None:
    state = paid_state()
    event = state.outbox[0]

    env = event_envelope(ORDER, state, event)

    assert env.type == "OrderEvent"
    assert env.id == event_envelope(ORDER, state, event).id == contracts.event_id(UID, 1)
    assert (env.correlation_id, env.subject) == (UID, "shop/o1")
    assert env.idempotency_key == f"{UID}:event-1"
    assert env.trace_id == UID.replace("-", "")
    told = contracts.OrderEvent.model_validate(env.payload)
    assert (told.seq, told.reason, told.phase, told.announced) == (
        1, "SagaStarted", "Reserving", False)
    assert (told.total, told.currency, told.saga_version) == (500, "EUR", 1)
    assert told.step == "reserve" and told.step_started_at == T0 == told.occurred_at
    assert Envelope.from_json(env.to_json()) == env


def test_an_event_of_another_schema_version_is_refused_by_the_contract() -> None:
    state = paid_state()
    payload = event_envelope(ORDER, state, state.outbox[0]).payload
    with pytest.raises(contracts.ContractError):
        contracts.parse_payload("OrderEvent", {**payload, "schemaVersion": 2})
