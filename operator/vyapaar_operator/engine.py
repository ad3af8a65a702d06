"""The saga engine: the one place where saga decisions meet the outside world.

For every event (an observed change, a reply, a deadline) it reads the Order,
asks the pure state machine (`saga.decide`) what to do, writes the new status
with the resourceVersion it read (the status is the saga log and the
operator's outbox), and only then publishes the commands, records the
transitions as Kubernetes Events and publishes the domain events the status
holds in ``outbox`` -- dropping them from it in the next write once the broker
has them (a finished saga gets one write of its own for that). A 409 Conflict
means someone else wrote in between: re-read and decide again — decisions are
pure, so that is safe.

With tracing on, every event applied is a ``saga <Event>`` span, made once its status
write succeeded, with its commands as ``send`` spans below it (:mod:`.saga_tracing`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from vyapaar_messaging import tracing
from vyapaar_messaging.metrics import message_type_label
from vyapaar_messaging.outage import OutageLog

from vyapaar_operator import metrics, observe, saga, saga_tracing
from vyapaar_operator.admission import Admission
from vyapaar_operator.breaker import BreakerConfig, BreakerState
from vyapaar_operator.breakers import Breakers, Change
from vyapaar_operator.deadlines import Deadlines
from vyapaar_operator.orders import Conflict, Gone, OrderRef, OrderStore, has_finalizer, ref_of

log = logging.getLogger(__name__)

EVENT_RETRY_PAUSE = 2.0
"""Seconds before publishing an Order's domain events again after a publish failed."""

FINISHED_REMEMBERED = 10_000
"""Finished sagas whose last version is kept to recognise their stale watch events."""

EventFactory = Callable[[Mapping[str, Any], saga.SagaState], saga.Event | None]
"""Given the Order as just read and its saga state, the event to apply (None: nothing)."""


class MessageBus(Protocol):
    async def send(self, obj: Mapping[str, Any], command: saga.Command) -> None: ...

    async def publish_event(self, obj: Mapping[str, Any], state: saga.SagaState,
                            event: saga.DomainEvent) -> None: ...


class EventRecorder(Protocol):
    async def record(self, obj: Mapping[str, Any], transition: saga.Transition) -> None: ...


@dataclass(frozen=True)
class _Waiting:
    make_event: EventFactory
    done: asyncio.Future[saga.SagaState | None]
    seen: Mapping[str, Any] | None
    context: Any = None
    """The trace context the event arrived with (tracing on; see :mod:`.saga_tracing`)."""


@dataclass
class _Mailbox:
    """Events of one Order waiting for its lock; `joined` is set when another arrives."""

    waiting: list[_Waiting] = field(default_factory=list)
    joined: asyncio.Event = field(default_factory=asyncio.Event)


class GaveUp(Exception):
    """Conflicts kept coming; the event will be re-derived from the next observation."""


def utcnow() -> datetime:
    """Now, to the millisecond: finer adds status bytes (every write) and tells nobody more."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _not_newer(obj: Mapping[str, Any], than: Mapping[str, Any]) -> bool:
    """`obj` is the same or an earlier version of the same Order than `than`.

    resourceVersions are opaque to clients in general; etcd's are its revision numbers,
    and where one is not a number this says False (decide anyway; a 409 protects it).
    """
    mine, theirs = obj["metadata"], than["metadata"]
    if mine.get("uid") != theirs.get("uid"):
        return False
    try:
        return int(mine["resourceVersion"]) <= int(theirs["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


def _newest_seen(seen: Iterable[Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    """Of the versions a batch's watch events carried, the newest."""
    newest: Mapping[str, Any] | None = None
    for obj in seen:
        if obj is not None and (newest is None or not _not_newer(obj, newest)):
            newest = obj
    return newest


def _without_outbox(status: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if key != "outbox"}


def _nothing(obj: Mapping[str, Any], state: saga.SagaState) -> saga.Event | None:
    """No event: an apply that only publishes what the outbox still holds."""
    return None


def _start_if_pending(obj: Mapping[str, Any], state: saga.SagaState) -> saga.Event | None:
    if state.phase is not saga.Phase.PENDING or obj["metadata"].get("deletionTimestamp"):
        return None
    return saga.Start(now=utcnow())


def state_of(obj: Mapping[str, Any]) -> saga.SagaState:
    spec = observe.spec_of(obj)
    return saga.SagaState.from_status(obj["metadata"]["uid"], spec, obj.get("status") or {})


class SagaEngine:
    def __init__(
        self,
        store: OrderStore,
        bus: MessageBus,
        recorder: EventRecorder,
        config: saga.SagaConfig,
        deadlines: Deadlines,
        *,
        admission: Admission | None = None,
        breakers: Breakers | None = None,
        write_retries: int = 10,
        reply_hold: float = 0.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.recorder = recorder
        self.config = config
        self.deadlines = deadlines
        self.admission = admission or Admission(0)
        self.breakers = breakers or Breakers(BreakerConfig(threshold=0))
        self.write_retries = write_retries
        self.reply_hold = reply_hold
        # One lock per order: events for one saga apply one at a time in this
        # process (fewer conflicts); other processes are kept out by resourceVersion.
        self._locks: weakref.WeakValueDictionary[OrderRef, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        # Events waiting for their order's lock: whoever takes it applies them all in one
        # status write.
        self._mailboxes: dict[OrderRef, _Mailbox] = {}
        # The newest version of each running saga's Order this process wrote or saw: the
        # base of the next decision (no read needed; a 409 says when it is not current).
        # A watch event older than it, or than a finished saga's last version, says
        # nothing new, and deciding on it would only end in a 409 Conflict.
        self._newest: dict[OrderRef, Mapping[str, Any]] = {}
        # The saga state of those versions, by resourceVersion: parsed once, not per event.
        self._states: dict[OrderRef, tuple[str, saga.SagaState]] = {}
        self._finished: collections.OrderedDict[OrderRef, Mapping[str, Any]] = (
            collections.OrderedDict()
        )
        # Of each Order (by UID), the newest domain event the broker has confirmed: the
        # next write drops it and the ones before from the status outbox.
        self._published: dict[OrderRef, tuple[str, int]] = {}
        self._republishing: set[OrderRef] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._publishing = OutageLog(log, "publishing commands to RabbitMQ")
        self._publishing_events = OutageLog(log, "publishing domain events to RabbitMQ")
        metrics.IN_FLIGHT_LIMIT.set(self.admission.limit)

    def _is_stale(self, ref: OrderRef, seen: Mapping[str, Any]) -> bool:
        known = self._newest.get(ref) or self._finished.get(ref)
        return known is not None and _not_newer(seen, known)

    def _lock(self, ref: OrderRef) -> asyncio.Lock:
        lock = self._locks.get(ref)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[ref] = lock
        return lock

    async def apply(
        self, ref: OrderRef, make_event: EventFactory, *,
        seen: Mapping[str, Any] | None = None, hold: float = 0.0,
    ) -> saga.SagaState | None:
        """Apply the event `make_event` derives from the current Order; return the new state.

        `seen` is the object as just observed (saves a read); after a conflict the object
        is read afresh.  Events for the same Order that arrive while one is being applied
        are applied together, with one status write; `hold` > 0 waits that long at most for
        another event of the same Order to share the write with.
        """
        if seen is not None and self._is_stale(ref, seen):
            metrics.STALE_EVENTS.inc()
            return None
        done: asyncio.Future[saga.SagaState | None] = asyncio.get_running_loop().create_future()
        mailbox = self._mailboxes.setdefault(ref, _Mailbox())
        mailbox.waiting.append(_Waiting(make_event, done, seen, tracing.current_context()))
        if len(mailbox.waiting) > 1:
            mailbox.joined.set()
        elif hold:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(mailbox.joined.wait(), hold)
        async with self._lock(ref):
            if done.done():
                return done.result()  # applied by the batch of an earlier event
            batch = self._mailboxes.pop(ref, _Mailbox()).waiting
            try:
                state = await self._apply_batch(ref, [w.make_event for w in batch],
                                                _newest_seen(w.seen for w in batch),
                                                [w.context for w in batch])
            except BaseException as exc:
                for waiting in batch:
                    if waiting.done is not done and not waiting.done.done():
                        waiting.done.set_exception(exc)
                raise
            for waiting in batch:
                if not waiting.done.done():
                    waiting.done.set_result(state)
            return state

    async def _apply_batch(
        self, ref: OrderRef, makers: list[EventFactory], seen: Mapping[str, Any] | None,
        contexts: list[Any] | None = None,
    ) -> saga.SagaState | None:
        # The newest version known, unless `seen` is newer: it may have become stale while
        # this event waited for the lock (then it is read afresh if the saga has finished).
        obj: Mapping[str, Any] | None = seen
        if obj is None or self._is_stale(ref, obj):
            obj = self._newest.get(ref)
        for _ in range(self.write_retries):
            if obj is None:
                obj = await self.store.get(ref)
                if obj is None:
                    self.forget(ref)
                    return None
            try:
                with saga_tracing.logged_as(obj), saga_tracing.attempt() as attempt:
                    return await self._apply_once(dict(obj), makers, contexts or [], attempt)
            except Conflict:
                metrics.STATUS_CONFLICTS.inc()
                obj = None
            except Gone:  # deleted once its saga let it go: nothing left to decide
                self.forget(ref)
                return None
        raise GaveUp(f"{ref}: {self.write_retries} conflicting writes in a row")

    async def _apply_once(
        self, obj: dict[str, Any], makers: list[EventFactory], contexts: list[Any] | None = None,
        attempt: saga_tracing.Attempt | None = None,
    ) -> saga.SagaState | None:
        ref = ref_of(obj)
        try:
            state = self._state_of(ref, obj)
        except saga.UnknownSagaVersion as unknown:
            await self._leave_alone(obj, unknown)
            return None
        published = self._published_seq(ref, obj)
        state = saga.forget_published(state, published)
        obj = await self._ensure_finalizer(obj, state, attempt)
        decided = state
        commands: list[saga.Command] = []
        transitions: list[saga.Transition] = []
        observed: list[tuple[saga.SagaState, saga.Event, saga.Decision]] = []
        for index, make_event in enumerate(makers):
            decided_at = time.time_ns() if attempt is not None else 0
            event = make_event(obj, decided)
            if event is None:
                continue
            if isinstance(event, saga.Start) and not self.admission.admit(ref, obj):
                event = saga.Queued(limit=self.admission.limit, now=event.now)
            decision = saga.decide(decided, event, self.config)
            observed.append((decided, event, decision))
            if attempt is not None:
                attempt.decided(index, decided_at, decision)
            commands.extend(decision.commands)
            transitions.extend(decision.transitions)
            decided = decision.state
        new_status = decided.to_status()
        new_status["observedGeneration"] = obj["metadata"].get("generation")
        # Only dropping published events from the outbox is not worth a write of its own:
        # the next write carries it (or the last one: :meth:`_publish_events`).
        changed = _without_outbox(new_status) != _without_outbox(obj.get("status") or {})
        if changed:
            with saga_tracing.untraced(attempt, "PUT orders/status"):
                obj = await self.store.replace_status(obj, new_status)
            if not decided.is_terminal:
                self._remember(ref, obj, decided)  # before publishing: replies may be quick
        if attempt is not None:  # written: the decision's spans (a conflict leaves none)
            attempt.open(obj, observed, contexts or [])
        breaker_changes: list[Change] = []
        for before, event, decision in observed:
            metrics.observe_decision(before, event, decision,
                                     changed=changed and decision.state != before)
            breaker_changes += self.breakers.observe(before, event)
        unsent, held = [], []
        for index, command in enumerate(commands):
            if not command.compensation:  # an undo is never held back
                allowed, changed_breakers = self.breakers.admit(command.service, utcnow())
                breaker_changes += changed_breakers
                if not allowed:
                    held.append(command)
                    continue
            with saga_tracing.for_command(attempt, index):
                sent = await self._publish(obj, command)
            if not sent:
                unsent.append(command)
        if unsent:
            self._record_unsent(ref, unsent)
        if held:
            self._record_held(ref, held)
        for transition in transitions:
            metrics.TRANSITIONS.labels(transition.reason, transition.type).inc()
            if transition.announced:
                await self.recorder.record(obj, transition)
        for change in breaker_changes:
            await self.recorder.record(obj, change.transition(self.breakers.config))
            if change.new is BreakerState.CLOSED:
                self._wake(change.service)
        obj, decided = await self._publish_events(obj, decided, published)
        if decided.is_terminal and (not state.is_terminal or state.outbox):
            # Let a deletion proceed now, not on the next watch event.
            with contextlib.suppress(Conflict):  # that next event will retry it
                obj = await self._ensure_finalizer(obj, decided)
        self._track(obj, decided)
        return decided

    def _published_seq(self, ref: OrderRef, obj: Mapping[str, Any]) -> int:
        uid, seq = self._published.get(ref, ("", 0))
        return seq if uid == obj["metadata"]["uid"] else 0

    async def _publish_events(
        self, obj: dict[str, Any], state: saga.SagaState, published: int
    ) -> tuple[dict[str, Any], saga.SagaState]:
        """Publish the outbox's events the broker does not have yet, oldest first.

        A finished saga writes no more, so it drops its published events in a write of its
        own (its last: a restarted operator would otherwise publish them again, and its
        finalizer stays until then: a deleted Order's last events are not lost).  Should a
        publish fail, the saga's next write -- or a retry after a pause -- publishes it
        again; its subscribers drop whatever they already have.
        """
        ref = ref_of(obj)
        uid = obj["metadata"]["uid"]
        for event in state.outbox:
            if event.seq <= published:
                continue
            try:
                await self.bus.publish_event(obj, state, event)
            except Exception as exc:
                self._publishing_events.failed(f"{event.reason} of {ref}: {exc}")
                self._republish_later(ref)
                return obj, state
            self._publishing_events.succeeded()
            published = event.seq
            self._published[ref] = (uid, published)
        if state.is_terminal and state.outbox:
            done = saga.forget_published(state, published)
            status = done.to_status()
            status["observedGeneration"] = obj["metadata"].get("generation")
            # On a conflict, the next look publishes them again (same ids) and drops them.
            with contextlib.suppress(Conflict):
                return await self.store.replace_status(obj, status), done
        return obj, state

    def _republish_later(self, ref: OrderRef) -> None:
        """Publish an Order's unpublished events again after a pause (once at a time)."""
        if ref in self._republishing:
            return
        self._republishing.add(ref)

        async def again() -> None:
            try:
                await asyncio.sleep(EVENT_RETRY_PAUSE)
                self._republishing.discard(ref)
                await self.apply(ref, _nothing)
            except Exception as exc:
                log.warning("publishing the domain events of %s again failed: %s", ref, exc)
            finally:
                self._republishing.discard(ref)

        self._spawn(again())

    async def _leave_alone(self, obj: dict[str, Any], unknown: saga.UnknownSagaVersion) -> None:
        """Never drive a saga on a flow it did not start on: say so once (a condition and
        a Warning Event), publish nothing, keep the finalizer -- an operator that knows the
        version carries on from the status as it is."""
        status = saga.unknown_version_status(obj.get("status") or {}, unknown, utcnow())
        self.forget(ref_of(obj))
        if status is None:
            return  # said already
        obj = await self.store.replace_status(obj, status)
        log.warning("%s: %s", ref_of(obj), unknown)
        await self.recorder.record(obj, saga.Transition("UnknownSagaVersion", str(unknown),
                                                        "Warning"))

    async def _ensure_finalizer(
        self, obj: dict[str, Any], state: saga.SagaState,
        attempt: saga_tracing.Attempt | None = None,
    ) -> dict[str, Any]:
        """Hold the finalizer while the saga runs, awaits repair or has events to publish;
        drop it once it is done.

        Where the cluster adds it at creation (a MutatingAdmissionPolicy, the gateway),
        this costs no write.
        """
        wanted = not state.is_terminal or state.needs_repair or bool(state.outbox)
        if has_finalizer(obj) != wanted:
            if wanted and obj["metadata"].get("deletionTimestamp"):
                return obj  # a finalizer cannot be added to an object being deleted
            with saga_tracing.untraced(attempt, "PATCH orders"):
                obj = await self.store.set_finalizer(obj, wanted)
        return obj

    async def _publish(self, obj: Mapping[str, Any], command: saga.Command) -> bool:
        """Publish; False if the broker did not take it (the saga then learns NotSent)."""
        try:
            await self.bus.send(obj, command)
        except Exception as exc:
            self._publishing.failed(f"{command.message_type} for {ref_of(dict(obj))}: {exc}")
            return False
        self._publishing.succeeded()
        return True

    def _record_unsent(self, ref: OrderRef, commands: list[saga.Command]) -> None:
        """Tell the saga, in a write after this one, which commands never left: they go out
        again after a pause without using up an attempt.  Should that write fail too, the
        step's deadline still fires (and then counts the attempt): nothing is lost."""

        def not_sent(command: saga.Command) -> EventFactory:
            return lambda obj, state: saga.NotSent(
                step=command.step, compensation=command.compensation,
                attempt=command.attempt, now=utcnow())

        self._in_background(ref, [not_sent(c) for c in commands], "recording unsent commands")

    def _record_held(self, ref: OrderRef, commands: list[saga.Command]) -> None:
        """Tell the saga, in a write after this one, which commands a circuit breaker kept
        back: each waits unsent until the breaker probes (or closes: :meth:`_wake`)."""
        now = utcnow()

        def held(command: saga.Command) -> EventFactory:
            until = self.breakers.hold(command.service, ref, now)
            return lambda obj, state: saga.Held(step=command.step, attempt=command.attempt,
                                                until=until, now=utcnow())

        self._in_background(ref, [held(c) for c in commands], "recording held commands")

    def _wake(self, service: str) -> None:
        """The breaker toward ``service`` closed: every saga it held publishes now."""
        now = utcnow()

        def closed(obj: Mapping[str, Any], state: saga.SagaState) -> saga.Event:
            return saga.BreakerClosed(service=service, now=now)

        for ref in self.breakers.release(service):
            self._in_background(ref, [closed], f"waking {service}'s held commands")

    def _in_background(self, ref: OrderRef, makers: list[EventFactory], what: str) -> None:
        async def apply() -> None:
            try:
                await asyncio.gather(*(self.apply(ref, make) for make in makers))
            except Exception as exc:
                log.warning("%s of %s failed: %s", what, ref, exc)

        self._spawn(apply())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _track(self, obj: Mapping[str, Any], state: saga.SagaState) -> None:
        ref = ref_of(dict(obj))
        metrics.track_phase(ref, state.phase)
        if state.is_terminal:
            self.forget(ref)
            self._finished[ref] = {"metadata": obj["metadata"]}
            while len(self._finished) > FINISHED_REMEMBERED:
                self._finished.popitem(last=False)
            return
        self.deadlines.set(ref, saga.next_deadline(state))
        self._remember(ref, obj, state)
        if state.phase is not saga.Phase.PENDING:
            self.admission.observe_running(ref)
        metrics.QUEUED.set(self.admission.queued)

    def _remember(self, ref: OrderRef, obj: Mapping[str, Any], state: saga.SagaState) -> None:
        self._newest[ref] = obj
        self._states[ref] = (obj["metadata"]["resourceVersion"], state)

    def _state_of(self, ref: OrderRef, obj: Mapping[str, Any]) -> saga.SagaState:
        known = self._states.get(ref)
        if known is not None and known[0] == obj["metadata"]["resourceVersion"]:
            return known[1]
        return state_of(obj)

    def forget(self, ref: OrderRef) -> None:
        """The saga is over or its Order gone: stop following it and free its slot."""
        self.deadlines.forget(ref)
        metrics.forget(ref)
        self._newest.pop(ref, None)
        self._states.pop(ref, None)
        self._published.pop(ref, None)
        self._finished.pop(ref, None)
        self.admission.forget(ref)
        metrics.QUEUED.set(self.admission.queued)

    async def admit_queued(self) -> None:
        """Start queued Orders, oldest first, whenever a saga slot frees up (a task)."""
        while True:
            ref = await self.admission.next_to_start()
            try:
                await self.apply(ref, _start_if_pending)
            except Exception:
                log.exception("starting queued %s failed; its next watch event retries", ref)
            if not self.admission.is_running(ref):
                self.admission.forget(ref)  # gone, cancelled or started elsewhere: next one

    # -- the three sources of events ---------------------------------------------------------

    async def on_tick(self, ref: OrderRef) -> None:
        await self.apply(ref, lambda obj, state: saga.Tick(now=utcnow()))

    async def on_reply(
        self, ref: OrderRef, *, message_type: str, idempotency_key: str,
        payload: Mapping[str, Any], message_id: str, correlation_id: str,
    ) -> bool:
        """Apply a service's reply; False if it is about no existing Order (deleted, or an
        earlier Order of the same name): then nothing was changed."""
        found = False

        def reply(obj: Mapping[str, Any], state: saga.SagaState) -> saga.Event | None:
            nonlocal found
            if obj["metadata"]["uid"] != correlation_id:
                return None  # a reply for an earlier Order of the same name
            found = True
            return saga.Reply(now=utcnow(), message_type=message_type,
                              idempotency_key=idempotency_key, payload=payload,
                              message_id=message_id)

        hold = self.reply_hold if self._may_wait(ref, reply) else 0.0
        found = False  # as the Order is read now, not as _may_wait remembered it
        await self.apply(ref, reply, hold=hold)
        if not found:
            metrics.REPLIES.labels(message_type_label(message_type), "ignored").inc()
        return found

    def _may_wait(self, ref: OrderRef, reply: EventFactory) -> bool:
        """A reply that starts nothing (no command, not the end) while another reply is due
        can wait for that one: written together, they cost one status write instead of two.
        (Commit and notify go out together; the order completes only when both are back, so
        holding the first costs no time.)  It stays unacked meanwhile: a crash redelivers it.
        """
        newest = self._newest.get(ref)
        if not self.reply_hold or newest is None:
            return False
        state = self._state_of(ref, newest)
        event = reply(newest, state)
        if event is None or state.awaiting_replies < 2:
            return False
        decision = saga.decide(state, event, self.config)
        return not decision.commands and not decision.state.is_terminal
