"""One chaos run on the local stack: the load and the faults of a plan, then the verdict.

1. Orders of every kind are created at the plan's times in a namespace of the run's own
   (with stock of SKUs of its own), cancelled or deleted at theirs, while the faults play.
   A create, cancel or delete the apiserver refuses (it may be the fault) is tried again,
   as a client would.
2. After the last fault: wait for quiescence -- every order terminal, or gone if deleted.
3. Gather the facts from the services' own records and check every invariant
   (:mod:`.invariants`); the report holds the plan, the faults as played with their
   recovery times, the outcomes, the money, the stock and the verdicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from kubernetes_asyncio import client, watch
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException
from vyapaar_messaging import dlq
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY
from vyapaar_operator.orders import GROUP, KIND, MERGE_PATCH, PLURAL, VERSION

from .. import system
from ..config import StackConfig
from ..processes import StackError
from .faults import SERVICES, FaultPlayer, Played
from .invariants import DeadLetter, OrderFacts, StockFacts, Verdict, check
from .plan import Plan, PlannedOrder

NAMESPACE_PREFIX = "chaos-"
CLIENT_RETRY_SECONDS = 90.0
"""How long a create, cancel or delete is tried again (an apiserver outage is shorter)."""

Progress = Callable[[str], None]
TERMINAL = frozenset({"Completed", "Failed", "Cancelled"})


@dataclass
class Report:
    seed: int
    scenario: str | None
    namespace: str
    plan: Plan
    played: list[Played]
    facts: list[OrderFacts]
    stock: dict[str, StockFacts]
    dead_letters: list[DeadLetter]
    verdicts: list[Verdict]
    quiescent_after: float
    """Seconds from the end of the last fault until every order was terminal."""
    timed_out: bool = False
    create_failures: int = 0
    act_failures: list[str] = field(default_factory=list)
    """Planned cancellations and deletions that could not be made."""
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    started_at: float = 0.0
    """Unix time the load started (the report's times count from it)."""
    ended_at: dict[str, float] = field(default_factory=dict)
    """Unix time each order was first seen terminal, or gone."""

    @property
    def passed(self) -> bool:
        return self.load_played and not self.timed_out and all(v.held for v in self.verdicts)

    @property
    def load_played(self) -> bool:
        """Every planned create, cancellation and deletion was made (else the run did not
        test what it planned)."""
        return not self.create_failures and not self.act_failures

    def to_json(self) -> dict[str, Any]:
        created = [f for f in self.facts if f.uid is not None]
        money = Counter[str]()
        for f in created:
            for entry in f.ledger:
                money[entry["kind"] + "s"] += 1
                money[entry["kind"] + "_amount"] += int(entry["amount"])
        return {
            "seed": self.seed, "scenario": self.scenario, "namespace": self.namespace,
            "passed": self.passed,
            "orders": {"planned": len(self.plan.orders), "created": len(created),
                       "create_failures": self.create_failures,
                       "act_failures": self.act_failures,
                       "by_kind": dict(self.plan.kinds())},
            "outcomes": self.outcomes,
            "money": {"captures": money["charges"], "captured": money["charge_amount"],
                      "refunds": money["refunds"], "refunded": money["refund_amount"]},
            "stock": {sku: asdict(s) for sku, s in sorted(self.stock.items())},
            "faults": [{"at": p.started, "kind": p.fault.kind, "target": p.fault.target,
                        "what": p.fault.describe(), "ended": p.ended,
                        "recovery_seconds": p.recovery_seconds, "error": p.error}
                       for p in self.played],
            "quiescent_after_last_fault_seconds": self.quiescent_after,
            "timeline": {
                "created": [round(f.created_at - self.started_at, 2) for f in created],
                "finished": [round(t - self.started_at, 2) for t in self.ended_at.values()],
            },
            "timed_out": self.timed_out,
            "dead_letters": [asdict(d) for d in self.dead_letters],
            "verdicts": [{"invariant": v.name, "held": v.held, "checked": v.checked,
                          "violations": list(v.violations)} for v in self.verdicts],
        }


def _manifest(order: PlannedOrder, sku: str) -> dict[str, Any]:
    address = {"name": "Chaos", "line1": "1 Fault Line", "city": "Pune",
               "postalCode": "411001", "country": "IN"}
    if order.kind == "undeliverable":
        address["line1"] = "UNDELIVERABLE Lane"
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": order.name},
        "spec": {
            "customer": {"id": "chaos", "email": "chaos@example.com", "name": "Chaos"},
            "items": [{"sku": sku, "quantity": order.quantity, "unitPrice": order.unit_price}],
            "currency": "INR",
            "paymentToken": "tok_decline" if order.kind == "decline" else "tok_visa",
            "shippingAddress": address,
        },
    }


async def retrying(what: Callable[[], Any], *, until: float) -> Any:
    """Call `what` until it succeeds or `until` (monotonic) passes; None if it never did."""
    delay = 0.5
    while True:
        try:
            return await what()
        except ApiException as exc:
            if 400 <= exc.status < 500 and exc.status != 429:
                raise  # a refusal, not an outage: trying again cannot change it
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        if time.monotonic() > until:
            return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


class ChaosRun:
    def __init__(self, config: StackConfig, plan: Plan, *, scenario: str | None, bound: float,
                 progress: Progress, keep_namespace: bool = False) -> None:
        self.config = config
        self.plan = plan
        self.scenario = scenario
        self.bound = bound
        self.progress = progress
        self.keep_namespace = keep_namespace
        self.run_id = f"{plan.seed}-{uuid.uuid4().hex[:4]}"
        self.namespace = f"{NAMESPACE_PREFIX}{self.run_id}"
        self.uids: dict[str, str] = {}
        self.last_status: dict[str, dict[str, Any]] = {}
        self.ended_at: dict[str, float] = {}
        self.created_at: dict[str, float] = {}
        self.create_failures = 0
        self.act_failures: list[str] = []
        """Planned cancellations and deletions the apiserver refused or never took."""
        self.gone: set[str] = set()
        self.phases: dict[str, str] = {}
        self.played: list[Played] = []
        self.running: set[str] = set()

    def sku(self, planned: str) -> str:
        """The run's own copy of a planned SKU: runs never share stock."""
        return f"{planned}-{self.run_id}".upper()

    # -- the run ------------------------------------------------------------------------------

    async def execute(self) -> Report:
        await self._wait_ready()
        await kube_config.load_kube_config(config_file=str(self.config.kubeconfig))
        api = client.ApiClient()
        async with api, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            self.objs = client.CustomObjectsApi(api)
            self.core = client.CoreV1Api(api)
            await self.core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
            try:
                return await self._execute(http)
            finally:
                if not self.keep_namespace:
                    with contextlib.suppress(Exception):
                        await self.core.delete_namespace(self.namespace)

    async def _execute(self, http: aiohttp.ClientSession) -> Report:
        initial = await self._seed_stock(http)
        dead_before = await self._dead_letter_ids()
        started = time.monotonic()

        def clock() -> float:
            return time.monotonic() - started

        player = FaultPlayer(self.config, http, self.run_id, clock)
        tasks = [asyncio.create_task(self._order(o, started)) for o in self.plan.orders]
        tasks += [asyncio.create_task(self._fault(player, f, started)) for f in self.plan.faults]
        ticker = asyncio.create_task(self._tick(clock))
        follower = asyncio.create_task(self._follow())
        try:
            await asyncio.gather(*tasks)
            faults_end = max((p.ended for p in self.played), default=0.0)
            timed_out = not await self._quiesce(clock, max(faults_end, clock()))
            quiescent_after = clock() - faults_end
        finally:
            ticker.cancel()
            follower.cancel()
        self.progress(f"quiescent {quiescent_after:.1f}s after the last fault; checking ...")
        facts = await self._facts(http)
        stock = await self._stock(http, initial)
        pending = await self._outbox_pending()
        dead = await self._dead_letters(dead_before, player.poison_marker)
        wall_end = time.time() - (time.monotonic() - started) + faults_end
        verdicts = check(facts, stock, pending, dead, faults_end=wall_end, bound=self.bound)
        outcomes: dict[str, Counter[str]] = {}
        for f in facts:
            if f.uid is not None:
                state = f.phase or f"deleted after {f.final_phase or 'nothing'}"
                outcomes.setdefault(f.planned.kind, Counter())[state] += 1
        return Report(self.plan.seed, self.scenario, self.namespace, self.plan, self.played,
                      facts, stock, dead, verdicts, quiescent_after, timed_out,
                      self.create_failures, self.act_failures,
                      {k: dict(v) for k, v in sorted(outcomes.items())},
                      started_at=time.time() - (time.monotonic() - started),
                      ended_at=dict(self.ended_at))

    async def _wait_ready(self, patience: float = 30.0) -> None:
        """The system must answer, all of it; a component just restarted gets a moment."""
        deadline = time.monotonic() + patience
        while True:
            states = await asyncio.to_thread(system.status, self.config)
            down = [name for name, ok in states.items() if not ok]
            if not down:
                return
            if time.monotonic() > deadline:
                raise StackError(f"not ready: {', '.join(down)}; start the system first "
                                 "(make demo)")
            await asyncio.sleep(1.0)

    async def _tick(self, clock: Callable[[], float]) -> None:
        while True:
            await asyncio.sleep(2.0)
            terminal = len(set(self.phases) - self.gone)
            faults = ", ".join(sorted(self.running)) or "none"
            self.progress(f"t={clock():5.1f}s created {len(self.uids)}/{len(self.plan.orders)}"
                          f"  terminal {terminal}  deleted {len(self.gone)}"
                          f"  faults now: {faults}")

    async def _fault(self, player: FaultPlayer, fault: Any, started: float) -> None:
        await asyncio.sleep(max(0.0, started + fault.at - time.monotonic()))
        self.running.add(fault.describe())
        self.progress(f"fault: {fault.describe()}")
        played = await player.play(fault)
        self.running.discard(fault.describe())
        recovery = ("" if played.recovery_seconds is None
                    else f"; ready again {played.recovery_seconds:.1f}s after")
        self.progress(f"fault over: {fault.describe()}{recovery}"
                      + (f" (could not be played: {played.error})" if played.error else ""))
        self.played.append(played)

    async def _follow(self) -> None:
        """Keep the last status seen of every Order of the run (a deleted Order's last event
        says how it ended), resuming the watch after any outage."""
        version: str | None = None
        while True:
            try:
                if version is None:
                    listed = await self.objs.list_namespaced_custom_object(
                        GROUP, VERSION, self.namespace, PLURAL, _request_timeout=15)
                    version = listed["metadata"]["resourceVersion"]
                    for obj in listed["items"]:
                        self._saw(obj)
                async with watch.Watch().stream(
                        self.objs.list_namespaced_custom_object, GROUP, VERSION,
                        self.namespace, PLURAL, resource_version=version,
                        allow_watch_bookmarks=True, timeout_seconds=60) as events:
                    async for event in events:
                        if event["type"] == "ERROR":  # e.g. 410 Gone: list afresh
                            version = None
                            break
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] == "DELETED":
                            self._gone(event["object"]["metadata"]["name"])
                        elif event["type"] != "BOOKMARK":
                            self._saw(event["object"])
            except asyncio.CancelledError:
                raise
            except Exception:  # the apiserver may be the fault: resume shortly
                await asyncio.sleep(1.0)

    def _saw(self, obj: Mapping[str, Any]) -> None:
        name, status = obj["metadata"]["name"], obj.get("status") or {}
        if status.get("phase"):
            self.last_status[name] = dict(status)
        if status.get("phase") in TERMINAL:
            self.phases[name] = status["phase"]
            self.ended_at.setdefault(name, time.time())

    def _gone(self, name: str) -> None:
        self.gone.add(name)
        self.ended_at.setdefault(name, time.time())

    async def _order(self, order: PlannedOrder, started: float) -> None:
        await asyncio.sleep(max(0.0, started + order.at - time.monotonic()))
        manifest = _manifest(order, self.sku(order.sku))
        created = await retrying(lambda: self.objs.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest, _request_timeout=15),
            until=time.monotonic() + CLIENT_RETRY_SECONDS)
        if created is None:
            self.create_failures += 1
            return
        self.uids[order.name] = created["metadata"]["uid"]
        self.created_at[order.name] = time.time()
        if order.act_after is None:
            return
        await asyncio.sleep(order.act_after)
        until = time.monotonic() + CLIENT_RETRY_SECONDS
        try:
            if order.kind == "cancel":
                acted = await retrying(lambda: self.objs.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, order.name,
                    {"spec": {"cancel": True}}, _request_timeout=15,
                    _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # via **kwargs
                ), until=until)
            else:
                acted = await retrying(lambda: self.objs.delete_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, order.name, _request_timeout=15),
                    until=until)
        except ApiException as exc:
            acted = None if exc.status != 404 else True  # already gone: nothing left to do
        if acted is None:
            self.act_failures.append(f"{order.kind} {order.name}")
            self.progress(f"could not {order.kind} {order.name}")

    async def _quiesce(self, clock: Callable[[], float], faults_end: float) -> bool:
        """Until every created order is terminal or gone; False after the bound (plus a
        margin for the last creates) without that."""
        deadline = faults_end + self.bound + 30.0
        next_list = 0.0
        while clock() < deadline:
            # The watch says when all have ended; a list confirms it (and, every 10 s, looks
            # for what a broken watch may have missed) -- not a list of every Order a second.
            seen_all = all(n in self.gone or n in self.phases for n in self.uids)
            if not seen_all and clock() < next_list:
                await asyncio.sleep(0.5)
                continue
            next_list = clock() + 10.0
            listed = await retrying(lambda: self.objs.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, _request_timeout=15),
                until=time.monotonic() + 10)
            if listed is not None:
                present = {o["metadata"]["name"]: (o.get("status") or {}).get("phase")
                           for o in listed["items"]}
                self.phases = {n: p for n, p in present.items() if p in TERMINAL}
                for name in self.phases:
                    self.ended_at.setdefault(name, time.time())
                for name in set(self.uids) - set(present):
                    self._gone(name)
                if all(n in self.gone or n in self.phases for n in self.uids):
                    return True
            await asyncio.sleep(1.0)
        return False

    # -- the facts ----------------------------------------------------------------------------

    async def _get(self, http: aiohttp.ClientSession, service: str, path: str,
                   **params: str) -> Any:
        url = f"{system.service_url(self.config, service)}{path}"
        for _ in range(30):
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url, params=params) as resp:
                    if resp.status == 200:
                        return await resp.json()
            await asyncio.sleep(1.0)
        raise StackError(f"{service} does not answer {path}")

    async def _facts(self, http: aiohttp.ClientSession) -> list[OrderFacts]:
        listed = await self.objs.list_namespaced_custom_object(GROUP, VERSION, self.namespace,
                                                               PLURAL)
        present = {o["metadata"]["name"]: o for o in listed["items"]}
        facts = []
        for order in self.plan.orders:
            uid = self.uids.get(order.name)
            fact = OrderFacts(order, uid, items={self.sku(order.sku): order.quantity},
                              total=order.quantity * order.unit_price,
                              created_at=self.created_at.get(order.name, 0.0))
            obj = present.get(order.name)
            status = (obj or {}).get("status") or self.last_status.get(order.name) or {}
            fact.final_phase = status.get("phase")
            fact.phase = fact.final_phase if obj is not None else None
            fact.reason = status.get("reason") or ""
            if status.get("finishedAt"):
                fact.finished_at = datetime.fromisoformat(
                    status["finishedAt"].replace("Z", "+00:00")).timestamp()
            if uid is not None:
                fact.ledger = (await self._get(http, "payment", "/api/v1/ledger",
                                               order=uid))["entries"]
                fact.processor = (await self._get(http, "payment", "/api/v1/processor",
                                                  order=uid))["operations"]
                fact.shipments = (await self._get(http, "shipping", "/api/v1/shipments",
                                                  order=uid))["items"]
                fact.notifications = (await self._get(http, "notification",
                                                      "/api/v1/notifications",
                                                      order=uid))["items"]
            facts.append(fact)
        return facts

    async def _seed_stock(self, http: aiohttp.ClientSession) -> dict[str, int]:
        initial = {}
        for planned, available in self.plan.stock().items():
            sku = self.sku(planned)
            url = f"{system.service_url(self.config, 'inventory')}/api/v1/stock/{sku}"
            async with http.put(url, json={"available": available}) as resp:
                if resp.status >= 300:
                    raise StackError(f"inventory refused stock for {sku}: {await resp.text()}")
            initial[sku] = available
        return initial

    async def _stock(self, http: aiohttp.ClientSession, initial: Mapping[str, int]
                     ) -> dict[str, StockFacts]:
        stock = {}
        for sku, first in initial.items():
            row = await self._get(http, "inventory", f"/api/v1/stock/{sku}")
            stock[sku] = StockFacts(first, int(row["available"]), int(row["held"]),
                                    int(row["committed"]))
        return stock

    async def _outbox_pending(self, patience: float = 15.0) -> dict[str, int]:
        """Unsent outbox rows per service, once they stop draining (a relay mid-round is not
        a lost message)."""
        deadline = time.monotonic() + patience
        connection = await asyncpg.connect(self.config.database_url)
        try:
            while True:
                pending = {s: int(await connection.fetchval(
                    f"SELECT count(*) FROM {s}.outbox WHERE sent_at IS NULL"))
                    for s in SERVICES}
                if not any(pending.values()) or time.monotonic() > deadline:
                    return pending
                await asyncio.sleep(0.5)
        finally:
            await connection.close()

    def _queues(self) -> list[str]:
        return [*(DEFAULT_TOPOLOGY.command_queue(s) for s in SERVICES),
                DEFAULT_TOPOLOGY.replies_queue]

    async def _dead_letter_ids(self) -> set[str]:
        connection = await aio_pika.connect(self.config.amqp_url)
        async with connection:
            ids: set[str] = set()
            for queue in self._queues():
                _, messages = await dlq.list_messages(connection, queue, limit=10_000)
                ids.update(m.id for m in messages)
            return ids

    async def _dead_letters(self, before: set[str], poison_marker: str) -> list[DeadLetter]:
        """Messages dead-lettered during the run that concern it: its orders' messages (none
        expected) and the poison its faults injected (each explained by that fault)."""
        ours = set(self.uids.values())
        found = []
        connection = await aio_pika.connect(self.config.amqp_url)
        async with connection:
            for queue in self._queues():
                _, messages = await dlq.list_messages(connection, queue, limit=10_000)
                for message in messages:
                    if message.id in before:
                        continue
                    if poison_marker in message.body:
                        found.append(DeadLetter(queue, message.reason or "", "poison",
                                                "poison fault"))
                    elif message.correlation_id in ours or any(u in message.body for u in ours):
                        found.append(DeadLetter(queue, message.reason or "",
                                                message.type or "unknown", None))
        return found


__all__ = ["ChaosRun", "Report"]
