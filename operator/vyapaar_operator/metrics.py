"""The operator's Prometheus metrics (prefix ``vyapaar_saga_``; no per-order labels)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from vyapaar_operator import saga
from vyapaar_operator.orders import OrderRef

ORDERS_FINISHED = Counter(
    "vyapaar_saga_orders_finished_total",
    "Sagas that reached a terminal phase, by outcome.",
    ["outcome"],
)
IN_FLIGHT = Gauge(
    "vyapaar_saga_in_flight",
    "Sagas known to this operator that are not terminal, by phase.",
    ["phase"],
)
SAGA_DURATION = Histogram(
    "vyapaar_saga_duration_seconds",
    "From the saga's start to its terminal phase, by outcome.",
    ["outcome"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
REPLIES = Counter(
    "vyapaar_saga_replies_total",
    "Replies consumed from the services, by message type and what became of them.",
    ["type", "result"],
)
COMMANDS = Counter(
    "vyapaar_saga_commands_published_total",
    "Commands published to the services, by message type and kind.",
    ["type", "kind"],
)
TRANSITIONS = Counter(
    "vyapaar_saga_transitions_total",
    "Saga transitions recorded as Kubernetes Events, by reason and type.",
    ["reason", "type"],
)
STATUS_CONFLICTS = Counter(
    "vyapaar_saga_status_conflicts_total",
    "Status writes refused with 409 Conflict (re-read and decided again).",
)

_phases: dict[OrderRef, str] = {}


def track_phase(ref: OrderRef, phase: str) -> None:
    """Keep the in-flight gauge equal to the phases this operator last saw."""
    old = _phases.get(ref)
    if old == phase:
        return
    if old is not None and old not in saga.TERMINAL_PHASES:
        IN_FLIGHT.labels(old).dec()
    _phases[ref] = phase
    if phase not in saga.TERMINAL_PHASES:
        IN_FLIGHT.labels(phase).inc()


def forget(ref: OrderRef) -> None:
    old = _phases.pop(ref, None)
    if old is not None and old not in saga.TERMINAL_PHASES:
        IN_FLIGHT.labels(old).dec()


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


def observe_decision(before: saga.SagaState, event: saga.Event, decision: saga.Decision,
                     *, changed: bool) -> None:
    """Everything the metrics learn from one applied decision (the engine's only hook)."""
    if isinstance(event, saga.Reply):
        REPLIES.labels(event.message_type, "applied" if changed else "ignored").inc()
    if decision.state.is_terminal and not before.is_terminal:
        observe_finished(decision.state)


def observe_finished(state: saga.SagaState) -> None:
    ORDERS_FINISHED.labels(state.phase).inc()
    status = state.to_status()
    started, finished = _parse(status.get("startedAt")), _parse(status.get("finishedAt"))
    if started and finished:
        SAGA_DURATION.labels(state.phase).observe((finished - started).total_seconds())
