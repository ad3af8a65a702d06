"""The operator's spans: the saga engine over an in-memory Order store and the real message
bus on a recording publisher, with tracing on and the SDK's in-memory exporter.

One trace per Order: an Order created without a caller's trace gets the trace whose id is
its UID, and the saga's first decision is its root (ids from the UID); every later event
hangs under the context it arrived with (a reply's ``process`` span) or under the root (a
deadline); each command is a ``send`` span under the event that decided it and its
envelope names that span; a decision lost to a 409 Conflict leaves no span.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from vyapaar_messaging import tracing
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.publisher import Publisher
from vyapaar_messaging.topology import Topology
from vyapaar_operator import saga
from vyapaar_operator.bus import RabbitMessageBus
from vyapaar_operator.deadlines import Deadlines
from vyapaar_operator.engine import SagaEngine, utcnow
from vyapaar_operator.orders import Conflict, OrderRef

UID = "0b7e6c1e-5a4f-4d2e-9c1b-7f00c0ffee42"
UID_HEX = UID.replace("-", "")
ROOT_SPAN = hashlib.sha256(UID.encode()).hexdigest()[:16]
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
REF = OrderRef("shop", "order-1")
SPEC = {
    "customer": {"id": "cust-42", "email": "asha@example.in", "name": "Asha Rao"},
    "items": [{"sku": "SKU-LAPTOP", "quantity": 1, "unitPrice": 5_499_900}],
    "currency": "INR",
    "paymentToken": "tok_visa",
    "shippingAddress": {"name": "Asha Rao", "line1": "12 MG Road", "city": "Bengaluru",
                        "postalCode": "560001", "country": "IN"},
}
CONFIG = saga.SagaConfig(step_timeout=timedelta(seconds=10), max_attempts=3,
                         backoff_base=timedelta(seconds=1), backoff_max=timedelta(seconds=8))


class MemoryStore:
    """One Order, with resourceVersions; ``conflicts`` status writes are refused first (as
    if someone else had written in between)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.conflicts = 0
        self.writes = 0

    def _bump(self) -> None:
        meta = self.obj["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)

    async def get(self, ref: OrderRef) -> dict[str, Any] | None:
        return copy.deepcopy(self.obj)

    async def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if self.conflicts:
            self.conflicts -= 1
            self._bump()
        if obj["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        self.obj["status"] = copy.deepcopy(status)
        self._bump()
        self.writes += 1
        return copy.deepcopy(self.obj)

    async def set_finalizer(self, obj: dict[str, Any], present: bool) -> dict[str, Any]:
        if obj["metadata"]["resourceVersion"] != self.obj["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        self.obj["metadata"]["finalizers"] = ["vyapaar.dev/saga"] if present else []
        self._bump()
        return copy.deepcopy(self.obj)

    async def remove_annotation(self, ref: OrderRef, key: str) -> None:
        (self.obj["metadata"].get("annotations") or {}).pop(key, None)


@dataclass
class RecordingPublisher:
    """What the bus published (commands and domain events), in order."""

    topology: Topology = field(default_factory=Topology)
    commands: list[Envelope] = field(default_factory=list)
    events: list[Envelope] = field(default_factory=list)

    async def send_command(self, envelope: Envelope, *, service: str | None = None) -> None:
        self.commands.append(envelope)

    async def publish_event(self, envelope: Envelope) -> None:
        self.events.append(envelope)


class Recorder:
    async def record(self, obj: Mapping[str, Any], transition: saga.Transition) -> None:
        pass

    async def flush(self) -> None:
        pass


@dataclass
class Rig:
    engine: SagaEngine
    store: MemoryStore
    publisher: RecordingPublisher
    exporter: InMemorySpanExporter

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    async def watch_event(self) -> saga.SagaState | None:
        """What kopf's handler does with an observed change: apply it in the order's root
        context (``handlers.order_changed``)."""
        from vyapaar_operator import observe

        seen = copy.deepcopy(self.store.obj)
        with tracing.context_from(tracing.order_root_traceparent(seen["metadata"])):
            return await self.engine.apply(
                REF, lambda obj, state: observe.implied_event(obj, state, utcnow(),
                                                              first_sight=False), seen=seen)

    async def reply(self, message_type: str, step: str, payload: dict[str, Any], *,
                    traceparent: str) -> None:
        """A service's reply as the operator's reply consumer handles it: inside its
        ``process`` span, whose parent is the reply envelope's traceparent."""
        envelope = Envelope(
            id=str(uuid.uuid4()), type=message_type, correlation_id=UID, causation_id=None,
            subject=str(REF), idempotency_key=f"{UID}:{step}", time=datetime.now(UTC),
            traceparent=traceparent, payload=payload)
        with tracing.consumer_span(envelope, "operator.replies", 1):
            await self.engine.on_reply(
                REF, message_type=envelope.type, idempotency_key=envelope.idempotency_key,
                payload=envelope.payload, message_id=envelope.id,
                correlation_id=envelope.correlation_id)


def order(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "vyapaar.dev/v1alpha1", "kind": "Order",
            "metadata": {"name": REF.name, "namespace": REF.namespace, "uid": UID,
                         "resourceVersion": "100", "generation": 1,
                         "finalizers": ["vyapaar.dev/saga"],
                         **({"annotations": annotations} if annotations else {})},
            "spec": copy.deepcopy(SPEC), "status": {}}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure("operator", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


async def make_rig(exporter: InMemorySpanExporter, obj: dict[str, Any]) -> Rig:
    store = MemoryStore(obj)
    publisher = RecordingPublisher()
    engine = SagaEngine(store, RabbitMessageBus(cast(Publisher, publisher)),  # type: ignore[arg-type]
                        Recorder(), CONFIG, Deadlines())
    return Rig(engine, store, publisher, exporter)


@pytest.fixture
async def rig(exporter: InMemorySpanExporter) -> AsyncIterator[Rig]:
    yield await make_rig(exporter, order())


def hex_ids(span: ReadableSpan) -> tuple[str, str, str | None]:
    """(trace id, span id, parent span id) in hex."""
    context = span.get_span_context()
    assert context is not None
    parent = f"{span.parent.span_id:016x}" if span.parent is not None else None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}", parent


def traceparent_of(span: ReadableSpan) -> str:
    trace_id, span_id, _ = hex_ids(span)
    return f"00-{trace_id}-{span_id}"


# -- the root -----------------------------------------------------------------------------------


async def test_the_first_decision_of_an_order_without_a_trace_is_its_root_with_ids_from_its_uid(
        rig: Rig) -> None:
    await rig.watch_event()

    start = rig.one("saga Start")
    assert hex_ids(start) == (UID_HEX, ROOT_SPAN, None)
    assert start.kind is SpanKind.INTERNAL
    assert tracing.order_root_traceparent(rig.store.obj["metadata"]) == (
        f"00-{UID_HEX}-{ROOT_SPAN}-01")
    attributes = dict(start.attributes or {})
    assert attributes["vyapaar.order.uid"] == UID
    assert attributes["vyapaar.order"] == "shop/order-1"
    assert attributes["vyapaar.event"] == "Start"
    assert attributes["vyapaar.phase"] == "Reserving"
    assert attributes["vyapaar.phase.before"] == "Pending"
    # its command: a PRODUCER child, whose envelope names it
    send = rig.one("send ReserveStock")
    assert send.kind is SpanKind.PRODUCER
    assert hex_ids(send)[0] == UID_HEX and hex_ids(send)[2] == ROOT_SPAN
    assert dict(send.attributes or {}).items() >= {
        "vyapaar.step": "reserve", "vyapaar.attempt": 1, "messaging.system": "rabbitmq",
        "vyapaar.order.uid": UID}.items()
    [envelope] = rig.publisher.commands
    assert envelope.traceparent.startswith(traceparent_of(send))
    assert dict(send.attributes or {})["messaging.message.id"] == envelope.id
    # the status write: a CLIENT child of the decision, made after it succeeded
    write = rig.one("PUT orders/status")
    assert write.kind is SpanKind.CLIENT and hex_ids(write)[2] == ROOT_SPAN
    assert start.start_time is not None and write.start_time is not None
    assert start.start_time <= write.start_time


async def test_a_decision_lost_to_a_conflict_leaves_no_span(rig: Rig) -> None:
    rig.store.conflicts = 1  # the first write is refused; the engine re-reads and decides again

    await rig.watch_event()

    assert rig.store.writes == 1
    assert [s.name for s in rig.named("saga Start")] == ["saga Start"]  # one root, not two
    assert len(rig.named("PUT orders/status")) == 1  # the refused write left nothing
    assert len(rig.named("send ReserveStock")) == 1
    assert hex_ids(rig.one("saga Start")) == (UID_HEX, ROOT_SPAN, None)


async def test_an_order_created_in_a_callers_trace_hangs_its_saga_under_the_callers_span(
        exporter: InMemorySpanExporter) -> None:
    rig = await make_rig(exporter, order({"vyapaar.dev/traceparent": CALLER}))

    await rig.watch_event()

    start = rig.one("saga Start")
    assert hex_ids(start)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert hex_ids(start)[2] == "00f067aa0ba902b7"
    assert hex_ids(rig.one("send ReserveStock"))[2] == hex_ids(start)[1]
    assert rig.publisher.commands[0].trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


# -- later events -------------------------------------------------------------------------------


async def test_a_deadline_tick_is_a_saga_span_under_the_root_and_its_retry_a_send_under_it(
        rig: Rig) -> None:
    await rig.watch_event()
    rig.exporter.clear()

    # the deadline task applies ticks with no trace context of its own
    await rig.engine.apply(REF, lambda obj, state: saga.Tick(now=utcnow() + timedelta(minutes=1)))

    tick = rig.one("saga Tick")
    assert hex_ids(tick)[0] == UID_HEX and hex_ids(tick)[2] == ROOT_SPAN
    send = rig.one("send ReserveStock")
    assert hex_ids(send)[2] == hex_ids(tick)[1]
    assert dict(send.attributes or {})["vyapaar.attempt"] == 2
    assert rig.publisher.commands[-1].traceparent.startswith(traceparent_of(send))


async def test_a_reply_chains_process_then_saga_then_send(rig: Rig) -> None:
    await rig.watch_event()
    reserve = rig.one("send ReserveStock")
    rig.exporter.clear()
    service_span = f"00-{UID_HEX}-1111222233334444-01"  # inventory's `process ReserveStock`

    await rig.reply("StockReserved", "reserve", {"reservationId": "res-1"},
                    traceparent=service_span)

    process = rig.one("process StockReserved")
    assert hex_ids(process)[2] == "1111222233334444"
    decided = rig.one("saga StockReserved")
    assert hex_ids(decided)[0] == UID_HEX
    assert hex_ids(decided)[2] == hex_ids(process)[1]
    attributes = dict(decided.attributes or {})
    assert attributes["vyapaar.event"] == "Reply"
    assert attributes["vyapaar.message.type"] == "StockReserved"
    assert attributes["vyapaar.changed"] is True
    [send] = [s for s in rig.spans() if s.name.startswith("send ") and s.name != "send OrderEvent"]
    assert send.name == "send ChargePayment"
    assert hex_ids(send)[2] == hex_ids(decided)[1]
    assert rig.publisher.commands[-1].type == "ChargePayment"
    assert rig.publisher.commands[-1].traceparent.startswith(traceparent_of(send))
    assert hex_ids(reserve)[1] != hex_ids(send)[1]


async def test_a_duplicate_reply_is_a_saga_span_that_changed_nothing(rig: Rig) -> None:
    await rig.watch_event()
    parent = f"00-{UID_HEX}-1111222233334444-01"
    await rig.reply("StockReserved", "reserve", {"reservationId": "res-1"}, traceparent=parent)
    rig.exporter.clear()

    await rig.reply("StockReserved", "reserve", {"reservationId": "res-1"}, traceparent=parent)

    again = rig.one("saga StockReserved")
    assert dict(again.attributes or {})["vyapaar.changed"] is False
    assert not rig.named("PUT orders/status") and not rig.named("send ChargePayment")


async def test_domain_events_are_sent_under_the_first_event_of_the_batch(rig: Rig) -> None:
    await rig.watch_event()
    root = rig.one("saga Start")

    assert rig.named("send OrderEvent")  # SagaStarted
    for sent in rig.named("send OrderEvent"):
        assert hex_ids(sent)[2] == hex_ids(root)[1]
        assert dict(sent.attributes or {})["vyapaar.event.seq"] >= 1
    assert len(rig.named("send OrderEvent")) == len(rig.publisher.events)
    for envelope, sent in zip(rig.publisher.events, rig.named("send OrderEvent"), strict=True):
        assert envelope.traceparent.startswith(traceparent_of(sent))


# -- off ----------------------------------------------------------------------------------------


async def test_off_the_engine_makes_no_span_and_envelopes_are_as_before() -> None:
    assert not tracing.ENABLED
    rig = await make_rig(InMemorySpanExporter(), order())

    await rig.watch_event()

    assert rig.spans() == []
    [envelope] = rig.publisher.commands
    assert envelope.trace_id == UID_HEX
    assert envelope.span_id != ROOT_SPAN  # a new span id in the order's trace, as before


def test_off_the_operator_never_imports_opentelemetry() -> None:
    code = ("import sys, os; os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None)\n"
            "import vyapaar_operator.engine, vyapaar_operator.handlers, vyapaar_operator.__main__\n"
            "from vyapaar_messaging import tracing\n"
            "assert not tracing.configure('operator')\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
            "assert not loaded, loaded\n")
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith("OTEL_EXPORTER_OTLP")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr


# -- logs ---------------------------------------------------------------------------------------


async def test_log_lines_of_an_applied_event_name_the_order_and_its_trace(
        exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture) -> None:
    rig = await make_rig(exporter, order())
    rig.publisher.send_command = fail  # type: ignore[method-assign]
    caplog.handler.addFilter(tracing.TraceLogFilter())
    caplog.set_level(logging.WARNING, logger="vyapaar_operator.engine")

    await rig.engine.apply(REF, lambda obj, state: saga.Start(now=utcnow()))

    [record] = [r for r in caplog.records if "publishing commands" in r.getMessage()]
    assert record.__dict__["correlationId"] == UID
    assert record.__dict__["traceId"] == UID_HEX
    assert record.__dict__["spanId"] == ROOT_SPAN  # logged inside the saga's root span
    await asyncio.gather(*rig.engine._background)  # the NotSent it records


async def test_off_log_lines_still_name_the_order_and_its_trace(
        caplog: pytest.LogCaptureFixture) -> None:
    rig = await make_rig(InMemorySpanExporter(), order({"vyapaar.dev/traceparent": CALLER}))
    rig.publisher.send_command = fail  # type: ignore[method-assign]
    caplog.handler.addFilter(tracing.TraceLogFilter())
    caplog.set_level(logging.WARNING, logger="vyapaar_operator.engine")

    await rig.engine.apply(REF, lambda obj, state: saga.Start(now=utcnow()))

    [record] = [r for r in caplog.records if "publishing commands" in r.getMessage()]
    assert record.__dict__["correlationId"] == UID
    assert record.__dict__["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "spanId" not in record.__dict__
    await asyncio.gather(*rig.engine._background)


async def fail(envelope: Envelope, *, service: str | None = None) -> None:
    raise ConnectionError("broker away")


def test_the_entry_point_puts_the_trace_filter_on_kopf_s_log_handler(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kopf
    from vyapaar_operator import __main__ as entry

    monkeypatch.setattr(kopf, "run", lambda **_: None)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    root, quiet = logging.getLogger(), logging.getLogger("asyncio")  # kopf.configure's
    handlers, level = root.handlers[:], root.level
    quiet_handlers, quiet_propagate = quiet.handlers[:], quiet.propagate
    try:
        entry.main()
        kopf_handlers = [h for h in root.handlers if h not in handlers]
        assert kopf_handlers
        assert all(any(isinstance(f, tracing.TraceLogFilter) for f in h.filters)
                   for h in kopf_handlers)
        assert not tracing.ENABLED  # no endpoint: off
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        quiet.handlers[:], quiet.propagate = quiet_handlers, quiet_propagate
