"""Saga commands onto RabbitMQ, and service replies back into the engine.

Commands are validated against the shared contracts before they leave, so a
contract drift shows up as an error here rather than as a poison message in a
service's dead-letter queue. One trace per order: the trace its creator started
(the gateway keeps the caller's ``traceparent`` in the annotation
``vyapaar.dev/traceparent``), else the order's UID without dashes (32 hex digits,
exactly W3C's trace-id).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import (
    TRACEPARENT_ANNOTATION,
    TRACEPARENT_RE,
    Envelope,
    new_traceparent,
)
from vyapaar_messaging.publisher import Publisher

from vyapaar_operator import metrics, saga
from vyapaar_operator.orders import OrderRef

log = logging.getLogger(__name__)


def trace_id_of(uid: str) -> str:
    return uid.replace("-", "").lower()


def order_trace_id(meta: Mapping[str, Any]) -> str:
    """The trace the order's messages join: its creator's, or one made from its UID."""
    annotated = (meta.get("annotations") or {}).get(TRACEPARENT_ANNOTATION) or ""
    match = TRACEPARENT_RE.match(annotated.strip())
    return match.group(1) if match else trace_id_of(meta["uid"])


def envelope_for(obj: Mapping[str, Any], command: saga.Command) -> Envelope:
    """The wire message for `command` about the Order `obj`."""
    meta = obj["metadata"]
    payload = contracts.parse_payload(command.message_type, command.payload)
    return Envelope(
        id=str(uuid.uuid4()),
        type=command.message_type,
        correlation_id=meta["uid"],
        causation_id=None,
        subject=f"{meta['namespace']}/{meta['name']}",
        idempotency_key=command.idempotency_key,
        time=datetime.now(UTC),
        traceparent=new_traceparent(order_trace_id(meta)),
        expires=command.expires,
        payload=payload.model_dump(by_alias=True, mode="json"),
    )


class RabbitCommandBus:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def send(self, obj: Mapping[str, Any], command: saga.Command) -> None:
        envelope = envelope_for(obj, command)
        await self.publisher.send_command(envelope, service=command.service)
        kind = "compensation" if command.compensation else "forward"
        metrics.COMMANDS.labels(command.message_type, kind).inc()
        log.debug("sent %s %s", command.message_type, command.idempotency_key,
                 extra={"correlationId": envelope.correlation_id})


def reply_target(envelope: Envelope) -> OrderRef:
    """Which Order a reply is about (its `subject`); ValueError if it names none."""
    return OrderRef.parse(envelope.subject)
