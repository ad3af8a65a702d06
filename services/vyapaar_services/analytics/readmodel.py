"""The rules of the read model that need no database: what an event means for it.

Step outcomes are defined by the message contracts, not by a list of the saga's reasons: a
step's event is named after the service's reply when there was one (``PaymentCaptured``,
``StockRejected``, ``PaymentRefunded``), and :data:`vyapaar_messaging.contracts.REPLIES`
says what each reply answers. For an event tagged with a step:

* **compensated** — its reason is the reply of a compensation command (``StockReleased``,
  ``PaymentRefunded``, ``ShipmentVoided``);
* **succeeded** — its reason is the success reply of any other command (``StockReserved``,
  ``FraudCheckPassed``, ``PaymentCaptured``, ``ShipmentCreated``, ``StockCommitted``,
  ``NotificationSent``);
* **failed** — otherwise, when its severity is ``Warning``: a refusal (``PaymentDeclined``),
  a retry after no reply (``Retrying``), a command that could not be sent, a compensation
  retried or given up (``CompensationFailed``). Its reason is the failure reason;
* otherwise it counts as none of these (``CommandHeld``: a breaker held the command).

A **forward outcome** is the reply, success or refusal, of a command that is not a
compensation: how long it took (``occurred_at - step_started_at``) is the step's duration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal

from vyapaar_messaging import contracts

__all__ = [
    "TERMINAL_PHASES",
    "Outcome",
    "OutcomeReasons",
    "StepCount",
    "StepDurations",
    "revenue_day",
    "split_subject",
    "summarise_steps",
]

TERMINAL_PHASES: Final = frozenset({"Completed", "Failed", "Cancelled"})
"""Phases an order never leaves: the first event in one of them finishes the order.
``CompensationFailed`` is not one: a repaired saga resumes compensating."""

Outcome = Literal["succeeded", "failed", "compensated"]


def split_subject(subject: str) -> tuple[str | None, str | None]:
    """``"shop/order-1"`` -> ``("shop", "order-1")``; no namespace -> ``(None, name)``."""
    namespace, slash, name = subject.partition("/")
    if not slash:
        return None, subject or None
    return namespace or None, name or None


def revenue_day(occurred_at: datetime) -> date:
    """The UTC day an event's money counts for."""
    return occurred_at.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class OutcomeReasons:
    """Reasons that classify a step's events (see the module docstring)."""

    succeeded: frozenset[str]
    compensated: frozenset[str]
    forward: frozenset[str]

    @classmethod
    def from_contracts(cls) -> OutcomeReasons:
        def is_compensation(reply: contracts.ReplySpec) -> bool:
            return contracts.COMMANDS[reply.command].kind is contracts.CommandKind.COMPENSATION

        replies = contracts.REPLIES.values()
        return cls(
            succeeded=frozenset(r.type for r in replies if r.ok and not is_compensation(r)),
            compensated=frozenset(r.type for r in replies if is_compensation(r)),
            forward=frozenset(r.type for r in replies if not is_compensation(r)),
        )

    def classify(self, reason: str, severity: str) -> Outcome | None:
        if reason in self.compensated:
            return "compensated"
        if reason in self.succeeded:
            return "succeeded"
        if severity == "Warning":
            return "failed"
        return None


@dataclass(frozen=True, slots=True)
class StepCount:
    """How many events of ``step`` had this reason and severity."""

    step: str
    reason: str
    severity: str
    count: int


@dataclass(frozen=True, slots=True)
class StepDurations:
    """Durations (seconds) of a step's forward outcomes that say when the step started."""

    step: str
    count: int
    avg: float | None
    p50: float | None
    p95: float | None


def summarise_steps(
    counts: Iterable[StepCount],
    durations: Iterable[StepDurations],
    reasons: OutcomeReasons,
) -> list[dict[str, Any]]:
    """Per step (sorted by name): outcome counts, durations and failure reasons by count."""
    timing: Mapping[str, StepDurations] = {d.step: d for d in durations}
    steps: dict[str, dict[str, Any]] = {}
    failures: dict[str, dict[str, int]] = {}
    for row in counts:
        entry = steps.setdefault(row.step, {"succeeded": 0, "failed": 0, "compensated": 0})
        outcome = reasons.classify(row.reason, row.severity)
        if outcome is None:
            continue
        entry[outcome] += row.count
        if outcome == "failed":
            by_reason = failures.setdefault(row.step, {})
            by_reason[row.reason] = by_reason.get(row.reason, 0) + row.count
    for step in timing.keys() - steps.keys():
        steps[step] = {"succeeded": 0, "failed": 0, "compensated": 0}
    summary = []
    for step in sorted(steps):
        duration = timing.get(step)
        failure_reasons = sorted(failures.get(step, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        summary.append({
            "step": step,
            **steps[step],
            "duration": {
                "count": duration.count if duration else 0,
                "avgSeconds": duration.avg if duration else None,
                "p50Seconds": duration.p50 if duration else None,
                "p95Seconds": duration.p95 if duration else None,
            },
            "failureReasons": [{"reason": r, "count": n} for r, n in failure_reasons],
        })
    return summary
