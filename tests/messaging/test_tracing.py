"""Tracing in the messaging library: off it costs nothing and changes nothing; on, a
message's handling is a ``process`` span under the span its envelope names, and the reply
it builds names that span in turn.

"On" is the ``spans`` fixture (tests/conftest.py): the SDK with an in-memory exporter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractRobustConnection
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode
from vyapaar_messaging import (
    Consumer,
    Envelope,
    Publisher,
    Topology,
    contracts,
    declare_consumer_queue,
    dlq_name,
    retry_queue_name,
    tracing,
)
from vyapaar_messaging.context import bind_message_context
from vyapaar_messaging.envelope import TRACEPARENT_ANNOTATION, TRACEPARENT_RE

DELAYS = (0.2, 0.4)
UID = "6f1c9a52-3b7e-4d2a-9c11-0e5d8f7a2b34"


def command() -> Envelope:
    uid = str(uuid.uuid4())
    return Envelope.create(
        contracts.ReserveStock(items=[contracts.Item(sku="SKU-T1", quantity=1)]),
        correlation_id=uid,
        subject="shop/order-t",
        idempotency_key=contracts.idempotency_key(uid, "reserve"),
        traceparent=f"00-{uid.replace('-', '')}-{'ab' * 8}-01",
    )


def ids(span: Any) -> tuple[str, str]:
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def parent_id(span: Any) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def named(spans: Any, name: str) -> list[Any]:
    return [s for s in spans.get_finished_spans() if s.name == name]


# -- off ----------------------------------------------------------------------------------

OFF_SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    import vyapaar_messaging
    from vyapaar_messaging import Envelope, contracts, tracing
    from vyapaar_messaging.context import bind_message_context
    import vyapaar_services.common.handling, vyapaar_services.common.outbox
    from vyapaar_services.common.logs import JsonFormatter

    def otel():
        return sorted(m for m in sys.modules if m.startswith("opentelemetry"))

    on = tracing.configure("inventory")
    cmd = Envelope.create(
        contracts.ReserveStock(items=[contracts.Item(sku="SKU-1", quantity=1)]),
        correlation_id="u1", idempotency_key="u1:reserve",
    )
    reply = cmd.reply(contracts.StockReserved(reservationId="r1"))
    with tracing.consumer_span(cmd, "q", 1) as span, tracing.producer_span("X") as producer:
        pass
    with bind_message_context("u1", cmd.id, cmd.type, cmd.trace_id):
        record = logging.LogRecord("x", logging.INFO, "f", 1, "hello", None, None)
        line = json.loads(JsonFormatter("inventory").format(record))
    print(json.dumps({
        "on": on, "enabled": tracing.ENABLED,
        "command": cmd.traceparent, "reply": reply.traceparent,
        "current": tracing.current_traceparent(cmd.trace_id),
        "spans": [span, producer], "configs": tracing.aiohttp_trace_configs(),
        "context": tracing.current_context(),
        "log": line,
        "otel": otel(),
        "otel_with_redis": (__import__("vyapaar_services.gateway.app"), otel())[1],
    }))
    """
)


def test_off_nothing_of_opentelemetry_is_imported_and_traceparents_are_as_before() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", OFF_SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["on"] is False and out["enabled"] is False
    assert out["otel"] == []  # not the SDK, not even the API
    # redis-py (>= 8, imported by the gateway and inventory) loads OpenTelemetry's API and
    # *metrics* SDK by itself when they are installed; the tracing SDK, the exporter and
    # the instrumentations stay out
    assert not [m for m in out["otel_with_redis"] if m.startswith((
        "opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.instrumentation"))]
    assert out["spans"] == [None, None] and out["configs"] == [] and out["context"] is None
    command_tp, reply_tp, current_tp = out["command"], out["reply"], out["current"]
    # as ever: a new trace for a new command; the reply keeps its trace with a new span
    for tp in (command_tp, reply_tp, current_tp):
        assert TRACEPARENT_RE.match(tp) and tp.endswith("-01")
    assert reply_tp.split("-")[1] == command_tp.split("-")[1]
    assert current_tp.split("-")[1] == command_tp.split("-")[1]
    assert len({command_tp.split("-")[2], reply_tp.split("-")[2], current_tp.split("-")[2]}) == 3
    # logs still name the trace of the message being handled, but no span
    assert out["log"]["traceId"] == command_tp.split("-")[1]
    assert out["log"]["correlationId"] == "u1" and "spanId" not in out["log"]


def test_off_tracing_is_on_only_when_an_otlp_endpoint_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing.endpoint_configured()
    assert tracing.configure("x") is False and not tracing.ENABLED
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
    assert not tracing.endpoint_configured()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:24318/v1/traces")
    assert tracing.endpoint_configured()


# -- the order's trace ------------------------------------------------------------------


def test_an_orders_trace_is_its_creators_else_one_made_from_its_uid() -> None:
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    annotated = {"uid": UID, "annotations": {TRACEPARENT_ANNOTATION: caller}}
    assert tracing.order_root_traceparent(annotated) == caller
    derived = tracing.order_root_traceparent({"uid": UID})
    again = tracing.order_root_traceparent({"uid": UID, "annotations": {
        TRACEPARENT_ANNOTATION: "not a traceparent"}})
    assert derived == again  # deterministic: any process computes the same root
    assert TRACEPARENT_RE.match(derived)
    _, trace_id, span_id, flags = derived.split("-")
    assert trace_id == UID.replace("-", "") and flags == "01"
    assert span_id != tracing.order_root_traceparent({"uid": str(uuid.uuid4())}).split("-")[2]


def test_root_ids_give_the_next_parentless_span_the_orders_root_ids(spans: Any) -> None:
    _, trace_id, span_id, _ = tracing.order_root_traceparent({"uid": UID}).split("-")
    with tracing.root_ids(trace_id, span_id):
        with tracing.span("saga Start", context=Context()), tracing.span("saga Reply"):
            pass
        with tracing.span("saga Tick", context=Context()):  # the ids are used once
            pass
    start, child, tick = (named(spans, n)[0] for n in ("saga Start", "saga Reply", "saga Tick"))
    assert ids(start) == (trace_id, span_id) and start.parent is None
    assert ids(child)[0] == trace_id and parent_id(child) == span_id
    assert ids(child)[1] != span_id
    assert ids(tick)[0] != trace_id


def test_on_a_command_built_in_a_producer_span_names_that_span(spans: Any) -> None:
    with tracing.span("saga Start"), tracing.producer_span(
        "ReserveStock", correlation_id="u1", destination="vyapaar.commands"
    ):
        cmd = Envelope.create(
            contracts.ReserveStock(items=[contracts.Item(sku="SKU-1", quantity=1)]),
            correlation_id="u1", idempotency_key="u1:reserve",
        )  # fmt: skip
    (send,) = named(spans, "send ReserveStock")
    assert send.kind is SpanKind.PRODUCER
    assert (cmd.trace_id, cmd.span_id) == ids(send)
    assert send.attributes["messaging.destination.name"] == "vyapaar.commands"
    assert send.attributes["vyapaar.order.uid"] == "u1"
    assert parent_id(send) == ids(named(spans, "saga Start")[0])[1]


def test_on_without_a_current_span_envelopes_get_traceparents_as_before(spans: Any) -> None:
    cmd = command()
    fresh = Envelope.create(contracts.StockReserved(reservation_id="r"), correlation_id="u",
                            idempotency_key="u:reserve")
    reply = cmd.reply(contracts.StockReserved(reservation_id="r1"))
    assert fresh.trace_id != cmd.trace_id and fresh.traceparent.endswith("-01")
    assert reply.trace_id == cmd.trace_id and reply.span_id != cmd.span_id
    assert spans.get_finished_spans() == ()


def test_on_a_reply_never_leaves_its_requests_trace(spans: Any) -> None:
    cmd = command()
    with tracing.span("some other work"):  # current, but in another trace
        reply = cmd.reply(contracts.StockReserved(reservation_id="r1"))
    other = named(spans, "some other work")[0]
    assert reply.trace_id == cmd.trace_id and reply.span_id != ids(other)[1]


def test_on_a_parentless_publish_starts_no_trace(spans: Any) -> None:
    with tracing.producer_span("ReserveStock") as span:
        assert span is not None and not span.is_recording()
    assert spans.get_finished_spans() == ()


# -- the consumer -------------------------------------------------------------------------


@pytest.fixture
async def queue(
    topology: Topology, amqp_connection: AbstractRobustConnection
) -> AsyncIterator[tuple[str, str]]:
    """A private consumer queue: (routing key on the commands exchange, queue name)."""
    key = f"trace-{uuid.uuid4().hex[:8]}"
    name = topology.queue(key)
    ch = await amqp_connection.channel()
    await declare_consumer_queue(ch, name, [(topology.commands_exchange, key)],
                                 retry_delays=DELAYS)
    yield key, name
    for q in (name, dlq_name(name), *(retry_queue_name(name, d) for d in DELAYS)):
        await ch.queue_delete(q, if_unused=False, if_empty=False)
    await ch.close()


async def consume_until(
    amqp_connection: AbstractRobustConnection,
    topology: Topology,
    queue: tuple[str, str],
    publisher: Publisher,
    cmd: Envelope,
    fail_times: int = 0,
) -> list[Envelope]:
    """Send ``cmd``, handle it (failing ``fail_times`` times first); the replies built."""
    replies: list[Envelope] = []
    done = asyncio.Event()

    async def handle(envelope: Envelope) -> None:
        replies.append(envelope.reply(contracts.StockReserved(reservation_id="r1")))
        if len(replies) <= fail_times:
            raise RuntimeError(f"boom #{len(replies)}")
        done.set()

    key, name = queue
    consumer = Consumer(amqp_connection, name, handle, retry_delays=DELAYS,
                        bindings=[(topology.commands_exchange, key)], dlq_sample_interval=None)
    async with consumer:
        await publisher.send_command(cmd, service=key)
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.sleep(0.1)  # the span ends after the ack
    return replies


async def test_on_handling_is_a_process_span_under_the_envelope_and_the_reply_names_it(
    spans: Any, amqp_connection: AbstractRobustConnection, topology: Topology,
    queue: tuple[str, str], publisher: Publisher,
) -> None:
    cmd = command()
    (reply,) = await consume_until(amqp_connection, topology, queue, publisher, cmd)

    (process,) = named(spans, "process ReserveStock")
    assert process.kind is SpanKind.CONSUMER
    assert ids(process)[0] == cmd.trace_id
    assert parent_id(process) == cmd.span_id and process.parent.is_remote
    assert (reply.trace_id, reply.span_id) == ids(process)
    assert reply.correlation_id == cmd.correlation_id and reply.causation_id == cmd.id
    attributes = process.attributes
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.destination.name"] == queue[1]
    assert attributes["messaging.message.id"] == cmd.id
    assert attributes["vyapaar.order.uid"] == cmd.correlation_id
    assert attributes["vyapaar.order"] == "shop/order-t"
    assert attributes["vyapaar.step"] == "reserve"
    assert attributes["vyapaar.attempt"] == 1 and attributes["vyapaar.outcome"] == "ok"
    assert process.status.status_code is StatusCode.UNSET


async def test_on_a_retried_message_is_one_process_span_per_attempt_under_the_same_parent(
    spans: Any, amqp_connection: AbstractRobustConnection, topology: Topology,
    queue: tuple[str, str], publisher: Publisher,
) -> None:
    cmd = command()
    first, second = await consume_until(
        amqp_connection, topology, queue, publisher, cmd, fail_times=1
    )

    failed, succeeded = sorted(named(spans, "process ReserveStock"),
                               key=lambda s: s.attributes["vyapaar.attempt"])
    assert [s.attributes["vyapaar.attempt"] for s in (failed, succeeded)] == [1, 2]
    assert parent_id(failed) == parent_id(succeeded) == cmd.span_id
    assert failed.attributes["vyapaar.outcome"] == "retry"
    assert failed.status.status_code is StatusCode.ERROR
    assert "RuntimeError: boom #1" in (failed.status.description or "")
    # the move to the retry queue happened inside the failed attempt's span
    (moved,) = [e for e in failed.events if e.name == "publish"]
    assert moved.attributes["messaging.rabbitmq.destination.routing_key"] == retry_queue_name(
        queue[1], DELAYS[0]
    )
    assert succeeded.attributes["vyapaar.outcome"] == "ok"
    assert (first.span_id, second.span_id) == (ids(failed)[1], ids(succeeded)[1])


# -- SQL ------------------------------------------------------------------------------------


async def test_on_sql_is_traced_under_work_and_parentless_sql_or_pool_resets_are_dropped(
    spans: Any, database_url: str,
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        await pool.fetchval("SELECT 1")  # no current span: starts no trace
        with tracing.span("process ReserveStock"):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 2")
            # released: the pool's reset statement ran here, inside the span
    finally:
        await pool.close()
    work = named(spans, "process ReserveStock")[0]
    sql = [s for s in spans.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert [s.name for s in sql] == ["SELECT"]
    assert parent_id(sql[0]) == ids(work)[1]
    assert "SELECT 2" in str(sql[0].attributes.get("db.statement"))


# -- logs -----------------------------------------------------------------------------------


def test_log_records_get_the_trace_the_span_and_the_order(spans: Any) -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    handler.addFilter(tracing.TraceLogFilter())
    logger = logging.getLogger("test.tracing")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        cmd = command()
        with bind_message_context(cmd.correlation_id, cmd.id, cmd.type, cmd.trace_id):
            logger.warning("before any span")
            with tracing.consumer_span(cmd, "q", 1) as span:
                logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    before, inside, outside = records
    assert before.traceId == cmd.trace_id and not hasattr(before, "spanId")  # type: ignore[attr-defined]
    assert before.correlationId == cmd.correlation_id  # type: ignore[attr-defined]
    assert span is not None
    assert (inside.traceId, inside.spanId) == ids(span)  # type: ignore[attr-defined]
    assert not hasattr(outside, "traceId") and not hasattr(outside, "correlationId")
