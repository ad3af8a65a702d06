"""Wiring shared by every service: one :class:`ServiceRuntime` per process.

On application start-up a background task (so ``/healthz`` answers immediately and
``/readyz`` reports 503 until everything is up) connects, retrying with backoff:

1. asyncpg pool with ``search_path`` = the service schema; migrations (common + service);
2. optional Redis (inventory's best-effort locks);
3. robust AMQP connection; the whole topology is declared;
4. the outbox relay (own confirm channel) and the consumer of the service's
   :class:`Subscription` (prefetch ``VYAPAAR_PREFETCH``, retry tiers, DLQ). By default that
   is ``<service>.commands`` handled by a :class:`CommandProcessor` over ``handlers``; a
   service that consumes something else (analytics: the order events) passes ``subscribe``.

On shutdown: stop consuming and wait for in-flight handlers, stop the relay, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aiohttp import web
from vyapaar_messaging import tracing
from vyapaar_messaging.consumer import Consumer, Handler
from vyapaar_messaging.publisher import Publisher
from vyapaar_messaging.topology import Topology, declare_topology

from vyapaar_services.common import db, metrics
from vyapaar_services.common.config import Settings
from vyapaar_services.common.handling import AroundHook, CommandHandler, CommandProcessor
from vyapaar_services.common.http import Problem, create_base_app
from vyapaar_services.common.logs import configure_logging
from vyapaar_services.common.outbox import OutboxRelay
from vyapaar_services.common.redis_client import RedisLocks, create_redis

__all__ = [
    "RUNTIME_KEY",
    "ServiceRuntime",
    "Subscription",
    "SubscriptionFactory",
    "command_subscription",
    "create_service_app",
    "run_service",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a service consumes: a queue (prefixed name), its bindings
    ``[(exchange, routing key), ...]`` and the handler of its messages."""

    queue: str
    handler: Handler
    bindings: Sequence[tuple[str, str]] = ()


#: builds the subscription once the runtime is connected (the handler needs the pool)
SubscriptionFactory = Callable[["ServiceRuntime"], Subscription]


def command_subscription(runtime: ServiceRuntime) -> Subscription:
    """The default: ``<service>.commands`` handled exactly once by a :class:`CommandProcessor`."""
    processor = CommandProcessor(
        runtime.service,
        runtime.require_started_pool(),
        runtime.handlers,
        runtime.topology,
        around=runtime.around_factory(runtime) if runtime.around_factory else None,
    )
    return Subscription(
        runtime.topology.command_queue(runtime.service),
        processor,
        [(runtime.topology.commands_exchange, runtime.service)],
    )


class ServiceRuntime:
    """``handlers`` (+ ``around``) make the default command subscription; ``subscribe``
    replaces it for a service that consumes something else (then ``handlers`` stays empty).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        migrations: Sequence[db.Migration],
        handlers: Mapping[str, CommandHandler] | None = None,
        around: Callable[[ServiceRuntime], AroundHook] | None = None,
        subscribe: SubscriptionFactory | None = None,
    ) -> None:
        if subscribe is not None and (handlers or around is not None):
            raise ValueError("pass either command handlers or a subscription, not both")
        self.settings = settings
        self.service = settings.service
        self.migrations = [*db.common_migrations(), *migrations]
        self.handlers: Mapping[str, CommandHandler] = handlers or {}
        self.around_factory = around
        self.subscribe: SubscriptionFactory = subscribe or command_subscription
        self.topology = Topology(settings.amqp_prefix)
        self.pool: asyncpg.Pool | None = None
        self.connection: AbstractRobustConnection | None = None
        self.publisher: Publisher | None = None
        self.relay: OutboxRelay | None = None
        self.consumer: Consumer | None = None
        self.locks = RedisLocks(None, namespace=f"vyapaar:{settings.db_schema}")
        self.ready = asyncio.Event()
        self._starter: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect everything (raises on failure; see :meth:`start_in_background`)."""
        s = self.settings
        if self.pool is None:
            self.pool = await db.create_pool(
                s.database_url,
                s.db_schema,
                min_size=s.db_pool_min,
                max_size=s.db_pool_max,
                application_name=f"vyapaar-{self.service}",
            )
            pool = self.pool
            metrics.DB_POOL_SIZE.labels(self.service).set_function(lambda: pool.get_size())
            metrics.DB_POOL_IN_USE.labels(self.service).set_function(
                lambda: pool.get_size() - pool.get_idle_size()
            )
        await db.migrate(self.pool, s.db_schema, self.migrations)
        if self.locks.client is None and s.redis_url:
            self.locks = RedisLocks(create_redis(s.redis_url), namespace=f"vyapaar:{s.db_schema}")
        if self.connection is None:
            self.connection = await aio_pika.connect_robust(
                s.amqp_url,
                client_properties={"connection_name": f"vyapaar-{self.service}/{s.db_schema}"},
            )
        channel = await self.connection.channel()
        try:
            await declare_topology(channel, self.topology)
        finally:
            await channel.close()
        if self.relay is None:
            self.publisher = await Publisher.open(self.connection, self.topology)
            self.relay = OutboxRelay(
                self.pool,
                self.publisher,
                schema=s.db_schema,
                service=self.service,
                database_url=s.database_url,
                poll_interval=s.outbox_poll_interval,
                retention_days=s.retention_days,
            )
            await self.relay.start()
        if self.consumer is None:
            subscription = self.subscribe(self)
            consumer = Consumer(
                self.connection,
                subscription.queue,
                subscription.handler,
                prefetch=s.prefetch,
                retry_delays=s.retry_delays,
                bindings=subscription.bindings,
            )
            await consumer.start()
            self.consumer = consumer
        self.ready.set()
        log.info("%s ready (schema %s)", self.service, s.db_schema)

    async def start_in_background(self) -> None:
        """Run :meth:`start` until it succeeds, with exponential backoff."""
        delay = 0.5
        while True:
            try:
                await self.start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s not ready yet (%s); retrying in %.1fs", self.service, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    async def wait_ready(self, within: float = 30.0) -> None:
        await asyncio.wait_for(self.ready.wait(), within)

    async def stop(self) -> None:
        self.ready.clear()
        if self._starter is not None:
            self._starter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starter
            self._starter = None
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.close()
            self.publisher = None
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()
            self.connection = None
        await self.locks.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 10)
            self.pool = None

    async def cleanup_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        """aiohttp ``cleanup_ctx`` entry: start in the background, stop on shutdown."""
        self._starter = asyncio.create_task(self.start_in_background())
        yield
        await self.stop()

    # -- checks and helpers ---------------------------------------------------------------

    async def readiness(self) -> dict[str, bool]:
        database = False
        if self.pool is not None:
            try:
                database = await asyncio.wait_for(self.pool.fetchval("SELECT true"), 2) is True
            except Exception:
                database = False
        # A robust connection is never `is_closed` while it reconnects: ask whether it is
        # connected now, so a broker outage takes the service out of rotation.
        broker = (self.connection is not None and not self.connection.is_closed
                  and self.connection.connected.is_set())
        consuming = self.consumer is not None and self.consumer.running
        return {"database": database, "broker": broker, "consumer": consuming}

    def require_started_pool(self) -> asyncpg.Pool:
        """The pool while :meth:`start` runs (before the runtime reports ready)."""
        if self.pool is None:
            raise RuntimeError(f"{self.service} has no database pool yet")
        return self.pool

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None or not self.ready.is_set():
            raise Problem(
                503, "Service Unavailable", f"{self.service} is starting; try again shortly.",
                type_="not-ready",
            )  # fmt: skip
        return self.pool


RUNTIME_KEY = web.AppKey("vyapaar_runtime", ServiceRuntime)


def create_service_app(runtime: ServiceRuntime) -> web.Application:
    """The base app (health, readiness, metrics, middlewares) bound to ``runtime``."""
    app = create_base_app(runtime.service, runtime.readiness)
    app[RUNTIME_KEY] = runtime
    app.cleanup_ctx.append(runtime.cleanup_ctx)
    return app


def run_service(service: str, factory: Callable[[Settings], web.Application]) -> None:
    """Entry point of ``python -m vyapaar_services.<service>``."""
    settings = Settings.from_env(service)
    configure_logging(service, settings.log_level)
    # Before the app: tracing (when OTEL_EXPORTER_OTLP_ENDPOINT is set) instruments
    # aiohttp's server for every application created afterwards.
    tracing.configure(service)
    app = factory(settings)
    log.info("starting %s on %s:%d", service, settings.http_host, settings.http_port)
    try:
        web.run_app(
            app,
            host=settings.http_host,
            port=settings.http_port,
            access_log=None,
            print=None,
            shutdown_timeout=30.0,
        )
    finally:
        tracing.shutdown()  # after the runtime stopped: export the last spans
