"""The invariant checker: silent on a run where everything is right, and naming each
violation when something is wrong (so a green verdict means something)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from vyapaar_stack.chaos.invariants import (
    DeadLetter,
    OrderFacts,
    StockFacts,
    Verdict,
    check,
)
from vyapaar_stack.chaos.plan import PlannedOrder

END = 1_000_000.0


def completed(name: str = "c1", total: int = 1000) -> OrderFacts:
    return OrderFacts(
        PlannedOrder(name, "normal", "SKU-A", 1, total, 0.0), uid=f"uid-{name}",
        phase="Completed", total=total, items={"SKU-A": 1}, finished_at=END + 5,
        ledger=[{"kind": "charge", "amount": total, "id": f"ch_{name}"}],
        processor=[{"operation": "charge", "outcome": "captured", "amount": total,
                    "id": f"ch_{name}"}],
        shipments=[{"status": "created"}], notifications=[{"template": "order-confirmed"}])


def failed_after_charge(name: str = "f1", total: int = 700) -> OrderFacts:
    return OrderFacts(
        PlannedOrder(name, "undeliverable", "SKU-A", 1, total, 0.0), uid=f"uid-{name}",
        phase="Failed", total=total, items={"SKU-A": 1}, finished_at=END + 8,
        ledger=[{"kind": "charge", "amount": total, "id": "ch"},
                {"kind": "refund", "amount": total, "id": "re"}],
        processor=[{"operation": "charge", "outcome": "captured", "amount": total, "id": "ch"},
                   {"operation": "refund", "outcome": "refunded", "amount": total, "id": "re"}],
        shipments=[{"status": "rejected"}], notifications=[{"template": "order-failed"}])


def run_check(orders: list[OrderFacts], *, stock: dict[str, StockFacts] | None = None,
              pending: dict[str, int] | None = None,
              dead: list[DeadLetter] | None = None) -> dict[str, Verdict]:
    verdicts = check(orders, stock or {"SKU-A": StockFacts(5, 4, 0, 1)},
                     pending or {"payment": 0}, dead or [], faults_end=END, bound=60)
    return {v.name: v for v in verdicts}


def violated(verdicts: dict[str, Verdict]) -> dict[str, tuple[str, ...]]:
    return {name: v.violations for name, v in verdicts.items() if not v.held}


def test_a_run_where_everything_is_right_holds_every_invariant() -> None:
    verdicts = run_check([completed(), failed_after_charge()])
    assert violated(verdicts) == {}
    assert len(verdicts) == 11


def test_a_second_capture_is_a_double_charge_even_if_the_ledger_shows_one() -> None:
    order = completed()
    order.processor = [*order.processor, {"operation": "charge", "outcome": "captured",
                                          "amount": 1000, "id": "ch_again"}]
    found = violated(run_check([order]))
    assert "at most one capture per order" in found
    assert "no money moved that the ledger does not show" in found


def test_a_failed_order_that_kept_its_money_is_caught() -> None:
    order = failed_after_charge()
    order.ledger = order.ledger[:1]
    order.processor = order.processor[:1]
    found = violated(run_check([order], stock={"SKU-A": StockFacts(5, 5, 0, 0)}))
    assert found["refunds equal captures unless completed"] == (
        "f1 (undeliverable, Failed): charged 700, refunded 0",)
    assert "ledger balances to the cent" in found


def test_stock_that_leaked_or_stayed_held_is_caught() -> None:
    found = violated(run_check([completed()], stock={"SKU-A": StockFacts(5, 3, 1, 1)}))
    assert found["stock conserved, nothing held"] == ("SKU-A: 1 still held at quiescence",)
    found = violated(run_check([completed()], stock={"SKU-A": StockFacts(5, 3, 0, 1)}))
    assert "SKU-A: 5 != 3 available + 0 held + 1 committed" in found[
        "stock conserved, nothing held"]


@pytest.mark.parametrize(("change", "invariant"), [
    ({"phase": "Paying"}, "every order terminal"),
    ({"phase": "CompensationFailed"}, "every order terminal"),
    ({"finished_at": END + 61}, "terminal within 60s of the last fault"),
    ({"shipments": []}, "one shipment per completed order, none for the others"),
    ({"notifications": [{"template": "order-confirmed"}] * 2},
     "one confirmation per completed order, none for the others"),
])
def test_each_broken_promise_to_a_completed_order_is_named(change: dict[str, Any],
                                                           invariant: str) -> None:
    found = violated(run_check([replace(completed(), **change)]))
    assert invariant in found


def test_a_deleted_order_is_gone_not_stuck() -> None:
    deleted = OrderFacts(PlannedOrder("d1", "delete", "SKU-A", 1, 100, 0.0, 1.0),
                         uid="uid-d1", phase=None)
    vanished = replace(deleted, planned=replace(deleted.planned, kind="normal"))
    assert violated(run_check([completed(), deleted])) == {}
    assert "every order terminal" in violated(run_check([completed(), vanished]))


def test_undrained_outboxes_and_unexplained_dead_letters_are_caught() -> None:
    found = violated(run_check(
        [completed()], pending={"payment": 0, "shipping": 2},
        dead=[DeadLetter("payment.commands", "poison", "poison", "poison fault"),
              DeadLetter("operator.replies", "exhausted", "PaymentCaptured", None)]))
    assert found["outboxes drained"] == ("shipping: 2 unsent",)
    assert found["every dead letter explained"] == (
        "operator.replies: a PaymentCaptured dead-lettered (exhausted) by no fault",)


def test_an_order_deleted_after_it_completed_keeps_what_it_bought() -> None:
    """A deletion after the pivot undoes nothing: its charge, shipment and stock stay."""
    deleted = replace(completed("d2"), planned=PlannedOrder("d2", "delete", "SKU-A", 1, 1000,
                                                            0.0, 3.0),
                      phase=None, final_phase="Completed")
    assert violated(run_check([deleted])) == {}
    refunded_first = replace(deleted, final_phase="Cancelled")
    assert "refunds equal captures unless completed" in violated(run_check([refunded_first]))
