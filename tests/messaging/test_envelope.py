"""The envelope on every message: construction, replies, wire form, validation."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from vyapaar_messaging import Envelope, EnvelopeError, contracts, new_traceparent

UID = "5b1f0e2a-8f7e-4c1e-9a55-3a3c1d9c0b11"


def reserve_command() -> Envelope:
    return Envelope.create(
        contracts.ReserveStock(items=[contracts.Item(sku="SKU-1", quantity=2)]),
        correlation_id=UID,
        subject="shop/order-1",
        idempotency_key=contracts.idempotency_key(UID, "reserve"),
    )


def test_a_command_envelope_has_every_field_of_the_wire_contract() -> None:
    cmd = reserve_command()
    wire = json.loads(cmd.to_json())
    assert set(wire) == {
        "id", "type", "correlationId", "causationId", "subject", "idempotencyKey",
        "time", "traceparent", "expires", "payload",
    }  # fmt: skip
    assert wire["expires"] is None  # a command that does not expire
    assert uuid.UUID(wire["id"]).version == 4
    assert wire["type"] == "ReserveStock"
    assert wire["causationId"] is None
    assert wire["idempotencyKey"] == f"{UID}:reserve"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", wire["time"])
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", wire["traceparent"])
    assert wire["payload"] == {"items": [{"sku": "SKU-1", "quantity": 2}]}


def test_a_reply_keeps_correlation_subject_key_and_trace_but_is_caused_by_the_command() -> None:
    cmd = reserve_command()
    reply = cmd.reply(contracts.StockReserved(reservation_id="r-1"))
    assert reply.type == "StockReserved"
    assert reply.id != cmd.id
    assert reply.causation_id == cmd.id
    assert reply.correlation_id == cmd.correlation_id
    assert reply.subject == cmd.subject
    assert reply.idempotency_key == cmd.idempotency_key
    assert reply.trace_id == cmd.trace_id
    assert reply.span_id != cmd.span_id
    assert reply.payload == {"reservationId": "r-1"}


def test_an_expiring_command_says_when_and_its_reply_does_not_expire() -> None:
    expires = datetime(2025, 1, 1, 12, 0, 37, tzinfo=UTC)
    cmd = Envelope.create(contracts.ReserveStock(items=[contracts.Item(sku="SKU-1", quantity=2)]),
                          correlation_id=UID, idempotency_key=f"{UID}:reserve", expires=expires)
    wire = json.loads(cmd.to_json())
    assert wire["expires"] == "2025-01-01T12:00:37.000000Z"
    assert Envelope.from_json(cmd.to_json()).expires == expires
    assert cmd.has_expired(expires + timedelta(microseconds=1))
    assert not cmd.has_expired(expires)
    assert cmd.reply(contracts.StockReserved(reservation_id="r-1")).expires is None
    with pytest.raises(EnvelopeError, match="UTC offset"):
        Envelope.from_dict({**wire, "expires": "2025-01-01T12:00:37"})


def test_json_round_trip() -> None:
    cmd = reserve_command()
    assert Envelope.from_json(cmd.to_json()) == cmd


def test_amqp_message_is_persistent_json_with_id_correlation_and_type_properties() -> None:
    cmd = reserve_command()
    message = cmd.to_message()
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.content_type == "application/json"
    assert message.message_id == cmd.id
    assert message.correlation_id == UID
    assert message.type == "ReserveStock"
    assert message.headers["traceparent"] == cmd.traceparent


def test_traceparent_can_continue_an_existing_trace() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert new_traceparent(trace_id).startswith(f"00-{trace_id}-")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"type": "ReserveStock"}', "invalid envelope"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, error: str) -> None:
    with pytest.raises(EnvelopeError, match=error):
        Envelope.from_json(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "not-a-uuid"),
        ("traceparent", "00-abc-def-01"),
        ("traceparent", f"00-{'0' * 32}-{'1' * 16}-01"),
        ("time", "2025-01-01T00:00:00"),  # no offset
        ("idempotencyKey", ""),
    ],
)
def test_envelope_fields_are_validated(field: str, value: str) -> None:
    wire = reserve_command().to_dict()
    wire[field] = value
    with pytest.raises(EnvelopeError, match=field):
        Envelope.from_dict(wire)
