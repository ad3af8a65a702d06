"""DLQ administration: list, show, redrive (then processed), purge — the library, and the
`vyapaar dlq` command over it."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from vyapaar_cli import dlq as dlq_cli
from vyapaar_messaging import (
    Consumer,
    Envelope,
    PermanentError,
    Publisher,
    Topology,
    contracts,
    declare_consumer_queue,
    dlq,
    dlq_name,
    retry_queue_name,
)
from vyapaar_messaging.consumer import REDRIVE_COUNT_HEADER

DELAYS = (0.2,)


def command() -> Envelope:
    uid = str(uuid.uuid4())
    return Envelope.create(
        contracts.SendNotification(
            template=contracts.NotificationTemplate.ORDER_CONFIRMED,
            customer=contracts.Customer(id="c-1", email="c@example.com"),
        ),
        correlation_id=uid,
        idempotency_key=contracts.idempotency_key(uid, "notify"),
    )


class Flaky:
    """Refuses everything until ``healthy`` is set, then records what it handles."""

    def __init__(self) -> None:
        self.healthy = False
        self.handled: list[str] = []

    async def __call__(self, envelope: Envelope) -> None:
        if not self.healthy:
            raise PermanentError("downstream says no")
        self.handled.append(envelope.id)


@pytest.fixture
async def dead_letters(
    topology: Topology, amqp_connection: AbstractRobustConnection, publisher: Publisher
) -> AsyncIterator[tuple[str, Flaky, Consumer, list[Envelope]]]:
    """A consumer queue whose consumer dead-letters three messages."""
    key = f"dlq-{uuid.uuid4().hex[:8]}"
    queue = topology.queue(key)
    bindings = [(topology.commands_exchange, key)]
    ch = await amqp_connection.channel()
    await declare_consumer_queue(ch, queue, bindings, retry_delays=DELAYS)
    handler = Flaky()
    consumer = Consumer(
        amqp_connection, queue, handler, retry_delays=DELAYS, bindings=bindings,
        dlq_sample_interval=None,
    )  # fmt: skip
    await consumer.start()
    sent = [command() for _ in range(3)]
    for envelope in sent:
        await publisher.send_command(envelope, service=key)
    for _ in range(200):
        count, _ = await dlq.list_messages(amqp_connection, queue, limit=0)
        if count == 3:
            break
        await asyncio.sleep(0.05)
    yield queue, handler, consumer, sent
    await consumer.stop()
    for name in (queue, dlq_name(queue), *(retry_queue_name(queue, d) for d in DELAYS)):
        await ch.queue_delete(name, if_unused=False, if_empty=False)
    await ch.close()


async def test_list_counts_and_summarises_dead_letters_without_removing_them(
    amqp_connection: AbstractRobustConnection, dead_letters: Any
) -> None:
    queue, _, _, sent = dead_letters
    count, messages = await dlq.list_messages(amqp_connection, queue, limit=2)
    assert count == 3
    assert len(messages) == 2
    first = messages[0]
    assert first.type == "SendNotification"
    assert first.reason == "permanent"
    assert first.error == "downstream says no"
    assert first.original_queue == queue
    assert first.attempts == 1
    assert {m.id for m in messages} <= {e.id for e in sent}
    # listing is not consuming
    count_again, everything = await dlq.list_messages(amqp_connection, f"{queue}.dlq")
    assert count_again == 3
    assert {m.id for m in everything} == {e.id for e in sent}


async def test_show_returns_one_message_with_headers_and_body(
    amqp_connection: AbstractRobustConnection, dead_letters: Any
) -> None:
    queue, _, _, sent = dead_letters
    shown = await dlq.show_message(amqp_connection, queue, sent[1].id)
    assert shown is not None
    assert Envelope.from_json(shown.body) == sent[1]
    assert shown.headers["x-vyapaar-dead-letter-reason"] == "permanent"
    assert await dlq.show_message(amqp_connection, queue, "no-such-id") is None


async def test_redrive_moves_a_message_back_with_fresh_attempts_and_it_is_processed(
    amqp_connection: AbstractRobustConnection, dead_letters: Any
) -> None:
    queue, handler, _, sent = dead_letters
    handler.healthy = True  # the downstream problem is fixed

    moved = await dlq.redrive(amqp_connection, queue, [sent[0].id])

    assert moved == 1
    for _ in range(200):
        if handler.handled:
            break
        await asyncio.sleep(0.05)
    assert handler.handled == [sent[0].id]
    for _ in range(200):  # the listing returns messages asynchronously
        count, rest = await dlq.list_messages(amqp_connection, queue)
        if count == 2:
            break
        await asyncio.sleep(0.05)
    assert {m.id for m in rest} == {sent[1].id, sent[2].id}


async def test_redrive_all_and_a_second_failure_counts_the_redrive(
    amqp_connection: AbstractRobustConnection, dead_letters: Any
) -> None:
    queue, _, _, sent = dead_letters
    assert await dlq.redrive(amqp_connection, queue) == 3  # still failing: back in the DLQ
    for _ in range(200):
        count, messages = await dlq.list_messages(amqp_connection, queue)
        if count == 3:
            break
        await asyncio.sleep(0.05)
    assert {m.id for m in messages} == {e.id for e in sent}
    assert all(m.headers[REDRIVE_COUNT_HEADER] == 1 for m in messages)
    assert all(m.attempts == 1 for m in messages)


async def test_purge_empties_the_dlq(
    amqp_connection: AbstractRobustConnection, dead_letters: Any
) -> None:
    queue, *_ = dead_letters
    assert await dlq.purge(amqp_connection, queue) == 3
    count, _ = await dlq.list_messages(amqp_connection, queue)
    assert count == 0


async def test_a_missing_queue_is_a_clear_error(amqp_connection: AbstractRobustConnection) -> None:
    with pytest.raises(dlq.DlqError, match="does not exist"):
        await dlq.list_messages(amqp_connection, "no-such-queue")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vyapaar")
    dlq_cli.add_arguments(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_cli_lists_shows_redrives_and_purges(
    amqp_url: str, topology: Topology, amqp_connection: AbstractRobustConnection,
    dead_letters: Any,
) -> None:  # fmt: skip
    queue, handler, _, sent = dead_letters
    name = queue.removeprefix(topology.prefix)  # the CLI adds --prefix
    common = ("dlq", "--amqp-url", amqp_url, "--prefix", topology.prefix, "--json")

    out = io.StringIO()
    assert await dlq_cli.run_async(parse(*common, "list", name), out) == 0
    listing = json.loads(out.getvalue())
    assert listing["count"] == 3

    out = io.StringIO()
    assert await dlq_cli.run_async(parse(*common, "list"), out) == 0
    depths = json.loads(out.getvalue())
    assert depths[f"{topology.prefix}inventory.commands.dlq"] == 0

    out = io.StringIO()
    assert await dlq_cli.run_async(parse(*common, "show", name, sent[2].id), out) == 0
    assert json.loads(out.getvalue())["id"] == sent[2].id

    handler.healthy = True
    out = io.StringIO()
    assert await dlq_cli.run_async(parse(*common, "redrive", name, sent[2].id), out) == 0
    assert json.loads(out.getvalue()) == {"redriven": 1}

    assert await dlq_cli.run_async(parse(*common, "purge", name), io.StringIO()) == 2  # no --yes
    out = io.StringIO()
    assert await dlq_cli.run_async(parse(*common, "purge", name, "--yes"), out) == 0
    assert json.loads(out.getvalue()) == {"purged": 2}
