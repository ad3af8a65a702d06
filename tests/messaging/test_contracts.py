"""The message contracts shared by the services and the operator."""

from __future__ import annotations

import pytest
from vyapaar_messaging import contracts


def test_every_command_belongs_to_a_service_and_has_declared_replies() -> None:
    for name, spec in contracts.COMMANDS.items():
        assert spec.type == name
        assert spec.service in contracts.SERVICES
        assert spec.replies, name
        for reply in spec.replies:
            assert contracts.REPLIES[reply].command == name
            assert contracts.REPLIES[reply].service == spec.service


def test_compensations_undo_a_forward_command_of_the_same_service() -> None:
    assert contracts.compensation_for("ReserveStock") == "ReleaseStock"
    assert contracts.compensation_for("ChargePayment") == "RefundPayment"
    assert contracts.compensation_for("CreateShipment") == "VoidShipment"
    assert contracts.compensation_for("SendNotification") is None


def test_idempotency_key_is_uid_colon_step_and_round_trips() -> None:
    key = contracts.idempotency_key("8d2c-uid", contracts.Step.RESERVE)
    assert key == "8d2c-uid:reserve"
    assert contracts.split_idempotency_key(key) == ("8d2c-uid", "reserve")
    assert contracts.split_idempotency_key("u:notify-failed") == ("u", "notify-failed")
    with pytest.raises(ValueError):
        contracts.idempotency_key("", "reserve")


def test_payloads_use_camel_case_on_the_wire() -> None:
    shipment = contracts.CreateShipment(
        address=contracts.Address(
            name="A", line1="1 Road", city="Pune", postal_code="411001", country="IN"
        ),
        items=[contracts.Item(sku="S", quantity=1)],
    )
    wire = shipment.to_payload()
    assert wire["address"]["postalCode"] == "411001"
    reply = contracts.ShipmentCreated(shipment_id="s1", tracking_id="T1")
    assert reply.to_payload() == {"shipmentId": "s1", "trackingId": "T1"}
    parsed = contracts.parse_payload("ShipmentCreated", {"shipmentId": "s1", "trackingId": "T1"})
    assert parsed == reply


def test_type_name_comes_from_the_model() -> None:
    assert contracts.type_name(contracts.StockReserved(reservation_id="r")) == "StockReserved"
    assert contracts.type_name(contracts.ReleaseStock) == "ReleaseStock"


@pytest.mark.parametrize(
    ("message_type", "payload", "error"),
    [
        ("Nope", {}, "unknown message type"),
        ("ReserveStock", {"items": []}, "items"),
        ("ReserveStock", {"items": [{"sku": "A", "quantity": 0}]}, "quantity"),
        ("ReserveStock", {"items": [{"sku": "A", "quantity": "2"}]}, "quantity"),
        (
            "ChargePayment",
            {"amount": 10, "currency": "eur", "token": "t", "customer": {"id": "c"}},
            "currency",
        ),
        (
            "ChargePayment",
            {"amount": -1, "currency": "EUR", "token": "t", "customer": {"id": "c"}},
            "amount",
        ),
        ("SendNotification", {"template": "order-shipped", "customer": {"id": "c"}}, "template"),
        ("StockRejected", {"reason": "NOPE"}, "reason"),
        ("ReserveStock", [], "JSON object"),
    ],
)
def test_invalid_payloads_are_refused_with_a_clear_reason(
    message_type: str, payload: object, error: str
) -> None:
    with pytest.raises(contracts.ContractError, match=error):
        contracts.parse_payload(message_type, payload)


def test_unknown_fields_are_ignored_but_customer_extras_are_kept() -> None:
    charge = contracts.parse_payload(
        "ChargePayment",
        {"amount": 1999, "currency": "EUR", "token": "tok_visa", "future": 1,
         "customer": {"id": "c1", "email": "a@b.c", "tier": "gold"}},
    )  # fmt: skip
    assert isinstance(charge, contracts.ChargePayment)
    assert charge.customer.model_extra == {"tier": "gold"}
    assert charge.to_payload()["customer"]["tier"] == "gold"
