"""Circuit breakers toward the services, as a pure state machine (no I/O, no clock).

When a service's commands keep getting no reply, sending it more only burns the sagas'
retry budgets and ends in compensations. A breaker per service counts commands whose
deadline passed without a reply; after ``threshold`` in a row it **opens**: new forward
commands to that service are held (each saga waits at its step, its attempt not used,
see ``saga.Held``) for a ``cooldown``. Then it lets a few ``probes`` through
(**half-open**); a reply closes it, another timeout opens it again. Compensations are never
held: undoing must always be possible.

Why not a library: the breakers of PyPI (pybreaker, aiobreaker, purgatory) wrap a call and
judge it by its exception. Here a "call" is a message whose outcome arrives later, on
another path, or never -- the saga's deadlines say when it failed, its replies when it
worked. What is left is this small state machine, pure and tested like ``saga.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from vyapaar_operator import saga


class BreakerState(StrEnum):
    CLOSED = "closed"
    """Commands go out; consecutive timeouts are counted."""
    OPEN = "open"
    """Forward commands are held until the cooldown has passed."""
    HALF_OPEN = "half-open"
    """A few probes go out; the first reply closes it, a timeout opens it again."""


@dataclass(frozen=True)
class BreakerConfig:
    threshold: int = 5
    """Commands in a row without a reply that open the breaker (0: breakers off)."""
    cooldown: timedelta = timedelta(seconds=30)
    """How long an open breaker holds forward commands before it probes."""
    probes: int = 3
    """Forward commands let through while half-open."""

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.probes < 1 or self.cooldown <= timedelta(0):
            raise ValueError("breaker threshold >= 0, probes >= 1, cooldown > 0")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    """Commands in a row that got no reply (counted while closed)."""
    opened_at: datetime | None = None
    probes_sent: int = 0

    def probes_at(self, config: BreakerConfig) -> datetime | None:
        """When an open breaker lets its probes through (None unless open)."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return None
        return self.opened_at + config.cooldown


def on_timeout(breaker: Breaker, now: datetime, config: BreakerConfig) -> Breaker:
    """A command to the service got no reply before its deadline."""
    if not config.enabled:
        return breaker
    if breaker.state is BreakerState.HALF_OPEN:
        return Breaker(BreakerState.OPEN, opened_at=now)
    if breaker.state is BreakerState.OPEN:
        return breaker  # a command sent before it opened: the cooldown stands
    failures = breaker.failures + 1
    if failures >= config.threshold:
        return Breaker(BreakerState.OPEN, opened_at=now)
    return replace(breaker, failures=failures)


def on_reply(breaker: Breaker) -> Breaker:
    """The service answered (whatever it said): it works."""
    return Breaker()


def admit(breaker: Breaker, now: datetime, config: BreakerConfig) -> tuple[bool, Breaker]:
    """May a forward command go out now? (and the breaker after deciding it)"""
    if not config.enabled or breaker.state is BreakerState.CLOSED:
        return True, breaker
    if breaker.state is BreakerState.OPEN:
        probes_at = breaker.probes_at(config)
        if probes_at is not None and now < probes_at:
            return False, breaker
        breaker = Breaker(BreakerState.HALF_OPEN, opened_at=breaker.opened_at)
    if breaker.probes_sent < config.probes:
        return True, replace(breaker, probes_sent=breaker.probes_sent + 1)
    return False, breaker


def held_until(breaker: Breaker, now: datetime, config: BreakerConfig) -> datetime:
    """When a command held now should be tried again: when the breaker probes, or (probes
    already out) a cooldown later -- sooner if it closes meanwhile (the engine wakes it)."""
    return breaker.probes_at(config) or now + config.cooldown


def replies_and_timeouts(before: saga.SagaState, event: saga.Event
                         ) -> Iterator[tuple[str, bool]]:
    """What one saga event says of the services: (service, answered) -- a reply says it
    answered; a tick past the deadline of a command in flight says it did not."""
    if isinstance(event, saga.Reply):
        name = event.idempotency_key.rpartition(":")[2]
        if name in saga.STEPS:
            yield saga.STEPS[name].service, True
    elif isinstance(event, saga.Tick):  # not Recover: replies may wait in the queue
        for step in before.steps:
            if (step.waiting and not step.unsent and step.deadline is not None
                    and step.deadline <= event.now):
                yield step.definition.service, False


__all__ = [
    "Breaker",
    "BreakerConfig",
    "BreakerState",
    "admit",
    "held_until",
    "on_reply",
    "on_timeout",
    "replies_and_timeouts",
]
