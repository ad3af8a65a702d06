"""Saga commands and domain events onto RabbitMQ, and service replies back into the engine.

Commands are validated against the shared contracts before they leave, so a
contract drift shows up as an error here rather than as a poison message in a
service's dead-letter queue. One trace per order: the trace its creator started
(the gateway keeps the caller's ``traceparent`` in the annotation
``vyapaar.dev/traceparent``), else the order's UID without dashes (32 hex digits,
exactly W3C's trace-id): :func:`vyapaar_messaging.tracing.order_root_traceparent`.

With tracing on, each message is published inside a PRODUCER span (``send <Type>``, a
child of the saga span that decided it) and its envelope's ``traceparent`` names that
span, so the service's ``process`` span hangs under it; off, the traceparent is a new span
id in the order's trace, as it always was.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from vyapaar_messaging import contracts, tracing
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.publisher import Publisher

from vyapaar_operator import metrics, saga
from vyapaar_operator.orders import OrderRef

log = logging.getLogger(__name__)


def order_trace_id(meta: Mapping[str, Any]) -> str:
    """The trace the order's messages join: its creator's, or one made from its UID."""
    return tracing.order_root_traceparent(meta).split("-")[1]


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
        traceparent=tracing.current_traceparent(order_trace_id(meta), same_trace=True),
        expires=command.expires,
        payload=payload.model_dump(by_alias=True, mode="json"),
    )


def event_envelope(obj: Mapping[str, Any], state: saga.SagaState,
                   event: saga.DomainEvent) -> Envelope:
    """The wire message for the domain event `event` of the Order `obj` (an ``OrderEvent``).

    Its id is derived from the order and the seq, so publishing it again -- after a lost
    confirm, or by a restarted operator -- sends the same id for subscribers to drop.
    """
    meta = obj["metadata"]
    uid = meta["uid"]
    started = state.step(event.step).started_at if event.step and state.has_step(
        event.step) else None
    payload = contracts.OrderEvent(
        seq=event.seq, occurred_at=event.time, reason=event.reason, message=event.message,
        severity=event.type, step=event.step, step_started_at=started,
        phase=event.phase.value, announced=event.announced, saga_version=state.version,
        total=state.spec.total, currency=state.spec.currency,
        captured=event.captured, refunded=event.refunded,
    )
    return Envelope(
        id=contracts.event_id(uid, event.seq),
        type="OrderEvent",
        correlation_id=uid,
        causation_id=None,
        subject=f"{meta['namespace']}/{meta['name']}",
        idempotency_key=contracts.event_idempotency_key(uid, event.seq),
        time=event.time,
        traceparent=tracing.current_traceparent(order_trace_id(meta), same_trace=True),
        payload=payload.model_dump(by_alias=True, mode="json"),
    )


class RabbitMessageBus:
    """Commands to the services and domain events to their subscribers, through one
    publisher (confirms)."""


    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def send(self, obj: Mapping[str, Any], command: saga.Command) -> None:
        meta = obj["metadata"]
        with tracing.producer_span(
            command.message_type, destination=self.publisher.topology.commands_exchange,
            correlation_id=meta["uid"], subject=f"{meta['namespace']}/{meta['name']}",
            attributes={"vyapaar.step": command.step, "vyapaar.attempt": command.attempt,
                        "vyapaar.compensation": command.compensation,
                        "vyapaar.service": command.service,
                        "messaging.rabbitmq.destination.routing_key": command.service},
        ) as span:
            envelope = envelope_for(obj, command)  # inside the span: its traceparent
            if span is not None:
                span.set_attribute("messaging.message.id", envelope.id)
            await self.publisher.send_command(envelope, service=command.service)
        kind = "compensation" if command.compensation else "forward"
        metrics.COMMANDS.labels(command.message_type, kind).inc()
        log.debug("sent %s %s", command.message_type, command.idempotency_key,
                 extra={"correlationId": envelope.correlation_id})


    async def publish_event(self, obj: Mapping[str, Any], state: saga.SagaState,
                            event: saga.DomainEvent) -> None:
        meta = obj["metadata"]
        with tracing.producer_span(
            "OrderEvent", destination=self.publisher.topology.order_events_exchange,
            correlation_id=meta["uid"], subject=f"{meta['namespace']}/{meta['name']}",
            attributes={"vyapaar.event.seq": event.seq, "vyapaar.event.reason": event.reason,
                        "vyapaar.step": event.step},
        ) as span:
            envelope = event_envelope(obj, state, event)
            if span is not None:
                span.set_attribute("messaging.message.id", envelope.id)
            await self.publisher.publish_event(envelope)
        metrics.EVENTS_PUBLISHED.labels(event.reason).inc()


def reply_target(envelope: Envelope) -> OrderRef:
    """Which Order a reply is about (its `subject`); ValueError if it names none."""
    return OrderRef.parse(envelope.subject)
