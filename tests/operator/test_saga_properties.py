"""Property: any interleaving of replies, duplicates, losses, timeouts, cancellations,
refused publishes and operator crashes ends, once the faults stop, in a terminal phase
with the invariants held.

The saga is driven against a simulated world: fake services with real semantics (stock
counts, a payment ledger, shipments, an outbox of notifications; idempotency by key, the
original answer returned to a retry, tombstones left by a compensation that found nothing
to undo) and a network that delivers commands and replies in any order, duplicates them
and loses some.  Hypothesis picks the interleaving; ``teardown`` stops the faults, lets
everything in flight arrive, advances the clock, and checks the invariants of design.md.

Losses are bounded below a compensation's attempt budget, so without an outage no saga may
end in CompensationFailed.  (It may pass through it, when the simulated network holds a
compensation's replies longer than its whole budget; the late reply then heals it.)  The
second machine adds an outage of every compensation: those sagas must stop in
CompensationFailed, and finish once a human repairs the service and resumes them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from vyapaar_operator.saga import (
    FLOWS,
    BreakerClosed,
    CancelRequested,
    Command,
    Deleted,
    Event,
    Held,
    NotSent,
    OrderSpec,
    PauseChanged,
    Phase,
    Recover,
    Reply,
    Resume,
    SagaConfig,
    SagaState,
    Start,
    Tick,
    decide,
    next_deadline,
)

CONFIG = SagaConfig(
    step_timeout=timedelta(seconds=10),
    max_attempts=3,
    backoff_base=timedelta(seconds=1),
    backoff_max=timedelta(seconds=8),
    compensation_timeout=timedelta(seconds=10),
    compensation_max_attempts=4,
    compensation_backoff_base=timedelta(seconds=1),
    compensation_backoff_max=timedelta(seconds=8),
    timeline_limit=10,
)
INITIAL_STOCK = {"SKU-LAPTOP": 5, "SKU-MOUSE": 3, "SKU-RARE": 1}
UNKNOWN_SKU = "SKU-GHOST"
MAX_DROPS = CONFIG.compensation_max_attempts - 1
"""Fewer losses than a compensation has attempts, so one attempt always gets through."""
SETTLE_ROUNDS = 100
"""Deadline jumps allowed after the faults stop before "it never terminates" is declared."""
T0 = datetime(2025, 1, 1, tzinfo=UTC)


# --- the services ----------------------------------------------------------------------


Answer = tuple[str, dict[str, Any]] | None


def order_of(key: str) -> str:
    return key.rpartition(":")[0]


@dataclass
class Service:
    """What every service shares: the original answer for a key is the answer forever."""

    answers: dict[tuple[str, str], Answer] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)

    def handle(self, command: Command) -> Answer:
        memo = (command.idempotency_key, command.message_type)
        if memo not in self.answers:
            self.answers[memo] = self.apply(command)
        return self.answers[memo]

    def apply(self, command: Command) -> Answer:
        raise NotImplementedError


@dataclass
class Inventory(Service):
    payment: Payment | None = None
    """To check that stock is released only after the order's payment was refunded."""
    available: dict[str, int] = field(default_factory=lambda: dict(INITIAL_STOCK))
    committed: Counter[str] = field(default_factory=Counter)
    reservations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def held(self) -> Counter[str]:
        held: Counter[str] = Counter()
        for reservation in self.reservations.values():
            if reservation["status"] == "held":
                held.update(reservation["items"])
        return held

    def apply(self, command: Command) -> Answer:
        key = command.idempotency_key
        if command.message_type == "ReserveStock":
            if key in self.tombstones:
                return "StockRejected", {"reason": "ALREADY_COMPENSATED"}
            wanted = {line["sku"]: line["quantity"] for line in command.payload["items"]}
            for sku, quantity in wanted.items():
                if sku not in self.available:
                    return "StockRejected", {"reason": "UNKNOWN_SKU", "sku": sku}
                if self.available[sku] < quantity:
                    return "StockRejected", {"reason": "OUT_OF_STOCK", "sku": sku}
            for sku, quantity in wanted.items():
                self.available[sku] -= quantity
            self.reservations[key] = {"items": wanted, "status": "held"}
            return "StockReserved", {"reservationId": f"res-{len(self.reservations)}"}
        if command.message_type == "ReleaseStock":
            reservation = self.reservations.get(key)
            if reservation is None:
                self.tombstones.add(key)
                return "StockReleased", {"noop": True}
            if reservation["status"] != "held":
                self.violations.append(f"release of a {reservation['status']} reservation {key}")
                return None
            if self.payment and self.payment.total("capture", order_of(key)) != self.payment.total(
                    "refund", order_of(key)):
                self.violations.append(f"stock released before the payment was refunded: {key}")
            reservation["status"] = "released"
            for sku, quantity in reservation["items"].items():
                self.available[sku] += quantity
            return "StockReleased", {"noop": False}
        if command.message_type == "CommitStock":
            reservation = self.reservations.get(f"{order_of(key)}:reserve")
            if reservation is None or reservation["status"] != "held":
                self.violations.append(f"commit without a held reservation for {key}")
                return None
            reservation["status"] = "committed"
            self.committed.update(reservation["items"])
            return "StockCommitted", {}
        raise AssertionError(command)


@dataclass
class Payment(Service):
    shipping: Shipping | None = None
    """To check that a payment is refunded only after its shipment (if any) was voided."""
    ledger: list[tuple[str, str, int]] = field(default_factory=list)
    """(entry, order uid, amount): every capture and refund, in order."""
    screened: set[str] = field(default_factory=set)
    """Orders whose payment was screened for fraud (saga version 2)."""

    def total(self, entry: str, uid: str) -> int:
        return sum(amount for kind, owner, amount in self.ledger if (kind, owner) == (entry, uid))

    def count(self, entry: str, uid: str) -> int:
        return sum(1 for kind, owner, _ in self.ledger if (kind, owner) == (entry, uid))

    def apply(self, command: Command) -> Answer:
        key, uid = command.idempotency_key, order_of(command.idempotency_key)
        if command.message_type == "CheckFraud":  # a read: nothing recorded
            self.screened.add(uid)
            if command.payload["token"] == "tok_fraud":
                return "FraudSuspected", {"reason": "FRAUD_SUSPECTED", "score": 95}
            return "FraudCheckPassed", {"score": 5}
        if command.message_type == "ChargePayment":
            token = command.payload["token"]
            if key in self.tombstones:
                return "PaymentDeclined", {"reason": "ALREADY_COMPENSATED"}
            if token == "tok_decline":
                return "PaymentDeclined", {"reason": "CARD_DECLINED"}
            if token == "tok_insufficient_funds":
                return "PaymentDeclined", {"reason": "INSUFFICIENT_FUNDS"}
            amount = command.payload["amount"]
            self.ledger.append(("capture", uid, amount))
            return "PaymentCaptured", {"chargeId": f"ch-{uid}", "amount": amount,
                                       "currency": command.payload["currency"]}
        if command.message_type == "RefundPayment":
            captured = self.total("capture", uid)
            if not captured:
                self.tombstones.add(key)
                return "PaymentRefunded", {"amount": 0, "noop": True}
            if self.shipping and self.shipping.shipments.get(uid) == "created":
                self.violations.append(f"refund while the shipment still exists: {key}")
            self.ledger.append(("refund", uid, captured))
            return "PaymentRefunded", {"refundId": f"rf-{uid}", "amount": captured, "noop": False}
        raise AssertionError(command)


@dataclass
class Shipping(Service):
    shipments: dict[str, str] = field(default_factory=dict)
    """Order uid -> "created" | "voided"."""

    def apply(self, command: Command) -> Answer:
        key, uid = command.idempotency_key, order_of(command.idempotency_key)
        if command.message_type == "CreateShipment":
            if key in self.tombstones:
                return "ShipmentRejected", {"reason": "ALREADY_COMPENSATED"}
            if command.payload["address"]["line1"] == "UNDELIVERABLE":
                return "ShipmentRejected", {"reason": "UNDELIVERABLE_ADDRESS"}
            self.shipments[uid] = "created"
            return "ShipmentCreated", {"shipmentId": f"shp-{uid}", "trackingId": f"TRK-{uid}"}
        if command.message_type == "VoidShipment":
            if uid not in self.shipments:
                self.tombstones.add(key)
                return "ShipmentVoided", {"noop": True}
            self.shipments[uid] = "voided"
            return "ShipmentVoided", {"noop": False}
        raise AssertionError(command)


@dataclass
class Notification(Service):
    sent: list[tuple[str, str]] = field(default_factory=list)
    """(order uid, template) of every message a customer received."""

    def apply(self, command: Command) -> Answer:
        uid = order_of(command.idempotency_key)
        self.sent.append((uid, command.payload["template"]))
        return "NotificationSent", {"notificationId": f"ntf-{len(self.sent)}"}


# --- the orders hypothesis places ------------------------------------------------------


@st.composite
def order_specs(draw: st.DrawFn) -> OrderSpec:
    skus = draw(st.lists(st.sampled_from([*INITIAL_STOCK] * 3 + [UNKNOWN_SKU]),
                         min_size=1, max_size=2, unique=True))
    return OrderSpec.from_manifest({
        "customer": {"id": "cust-1", "email": "c@example.com"},
        "items": [{"sku": sku, "quantity": draw(st.integers(1, 3)),
                   "unitPrice": draw(st.integers(0, 10_000))} for sku in skus],
        "currency": "INR",
        "paymentToken": draw(st.sampled_from(
            ["tok_visa"] * 8 + ["tok_decline", "tok_insufficient_funds", "tok_fraud"])),
        "shippingAddress": {
            "name": "C", "city": "Pune", "postalCode": "411001", "country": "IN",
            "line1": draw(st.sampled_from(["1 Main Road"] * 7 + ["UNDELIVERABLE"])),
        },
        "cancel": draw(st.integers(0, 7)) == 0,  # now and then, cancelled at creation
    })


# --- the world -------------------------------------------------------------------------


class SagaWorld(RuleBasedStateMachine):
    """Orders, an operator that may crash, a lossy network, and four services."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.orders: dict[str, SagaState] = {}
        self.unpublished: list[Command] = []
        self.to_services: list[Command] = []
        self.to_operator: list[Reply] = []
        self.drops = 0
        self.version = 1
        """The flow the operator now starts new sagas on (a release may change it)."""
        self.compensations_broken = False
        self.compensation_failed_seen: set[str] = set()
        self.cancelled_later = False
        self.shipping = Shipping()
        self.payment = Payment(shipping=self.shipping)
        self.inventory = Inventory(payment=self.payment)
        self.notification = Notification()
        self.services: dict[str, Service] = {
            "inventory": self.inventory, "payment": self.payment,
            "shipping": self.shipping, "notification": self.notification,
        }

    # The operator: decide, write the status, then publish.

    def operate(self, uid: str, event: Event) -> None:
        before = self.orders[uid]
        config = replace(CONFIG, version=self.version)
        decision = decide(before, event, config)
        state = decision.state
        if before.version is not None:  # a saga runs on the flow it started on, to its end
            assert state.version == before.version
        for command in decision.commands:
            assert command.step in (*state.flow.steps, "notify-failed", "notify-cancelled")
        if state.is_paused:  # a paused saga publishes nothing, and times nothing out
            assert decision.commands == ()
            if before.is_paused:
                assert not [t for t in decision.transitions
                            if "Retrying" in t.reason or "TimedOut" in t.reason], event
        self.orders[uid] = state
        self.unpublished.extend(decision.commands)
        if state.phase is Phase.COMPENSATION_FAILED:
            self.compensation_failed_seen.add(uid)
        assert SagaState.from_status(uid, state.spec, state.to_status()) == state
        for command in decision.commands:
            assert command.idempotency_key == f"{uid}:{command.step}"
            if command.message_type == "VoidShipment":  # only when the outcome is unknown
                ship = state.step("ship")
                assert ship.shipment_id is None and ship.attempts == CONFIG.max_attempts
        if isinstance(event, Reply):  # applying the same reply again changes nothing
            again = decide(state, replace(event, now=event.now + timedelta(seconds=1)), config)
            assert again.commands == () and again.transitions == () and again.state == state

    def publish(self) -> None:
        """The status write succeeded: what it holds goes out."""
        self.to_services.extend(self.unpublished)
        self.unpublished.clear()

    def deliver_command(self, index: int) -> None:
        command = self.to_services.pop(index % len(self.to_services))
        if command.compensation and self.compensations_broken:
            return  # the handler fails; the message ends in a dead-letter queue
        service = self.services[command.service]
        if (command.expires is not None and self.now > command.expires
                and (command.idempotency_key, command.message_type) not in service.answers):
            return  # the saga may have given up on it: the service drops it unanswered
        answer = service.handle(command)
        if answer is not None:
            message_type, payload = answer
            self.to_operator.append(Reply(
                message_type=message_type, idempotency_key=command.idempotency_key,
                payload=payload, message_id=f"{command.idempotency_key}:{message_type}",
                now=self.now,
            ))

    def deliver_reply(self, index: int) -> None:
        reply = self.to_operator.pop(index % len(self.to_operator))
        self.operate(order_of(reply.idempotency_key), replace(reply, now=self.now))

    def tick_all(self) -> None:
        for uid in self.orders:
            self.operate(uid, Tick(self.now))

    # Hypothesis' moves.

    @initialize(specs=st.lists(order_specs(), min_size=1, max_size=3),
                version=st.sampled_from(sorted(FLOWS)))
    def place_orders(self, specs: list[OrderSpec], version: int) -> None:
        self.version = version
        for spec in specs:
            self.place(spec)

    def place(self, spec: OrderSpec) -> None:
        uid = f"order-{len(self.orders)}"
        self.orders[uid] = SagaState.new(uid, spec)
        self.operate(uid, Start(self.now))

    @rule(version=st.sampled_from(sorted(FLOWS)), spec=order_specs())
    def a_release_changes_the_flow_of_new_sagas(self, version: int, spec: OrderSpec) -> None:
        """The operator restarts on another version; an order placed then starts on it."""
        if len(self.orders) >= 4:
            return
        self.version = version
        self.the_operator_crashes_and_restarts()
        self.place(spec)
        event(f"sagas of versions {sorted({s.version for s in self.orders.values()})}")

    @rule(index=st.integers(0, 50))
    def a_service_handles_a_command(self, index: int) -> None:
        self.publish()
        if self.to_services:
            self.deliver_command(index)

    @rule(index=st.integers(0, 50))
    def the_operator_gets_a_reply(self, index: int) -> None:
        self.publish()
        if self.to_operator:
            self.deliver_reply(index)

    @rule(count=st.integers(1, 30))
    def messages_flow_in_order(self, count: int) -> None:
        self.drain(limit=count)

    @rule(index=st.integers(0, 50))
    def the_broker_redelivers_a_message(self, index: int) -> None:
        self.publish()
        queue: list[Any] = self.to_operator if index % 2 and self.to_operator else self.to_services
        if queue:
            queue.append(queue[index // 2 % len(queue)])

    @rule(index=st.integers(0, 50))
    def a_message_is_lost(self, index: int) -> None:
        self.publish()
        queue: list[Any] = self.to_operator if index % 2 and self.to_operator else self.to_services
        if queue and self.drops < MAX_DROPS:
            self.drops += 1
            queue.pop(index // 2 % len(queue))

    @rule(seconds=st.integers(1, 12))
    def time_passes(self, seconds: int) -> None:
        self.publish()
        self.now += timedelta(seconds=seconds)
        self.tick_all()

    @rule()
    def time_reaches_the_next_deadline(self) -> None:
        self.publish()
        deadlines = [d for d in map(next_deadline, self.orders.values()) if d is not None]
        if deadlines:
            self.now = max(self.now, min(deadlines))
            self.tick_all()

    @rule(data=st.data(), how=st.sampled_from(["event", "spec only", "delete"]))
    def the_customer_cancels(self, data: st.DataObject, how: str) -> None:
        """At most once per run, so that most orders get to finish on their own."""
        self.publish()
        if self.cancelled_later:
            return
        self.cancelled_later = True
        uid = data.draw(st.sampled_from(sorted(self.orders)), label="order")
        state = self.orders[uid]
        if how != "delete":
            self.orders[uid] = replace(state, spec=replace(state.spec, cancel=True))
        if how == "event":
            self.operate(uid, CancelRequested(self.now))
        elif how == "delete":
            self.operate(uid, Deleted(self.now))

    @rule(data=st.data())
    def an_engineer_pauses_or_unpauses_an_order(self, data: st.DataObject) -> None:
        """spec.paused flipped; the operator sees it (or notices it with the next event)."""
        self.publish()
        uid = data.draw(st.sampled_from(sorted(self.orders)), label="order")
        state = self.orders[uid]
        self.orders[uid] = replace(state, spec=replace(state.spec, paused=not state.spec.paused))
        if data.draw(st.booleans(), label="seen at once"):
            self.operate(uid, PauseChanged(self.now))

    @rule()
    def the_broker_refuses_what_the_operator_publishes(self) -> None:
        """The commands of the last status write fail to publish (an outage of the broker):
        the operator tells each saga, which publishes them again later, same attempt."""
        refused, self.unpublished = self.unpublished, []
        for command in refused:
            self.operate(order_of(command.idempotency_key), NotSent(
                step=command.step, compensation=command.compensation,
                attempt=command.attempt, now=self.now))

    @rule(seconds=st.integers(1, 60), closes=st.booleans())
    def a_circuit_breaker_holds_the_forward_commands(self, seconds: int, closes: bool) -> None:
        """The forward commands of the last status write are held (a breaker is open): each
        saga waits, unsent; compensations go out. The breaker may close at once."""
        commands, self.unpublished = self.unpublished, []
        for command in commands:
            if command.compensation:
                self.unpublished.append(command)
                continue
            self.operate(order_of(command.idempotency_key), Held(
                step=command.step, attempt=command.attempt,
                until=self.now + timedelta(seconds=seconds), now=self.now))
        if closes:
            for command in commands:
                if not command.compensation:
                    self.operate(order_of(command.idempotency_key),
                                 BreakerClosed(service=command.service, now=self.now))

    @rule()
    def the_operator_crashes_and_restarts(self) -> None:
        """Commands of the last status write may not have gone out; the status survives."""
        self.unpublished.clear()
        for uid, state in self.orders.items():
            stored = json.loads(json.dumps(state.to_status()))
            self.orders[uid] = SagaState.from_status(uid, state.spec, stored)
            self.operate(uid, Recover(self.now))

    # Invariants that hold at every moment.

    @invariant()
    def stock_is_conserved(self) -> None:
        held = self.inventory.held()
        for sku, initial in INITIAL_STOCK.items():
            available = self.inventory.available[sku]
            assert available >= 0
            assert initial == available + self.inventory.committed[sku] + held[sku], sku

    @invariant()
    def at_most_one_capture_per_order(self) -> None:
        for uid in self.orders:
            assert self.payment.count("capture", uid) <= 1
            assert self.payment.count("refund", uid) <= 1

    @invariant()
    def no_service_saw_an_impossible_command(self) -> None:
        for service in self.services.values():
            assert service.violations == []

    # Once the faults stop.

    def settle(self) -> None:
        """Deliver everything, then let deadlines pass, until every saga is terminal."""
        for _ in range(SETTLE_ROUNDS):
            self.drain()
            self.no_service_saw_an_impossible_command()
            if all(state.is_terminal for state in self.orders.values()):
                return
            deadlines = [d for d in map(next_deadline, self.orders.values()) if d is not None]
            assert deadlines, "a saga is neither terminal nor waiting for anything"
            self.now = max(self.now, min(deadlines))
            self.tick_all()
        phases = {uid: s.phase.value for uid, s in self.orders.items()}
        raise AssertionError(f"no terminal phase after {SETTLE_ROUNDS} rounds: {phases}")

    def drain(self, limit: int = 10_000) -> None:
        """Deliver messages first in, first out, replies first (until ``limit``)."""
        for _ in range(limit):
            self.publish()
            if self.to_operator:
                self.deliver_reply(0)
            elif self.to_services:
                self.deliver_command(0)
            else:
                return
        assert limit < 10_000, "messages keep flowing without time passing"

    def teardown(self) -> None:
        for uid, state in self.orders.items():  # the engineer carries on every paused saga
            if state.spec.paused or state.is_paused:  # and the watch shows the operator
                event("paused")
                self.orders[uid] = replace(state, spec=replace(state.spec, paused=False))
                self.operate(uid, PauseChanged(self.now))
        self.settle()
        if self.compensations_broken:
            # A human repairs the service and resumes every saga that needs it.
            self.compensations_broken = False
            for uid, state in self.orders.items():
                if state.needs_repair:
                    event("resumed by a human")
                    self.operate(uid, Resume(self.now))
            self.settle()
        else:
            assert not any(s.phase is Phase.COMPENSATION_FAILED for s in self.orders.values())
        self.stock_is_conserved()
        self.at_most_one_capture_per_order()
        self.no_service_saw_an_impossible_command()
        for uid, state in self.orders.items():
            self.check_outcome(uid, state)
            event(f"ended {state.phase.value}")
            if uid in self.compensation_failed_seen:
                event("went through CompensationFailed")
            if state.condition("CancellationRefused"):
                event("cancellation refused")
            if any(step.compensation_noop for step in state.steps):
                event("compensated a step that never happened (tombstone)")
        if any(reply and reply[1].get("reason") == "ALREADY_COMPENSATED"
               for service in self.services.values() for reply in service.answers.values()):
            event("a late forward command was refused by a tombstone")

    def check_outcome(self, uid: str, state: SagaState) -> None:
        spec = state.spec
        captured, refunded = self.payment.total("capture", uid), self.payment.total("refund", uid)
        reservation = self.inventory.reservations.get(f"{uid}:reserve")
        notified = [template for owner, template in self.notification.sent if owner == uid]
        shipment = self.shipping.shipments.get(uid)
        assert state.phase in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED), state.phase
        if uid in self.payment.screened:
            assert state.version == 2  # only its flow screens payments
        if state.phase is Phase.COMPLETED:
            assert (uid in self.payment.screened) == (state.version == 2)
            assert spec.payment_token == "tok_visa" or (
                spec.payment_token == "tok_fraud" and state.version == 1)
            assert self.payment.count("capture", uid) == 1 and captured == spec.total
            assert refunded == 0
            assert shipment == "created"
            assert reservation is not None and reservation["status"] == "committed"
            assert reservation["items"] == {i.sku: i.quantity for i in spec.items}
            assert notified == ["order-confirmed"]
            if state.cancel_requested:
                assert state.condition("CancellationRefused") is not None
        else:
            assert refunded == captured
            assert reservation is None or reservation["status"] == "released"
            assert shipment in (None, "voided")
            expected = "order-cancelled" if state.phase is Phase.CANCELLED else "order-failed"
            assert notified == [expected]
        if state.phase is Phase.CANCELLED:
            assert state.cancel_requested


class SagaWorldWithBrokenCompensations(SagaWorld):
    """Also: a service starts failing every compensation until a human repairs it."""

    @rule()
    def compensations_start_failing(self) -> None:
        self.compensations_broken = True


# About 10 s on one core when passing.  A failure shrinks for a few minutes, to a short story.
SETTINGS = settings(
    max_examples=500,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)

TestSagaUnderFaults = SagaWorld.TestCase
TestSagaUnderFaults.settings = SETTINGS
TestSagaWithCompensationOutage = SagaWorldWithBrokenCompensations.TestCase
TestSagaWithCompensationOutage.settings = settings(SETTINGS, max_examples=250)
