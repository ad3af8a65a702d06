"""The in-flight limit's bookkeeping: who may start, who waits, and in which order."""

from __future__ import annotations

import asyncio

import pytest
from vyapaar_operator.admission import Admission
from vyapaar_operator.orders import OrderRef


def order(name: str, created: str) -> tuple[OrderRef, dict[str, object]]:
    return OrderRef("shop", name), {"metadata": {"name": name, "creationTimestamp": created}}


def test_without_a_limit_every_saga_starts() -> None:
    admission = Admission(0)
    for i in range(100):
        assert admission.admit(*order(f"o{i}", "2026-12-01T00:00:00Z"))
    assert admission.queued == 0


def test_beyond_the_limit_orders_queue_and_start_in_creation_order() -> None:
    admission = Admission(2)
    first, second, third, fourth = (order(n, f"2026-12-01T00:00:0{i}Z")
                                    for i, n in enumerate(("a", "b", "c", "d")))
    assert admission.admit(*second) and admission.admit(*first)
    assert not admission.admit(*fourth)
    assert not admission.admit(*third)  # created earlier than the fourth: ahead of it
    assert (admission.running, admission.queued) == (2, 2)

    admission.forget(first[0])
    assert not admission.admit(*fourth)  # not its turn: the third is older
    assert admission.admit(*third)
    admission.forget(second[0])
    assert admission.admit(*fourth)
    assert (admission.running, admission.queued) == (2, 0)


def test_orders_created_in_the_same_second_start_in_the_order_they_were_seen() -> None:
    admission = Admission(1)
    running, later, earlier = (order(n, "2026-12-01T00:00:00Z") for n in ("r", "z", "a"))
    assert admission.admit(*running)
    assert not admission.admit(*later)
    assert not admission.admit(*earlier)
    admission.forget(running[0])
    assert admission.head() == later[0]


def test_a_saga_seen_running_holds_a_slot_and_a_gone_order_leaves_the_queue() -> None:
    admission = Admission(1)
    resumed, waiting, gone = (order(n, f"2026-12-01T00:00:0{i}Z")
                              for i, n in enumerate(("r", "w", "g")))
    admission.observe_running(resumed[0])  # e.g. found mid-saga after a restart
    assert not admission.admit(*gone) and not admission.admit(*waiting)
    admission.forget(gone[0])  # deleted while queued
    admission.forget(resumed[0])
    assert admission.head() == waiting[0]


async def test_next_to_start_waits_for_a_free_slot() -> None:
    admission = Admission(1)
    running, waiting = order("r", "2026-12-01T00:00:00Z"), order("w", "2026-12-01T00:00:01Z")
    assert admission.admit(*running)
    assert not admission.admit(*waiting)
    pending = asyncio.create_task(admission.next_to_start())
    await asyncio.sleep(0.05)
    assert not pending.done()
    admission.forget(running[0])
    assert await asyncio.wait_for(pending, 1) == waiting[0]


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="in-flight limit"):
        Admission(-1)
