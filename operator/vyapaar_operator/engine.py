"""The saga engine: the one place where saga decisions meet the outside world.

For every event (an observed change, a reply, a deadline) it reads the Order,
asks the pure state machine (`saga.decide`) what to do, writes the new status
with the resourceVersion it read (the status is the saga log and the
operator's outbox), and only then publishes the commands and records the
transitions as Kubernetes Events. A 409 Conflict means someone else wrote in
between: re-read and decide again — decisions are pure, so that is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from vyapaar_operator import metrics, saga
from vyapaar_operator.deadlines import Deadlines
from vyapaar_operator.orders import Conflict, OrderRef, OrderStore, has_finalizer, ref_of

log = logging.getLogger(__name__)

EventFactory = Callable[[Mapping[str, Any], saga.SagaState], saga.Event | None]
"""Given the Order as just read and its saga state, the event to apply (None: nothing)."""


class CommandBus(Protocol):
    async def send(self, obj: Mapping[str, Any], command: saga.Command) -> None: ...


class EventRecorder(Protocol):
    async def record(self, obj: Mapping[str, Any], transition: saga.Transition) -> None: ...


class GaveUp(Exception):
    """Conflicts kept coming; the event will be re-derived from the next observation."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def state_of(obj: Mapping[str, Any]) -> saga.SagaState:
    spec = saga.OrderSpec.from_manifest(obj.get("spec") or {})
    return saga.SagaState.from_status(obj["metadata"]["uid"], spec, obj.get("status") or {})


class SagaEngine:
    def __init__(
        self,
        store: OrderStore,
        bus: CommandBus,
        recorder: EventRecorder,
        config: saga.SagaConfig,
        deadlines: Deadlines,
        *,
        write_retries: int = 10,
    ) -> None:
        self.store = store
        self.bus = bus
        self.recorder = recorder
        self.config = config
        self.deadlines = deadlines
        self.write_retries = write_retries
        # One lock per order: events for one saga apply one at a time in this
        # process (fewer conflicts); other processes are kept out by resourceVersion.
        self._locks: weakref.WeakValueDictionary[OrderRef, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def _lock(self, ref: OrderRef) -> asyncio.Lock:
        lock = self._locks.get(ref)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[ref] = lock
        return lock

    async def apply(
        self, ref: OrderRef, make_event: EventFactory, *, seen: Mapping[str, Any] | None = None
    ) -> saga.SagaState | None:
        """Apply the event `make_event` derives from the current Order; return the new state.

        `seen` is the object as just observed (saves a read); after a conflict
        the object is read afresh.
        """
        async with self._lock(ref):
            obj: Mapping[str, Any] | None = seen
            for _ in range(self.write_retries):
                if obj is None:
                    obj = await self.store.get(ref)
                    if obj is None:
                        self.deadlines.forget(ref)
                        return None
                try:
                    return await self._apply_once(dict(obj), make_event)
                except Conflict:
                    metrics.STATUS_CONFLICTS.inc()
                    obj = None
            raise GaveUp(f"{ref}: {self.write_retries} conflicting writes in a row")

    async def _apply_once(
        self, obj: dict[str, Any], make_event: EventFactory
    ) -> saga.SagaState:
        state = state_of(obj)
        obj = await self._ensure_finalizer(obj, state)
        event = make_event(obj, state)
        if event is None:
            self._track(obj, state)
            return state
        decision = saga.decide(state, event, self.config)
        new_status = decision.state.to_status()
        new_status["observedGeneration"] = obj["metadata"].get("generation")
        changed = new_status != (obj.get("status") or {})
        if changed:
            obj = await self.store.replace_status(obj, new_status)
        metrics.observe_decision(state, event, decision, changed=changed)
        for command in decision.commands:
            await self._publish(obj, command)
        for transition in decision.transitions:
            await self.recorder.record(obj, transition)
        if decision.state.is_terminal and not state.is_terminal:
            # Let a deletion proceed now, not on the next watch event.
            with contextlib.suppress(Conflict):  # that next event will retry it
                obj = await self._ensure_finalizer(obj, decision.state)
        self._track(obj, decision.state)
        return decision.state

    async def _ensure_finalizer(
        self, obj: dict[str, Any], state: saga.SagaState
    ) -> dict[str, Any]:
        """Hold the finalizer while the saga runs or awaits repair; drop it once it is done."""
        wanted = not state.is_terminal or state.needs_repair
        if has_finalizer(obj) != wanted:
            if wanted and obj["metadata"].get("deletionTimestamp"):
                return obj  # a finalizer cannot be added to an object being deleted
            obj = await self.store.set_finalizer(obj, wanted)
        return obj

    async def _publish(self, obj: Mapping[str, Any], command: saga.Command) -> None:
        try:
            await self.bus.send(obj, command)
        except Exception:
            # The intent is in the status with a deadline: the next Tick re-sends it.
            log.exception("publishing %s for %s failed; the deadline will retry it",
                          command.message_type, ref_of(dict(obj)))

    def _track(self, obj: Mapping[str, Any], state: saga.SagaState) -> None:
        ref = ref_of(dict(obj))
        metrics.track_phase(ref, state.phase)
        if state.is_terminal:
            self.deadlines.forget(ref)
            metrics.forget(ref)
        else:
            self.deadlines.set(ref, saga.next_deadline(state))

    # -- the three sources of events ---------------------------------------------------------

    async def on_tick(self, ref: OrderRef) -> None:
        await self.apply(ref, lambda obj, state: saga.Tick(now=utcnow()))

    async def on_reply(
        self, ref: OrderRef, *, message_type: str, idempotency_key: str,
        payload: Mapping[str, Any], message_id: str, correlation_id: str,
    ) -> None:
        def reply(obj: Mapping[str, Any], state: saga.SagaState) -> saga.Event | None:
            if obj["metadata"]["uid"] != correlation_id:
                return None  # a reply for an earlier Order of the same name
            return saga.Reply(now=utcnow(), message_type=message_type,
                              idempotency_key=idempotency_key, payload=payload,
                              message_id=message_id)

        await self.apply(ref, reply)
