"""Transactional outbox and its relay.

:func:`enqueue` inserts an outgoing envelope into ``outbox`` on the caller's connection —
inside the transaction of the business change, so the message exists if and only if the
change committed. A trigger NOTIFYs ``vyapaar_outbox`` (payload = schema) on commit.

:class:`OutboxRelay` publishes unsent rows with publisher confirms and marks them sent. It
is woken by LISTEN/NOTIFY and also polls (``VYAPAAR_OUTBOX_POLL_INTERVAL``), claims rows with
``SELECT ... FOR UPDATE SKIP LOCKED`` so several replicas can relay at once, keeps rows that
failed to publish for the next round, updates the outbox gauges and periodically deletes
sent rows and inbox rows older than the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aio_pika.abc import HeadersType
from vyapaar_messaging import tracing
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.outage import OutageLog
from vyapaar_messaging.publisher import Publisher, PublishFailed

from vyapaar_services.common import metrics

__all__ = ["NOTIFY_CHANNEL", "OutboxRelay", "enqueue", "pending_count"]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "vyapaar_outbox"


async def enqueue(
    conn: asyncpg.Connection,
    envelope: Envelope,
    *,
    exchange: str,
    routing_key: str,
    headers: HeadersType | None = None,
) -> int:
    """Add ``envelope`` to the outbox (call inside the business transaction); returns the id."""
    row_id: int = await conn.fetchval(
        """INSERT INTO outbox (message_id, message_type, correlation_id, exchange, routing_key,
                               envelope, headers)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb) RETURNING id""",
        envelope.id,
        envelope.type,
        envelope.correlation_id,
        exchange,
        routing_key,
        json.dumps(envelope.to_dict()),
        json.dumps(dict(headers or {}), default=str),
    )
    return row_id


async def pending_count(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    return count


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class OutboxRelay:
    """Publishes the outbox of one schema. ``start()`` runs it in the background;
    ``drain()`` publishes everything pending now (also usable without ``start``)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        schema: str,
        service: str = "",
        database_url: str | None = None,
        poll_interval: float = 1.0,
        batch_size: int = 100,
        retention_days: int = 7,
        cleanup_interval: float = 3600.0,
    ) -> None:
        self.pool = pool
        self.publisher = publisher
        self.schema = schema
        self.service = service or schema
        self.database_url = database_url
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.retention_days = retention_days
        self.cleanup_interval = cleanup_interval
        self._wakeup = asyncio.Event()
        # an outage of the broker or the database: a line when it starts and one when it ends
        self._rounds = OutageLog(log, f"the {self.service} outbox relay")
        self._unpublished = False  # the last batch left rows the broker did not take
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._last_cleanup = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.schema}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_listener()

    def wake(self) -> None:
        self._wakeup.set()

    # -- listening ------------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == self.schema:
            self._wakeup.set()

    async def _ensure_listener(self) -> None:
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        await self._close_listener()
        if self.database_url is not None:
            conn = await asyncpg.connect(
                self.database_url,
                server_settings={"application_name": f"vyapaar-{self.service}-relay"},
            )
        else:
            conn = await self.pool.acquire()
        await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
        self._listen_conn = conn
        self._wakeup.set()  # catch up on anything committed while we were not listening

    async def _close_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if self.database_url is not None:
                await conn.close(timeout=2)
            else:
                await conn.remove_listener(NOTIFY_CHANNEL, self._on_notify)
                await self.pool.release(conn)

    # -- relaying -------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._ensure_listener()
                self._wakeup.clear()
                await self.drain()
                await self.update_gauges()
                await self._maybe_cleanup()
                failures = 0
                if not self._unpublished:
                    self._rounds.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._rounds.failed(f"{type(exc).__name__}: {exc}")
                await self._close_listener()
            delay = self.poll_interval if failures == 0 else min(0.5 * 2**failures, 15.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)

    async def drain(self) -> int:
        """Publish every unsent row now; return how many were published."""
        total = 0
        while True:
            published, claimed = await self._relay_batch()
            total += published
            if claimed < self.batch_size or published < claimed:
                return total

    async def _relay_batch(self) -> tuple[int, int]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, exchange, routing_key, envelope, headers FROM outbox
                   WHERE sent_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
                self.batch_size,
            )
            if not rows:
                return 0, 0

            async def publish(row: asyncpg.Record) -> str | None:
                try:
                    envelope = Envelope.from_dict(_json(row["envelope"]))
                    with self._publish_span(envelope, row) as span:
                        try:
                            await self.publisher.publish(
                                envelope,
                                exchange=row["exchange"],
                                routing_key=row["routing_key"],
                                headers=_json(row["headers"]) or None,
                            )
                        except PublishFailed as exc:
                            tracing.set_outcome(span, "failed", str(exc))
                            raise
                except PublishFailed as exc:
                    return str(exc)
                return None

            errors = await asyncio.gather(*(publish(row) for row in rows))
            sent = [row["id"] for row, err in zip(rows, errors, strict=True) if err is None]
            failed = [(row["id"], err) for row, err in zip(rows, errors, strict=True) if err]
            self._unpublished = bool(failed)
            if sent:
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), publish_attempts = publish_attempts + 1"
                    " WHERE id = ANY($1::bigint[])",
                    sent,
                )
                metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(sent))
            if failed:
                self._rounds.failed(f"{len(failed)} rows not published: {failed[0][1]}")
                await conn.executemany(
                    "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2"
                    " WHERE id = $1",
                    failed,
                )
            return len(sent), len(rows)

    @staticmethod
    def _publish_span(
        envelope: Envelope, row: asyncpg.Record
    ) -> contextlib.AbstractContextManager[Any]:
        """PRODUCER span ``publish <Type>`` (tracing on): a child of the span the stored
        envelope names (e.g. the consumer's ``process`` span that made the reply), showing
        how long the message waited in the outbox. The envelope itself is not changed."""
        if not tracing.ENABLED:
            return contextlib.nullcontext()
        waited = datetime.now(UTC) - envelope.time
        return tracing.producer_span(
            envelope.type,
            name=f"publish {envelope.type}",
            context=envelope.traceparent,
            destination=row["exchange"],
            correlation_id=envelope.correlation_id,
            subject=envelope.subject,
            attributes={
                "messaging.message.id": envelope.id,
                "messaging.rabbitmq.destination.routing_key": row["routing_key"],
                "vyapaar.outbox.waited_ms": round(waited.total_seconds() * 1000, 3),
            },
        )

    async def update_gauges(self) -> None:
        row = await self.pool.fetchrow(
            """SELECT count(*) AS pending,
                      coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
               FROM outbox WHERE sent_at IS NULL"""
        )
        assert row is not None
        metrics.OUTBOX_PENDING.labels(self.service).set(row["pending"])
        metrics.OUTBOX_OLDEST_UNSENT_AGE.labels(self.service).set(float(row["age"]))

    async def _maybe_cleanup(self) -> None:
        now = time.monotonic()
        if now - self._last_cleanup < self.cleanup_interval:
            return
        self._last_cleanup = now
        days = int(self.retention_days)
        async with self.pool.acquire() as conn:
            sent = await conn.execute(
                "DELETE FROM outbox WHERE sent_at < now() - make_interval(days => $1)", days
            )
            seen = await conn.execute(
                "DELETE FROM inbox WHERE received_at < now() - make_interval(days => $1)", days
            )
        log.debug("outbox cleanup: %s, inbox cleanup: %s", sent, seen)
