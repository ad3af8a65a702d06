"""A chaos plan is decided before the run, from a seed: the same seed, the same run."""

from __future__ import annotations

import itertools

import pytest
from vyapaar_stack.chaos.plan import (
    EMPTY_SKU,
    FAULT_KINDS,
    SCENARIOS,
    TARGETS,
    Fault,
    make_plan,
)


def test_the_same_seed_plans_the_same_orders_and_faults() -> None:
    first = make_plan(seed=7, orders=200, rate=10, skus=3, scenario=None, random_count=8)
    again = make_plan(seed=7, orders=200, rate=10, skus=3, scenario=None, random_count=8)
    other = make_plan(seed=8, orders=200, rate=10, skus=3, scenario=None, random_count=8)
    assert first == again
    assert first.orders != other.orders and first.faults != other.faults


def test_the_load_mixes_every_kind_of_order_at_the_rate_asked() -> None:
    plan = make_plan(seed=1, orders=400, rate=8, skus=4, scenario="broker-outage")
    assert set(plan.kinds()) == {"normal", "decline", "out-of-stock", "undeliverable",
                                 "cancel", "delete"}
    assert plan.load_seconds == pytest.approx(399 / 8)
    assert all(o.act_after is not None for o in plan.orders if o.kind in ("cancel", "delete"))
    assert {o.sku for o in plan.orders if o.kind == "out-of-stock"} == {EMPTY_SKU}


def test_stock_covers_every_stocked_order_and_the_empty_sku_has_none() -> None:
    plan = make_plan(seed=3, orders=100, rate=10, skus=2, scenario="broker-outage")
    stock = plan.stock()
    assert stock[EMPTY_SKU] == 0
    wanted = sum(o.quantity for o in plan.orders if o.sku != EMPTY_SKU)
    assert sum(stock.values()) == wanted


def test_random_faults_never_overlap_on_one_target_and_act_where_they_can() -> None:
    plan = make_plan(seed=11, orders=600, rate=10, skus=3, scenario=None, random_count=12)
    assert 0 < len(plan.faults) <= 12
    by_target: dict[str, list[Fault]] = {}
    for fault in plan.faults:
        assert fault.target in TARGETS[fault.kind]
        by_target.setdefault(fault.target, []).append(fault)
    for faults in by_target.values():
        for earlier, later in itertools.pairwise(faults):
            assert later.at > earlier.ends


def test_the_scenarios_together_play_every_kind_of_fault() -> None:
    kinds = {fault.kind for faults in SCENARIOS.values() for fault in faults}
    assert kinds == set(FAULT_KINDS)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scenario": "no-such"}, "unknown scenario 'no-such'"),
    ({"scenario": None, "orders": 0}, "at least one order"),
])
def test_a_plan_that_cannot_run_is_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"seed": 1, "orders": 10, "rate": 2, "skus": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_plan(**arguments)  # type: ignore[arg-type]


def test_a_fault_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'meteor'"):
        Fault(1, "meteor", "operator")
