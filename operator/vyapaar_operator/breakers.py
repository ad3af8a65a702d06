"""The operator's circuit breakers, one per service: the pure machine of ``breaker`` kept
in memory, fed by the engine, and shown to people (a metric, a log line and a Kubernetes
Event on every change of state, which the engine records on the Order that caused it).

State is per operator process: a restarted operator starts with every breaker closed and
learns again from the first timeouts, which costs at most ``threshold`` commands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Gauge

from vyapaar_operator import saga
from vyapaar_operator.breaker import (
    Breaker,
    BreakerConfig,
    BreakerState,
    admit,
    held_until,
    on_reply,
    on_timeout,
    replies_and_timeouts,
)
from vyapaar_operator.orders import OrderRef

log = logging.getLogger(__name__)

SERVICES = tuple(sorted({step.service for step in saga.STEPS.values()}))
STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

STATE = Gauge(
    "vyapaar_circuit_breaker_state",
    "The operator's circuit breaker toward each service: 0 closed, 1 half-open (probing), "
    "2 open (new forward commands are held).",
    ["service"],
)
CHANGES = Counter(
    "vyapaar_circuit_breaker_transitions",
    "Changes of state of the circuit breakers, by service and the state entered.",
    ["service", "state"],
)
HELD = Counter(
    "vyapaar_circuit_breaker_held_commands",
    "Forward commands an open circuit breaker kept back (each waits, its attempt unused).",
    ["service"],
)
for _service in SERVICES:
    STATE.labels(_service).set(0)
    HELD.labels(_service)
    for _state in BreakerState:
        CHANGES.labels(_service, _state.value)


@dataclass(frozen=True)
class Change:
    """A breaker changed state: what the engine tells people, on the Order that did it."""

    service: str
    old: BreakerState
    new: BreakerState
    breaker: Breaker

    def transition(self, config: BreakerConfig) -> saga.Transition:
        if self.new is BreakerState.OPEN:
            until = self.breaker.probes_at(config)
            message = (f"{self.service}: {config.threshold} commands in a row got no reply"
                       if self.old is BreakerState.CLOSED else f"{self.service}: a probe got "
                       "no reply") + (f"; new forward commands to it wait until "
                                      f"{saga.format_time(until)}" if until else "")
            return saga.Transition("CircuitBreakerOpened", message, "Warning")
        if self.new is BreakerState.HALF_OPEN:
            return saga.Transition("CircuitBreakerHalfOpen",
                                   f"{self.service}: probing with {config.probes} command(s)")
        return saga.Transition("CircuitBreakerClosed",
                               f"{self.service} answers again; held commands go out")


class Breakers:
    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._breakers = {service: Breaker() for service in SERVICES}
        self._held: dict[str, set[OrderRef]] = {service: set() for service in SERVICES}

    def observe(self, before: saga.SagaState, event: saga.Event) -> list[Change]:
        """Learn from one applied saga event (its replies and timeouts)."""
        changes = []
        for service, answered in replies_and_timeouts(before, event):
            old = self._breakers[service]
            new = on_reply(old) if answered else on_timeout(old, event.now, self.config)
            changes += self._set(service, old, new)
        return changes

    def admit(self, service: str, now: datetime) -> tuple[bool, list[Change]]:
        """May a forward command to ``service`` go out now?"""
        old = self._breakers[service]
        allowed, new = admit(old, now, self.config)
        changes = self._set(service, old, new)
        if not allowed:
            HELD.labels(service).inc()
        return allowed, changes

    def hold(self, service: str, ref: OrderRef, now: datetime) -> datetime:
        """Note that ``ref`` waits for ``service``; when it should try again."""
        self._held[service].add(ref)
        return held_until(self._breakers[service], now, self.config)

    def release(self, service: str) -> set[OrderRef]:
        """The Orders that wait for ``service`` (once its breaker closed)."""
        held, self._held[service] = self._held[service], set()
        return held

    def _set(self, service: str, old: Breaker, new: Breaker) -> list[Change]:
        self._breakers[service] = new
        if old.state is new.state:
            return []
        STATE.labels(service).set(STATE_VALUE[new.state])
        CHANGES.labels(service, new.state.value).inc()
        change = Change(service, old.state, new.state, new)
        level = logging.WARNING if new.state is BreakerState.OPEN else logging.INFO
        log.log(level, "circuit breaker %s: %s -> %s (%s)", service, old.state.value,
                new.state.value, change.transition(self.config).message)
        return [change]


__all__ = ["Breakers", "Change"]
