"""The operator's Prometheus metrics (prefix ``vyapaar_saga_``; no per-order labels).

The engine feeds them through three calls only: :func:`observe_decision` after every applied
decision, and :func:`track_phase` / :func:`forget` with the phase it last saw of each Order.
Everything else -- outcomes, durations, compensations, retries, timeouts -- is derived here by
comparing the saga state before and after the decision, so the saga itself stays pure.

Labels are bounded: ``phase``, ``outcome`` and ``step`` are the saga's own names, ``reason``
is one of :data:`REASONS` (anything else becomes ``Other``), ``type`` is a contract message
type (or ``unknown``). Counters whose labels are known up front are created at zero, so the
first increment is visible to ``rate()`` and dashboards show 0 instead of "No data".

Stuck sagas are judged against a deadline derived from the operator's own retry settings
(:func:`saga_deadline`): the time the slowest successful saga may take, every forward stage
(reserve, pay, ship, complete) spending its whole retry budget. A saga still not finished
that long after it started is stuck -- typically a retriable step (commit, notify) whose
service never answers, or a compensation being retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from vyapaar_messaging.metrics import init_consumer, message_type_label
from vyapaar_messaging.topology import DEFAULT_TOPOLOGY

from vyapaar_operator import saga
from vyapaar_operator.orders import OrderRef

# ``*_created`` series double the series count and Prometheus 2 does not use them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

StepState = saga.StepState

OUTCOMES = (saga.Phase.COMPLETED, saga.Phase.FAILED, saga.Phase.CANCELLED)
"""Terminal phases that finish an order (CompensationFailed waits for a repair instead)."""
ACTIVE_PHASES = tuple(p for p in saga.Phase if p not in saga.TERMINAL_PHASES)
COMPENSATABLE = tuple(s.name for s in saga.STEPS.values() if s.compensation is not None)

REASONS = (
    # rejections by the services (contracts' reason codes, as the saga spells them)
    "OutOfStock", "UnknownSku", "AlreadyCompensated", "CardDeclined", "InsufficientFunds",
    "UndeliverableAddress", "FraudSuspected",
    # a step whose retry budget ran out (its outcome is unknown)
    *(s.timeout_reason for s in saga.STEPS.values() if s.timeout_reason),
    # cancellations
    "CancellationRequested", "DeletionRequested",
)  # fmt: skip
"""Why a saga turned around (the ``reason`` of its compensations)."""

SAGAS_STARTED = Counter(
    "vyapaar_saga_started",
    "Sagas started (or cancelled before they started), by the flow version they run on.",
    ["version"],
)
ORDERS_FINISHED = Counter(
    "vyapaar_saga_orders_finished",
    "Sagas that reached Completed, Failed or Cancelled, by outcome.",
    ["outcome"],
)
IN_FLIGHT = Gauge(
    "vyapaar_saga_in_flight",
    "Sagas known to this operator that are not terminal, by phase.",
    ["phase"],
)
AWAITING_REPAIR = Gauge(
    "vyapaar_saga_awaiting_repair",
    "Sagas stopped in CompensationFailed: a compensation ran out of retries; a human must "
    "repair its service and resume the saga (docs/saga.md).",
)
SAGA_DURATION = Histogram(
    "vyapaar_saga_duration_seconds",
    "From the saga's start to Completed, Failed or Cancelled, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
#: the ``outcome`` label values of a step's duration
STEP_OUTCOMES = ("succeeded", "rejected", "unknown")
STEP_DURATION = Histogram(
    "vyapaar_saga_step_duration_seconds",
    "From a step's first command to its settled outcome (retries included), by step and "
    "outcome (succeeded|rejected|unknown: no reply in its budget, or cancelled in flight).",
    ["step", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
COMPENSATIONS = Counter(
    "vyapaar_saga_compensations",
    "Compensations started, by step and the reason the saga turned around.",
    ["step", "reason"],
)
COMPENSATIONS_DONE = Counter(
    "vyapaar_saga_compensations_completed",
    "Compensations confirmed by their service, by step and result "
    "(undone|noop: nothing to undo, a tombstone now refuses a late forward command).",
    ["step", "result"],
)
COMPENSATION_FAILURES = Counter(
    "vyapaar_saga_compensation_failures",
    "Compensations that ran out of retries (the saga entered CompensationFailed), by step.",
    ["step"],
)
RETRIES = Counter(
    "vyapaar_saga_retries",
    "Commands sent again, by step, kind (forward|compensation) and reason "
    "(timeout: no reply before the deadline; recovery: re-sent after an operator restart; "
    "unpublished: published again after the broker did not take it, same attempt).",
    ["step", "kind", "reason"],
)
TIMEOUTS = Counter(
    "vyapaar_saga_timeouts",
    "Deadlines that passed without a reply (each one a retry, or the end of the step's budget), "
    "by step and kind (forward|compensation).",
    ["step", "kind"],
)
REPLIES = Counter(
    "vyapaar_saga_replies",
    "Replies from the services, by message type and result "
    "(applied|ignored: a duplicate, late or no longer relevant reply).",
    ["type", "result"],
)
COMMANDS = Counter(
    "vyapaar_saga_commands_published",
    "Commands published to the services, by message type and kind (forward|compensation).",
    ["type", "kind"],
)
EVENTS_PUBLISHED = Counter(
    "vyapaar_saga_events_published",
    "Domain events published to vyapaar.order-events (confirmed by the broker), by reason.",
    ["reason"],
)
TRANSITIONS = Counter(
    "vyapaar_saga_transitions",
    "Saga transitions (announced ones also become Kubernetes Events), by reason and type.",
    ["reason", "type"],
)
PAUSED = Gauge(
    "vyapaar_saga_paused",
    "Sagas held by spec.paused (not judged stuck while paused).",
)
QUEUED = Gauge(
    "vyapaar_saga_queued",
    "Orders waiting in Pending for a saga slot (the in-flight limit).",
)
IN_FLIGHT_LIMIT = Gauge(
    "vyapaar_saga_in_flight_limit",
    "Sagas this operator runs at once at most (0: no limit).",
)
STALE_EVENTS = Counter(
    "vyapaar_saga_stale_observations",
    "Watch events of an Order version this operator already had (its own writes' echoes and "
    "older ones), skipped.",
)
STATUS_CONFLICTS = Counter(
    "vyapaar_saga_status_conflicts",
    "Status writes refused with 409 Conflict (re-read and decided again).",
)


RETRY_REASONS = ("timeout", "recovery", "unpublished")


def _initialise() -> None:
    """Create every series whose labels are known, at zero."""
    for outcome in OUTCOMES:
        ORDERS_FINISHED.labels(outcome.value)
        # histograms too: the first saga to finish must show as an increase to rate()
        SAGA_DURATION.labels(outcome.value)
    for phase in ACTIVE_PHASES:
        IN_FLIGHT.labels(phase.value)
    for name, step in saga.STEPS.items():
        for step_outcome in STEP_OUTCOMES:
            STEP_DURATION.labels(name, step_outcome)
        TIMEOUTS.labels(name, "forward")
        for reason in RETRY_REASONS:
            RETRIES.labels(name, "forward", reason)
        if step.compensation is None:
            continue
        TIMEOUTS.labels(name, "compensation")
        COMPENSATION_FAILURES.labels(name)
        for reason in RETRY_REASONS:
            RETRIES.labels(name, "compensation", reason)
        for result in ("undone", "noop"):
            COMPENSATIONS_DONE.labels(name, result)
        for cause in REASONS:
            COMPENSATIONS.labels(name, cause)
        COMMANDS.labels(step.compensation, "compensation")
    replies: set[str] = set()
    for step in {s.command: s for s in saga.STEPS.values()}.values():
        COMMANDS.labels(step.command, "forward")
        replies.update(r for r in (step.success, step.rejection, step.compensation_reply) if r)
    for reply in replies:
        for result in ("applied", "ignored"):
            REPLIES.labels(reply, result)
    init_consumer(DEFAULT_TOPOLOGY.replies_queue, sorted(replies))


_initialise()


# --------------------------------------------------------------------------------------
# Phases seen by the engine
# --------------------------------------------------------------------------------------

_lock = threading.Lock()  # the scrape runs in prometheus_client's HTTP thread
_phases: dict[OrderRef, str] = {}
_awaiting_repair: set[OrderRef] = set()
AWAITING_REPAIR.set_function(lambda: len(_awaiting_repair))


def track_phase(ref: OrderRef, phase: str) -> None:
    """Keep the in-flight gauge equal to the phases this operator last saw."""
    if phase == saga.Phase.COMPENSATION_FAILED:
        _awaiting_repair.add(ref)
    else:
        _awaiting_repair.discard(ref)
    old = _phases.get(ref)
    if old == phase:
        return
    if old is not None and old not in saga.TERMINAL_PHASES:
        IN_FLIGHT.labels(old).dec()
    _phases[ref] = phase
    if phase not in saga.TERMINAL_PHASES:
        IN_FLIGHT.labels(phase).inc()


def forget(ref: OrderRef) -> None:
    """The engine stops following ``ref`` (it is terminal; one awaiting repair still counts)."""
    old = _phases.pop(ref, None)
    if old is not None and old not in saga.TERMINAL_PHASES:
        IN_FLIGHT.labels(old).dec()


# --------------------------------------------------------------------------------------
# Stuck sagas: age of every non-terminal saga, judged at scrape time
# --------------------------------------------------------------------------------------

_active: dict[str, tuple[str, float]] = {}
"""Order UID -> (phase, saga start as a Unix timestamp), for non-terminal sagas that run."""
_paused: set[str] = set()
"""Order UIDs of the sagas held by spec.paused."""
PAUSED.set_function(lambda: len(_paused))


def saga_deadline(config: saga.SagaConfig) -> float:
    """Seconds after its start by which a healthy saga has finished (see the module doc)."""
    budget = sum(
        config.forward_wait(attempt).total_seconds()
        for attempt in range(1, config.max_attempts + 1)
    )
    # the longest flow's steps before the pivot, one at a time, then commit+notify at once
    stages = max(len(flow.forward) for flow in saga.FLOWS.values()) + 1
    return stages * budget


class _SagaAgeCollector(Collector):
    """Stuck sagas, the oldest saga's age per phase, and the deadline they are judged by."""

    def __init__(self) -> None:
        self._deadline: float | None = None

    def deadline(self) -> float:
        if self._deadline is None:
            from vyapaar_operator.settings import OperatorSettings  # reads the environment

            self._deadline = saga_deadline(OperatorSettings().saga_config())
        return self._deadline

    def collect(self) -> Iterator[Metric]:
        deadline = self.deadline()
        now = time.time()
        with _lock:
            sagas = list(_active.values())
        stuck = {phase.value: 0 for phase in ACTIVE_PHASES}
        oldest = {phase.value: 0.0 for phase in ACTIVE_PHASES}
        for phase, started in sagas:
            age = max(now - started, 0.0)
            if phase not in oldest:
                continue
            oldest[phase] = max(oldest[phase], age)
            if age > deadline:
                stuck[phase] += 1
        stuck_family = GaugeMetricFamily(
            "vyapaar_saga_stuck",
            "Non-terminal sagas older than vyapaar_saga_deadline_seconds, by phase.",
            labels=["phase"],
        )
        age_family = GaugeMetricFamily(
            "vyapaar_saga_oldest_age_seconds",
            "Age of the oldest non-terminal saga in each phase (0: none in that phase).",
            labels=["phase"],
        )
        for phase in stuck:
            stuck_family.add_metric([phase], stuck[phase])
            age_family.add_metric([phase], oldest[phase])
        yield stuck_family
        yield age_family
        yield GaugeMetricFamily(
            "vyapaar_saga_deadline_seconds",
            "How long a saga may take before it counts as stuck (from the retry settings: every "
            "forward stage spending its whole retry budget).",
            value=deadline,
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected at scrape time; no describe-time work (no settings read)


AGES = _SagaAgeCollector()
prometheus_client.REGISTRY.register(AGES)


# --------------------------------------------------------------------------------------
# What one decision tells
# --------------------------------------------------------------------------------------

_SETTLED = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.COMPENSATED})
_UNDOING = frozenset({StepState.COMPENSATING, StepState.COMPENSATION_FAILED})
_STEP_OUTCOME = {StepState.SUCCEEDED: "succeeded", StepState.FAILED: "rejected"}


def _reason(reason: str) -> str:
    return reason if reason in REASONS else "Other"


def _timestamp(moment: datetime | None, default: float) -> float:
    return moment.timestamp() if moment is not None else default


def observe_decision(before: saga.SagaState, event: saga.Event, decision: saga.Decision,
                     *, changed: bool) -> None:
    """Everything the metrics learn from one applied decision (the engine's only hook).

    ``before`` is the state the decision was made from; ``changed`` says whether the status
    was written (nothing changed: nothing to compare, only an ignored reply to count).
    """
    after = decision.state
    if isinstance(event, saga.Reply):
        REPLIES.labels(message_type_label(event.message_type),
                       "applied" if changed and _reply_applied(before, after, event)
                       else "ignored").inc()
    with _lock:
        if after.is_terminal or after.is_paused:
            _active.pop(after.uid, None)
        else:
            _active[after.uid] = (after.phase.value,
                                  _timestamp(after.started_at, event.now.timestamp()))
        if after.is_paused:
            _paused.add(after.uid)
        else:
            _paused.discard(after.uid)
    if not changed:
        return
    _observe_steps(before, event, decision)
    if before.version is None and after.version is not None:
        SAGAS_STARTED.labels(str(after.version)).inc()
    if after.phase in OUTCOMES and before.phase != after.phase:
        ORDERS_FINISHED.labels(after.phase.value).inc()
        if after.started_at is not None and after.finished_at is not None:
            SAGA_DURATION.labels(after.phase.value).observe(
                (after.finished_at - after.started_at).total_seconds())


def _reply_applied(before: saga.SagaState, after: saga.SagaState, reply: saga.Reply) -> bool:
    """The reply moved its step to a settled state (not: a duplicate, late or stale reply)."""
    name = reply.idempotency_key.rpartition(":")[2]
    if not (before.has_step(name) and after.has_step(name)):
        return False
    old, new = before.step(name).state, after.step(name).state
    return old != new and new in _SETTLED


def _observe_steps(before: saga.SagaState, event: saga.Event, decision: saga.Decision) -> None:
    after = decision.state
    now = event.now
    newly_cancelled = after.cancel_requested and not before.cancel_requested
    for new in after.steps:
        old = before.step(new.name) if before.has_step(new.name) else saga.Step(new.name)
        if old == new:
            continue
        expired = old.deadline is not None and old.deadline <= now
        if (old.unsent and not new.unsent and new.waiting and new.state is old.state
                and not isinstance(event, saga.Recover)):  # that counts as a recovery
            kind = "compensation" if new.state is StepState.COMPENSATING else "forward"
            RETRIES.labels(new.name, kind, "unpublished").inc()
        # Forward: re-sent after a timeout; settled; given up on.
        if new.attempts > old.attempts >= 1:
            RETRIES.labels(new.name, "forward", "timeout").inc()
            TIMEOUTS.labels(new.name, "forward").inc()
        if old.state is StepState.IN_FLIGHT and new.state is not StepState.IN_FLIGHT:
            outcome = _STEP_OUTCOME.get(new.state, "unknown")
            # A check given up on is Failed, not Compensating (it has nothing to undo).
            check_given_up = (new.state is StepState.FAILED
                              and new.definition.kind is saga.StepKind.CHECK
                              and (newly_cancelled or not isinstance(event, saga.Reply)))
            if check_given_up:
                outcome = "unknown"
            if ((new.state is StepState.COMPENSATING or check_given_up) and expired
                    and not newly_cancelled):
                TIMEOUTS.labels(new.name, "forward").inc()  # the last attempt's deadline
            if new.started_at is not None and new.finished_at is not None:
                STEP_DURATION.labels(new.name, outcome).observe(
                    (new.finished_at - new.started_at).total_seconds())
        # Compensation: started; re-sent after a timeout; given up on; confirmed.
        if new.state is StepState.COMPENSATING and old.state not in _UNDOING:
            COMPENSATIONS.labels(new.name, _reason(after.reason)).inc()
        if (new.compensation_attempts > old.compensation_attempts >= 1
                and old.state is StepState.COMPENSATING):
            RETRIES.labels(new.name, "compensation", "timeout").inc()
            TIMEOUTS.labels(new.name, "compensation").inc()
        if new.state is StepState.COMPENSATION_FAILED and old.state is not new.state:
            TIMEOUTS.labels(new.name, "compensation").inc()
            COMPENSATION_FAILURES.labels(new.name).inc()
        if new.state is StepState.COMPENSATED and old.state in _UNDOING:
            COMPENSATIONS_DONE.labels(new.name, "noop" if new.compensation_noop else "undone").inc()
    if isinstance(event, saga.Recover):
        for command in decision.commands:
            # A command re-sent as it was (same attempt) after a restart, not a new attempt.
            if not before.has_step(command.step):
                continue
            was = before.step(command.step)
            sent = was.compensation_attempts if command.compensation else was.attempts
            if command.attempt == sent and sent >= 1:
                kind = "compensation" if command.compensation else "forward"
                RETRIES.labels(command.step, kind, "recovery").inc()
