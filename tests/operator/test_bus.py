"""Saga commands become contract-checked envelopes; one trace per order."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from vyapaar_messaging.envelope import Envelope
from vyapaar_operator import saga
from vyapaar_operator.bus import envelope_for, reply_target
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
