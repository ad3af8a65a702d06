"""The invariants of design.md, checked from the services' own records (pure).

Not from the operator's view: what the Order's status says is what the saga believes; the
ledger, the processor's record, the stock, the shipments and the notifications are what
happened. :func:`check` takes those facts, gathered after quiescence, and returns one
:class:`Verdict` per invariant, each with the evidence of every violation it found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .plan import PlannedOrder

FINISHED = ("Completed", "Failed", "Cancelled")


@dataclass
class OrderFacts:
    """One order of the run: what the apiserver says of it and what each service holds."""

    planned: PlannedOrder
    uid: str | None = None
    """None if it was never created (the create call failed)."""
    phase: str | None = None
    """None once it is gone (deleted; its finalizer released)."""
    final_phase: str | None = None
    """The last phase it was seen in (for a deleted order: how it ended before it went)."""
    reason: str = ""
    total: int = 0
    items: Mapping[str, int] = field(default_factory=dict)
    finished_at: float | None = None
    """Unix time of status.finishedAt."""
    created_at: float = 0.0
    """Unix time the create call returned."""
    ledger: Sequence[Mapping[str, Any]] = ()
    processor: Sequence[Mapping[str, Any]] = ()
    shipments: Sequence[Mapping[str, Any]] = ()
    notifications: Sequence[Mapping[str, Any]] = ()

    @property
    def completed(self) -> bool:
        """Completed -- a deleted order too, if it had completed before it was deleted (a
        deletion after the pivot undoes nothing)."""
        return (self.phase or self.final_phase) == "Completed"

    @property
    def label(self) -> str:
        state = self.phase or f"deleted after {self.final_phase or 'nothing'}"
        return f"{self.planned.name} ({self.planned.kind}, {state})"


@dataclass(frozen=True)
class StockFacts:
    initial: int
    available: int
    held: int
    committed: int


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    reason: str
    message_type: str
    explained_by: str | None
    """The fault that injected it (a poison message), or None: nobody expected it."""


@dataclass(frozen=True)
class Verdict:
    name: str
    violations: tuple[str, ...]
    checked: str

    @property
    def held(self) -> bool:
        return not self.violations


def _money(entries: Sequence[Mapping[str, Any]], kind: str, key: str = "kind") -> int:
    return sum(int(e["amount"]) for e in entries if e[key] == kind)


def _verdict(name: str, violations: list[str], checked: str) -> Verdict:
    return Verdict(name, tuple(violations), checked)


def check(orders: Sequence[OrderFacts], stock: Mapping[str, StockFacts],
          outbox_pending: Mapping[str, int], dead_letters: Sequence[DeadLetter], *,
          faults_end: float, bound: float) -> list[Verdict]:
    created = [o for o in orders if o.uid is not None]
    verdicts = []

    stuck = [o.label for o in created
             if not (o.phase in FINISHED or (o.phase is None and o.planned.kind == "delete"))]
    verdicts.append(_verdict("every order terminal", stuck,
                             f"{len(created)} orders (deleted ones gone)"))
    # the bound runs from the end of the faults, or from its creation if that came later
    late = [f"{o.label}: {o.finished_at - max(faults_end, o.created_at):.1f}s after the "
            "faults stopped" for o in created
            if o.finished_at is not None and o.finished_at - max(faults_end, o.created_at) > bound]
    verdicts.append(_verdict(f"terminal within {bound:g}s of the last fault", late,
                             f"{sum(o.finished_at is not None for o in created)} finish times"))

    doubled = []
    unrefunded = []
    mismatched = []
    for o in created:
        charges = [e for e in o.ledger if e["kind"] == "charge"]
        captures = [p for p in o.processor if p["outcome"] == "captured"]
        if len(charges) > 1 or len(captures) > 1:
            doubled.append(f"{o.label}: {len(captures)} captures, {len(charges)} ledger charges")
        charged, refunded = _money(o.ledger, "charge"), _money(o.ledger, "refund")
        if o.completed and (charged != o.total or refunded):
            unrefunded.append(f"{o.label}: charged {charged} of {o.total}, refunded {refunded}")
        elif not o.completed and charged != refunded:
            unrefunded.append(f"{o.label}: charged {charged}, refunded {refunded}")
        outside = (_money(o.processor, "captured", "outcome"),
                   _money(o.processor, "refunded", "outcome"))
        if outside != (charged, refunded):
            mismatched.append(f"{o.label}: processor moved {outside}, ledger shows "
                              f"{(charged, refunded)}")
    verdicts.append(_verdict("at most one capture per order", doubled,
                             "the processor's record and the ledger"))
    verdicts.append(_verdict("refunds equal captures unless completed", unrefunded,
                             "ledger per order"))
    verdicts.append(_verdict("no money moved that the ledger does not show", mismatched,
                             "processor record vs ledger, per order"))
    net = sum(_money(o.ledger, "charge") - _money(o.ledger, "refund") for o in created)
    owed = sum(o.total for o in created if o.completed)
    verdicts.append(_verdict("ledger balances to the cent",
                             [] if net == owed else [f"net {net} vs completed totals {owed}"],
                             f"net {net} = completed totals {owed}"))

    committed: Counter[str] = Counter()
    for o in created:
        if o.completed:
            committed.update(o.items)
    unbalanced = []
    for sku, s in sorted(stock.items()):
        if s.available + s.held + s.committed != s.initial:
            unbalanced.append(f"{sku}: {s.initial} != {s.available} available + {s.held} held "
                              f"+ {s.committed} committed")
        if s.held:
            unbalanced.append(f"{sku}: {s.held} still held at quiescence")
        if s.committed != committed[sku]:
            unbalanced.append(f"{sku}: {s.committed} committed, completed orders took "
                              f"{committed[sku]}")
    verdicts.append(_verdict("stock conserved, nothing held", unbalanced,
                             f"{len(stock)} SKUs"))

    shipped = []
    confirmed = []
    for o in created:
        live = [s for s in o.shipments if s["status"] == "created"]
        if len(live) != (1 if o.completed else 0):
            shipped.append(f"{o.label}: {len(live)} live shipments")
        sent = [n for n in o.notifications if n["template"] == "order-confirmed"]
        if len(sent) != (1 if o.completed else 0):
            confirmed.append(f"{o.label}: {len(sent)} confirmations")
    verdicts.append(_verdict("one shipment per completed order, none for the others", shipped,
                             "shipments per order"))
    verdicts.append(_verdict("one confirmation per completed order, none for the others",
                             confirmed, "notifications per order"))

    verdicts.append(_verdict("outboxes drained",
                             [f"{s}: {n} unsent" for s, n in sorted(outbox_pending.items()) if n],
                             f"{len(outbox_pending)} services"))
    unexplained = [f"{d.queue}: a {d.message_type} dead-lettered ({d.reason}) by no fault"
                   for d in dead_letters if d.explained_by is None]
    verdicts.append(_verdict("every dead letter explained", unexplained,
                             f"{len(dead_letters)} dead-lettered during the run"))
    return verdicts
