"""The kopf wiring: what starts with the operator, and what an Order change triggers.

Three sources feed the engine: watch events of Orders (kopf), replies from
the services (RabbitMQ), and deadlines (one timer task). All three end in
`SagaEngine.apply`, which reads, decides, writes the status, then publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import aio_pika
import aiohttp
import kopf
import prometheus_client
from kubernetes_asyncio import client, config
from vyapaar_messaging import tracing
from vyapaar_messaging.outage import OutageLog
from vyapaar_messaging.publisher import Publisher
from vyapaar_messaging.topology import Topology, declare_topology

from vyapaar_operator import observe, replies, saga
from vyapaar_operator.admission import Admission
from vyapaar_operator.breakers import Breakers
from vyapaar_operator.bus import RabbitMessageBus
from vyapaar_operator.deadlines import Deadlines
from vyapaar_operator.engine import SagaEngine, utcnow
from vyapaar_operator.events import KubernetesEventRecorder
from vyapaar_operator.orders import (
    GROUP,
    PLURAL,
    VERSION,
    OrderRef,
    OrderStore,
    apiserver_unavailable,
    ref_of,
)
from vyapaar_operator.settings import OperatorSettings

log = logging.getLogger(__name__)


async def _api_client() -> client.ApiClient:
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(client_configuration=configuration)
    api = client.ApiClient(configuration)
    # kubernetes-asyncio's session trusts the environment: for every request aiohttp looks
    # up proxies and reads ~/.netrc in a thread. Like kopf's own client (its default
    # `settings.networking.trust_env`), talk to the apiserver directly, on the same pool.
    rest = api.rest_client
    shared = rest.pool_manager
    # With tracing on, its requests are CLIENT spans under the current span (a status
    # write under its saga span); kopf's own sessions are left alone.
    rest.pool_manager = aiohttp.ClientSession(connector=shared.connector, trust_env=False,
                                              read_bufsize=2**21,
                                              trace_configs=tracing.aiohttp_trace_configs())
    shared.detach()
    return api


class NoDiffBase(kopf.DiffBaseStorage):
    """No "last handled" essence: this operator has no on.create/update handlers to
    compare it for, and kopf builds it on every watch event otherwise (a deep copy)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = OperatorSettings()
    settings.posting.level = logging.WARNING  # kopf's own events: only problems
    settings.persistence.diffbase_storage = NoDiffBase()
    # kopf logs "Handler 'order_changed' succeeded" for every watch event: only problems.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60

    api = await _api_client()
    connection = await aio_pika.connect_robust(ours.amqp_url)
    topology = Topology()
    setup = await connection.channel()
    await declare_topology(setup, topology)
    await setup.close()
    publisher = await Publisher.open(connection, topology)

    deadlines = Deadlines()
    engine = SagaEngine(
        OrderStore(api),
        RabbitMessageBus(publisher),
        KubernetesEventRecorder(api, instance=socket.gethostname()),
        ours.saga_config(),
        deadlines,
        admission=Admission(ours.max_in_flight),
        breakers=Breakers(ours.breaker_config()),
        write_retries=ours.status_write_retries,
        reply_hold=ours.reply_hold,
    )
    if ours.metrics_port:
        prometheus_client.start_http_server(ours.metrics_port, addr=ours.host)

    memo.api = api
    memo.connection = connection
    memo.engine = engine
    memo.seen = set()
    memo.retrying = set()
    memo.apiserver = OutageLog(log, "applying watch events (the apiserver)")
    memo.tasks = [
        asyncio.create_task(deadlines.run(engine.on_tick), name="deadlines"),
        asyncio.create_task(engine.admit_queued(), name="admission"),
        asyncio.create_task(
            replies.consume(connection, topology, engine, prefetch=ours.reply_prefetch),
            name="replies",
        ),
    ]


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if "engine" in memo:
        await memo.engine.recorder.flush()
    if "connection" in memo:
        await memo.connection.close()
    if "api" in memo:
        await memo.api.close()
    tracing.shutdown()  # export the spans still buffered


@kopf.on.event(GROUP, VERSION, PLURAL)
async def order_changed(type: str | None, body: kopf.Body, memo: kopf.Memo,
                        **_: Any) -> None:
    """Every observed state of an Order: derive what it asks of the saga, and apply it."""
    obj: dict[str, Any] = dict(body)  # kopf's raw event: read, never changed (no copy)
    ref = ref_of(obj)
    engine: SagaEngine = memo.engine
    if type == "DELETED":
        engine.forget(ref)
        return
    uid = obj["metadata"]["uid"]
    first_sight = uid not in memo.seen
    memo.seen.add(uid)
    resumed = False

    def implied(current: Mapping[str, Any], state: saga.SagaState) -> saga.Event | None:
        nonlocal resumed
        event = observe.implied_event(current, state, utcnow(), first_sight=first_sight)
        resumed = isinstance(event, saga.Resume)
        return event

    # The order's trace: its creator's span, else the root the saga's first decision makes.
    root = (tracing.context_from(tracing.order_root_traceparent(obj["metadata"]))
            if tracing.ENABLED else contextlib.nullcontext())
    try:
        with root:
            await engine.apply(ref, implied, seen=obj)
    except Exception as exc:
        if not apiserver_unavailable(exc):
            raise
        # The watch will not bring this version again: apply it once the apiserver is back.
        memo.apiserver.failed(f"{ref}: {exc.__class__.__name__}: {exc}")
        task = asyncio.create_task(_apply_later(engine, ref, implied, memo.apiserver))
        memo.retrying.add(task)
        task.add_done_callback(memo.retrying.discard)
        return
    memo.apiserver.succeeded()
    if resumed:
        await engine.store.remove_annotation(ref, observe.RESUME_ANNOTATION)


async def _apply_later(engine: SagaEngine, ref: OrderRef, implied: Any,
                       outage: OutageLog) -> None:
    """Apply an observed change again, reading the Order afresh, until the apiserver takes it."""
    delay = 1.0
    while True:
        await asyncio.sleep(delay)
        try:
            await engine.apply(ref, implied)
        except Exception as exc:
            if not apiserver_unavailable(exc):
                log.exception("applying %s failed", ref)
                return
            outage.failed(f"{ref}: {type(exc).__name__}: {exc}")
            delay = min(delay * 2, 15.0)
            continue
        outage.succeeded()
        return
