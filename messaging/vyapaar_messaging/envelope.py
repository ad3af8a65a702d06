"""The envelope carried by every Vyapaar message.

Wire form (JSON body, ``content_type=application/json``, persistent delivery mode; the AMQP
``message_id``, ``correlation_id`` and ``type`` properties are set too)::

    {"id": "<uuid4>", "type": "ReserveStock", "correlationId": "<order uid>",
     "causationId": "<id of the causing message or null>",
     "subject": "<namespace>/<name>", "idempotencyKey": "<order uid>:<step>",
     "time": "2025-01-01T12:00:00.000000Z",
     "traceparent": "00-<32 hex trace id>-<16 hex span id>-01",
     "expires": "2025-01-01T12:00:37.000000Z" or null,
     "payload": {...}}

``expires`` (optional) is when the sender stops waiting for the command's effect: a receiver
must not act on it later (the saga may be undoing it). Replies do not expire.

Build a command with :meth:`Envelope.create`, a reply with :meth:`Envelope.reply`, turn it
into an AMQP message with :meth:`Envelope.to_message` and back with
:meth:`Envelope.from_message` (raises :class:`EnvelopeError` for a malformed body).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import aio_pika
from aio_pika.abc import AbstractMessage, HeadersType
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from vyapaar_messaging import contracts, tracing
from vyapaar_messaging.traceparent import (
    TRACEPARENT_ANNOTATION,
    TRACEPARENT_RE,
    new_span_id,
    new_trace_id,
    new_traceparent,
)

__all__ = [
    "TRACEPARENT_ANNOTATION",
    "TRACEPARENT_RE",
    "Envelope",
    "EnvelopeError",
    "new_span_id",
    "new_trace_id",
    "new_traceparent",
]

CONTENT_TYPE: Final = "application/json"


class EnvelopeError(ValueError):
    """The body is not a valid envelope (bad JSON, missing or malformed fields)."""


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Envelope(BaseModel):
    """Immutable message envelope. Python names are snake_case, wire names camelCase."""

    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")

    id: str
    type: str = Field(min_length=1, max_length=100)
    correlation_id: str = Field(alias="correlationId", min_length=1, max_length=200)
    causation_id: str | None = Field(default=None, alias="causationId")
    subject: str = Field(default="", max_length=600)
    idempotency_key: str = Field(alias="idempotencyKey", min_length=1, max_length=300)
    time: datetime
    traceparent: str
    expires: datetime | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    # -- validation ---------------------------------------------------------------------

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError("id must be a UUID") from None
        return value

    @field_validator("time", "expires")
    @classmethod
    def _check_time(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("times must carry a UTC offset (RFC 3339)")
        return value.astimezone(UTC)

    @field_validator("traceparent")
    @classmethod
    def _check_traceparent(cls, value: str) -> str:
        match = TRACEPARENT_RE.match(value)
        if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
            raise ValueError("traceparent must be a W3C traceparent 00-<32 hex>-<16 hex>-<2 hex>")
        return value

    @field_serializer("time", "expires")
    def _serialize_time(self, value: datetime | None) -> str | None:
        return None if value is None else _rfc3339(value)

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        payload: BaseModel,
        *,
        correlation_id: str,
        idempotency_key: str,
        subject: str = "",
        causation_id: str | None = None,
        traceparent: str | None = None,
        message_type: str | None = None,
        expires: datetime | None = None,
    ) -> Envelope:
        """A new envelope for a contract payload model (type derived from the model).

        ``traceparent`` defaults to the current span when tracing is on and a span is
        current, else to a new trace; pass the order's trace id via
        ``new_traceparent(trace_id)`` to keep one trace per order.
        """
        mtype = message_type or contracts.type_name(payload)
        return cls(
            id=str(uuid.uuid4()),
            type=mtype,
            correlation_id=correlation_id,
            causation_id=causation_id,
            subject=subject,
            idempotency_key=idempotency_key,
            time=datetime.now(UTC),
            traceparent=traceparent or tracing.current_traceparent(),
            expires=expires,
            payload=payload.model_dump(by_alias=True, mode="json"),
        )

    def reply(self, payload: BaseModel, *, message_type: str | None = None) -> Envelope:
        """A reply to this envelope: copies correlationId, subject, idempotencyKey and the
        trace id; causationId = this id; new id, new span id, current time.

        With tracing on, the span id is the current span's (the consumer's ``process``
        span) when that span is in this envelope's trace."""
        return Envelope(
            id=str(uuid.uuid4()),
            type=message_type or contracts.type_name(payload),
            correlation_id=self.correlation_id,
            causation_id=self.id,
            subject=self.subject,
            idempotency_key=self.idempotency_key,
            time=datetime.now(UTC),
            traceparent=tracing.current_traceparent(self.trace_id, same_trace=True),
            payload=payload.model_dump(by_alias=True, mode="json"),
        )

    # -- accessors ------------------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        return self.traceparent.split("-")[1]

    @property
    def span_id(self) -> str:
        return self.traceparent.split("-")[2]

    def has_expired(self, now: datetime | None = None) -> bool:
        """The sender stopped waiting for this command (see ``expires``)."""
        return self.expires is not None and (now or datetime.now(UTC)) > self.expires

    @property
    def step(self) -> str:
        """The step part of the idempotency key (opaque), or "" if the key has none."""
        return self.idempotency_key.partition(":")[2]

    def parsed_payload(self) -> BaseModel:
        """The payload validated against its contract (raises ContractError)."""
        return contracts.parse_payload(self.type, self.payload)

    # -- wire -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        if not isinstance(data, dict):
            raise EnvelopeError("envelope must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<envelope>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise EnvelopeError(f"invalid envelope: {details}") from exc

    @classmethod
    def from_json(cls, body: bytes | str) -> Envelope:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeError(f"body is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def to_message(self, headers: HeadersType | None = None) -> aio_pika.Message:
        """A persistent AMQP message with id/correlation id/type properties set."""
        return aio_pika.Message(
            body=self.to_json(),
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=self.id,
            correlation_id=self.correlation_id,
            type=self.type,
            timestamp=self.time,
            headers={"traceparent": self.traceparent, **(headers or {})},
        )

    @classmethod
    def from_message(cls, message: AbstractMessage) -> Envelope:
        return cls.from_json(message.body)
