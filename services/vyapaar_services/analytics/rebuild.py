"""Rebuild the read model from the event log: ``python -m vyapaar_services.analytics rebuild``.

The event log (``order-events.log``) is a RabbitMQ stream bound to the order-events fan-out:
reading does not drain it, so from offset 0 it holds every event the operator ever
published. A rebuild

1. connects (settings from the environment, like the service) and applies migrations;
2. in ONE transaction empties the read-model tables and the inbox;
3. consumes the stream from its first offset (manual ack, prefetch ``VYAPAAR_PREFETCH``)
   and applies every event through :func:`~.handlers.apply_event`, the live path: same
   inbox dedupe, same commutative apply, so arrival order does not matter;
4. stops when no message came for ``--idle-seconds``: a stream has no end (it grows while
   the operator publishes), so "done" means caught up with the log; what is published
   later is the live service's to apply.

A live service may keep running meanwhile, and both converge: the fan-out routes every
event to the log AND to the live queue, so each event reaches both paths, and whichever
applies it first records it in the inbox, where the other finds it. An event the live
service applied before the truncate is erased with the rest and comes back from the log;
one it applies after is skipped here. TRUNCATE waits for the live service's open
transaction, so nothing is ever half erased.

Events that break the contract are skipped and counted (the live consumer dead-lettered
them already); any other failure stops the rebuild with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlsplit

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue
from vyapaar_messaging import (
    Envelope,
    EnvelopeError,
    PermanentError,
    Topology,
    declare_event_log,
    declare_exchanges,
)

from vyapaar_services.analytics import SERVICE, store
from vyapaar_services.analytics.app import migrations
from vyapaar_services.analytics.handlers import apply_event
from vyapaar_services.common import db
from vyapaar_services.common.config import ConfigError, Settings

__all__ = ["DEFAULT_IDLE_SECONDS", "RebuildError", "RebuildSummary", "main", "rebuild"]

log = logging.getLogger(__name__)

DEFAULT_IDLE_SECONDS: Final = 3.0
CONNECT_TIMEOUT: Final = 15.0


class RebuildError(Exception):
    """The rebuild could not run or finish (the message says why, without a traceback)."""


@dataclass(frozen=True, slots=True)
class RebuildSummary:
    """Events read from the log, and what became of them."""

    read: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Events read per second."""
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (f"{self.read} events read, {self.applied} applied, {self.duplicates} "
                f"duplicates, {self.rejected} rejected; {self.rate:.0f} events/s")


def _where(url: str) -> str:
    """``host:port`` of a URL: enough to say what failed, without the credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


class _Replay:
    """The consumer callback of the stream: applies each event, counts, acks."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.summary = RebuildSummary()
        self.started = time.monotonic()
        self.last_activity = self.started
        self.in_flight = 0
        self.drained = asyncio.Event()
        self.drained.set()
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()

    def snapshot(self) -> RebuildSummary:
        return replace(self.summary, seconds=time.monotonic() - self.started)

    def _count(self, **increments: int) -> None:
        current = self.summary
        self.summary = replace(current, **{k: getattr(current, k) + v
                                           for k, v in increments.items()})

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.in_flight += 1
        self.drained.clear()
        self.last_activity = time.monotonic()
        try:
            try:
                outcome = await apply_event(self.pool, Envelope.from_message(message))
            except (EnvelopeError, PermanentError) as exc:
                log.warning("skipping event %s: %s", message.message_id, exc)
                self._count(read=1, rejected=1)
            else:
                self._count(read=1, applied=int(outcome == "applied"),
                            duplicates=int(outcome == "duplicate"))
            await message.ack()
        except Exception as exc:
            self.failure = exc
            self.failed.set()
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.drained.set()
            self.last_activity = time.monotonic()

    async def until_idle(
        self, idle_seconds: float, report: Callable[[RebuildSummary], None] | None,
        report_every: float,
    ) -> None:
        """Return once nothing arrived or ran for ``idle_seconds``; raise on a failure.
        ``report`` gets the progress every ``report_every`` seconds while events come."""
        reported_at, reported_read = time.monotonic(), 0
        while True:
            if self.failure is not None:
                raise RebuildError(f"applying an event failed: {self.failure!r}")
            now = time.monotonic()
            idle = now - self.last_activity
            if self.in_flight == 0 and idle >= idle_seconds:
                return
            if report is not None and now - reported_at >= report_every:
                if self.summary.read != reported_read:
                    report(self.snapshot())
                reported_at, reported_read = now, self.summary.read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.failed.wait(),
                                       min(max(idle_seconds - idle, 0.05), report_every))


async def _connect(settings: Settings) -> tuple[asyncpg.Pool, AbstractConnection]:
    try:
        pool = await asyncio.wait_for(
            db.create_pool(settings.database_url, settings.db_schema,
                           max_size=settings.db_pool_max,
                           application_name=f"vyapaar-{SERVICE}-rebuild"),
            CONNECT_TIMEOUT,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RebuildError(f"cannot connect to PostgreSQL at {_where(settings.database_url)}: "
                           f"{exc or type(exc).__name__}") from None
    try:
        connection = await aio_pika.connect(settings.amqp_url, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, aiormq.exceptions.AMQPError) as exc:
        await pool.close()
        raise RebuildError(f"cannot connect to RabbitMQ at {_where(settings.amqp_url)}: "
                           f"{exc or type(exc).__name__}") from None
    return pool, connection


async def rebuild(
    settings: Settings,
    *,
    idle_seconds: float = DEFAULT_IDLE_SECONDS,
    report: Callable[[RebuildSummary], None] | None = None,
    report_every: float = 1.0,
) -> RebuildSummary:
    """Rebuild the read model of ``settings``' schema from the event log (module docstring).

    ``report`` is called with the progress about every ``report_every`` seconds.
    """
    pool, connection = await _connect(settings)
    try:
        await db.migrate(pool, settings.db_schema, [*db.common_migrations(), *migrations()])
        channel = await connection.channel()
        topology = Topology(settings.amqp_prefix)
        await declare_exchanges(channel, topology)
        event_log: AbstractQueue = await declare_event_log(channel, topology)
        async with pool.acquire() as conn, conn.transaction():
            await store.truncate_read_model(conn)
        replay = _Replay(pool)
        await channel.set_qos(prefetch_count=settings.prefetch)
        tag = await event_log.consume(
            replay.on_message, no_ack=False, arguments={"x-stream-offset": "first"}
        )
        try:
            await replay.until_idle(idle_seconds, report, report_every)
        finally:
            with contextlib.suppress(Exception):
                await event_log.cancel(tag)
            await replay.drained.wait()
        return replay.snapshot()
    except (OSError, aiormq.exceptions.AMQPError, asyncpg.PostgresError,
            asyncpg.InterfaceError) as exc:
        raise RebuildError(f"{type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 10)


# -- command line -------------------------------------------------------------------------------


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idle-seconds", type=_positive, default=DEFAULT_IDLE_SECONDS, metavar="N",
        help="stop once no event came for N seconds: caught up with the log "
             f"(default {DEFAULT_IDLE_SECONDS:g})",
    )


def main(idle_seconds: float = DEFAULT_IDLE_SECONDS) -> int:
    """Run a rebuild with the service's environment; progress and summary on stderr.

    Exit codes: 0 done, 1 failed (cannot connect, an event could not be applied),
    2 bad settings, 130 interrupted.
    """
    logging.basicConfig(level=logging.WARNING, format="rebuild: %(message)s")

    def say(text: str) -> None:
        print(f"rebuild: {text}", file=sys.stderr, flush=True)

    try:
        settings = Settings.from_env(SERVICE)
    except ConfigError as exc:
        say(f"bad settings: {exc}")
        return 2
    say(f"replaying {Topology(settings.amqp_prefix).event_log} into schema "
        f"{settings.db_schema} (done after {idle_seconds:g}s without events)")
    try:
        summary = asyncio.run(
            rebuild(settings, idle_seconds=idle_seconds, report=lambda s: say(s.describe()))
        )
    except RebuildError as exc:
        say(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; the read model is partial: run the rebuild again")
        return 130
    say(f"done in {summary.seconds:.1f}s: {summary.describe()}")
    return 0
