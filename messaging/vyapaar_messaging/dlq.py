"""Dead-letter queue administration: list, show, redrive, purge.

Library (every function takes an open AMQP connection; ``queue`` may be the consumer queue
``inventory.commands`` or its DLQ ``inventory.commands.dlq``)::

    count, messages = await list_messages(connection, "inventory.commands", limit=20)
    message = await show_message(connection, "inventory.commands", message_id)
    moved = await redrive(connection, "inventory.commands")            # all
    moved = await redrive(connection, "inventory.commands", [message_id])
    removed = await purge(connection, "inventory.commands")
    depths = await dlq_depths(connection, Topology())                   # every known DLQ

Redrive moves a message back to its original queue (header ``x-vyapaar-original-queue``,
else the DLQ name without ``.dlq``) with the failure headers removed, so its attempt count
starts again at 1, and ``x-vyapaar-redrive-count`` incremented. The copy is published with
publisher confirms before the DLQ copy is acked: nothing is lost (a crash in between may
leave a duplicate, which handlers tolerate).

AMQP has no "peek": listing takes messages without acking them and returns them to the
queue afterwards (quorum queues count that as a delivery attempt; DLQs have no delivery
limit, so nothing is dropped). While another client holds messages (e.g. a concurrent
listing) they are not visible, so counts are a snapshot.

The command line over this library is ``vyapaar dlq`` (:mod:`vyapaar_cli.dlq`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from vyapaar_messaging.consumer import (
    ATTEMPT_HEADER,
    DEAD_LETTER_REASON_HEADER,
    ERROR_HEADER,
    FAILED_AT_HEADER,
    ORIGINAL_QUEUE_HEADER,
    REDRIVE_COUNT_HEADER,
    clean_headers,
    copy_message,
    int_header,
)
from vyapaar_messaging.publisher import Publisher, PublishFailed
from vyapaar_messaging.topology import Topology, queue_depth

__all__ = [
    "DlqError",
    "DlqMessage",
    "dlq_depths",
    "dlq_of",
    "jsonable",
    "list_messages",
    "purge",
    "redrive",
    "show_message",
]

_SCAN_LIMIT = 10_000
_FAILURE_HEADERS = (ATTEMPT_HEADER, ERROR_HEADER, DEAD_LETTER_REASON_HEADER, FAILED_AT_HEADER)


class DlqError(RuntimeError):
    """The queue does not exist, or a redrive could not be confirmed."""


def dlq_of(queue: str) -> str:
    """``inventory.commands`` or ``inventory.commands.dlq`` -> ``inventory.commands.dlq``."""
    return queue if queue.endswith(".dlq") else f"{queue}.dlq"


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def message_key(message: AbstractIncomingMessage) -> str:
    """The message id, or for a message without one a digest of its body."""
    if message.message_id:
        return message.message_id
    return "sha256:" + hashlib.sha256(message.body).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DlqMessage:
    id: str
    type: str | None
    correlation_id: str | None
    reason: str | None
    error: str | None
    original_queue: str | None
    attempts: int | None
    failed_at: str | None
    redrive_count: int
    headers: dict[str, Any] = field(repr=False)
    body: str = field(repr=False)

    @classmethod
    def from_message(cls, message: AbstractIncomingMessage) -> DlqMessage:
        headers = dict(message.headers or {})

        def text(name: str) -> str | None:
            value = headers.get(name)
            return None if value is None else str(jsonable(value))

        return cls(
            id=message_key(message),
            type=message.type,
            correlation_id=message.correlation_id,
            reason=text(DEAD_LETTER_REASON_HEADER),
            error=text(ERROR_HEADER),
            original_queue=text(ORIGINAL_QUEUE_HEADER),
            attempts=int_header(headers.get(ATTEMPT_HEADER)),
            failed_at=text(FAILED_AT_HEADER),
            redrive_count=int_header(headers.get(REDRIVE_COUNT_HEADER)) or 0,
            headers=jsonable(headers),
            body=message.body.decode("utf-8", "replace"),
        )

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        del data["headers"], data["body"]
        return data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Scan:
    """Takes up to ``limit`` messages from a queue without acking them; on exit every
    message not acked is returned to the queue."""

    def __init__(self, connection: AbstractConnection, queue: str, limit: int) -> None:
        self.connection = connection
        self.queue = queue
        self.limit = limit
        self.channel: AbstractChannel | None = None
        self.count = 0
        self.messages: list[AbstractIncomingMessage] = []

    async def __aenter__(self) -> _Scan:
        probe = await self.connection.channel(publisher_confirms=False)
        try:
            self.count = await queue_depth(probe, self.queue)
        except Exception as exc:
            raise DlqError(f"queue {self.queue!r} does not exist") from exc
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        self.channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await self.channel.get_queue(self.queue, ensure=False)
        while len(self.messages) < self.limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            self.messages.append(message)
        # Messages returned by another client a moment ago may not be counted yet.
        self.count = max(self.count, len(self.messages))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.channel is not None
        returned = 0
        for message in self.messages:
            if not message.processed:
                with contextlib.suppress(Exception):
                    await message.nack(requeue=True)
                    returned += 1
        with contextlib.suppress(Exception):
            await self.channel.close()
        if returned:
            await self._settle(returned)

    async def _settle(self, returned: int, within: float = 2.0) -> None:
        """Wait (bounded) until the returned messages are visible again, so that the next
        call sees them (a quorum queue applies the returns asynchronously)."""
        probe = await self.connection.channel(publisher_confirms=False)
        try:
            deadline = asyncio.get_running_loop().time() + within
            while await queue_depth(probe, self.queue) < returned:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.02)
        except Exception:
            pass
        finally:
            with contextlib.suppress(Exception):
                await probe.close()


async def list_messages(
    connection: AbstractConnection, queue: str, *, limit: int = 50
) -> tuple[int, list[DlqMessage]]:
    """(messages in the DLQ, the first ``limit`` of them)."""
    async with _Scan(connection, dlq_of(queue), limit) as scan:
        return scan.count, [DlqMessage.from_message(m) for m in scan.messages]


async def show_message(
    connection: AbstractConnection, queue: str, message_id: str
) -> DlqMessage | None:
    async with _Scan(connection, dlq_of(queue), _SCAN_LIMIT) as scan:
        for message in scan.messages:
            if message_key(message) == message_id:
                return DlqMessage.from_message(message)
    return None


def _redrive_target(dlq: str, message: AbstractIncomingMessage) -> str:
    original = (message.headers or {}).get(ORIGINAL_QUEUE_HEADER)
    if isinstance(original, bytes):
        original = original.decode()
    return str(original) if original else dlq.removesuffix(".dlq")


async def redrive(
    connection: AbstractConnection,
    queue: str,
    message_ids: Collection[str] | None = None,
    *,
    limit: int = _SCAN_LIMIT,
) -> int:
    """Move messages (all, or those in ``message_ids``) back to their original queue with
    a fresh attempt count; returns how many were moved."""
    dlq = dlq_of(queue)
    moved = 0
    async with _Scan(connection, dlq, limit) as scan:
        assert scan.channel is not None
        publisher = Publisher(scan.channel)
        for message in scan.messages:
            if message_ids is not None and message_key(message) not in message_ids:
                continue
            headers = {
                k: v for k, v in clean_headers(message.headers).items()
                if k not in _FAILURE_HEADERS and k != ORIGINAL_QUEUE_HEADER
            }  # fmt: skip
            previous = int_header((message.headers or {}).get(REDRIVE_COUNT_HEADER)) or 0
            headers[REDRIVE_COUNT_HEADER] = previous + 1
            target = _redrive_target(dlq, message)
            try:
                await publisher.send_to_queue(copy_message(message, headers), target)
            except PublishFailed as exc:
                raise DlqError(f"could not redrive {message_key(message)} to {target}") from exc
            await message.ack()
            moved += 1
    return moved


async def purge(connection: AbstractConnection, queue: str) -> int:
    """Delete every message of the DLQ; returns how many were removed."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        dlq = await channel.get_queue(dlq_of(queue), ensure=True)
        result = await dlq.purge()
        return int(result.message_count or 0)
    except aio_pika.exceptions.ChannelClosed as exc:
        raise DlqError(f"queue {dlq_of(queue)!r} does not exist") from exc
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def dlq_depths(
    connection: AbstractConnection, topology: Topology, extra_queues: Sequence[str] = ()
) -> dict[str, int | None]:
    """Depth of the DLQ of every consumer queue of the topology (None if missing)."""
    depths: dict[str, int | None] = {}
    channel: AbstractChannel | None = None
    for queue in [*topology.consumer_queues(), *extra_queues]:
        if channel is None or channel.is_closed:
            channel = await connection.channel(publisher_confirms=False)
        try:
            depths[dlq_of(queue)] = await queue_depth(channel, dlq_of(queue))
        except Exception:
            depths[dlq_of(queue)] = None
            channel = None
    if channel is not None and not channel.is_closed:
        await channel.close()
    return depths
