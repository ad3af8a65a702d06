"""Message contracts of Vyapaar Nexus — defined once, used by the services and the operator.

Every message on the wire is an :class:`~vyapaar_messaging.envelope.Envelope` whose
``type`` names one of the payload models below and whose ``payload`` is that model dumped
with camelCase field names (``model.model_dump(by_alias=True, mode="json")``).

Routing (see :mod:`vyapaar_messaging.topology`):

* commands go to the direct exchange ``vyapaar.commands`` with routing key = the service
  name (:func:`service_for`),
* replies go to the topic exchange ``vyapaar.events`` with routing key
  ``"<service>.<ReplyType>"`` (:func:`reply_routing_key`),
* domain events (:class:`OrderEvent`: what happened to an order) go to the fan-out
  exchange ``vyapaar.order-events``, which feeds the durable event log (a stream) and every
  subscriber's queue (the analytics service's).

Idempotency: every command carries ``idempotencyKey = "<order uid>:<step>"``
(:func:`idempotency_key`). A compensation (``ReleaseStock``, ``RefundPayment``,
``VoidShipment``) carries the SAME key as the forward command it undoes. Services treat the
step part as opaque.

| service      | command        | replies                              |
| ------------ | -------------- | ------------------------------------ |
| inventory    | ReserveStock   | StockReserved / StockRejected        |
| inventory    | ReleaseStock   | StockReleased (compensation)         |
| inventory    | CommitStock    | StockCommitted                       |
| payment      | CheckFraud     | FraudCheckPassed / FraudSuspected    |
| payment      | ChargePayment  | PaymentCaptured / PaymentDeclined    |
| payment      | RefundPayment  | PaymentRefunded (compensation)       |
| shipping     | CreateShipment | ShipmentCreated / ShipmentRejected   |
| shipping     | VoidShipment   | ShipmentVoided (compensation)        |
| notification | SendNotification | NotificationSent                   |

Example (operator side)::

    from vyapaar_messaging import contracts
    from vyapaar_messaging import Envelope

    cmd = Envelope.create(
        contracts.ReserveStock(items=[contracts.Item(sku="SKU-1", quantity=2)]),
        correlation_id=uid,
        subject=f"{namespace}/{name}",
        idempotency_key=contracts.idempotency_key(uid, contracts.Step.RESERVE),
    )
    reply_model = contracts.parse_payload(reply.type, reply.payload)  # e.g. StockReserved
"""

from __future__ import annotations

import builtins
import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

__all__ = [
    "COMMANDS",
    "EVENTS",
    "MESSAGE_MODELS",
    "ORDER_EVENT_SCHEMA_VERSION",
    "REPLIES",
    "SERVICES",
    "Address",
    "ChargePayment",
    "CheckFraud",
    "CommandKind",
    "CommandSpec",
    "CommitStock",
    "ContractError",
    "CreateShipment",
    "Customer",
    "FraudCheckPassed",
    "FraudSuspected",
    "Item",
    "NotificationSent",
    "NotificationTemplate",
    "OrderEvent",
    "PaymentCaptured",
    "PaymentDeclined",
    "PaymentRefunded",
    "RefundPayment",
    "ReleaseStock",
    "ReplySpec",
    "ReserveStock",
    "SendNotification",
    "Service",
    "ShipmentCreated",
    "ShipmentRejected",
    "ShipmentVoided",
    "Step",
    "StockCommitted",
    "StockRejected",
    "StockReleased",
    "StockReserved",
    "VoidShipment",
    "compensation_for",
    "event_id",
    "event_idempotency_key",
    "idempotency_key",
    "parse_payload",
    "reply_routing_key",
    "service_for",
    "split_idempotency_key",
    "type_name",
]


class Service(enum.StrEnum):
    INVENTORY = "inventory"
    PAYMENT = "payment"
    SHIPPING = "shipping"
    NOTIFICATION = "notification"


SERVICES: Final[tuple[str, ...]] = tuple(s.value for s in Service)


class Step(enum.StrEnum):
    """Saga steps used in idempotency keys. Services treat the step part as opaque."""

    RESERVE = "reserve"
    FRAUD_CHECK = "fraud-check"
    PAY = "pay"
    SHIP = "ship"
    COMMIT = "commit"
    NOTIFY = "notify"
    NOTIFY_FAILED = "notify-failed"
    NOTIFY_CANCELLED = "notify-cancelled"


class NotificationTemplate(enum.StrEnum):
    ORDER_CONFIRMED = "order-confirmed"
    ORDER_FAILED = "order-failed"
    ORDER_CANCELLED = "order-cancelled"


class ContractError(ValueError):
    """A message does not match the contract (unknown type or invalid payload)."""


def idempotency_key(order_uid: str, step: str) -> str:
    """``"<order uid>:<step>"`` — the key of a forward command AND of its compensation."""
    if not order_uid or ":" in order_uid:
        raise ValueError(f"invalid order uid for an idempotency key: {order_uid!r}")
    if not step:
        raise ValueError("step must not be empty")
    return f"{order_uid}:{step}"


def split_idempotency_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`idempotency_key`: ``(order uid, step)``."""
    uid, sep, step = key.partition(":")
    if not sep or not uid or not step:
        raise ValueError(f"not an idempotency key: {key!r}")
    return uid, step


# --------------------------------------------------------------------------------------------
# Payload models. Field names are snake_case in Python and camelCase on the wire.
# Unknown fields are ignored (tolerant reader); required fields and types are strict.
# --------------------------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
    )

    def to_payload(self) -> dict[str, Any]:
        """The wire form (camelCase, JSON-compatible)."""
        return self.model_dump(by_alias=True, mode="json")


NonEmptyStr = Annotated[str, Field(min_length=1, max_length=500)]
Sku = Annotated[str, Field(min_length=1, max_length=100)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class Item(_Model):
    sku: Sku
    quantity: PositiveInt


class Customer(_Model):
    """``{id, email?, name?, ...}`` — extra fields are kept."""

    model_config = ConfigDict(extra="allow")

    id: NonEmptyStr
    email: NonEmptyStr | None = None
    name: NonEmptyStr | None = None


class Address(_Model):
    name: NonEmptyStr
    line1: NonEmptyStr
    line2: str | None = None
    city: NonEmptyStr
    postal_code: NonEmptyStr
    country: CountryCode


# inventory -----------------------------------------------------------------------------------


class ReserveStock(_Model):
    items: Annotated[list[Item], Field(min_length=1, max_length=100)]


class StockReserved(_Model):
    reservation_id: NonEmptyStr


class StockRejected(_Model):
    reason: Literal["OUT_OF_STOCK", "UNKNOWN_SKU", "ALREADY_COMPENSATED"]
    sku: str | None = None


class ReleaseStock(_Model):
    pass


class StockReleased(_Model):
    noop: bool


class CommitStock(_Model):
    pass


class StockCommitted(_Model):
    pass


# payment -------------------------------------------------------------------------------------


class CheckFraud(_Model):
    """Screen a payment before it is charged (saga version 2); nothing is recorded or
    moved, so it has no compensation."""

    amount: PositiveInt
    currency: Currency
    token: NonEmptyStr
    customer: Customer


class FraudCheckPassed(_Model):
    score: Annotated[StrictInt, Field(ge=0, le=100)]
    """The risk score, 0 (none) to 100."""


class FraudSuspected(_Model):
    reason: Literal["FRAUD_SUSPECTED"]
    score: Annotated[StrictInt, Field(ge=0, le=100)]


class ChargePayment(_Model):
    amount: PositiveInt
    currency: Currency
    token: NonEmptyStr
    customer: Customer


class PaymentCaptured(_Model):
    charge_id: NonEmptyStr
    amount: PositiveInt
    currency: Currency


class PaymentDeclined(_Model):
    reason: Literal["CARD_DECLINED", "INSUFFICIENT_FUNDS", "ALREADY_COMPENSATED"]


class RefundPayment(_Model):
    pass


class PaymentRefunded(_Model):
    refund_id: str | None
    amount: NonNegativeInt
    noop: bool


# shipping ------------------------------------------------------------------------------------


class CreateShipment(_Model):
    address: Address
    items: Annotated[list[Item], Field(min_length=1, max_length=100)]


class ShipmentCreated(_Model):
    shipment_id: NonEmptyStr
    tracking_id: NonEmptyStr


class ShipmentRejected(_Model):
    reason: Literal["UNDELIVERABLE_ADDRESS", "ALREADY_COMPENSATED"]


class VoidShipment(_Model):
    pass


class ShipmentVoided(_Model):
    noop: bool


# notification --------------------------------------------------------------------------------


class SendNotification(_Model):
    template: NotificationTemplate
    customer: Customer
    data: dict[str, Any] = Field(default_factory=dict)


class NotificationSent(_Model):
    notification_id: NonEmptyStr


# --------------------------------------------------------------------------------------------
# Domain events: what happened to an order (the operator publishes, anyone may subscribe)
# --------------------------------------------------------------------------------------------

ORDER_EVENT_SCHEMA_VERSION: Final = 1
"""The version of :class:`OrderEvent`. A change a version-1 reader would misread (a field
renamed, a meaning changed) makes version 2; adding an optional field does not."""

_EVENT_ID_NAMESPACE: Final = uuid.UUID("5c0d7a2e-8f3b-4c55-9a8e-6b1f2f0c7e11")


def event_id(order_uid: str, seq: int) -> str:
    """The id of an order's event number ``seq``: a UUID derived from both, so a republished
    event carries the id it had the first time and subscribers can deduplicate by it."""
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{order_uid}:{seq}"))


def event_idempotency_key(order_uid: str, seq: int) -> str:
    """``"<order uid>:event-<seq>"`` -- the envelope's idempotency key of an event."""
    return idempotency_key(order_uid, f"event-{seq}")


class OrderEvent(_Model):
    """One transition of an order's saga, published after the status write that recorded it.

    The envelope says which order (``correlationId`` = UID, ``subject`` = namespace/name) and
    carries the event's id (:func:`event_id`): subscribers deduplicate by it. ``seq`` numbers
    an order's events from 1 without gaps, in the order they happened; events may still
    arrive out of order (a republish after a restart), so a reader keys by ``seq``.

    Money the transition moved, in minor units of ``currency``: ``captured`` when the
    payment step succeeded; ``refunded`` when its refund was confirmed. A refund of a
    capture the saga never heard of (its reply was lost, the step timed out) reports both,
    so captured minus refunded always equals the payment ledger.
    """

    schema_version: Literal[1] = ORDER_EVENT_SCHEMA_VERSION
    seq: PositiveInt
    occurred_at: datetime
    reason: NonEmptyStr
    message: Annotated[str, Field(max_length=2000)] = ""
    severity: Literal["Normal", "Warning"] = "Normal"
    step: NonEmptyStr | None = None
    step_started_at: datetime | None = None
    """When ``step`` was first sent: with ``occurred_at``, how long it took."""
    phase: NonEmptyStr
    """The order's phase after the transition."""
    announced: bool
    """Also a line of ``status.timeline`` (and a Kubernetes Event); False for the routine
    forward path (the saga started, a step succeeded)."""
    saga_version: PositiveInt | None = None
    total: NonNegativeInt
    currency: Currency
    captured: NonNegativeInt = 0
    refunded: NonNegativeInt = 0


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


class CommandKind(enum.StrEnum):
    FORWARD = "forward"  # may be compensated
    COMPENSATION = "compensation"  # undoes a forward command with the same idempotency key
    CHECK = "check"  # changes nothing: never compensated
    RETRIABLE = "retriable"  # after the pivot: retried until it succeeds, never compensated


@dataclass(frozen=True, slots=True)
class CommandSpec:
    type: str
    model: builtins.type[BaseModel]
    service: str
    kind: CommandKind
    replies: tuple[str, ...]
    #: for a compensation: the forward command type it undoes
    compensates: str | None = None


@dataclass(frozen=True, slots=True)
class ReplySpec:
    type: str
    model: builtins.type[BaseModel]
    service: str
    command: str
    #: True for the success reply of the command, False for a business refusal
    ok: bool


COMMANDS: Final[dict[str, CommandSpec]] = {
    spec.type: spec
    for spec in (
        CommandSpec(
            "ReserveStock",
            ReserveStock,
            "inventory",
            CommandKind.FORWARD,
            ("StockReserved", "StockRejected"),
        ),
        CommandSpec(
            "ReleaseStock",
            ReleaseStock,
            "inventory",
            CommandKind.COMPENSATION,
            ("StockReleased",),
            compensates="ReserveStock",
        ),
        CommandSpec(
            "CommitStock", CommitStock, "inventory", CommandKind.RETRIABLE, ("StockCommitted",)
        ),
        CommandSpec(
            "CheckFraud",
            CheckFraud,
            "payment",
            CommandKind.CHECK,
            ("FraudCheckPassed", "FraudSuspected"),
        ),
        CommandSpec(
            "ChargePayment",
            ChargePayment,
            "payment",
            CommandKind.FORWARD,
            ("PaymentCaptured", "PaymentDeclined"),
        ),
        CommandSpec(
            "RefundPayment",
            RefundPayment,
            "payment",
            CommandKind.COMPENSATION,
            ("PaymentRefunded",),
            compensates="ChargePayment",
        ),
        CommandSpec(
            "CreateShipment",
            CreateShipment,
            "shipping",
            CommandKind.FORWARD,
            ("ShipmentCreated", "ShipmentRejected"),
        ),
        CommandSpec(
            "VoidShipment",
            VoidShipment,
            "shipping",
            CommandKind.COMPENSATION,
            ("ShipmentVoided",),
            compensates="CreateShipment",
        ),
        CommandSpec(
            "SendNotification",
            SendNotification,
            "notification",
            CommandKind.RETRIABLE,
            ("NotificationSent",),
        ),
    )
}

REPLIES: Final[dict[str, ReplySpec]] = {
    spec.type: spec
    for spec in (
        ReplySpec("StockReserved", StockReserved, "inventory", "ReserveStock", True),
        ReplySpec("StockRejected", StockRejected, "inventory", "ReserveStock", False),
        ReplySpec("StockReleased", StockReleased, "inventory", "ReleaseStock", True),
        ReplySpec("StockCommitted", StockCommitted, "inventory", "CommitStock", True),
        ReplySpec("FraudCheckPassed", FraudCheckPassed, "payment", "CheckFraud", True),
        ReplySpec("FraudSuspected", FraudSuspected, "payment", "CheckFraud", False),
        ReplySpec("PaymentCaptured", PaymentCaptured, "payment", "ChargePayment", True),
        ReplySpec("PaymentDeclined", PaymentDeclined, "payment", "ChargePayment", False),
        ReplySpec("PaymentRefunded", PaymentRefunded, "payment", "RefundPayment", True),
        ReplySpec("ShipmentCreated", ShipmentCreated, "shipping", "CreateShipment", True),
        ReplySpec("ShipmentRejected", ShipmentRejected, "shipping", "CreateShipment", False),
        ReplySpec("ShipmentVoided", ShipmentVoided, "shipping", "VoidShipment", True),
        ReplySpec("NotificationSent", NotificationSent, "notification", "SendNotification", True),
    )
}

EVENTS: Final[dict[str, type[BaseModel]]] = {"OrderEvent": OrderEvent}
"""Domain event types (published to ``vyapaar.order-events``)."""

MESSAGE_MODELS: Final[dict[str, type[BaseModel]]] = {
    **{name: spec.model for name, spec in COMMANDS.items()},
    **{name: spec.model for name, spec in REPLIES.items()},
    **EVENTS,
}

_TYPE_BY_MODEL: Final[dict[type[BaseModel], str]] = {
    model: name for name, model in MESSAGE_MODELS.items()
}


def type_name(model: BaseModel | type[BaseModel]) -> str:
    """The wire ``type`` of a payload model instance or class (e.g. ``"ReserveStock"``)."""
    cls = model if isinstance(model, type) else type(model)
    try:
        return _TYPE_BY_MODEL[cls]
    except KeyError:
        raise ContractError(f"{cls.__name__} is not a message contract") from None


def parse_payload(message_type: str, payload: Any) -> BaseModel:
    """Validate ``payload`` against the contract of ``message_type``.

    Raises :class:`ContractError` for an unknown type or a payload that does not match.
    """
    model = MESSAGE_MODELS.get(message_type)
    if model is None:
        raise ContractError(f"unknown message type {message_type!r}")
    if not isinstance(payload, dict):
        raise ContractError(f"payload of {message_type} must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<payload>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ContractError(f"invalid {message_type} payload: {details}") from exc


def service_for(message_type: str) -> str:
    """The service that handles a command type, or that publishes a reply type."""
    if message_type in COMMANDS:
        return COMMANDS[message_type].service
    if message_type in REPLIES:
        return REPLIES[message_type].service
    raise ContractError(f"unknown message type {message_type!r}")


def reply_routing_key(service: str, reply_type: str) -> str:
    """Routing key of a reply on ``vyapaar.events``: ``"inventory.StockReserved"``."""
    return f"{service}.{reply_type}"


def compensation_for(forward_type: str) -> str | None:
    """The compensation command type that undoes ``forward_type`` (None if there is none)."""
    for spec in COMMANDS.values():
        if spec.compensates == forward_type:
            return spec.type
    return None
