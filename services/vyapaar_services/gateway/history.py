"""An order's phase history, read from its status: what the event stream sends.

The operator keeps the status small: it records when each step *started*, and the
timeline records only what did not go as planned (failures, compensations, the outcome).
Together they say when the order entered each phase, so the gateway can tell the whole
story from any one version of the object -- not only from the versions it happened to see:

* ``Pending`` when the Order was created;
* ``Reserving``, ``CheckingFraud`` (saga version 2), ``Paying``, ``Shipping`` when
  ``reserve``, ``fraud-check``, ``pay``, ``ship`` started, and ``Completing`` when the
  steps after the pivot (``commit``) started;
* ``Compensating``, ``CompensationFailed``, ``Failed``, ``Cancelled``, ``Completed`` at the
  timeline entries that announce them.

Each fact is written once and never changes, so the history of a later version extends
the history of an earlier one: the n-th transition is the same whenever it is read. That
is what lets a stream resume from ``Last-Event-ID: n`` with no gap and no repeat. (Were
the timeline ever cut at its 100 entries, the oldest compensation lines would go; the
current phase is then still the last entry.)

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["TERMINAL_PHASES", "Transition", "cancellation_refusal", "phase_history"]

TERMINAL_PHASES: Final = frozenset({"Completed", "Failed", "Cancelled", "CompensationFailed"})
_STARTS: Final = (("reserve", "Reserving"), ("fraud-check", "CheckingFraud"),
                  ("pay", "Paying"), ("ship", "Shipping"), ("commit", "Completing"))
#: timeline reasons that move the order to another phase
_ANNOUNCED: Final = {
    "CompensationStarted": "Compensating",
    "CompensationResumed": "Compensating",
    "CompensationFailed": "CompensationFailed",
    "OrderCompleted": "Completed",
    "OrderFailed": "Failed",
    "OrderCancelled": "Cancelled",
}
_PAST_PIVOT: Final = frozenset({"Completing", "Completed"})


@dataclass(frozen=True, slots=True)
class Transition:
    """The order entered ``phase`` at ``time`` (RFC 3339), for ``reason``."""

    seq: int
    phase: str
    time: str
    reason: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "phase": self.phase, "time": self.time,
                "reason": self.reason, "message": self.message}


def phase_history(order: Mapping[str, Any]) -> list[Transition]:
    """Every phase ``order`` has entered, oldest first, numbered from 1."""
    meta = order.get("metadata") or {}
    status = order.get("status") or {}
    steps = status.get("steps") or {}
    facts: list[tuple[str, int, str, str, str]] = []  # (time, rank, phase, reason, message)
    for name, phase in _STARTS:
        started = (steps.get(name) or {}).get("startedAt")
        if started:
            facts.append((_sortable(started), 0, phase, _START_REASON[phase], ""))
    for entry in status.get("timeline") or ():
        announced = _ANNOUNCED.get(str(entry.get("reason")))
        if announced is not None:
            facts.append((_sortable(str(entry["time"])), 1, announced, str(entry["reason"]),
                          str(entry.get("message") or "")))
    facts.sort(key=lambda f: (f[0], f[1]))
    created = str(meta.get("creationTimestamp") or "")
    entries = [("Pending", created, "Created", "")]
    for when, _, phase, reason, message in facts:
        if phase != entries[-1][0]:
            entries.append((phase, _display(when), reason, message))
    current = status.get("phase")
    if current and current != entries[-1][0]:  # a fact the status no longer holds
        when = status.get("finishedAt") or entries[-1][1]
        entries.append((str(current), str(when), str(status.get("reason") or ""),
                        str(status.get("message") or "")))
    return [Transition(i, p, t, r, m) for i, (p, t, r, m) in enumerate(entries, start=1)]


_START_REASON: Final = {"Reserving": "ReservingStock", "CheckingFraud": "CheckingFraud",
                        "Paying": "ChargingPayment",
                        "Shipping": "CreatingShipment", "Completing": "ShipmentCreated"}


def _sortable(time: str) -> str:
    """RFC 3339 UTC times compare as text once they carry the same fraction digits."""
    head, _, rest = time.rstrip("Z").partition(".")
    return f"{head}.{(rest or '').ljust(6, '0')[:6]}Z"


def _display(sortable: str) -> str:
    head, _, fraction = sortable.rstrip("Z").partition(".")
    millis = fraction[:3]
    return f"{head}.{millis}Z" if millis.strip("0") else f"{head}Z"


def cancellation_refusal(order: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why ``order`` can no longer be cancelled (problem type, detail), or None if it can.

    Past the pivot the shipment exists and the saga refuses a cancellation, as it does in
    a finished order; asking again for one already asked is fine (idempotent).
    """
    status = order.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    if (order.get("spec") or {}).get("cancel") or status.get("cancelRequested"):
        return None
    if phase in _PAST_PIVOT:
        return ("past-pivot", "The shipment was already created, so the order can no "
                f"longer be cancelled (phase {phase}).")
    if phase == "Compensating":
        return ("order-rolling-back", "The order is already being rolled back "
                f"({status.get('reason')}); it will end Failed.")
    if phase in TERMINAL_PHASES:
        return ("order-finished", f"The order is already {phase}: there is nothing to cancel.")
    return None
