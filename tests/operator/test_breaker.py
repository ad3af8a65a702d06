"""The circuit breaker toward one service (pure): when it holds commands back, when it
probes, when it lets everything through again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
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

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = BreakerConfig(threshold=3, cooldown=timedelta(seconds=30), probes=2)


CLOSED = Breaker()


def timeouts(count: int, breaker: Breaker = CLOSED, at: datetime = T0) -> Breaker:
    for _ in range(count):
        breaker = on_timeout(breaker, at, CONFIG)
    return breaker


def test_it_opens_after_the_threshold_of_timeouts_in_a_row() -> None:
    assert timeouts(2).state is BreakerState.CLOSED
    opened = timeouts(3)
    assert opened.state is BreakerState.OPEN and opened.opened_at == T0


def test_a_reply_in_between_starts_the_count_again() -> None:
    breaker = on_reply(timeouts(2))
    assert timeouts(2, breaker).state is BreakerState.CLOSED


def test_open_it_holds_forward_commands_until_the_cooldown_has_passed() -> None:
    opened = timeouts(3)
    allowed, still = admit(opened, T0 + timedelta(seconds=29), CONFIG)
    assert not allowed and still == opened
    assert held_until(opened, T0 + timedelta(seconds=5), CONFIG) == T0 + CONFIG.cooldown


def test_after_the_cooldown_a_few_probes_go_out_and_no_more() -> None:
    breaker = timeouts(3)
    later = T0 + CONFIG.cooldown
    decisions = []
    for _ in range(4):
        allowed, breaker = admit(breaker, later, CONFIG)
        decisions.append(allowed)
    assert decisions == [True, True, False, False]
    assert breaker.state is BreakerState.HALF_OPEN


def test_a_probe_answered_closes_it_and_a_probe_lost_opens_it_again() -> None:
    _, probing = admit(timeouts(3), T0 + CONFIG.cooldown, CONFIG)
    assert on_reply(probing).state is BreakerState.CLOSED
    again = on_timeout(probing, T0 + timedelta(seconds=45), CONFIG)
    assert again.state is BreakerState.OPEN and again.opened_at == T0 + timedelta(seconds=45)


def test_late_timeouts_of_commands_sent_before_it_opened_do_not_extend_the_cooldown() -> None:
    opened = timeouts(3)
    assert timeouts(5, opened, at=T0 + timedelta(seconds=20)) == opened


def test_threshold_zero_turns_breakers_off() -> None:
    off = BreakerConfig(threshold=0)
    breaker = Breaker()
    for _ in range(100):
        breaker = on_timeout(breaker, T0, off)
    assert breaker.state is BreakerState.CLOSED and admit(breaker, T0, off)[0]


@given(st.lists(st.sampled_from(["timeout", "reply", "admit"]), max_size=60),
       st.lists(st.integers(0, 40), min_size=60, max_size=60))
def test_whatever_happens_a_reply_closes_it_and_probes_stay_within_budget(
        moves: list[str], gaps: list[int]) -> None:
    breaker, now, probes = Breaker(), T0, 0
    for move, gap in zip(moves, gaps, strict=False):
        now += timedelta(seconds=gap)
        if move == "timeout":
            breaker = on_timeout(breaker, now, CONFIG)
        elif move == "reply":
            breaker = on_reply(breaker)
            assert breaker.state is BreakerState.CLOSED
        else:
            was_open = breaker.state is not BreakerState.CLOSED
            allowed, breaker = admit(breaker, now, CONFIG)
            if breaker.state is BreakerState.OPEN:
                assert not allowed  # open: nothing goes out
            if was_open and allowed:
                probes += 1
                assert breaker.probes_sent <= CONFIG.probes
        if breaker.state is BreakerState.CLOSED:
            assert breaker.failures < CONFIG.threshold
        if breaker.state is not BreakerState.HALF_OPEN:
            probes = 0  # each half-open spell has a budget of its own
        assert probes <= CONFIG.probes


SPEC = saga.OrderSpec.from_manifest({
    "customer": {"id": "c", "email": "c@example.com"},
    "items": [{"sku": "SKU-A", "quantity": 1, "unitPrice": 100}],
    "currency": "INR", "paymentToken": "tok_visa",
    "shippingAddress": {"name": "C", "line1": "1 Road", "city": "Pune", "postalCode": "411001",
                        "country": "IN"}})


def test_what_a_saga_event_says_of_the_services() -> None:
    config = saga.SagaConfig()
    state = saga.decide(saga.SagaState.new("uid", SPEC), saga.Start(now=T0), config).state
    reply = saga.Reply(message_type="StockReserved", idempotency_key="uid:reserve",
                       payload={"reservationId": "r"}, message_id="m", now=T0)
    assert list(replies_and_timeouts(state, reply)) == [("inventory", True)]
    assert list(replies_and_timeouts(state, saga.Tick(now=T0))) == []  # not yet due
    late = T0 + config.forward_wait(1)
    assert list(replies_and_timeouts(state, saga.Tick(now=late))) == [("inventory", False)]
    assert list(replies_and_timeouts(state, saga.Recover(now=late))) == []  # replies may wait
