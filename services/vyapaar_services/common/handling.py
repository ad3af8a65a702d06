"""Exactly-once command handling on top of at-least-once delivery.

:class:`CommandProcessor` is the consumer handler of a service. For each command it:

1. checks the type belongs to the service and the payload matches its contract
   (otherwise :class:`PermanentError` -> DLQ);
2. runs the optional ``around`` hook (e.g. inventory's best-effort Redis SKU locks) OUTSIDE
   the database transaction;
3. in ONE PostgreSQL transaction: records the message id in the inbox, takes the advisory
   lock of the idempotency key, and either
   * replays the stored reply of (key, command type) — a redelivery or a retry has no
     second effect and gets the ORIGINAL reply (re-published through the outbox), or
   * drops a command that has expired (``Envelope.expires``: the saga may have given up on
     it and be undoing it) unanswered -- acked, logged and counted as ignored, or
   * calls the business handler ``handler(conn, envelope, payload) -> reply payload``,
     stores the reply as the key's result and adds it to the outbox;
4. returns; the consumer acks the message only now, after the commit.

The reply is built inside the consumer's ``process`` span, so with tracing on its
traceparent names that span (see :mod:`vyapaar_messaging.tracing`).

The outbox relay then publishes the reply to ``vyapaar.events`` as ``<service>.<Type>``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from pydantic import BaseModel
from vyapaar_messaging import contracts, tracing
from vyapaar_messaging import metrics as messaging_metrics
from vyapaar_messaging.consumer import Ignored, PermanentError
from vyapaar_messaging.envelope import Envelope
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY, Topology

from vyapaar_services.common import inbox, metrics, outbox

__all__ = ["AroundHook", "CommandHandler", "CommandProcessor"]

log = logging.getLogger(__name__)

#: business logic of one command: runs inside the transaction, returns the reply payload
CommandHandler = Callable[[asyncpg.Connection, Envelope, Any], Awaitable[BaseModel]]
#: wraps the whole handling of a command, outside the transaction
AroundHook = Callable[[Envelope, Any], contextlib.AbstractAsyncContextManager[Any]]


class CommandProcessor:
    def __init__(
        self,
        service: str,
        pool: asyncpg.Pool,
        handlers: Mapping[str, CommandHandler],
        topology: Topology = DEFAULT_TOPOLOGY,
        *,
        around: AroundHook | None = None,
    ) -> None:
        for command_type in handlers:
            spec = contracts.COMMANDS.get(command_type)
            if spec is None or spec.service != service:
                raise ValueError(f"{command_type} is not a command of {service}")
        self.service = service
        self.pool = pool
        self.handlers = dict(handlers)
        self.topology = topology
        self.around = around
        messaging_metrics.init_consumer(topology.command_queue(service), self.handlers)
        metrics.init_service_consumer(service, self.handlers)

    async def __call__(self, envelope: Envelope) -> None:
        handler = self.handlers.get(envelope.type)
        if handler is None:
            raise PermanentError(f"{envelope.type!r} is not a command handled by {self.service}")
        try:
            payload = contracts.parse_payload(envelope.type, envelope.payload)
        except contracts.ContractError as exc:
            raise PermanentError(str(exc)) from exc
        hook = self.around(envelope, payload) if self.around else contextlib.nullcontext()
        async with hook:
            await self._handle(envelope, payload, handler)

    async def _handle(self, envelope: Envelope, payload: Any, handler: CommandHandler) -> None:
        key = envelope.idempotency_key
        async with self.pool.acquire() as conn, conn.transaction():
            first_time = await inbox.record_message(conn, envelope)
            if not first_time:
                metrics.INBOX_DUPLICATES.labels(self.service, envelope.type).inc()
            await inbox.lock_key(conn, key)
            stored = await inbox.load_result(conn, key, envelope.type)
            if stored is not None:
                if first_time:
                    metrics.IDEMPOTENT_REPLAYS.labels(self.service, envelope.type).inc()
                log.info("%s %s already handled; replaying %s", envelope.type, key, stored.type)
                tracing.add_event("replayed", {"vyapaar.reply.id": stored.id})
                await self._enqueue(conn, stored)
                return
            if envelope.has_expired():
                metrics.COMMANDS_EXPIRED.labels(self.service, envelope.type).inc()
                raise Ignored(f"{key} expired at {envelope.expires:%Y-%m-%dT%H:%M:%S.%fZ}; "
                              "the saga may have given up on it, so it is not acted on")
            reply_payload = await handler(conn, envelope, payload)
            reply = envelope.reply(reply_payload)
            allowed = contracts.COMMANDS[envelope.type].replies
            if reply.type not in allowed:
                raise RuntimeError(f"{envelope.type} handler replied {reply.type}, not {allowed}")
            await inbox.save_result(conn, key, envelope.type, envelope.id, reply)
            await self._enqueue(conn, reply)
            log.info("%s %s -> %s", envelope.type, key, reply.type)

    async def _enqueue(self, conn: asyncpg.Connection, reply: Envelope) -> None:
        await outbox.enqueue(
            conn,
            reply,
            exchange=self.topology.events_exchange,
            routing_key=contracts.reply_routing_key(self.service, reply.type),
        )
