"""The Order saga as a pure state machine: ``decide(state, event, config) -> Decision``.

Read this file top to bottom and you have read the whole order flow::

    Pending -> Reserving -> Paying -> Shipping -> Completing -> Completed
                   |           |          |       ^ pivot: the shipment exists
                   v           v          v
                   Compensating (undo, newest first) -> Failed | Cancelled
                        |    ^
                        v    | Resume (a human repaired the service)
                   CompensationFailed

That is flow version 1.  Version 2 (:data:`FLOWS`) screens the payment for fraud
between reserving and paying (phase CheckingFraud).  A saga runs to its end on the flow
it started on (``status.sagaVersion``); the operator starts new ones on the version its
settings name (``SagaConfig.version``).

``decide`` does no I/O, reads no clock and draws no random numbers: the event
carries ``now`` and the returned :class:`Decision` carries the new state, the
commands to publish and the transitions to report as Kubernetes Events.  The
operator writes ``Decision.state.to_status()`` to the Order's status *first* and
publishes the commands *after*; a step is therefore marked in flight (attempt,
``sentAt``, ``deadline``) before its command can exist anywhere else, which
makes the status the operator's outbox: after a crash, :class:`Recover`
re-sends whatever the status says is in flight.  A command the broker did not
take (:class:`NotSent`) never left the operator: its outcome is known, so it is
published again after a pause without using up one of the step's attempts -- an
outage of the broker costs time, not orders.

Every command carries the idempotency key ``"{order_uid}:{step}"``.  Retries
re-send the same key, and a compensation carries the key of the step it undoes,
so a service can find what to undo -- or, if the forward command never arrived,
leave a tombstone that makes a late forward command fail with
``ALREADY_COMPENSATED``.  That is what makes it safe to compensate a step whose
outcome is unknown.

``spec.paused`` holds a saga where it is (:func:`_pause_from_spec`): while paused it
publishes nothing -- a command it decides on is kept in the status as unsent, exactly
like one the broker refused -- and no deadline fires; replies are still recorded, they
are facts.  Unpaused, it sends every command in flight (the same attempt) with its
timeout counted from then, so a pause never counts as a timeout.

Every transition is also a domain event (:class:`DomainEvent`, numbered per order):
``decide`` appends it to ``status.outbox``, the operator publishes it after the write and
drops it from the outbox once the broker confirmed it (:func:`forget_published`), so a
restarted operator neither loses an event nor invents one -- at worst it publishes one
again, with the same id.

Replies are at-least-once and may be late, duplicated or out of order.  A reply
is applied only if the step is still waiting for exactly that kind of reply;
anything else is ignored, which makes applying a reply idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any, Literal, TypeAlias

# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


MAX_TIMELINE = 100
"""``status.timeline`` maxItems in the CRD (keeps the Order object small)."""


@dataclass(frozen=True)
class SagaConfig:
    """Timeouts and retry budgets.

    A command that gets no reply is re-sent when its deadline passes.  The
    deadline of attempt *n* is ``sentAt + timeout + backoff(n)`` with
    ``backoff(n) = min(base * 2**(n - 1), max)``: each attempt gets the timeout
    to answer plus an exponentially growing pause before the next one.  A reply
    to *any* attempt counts, so waiting and backing off fold into one deadline.
    """

    step_timeout: timedelta = timedelta(seconds=30)
    """How long a forward command (and commit/notify) may take to answer before a retry."""
    max_attempts: int = 3
    """Sends of a forward step before its outcome is declared unknown and compensated."""
    backoff_base: timedelta = timedelta(seconds=2)
    """Pause added after the first forward attempt; doubles with every further attempt."""
    backoff_max: timedelta = timedelta(minutes=5)
    """Cap of the forward pause; commit/notify, retried forever, settle at this rhythm."""
    compensation_timeout: timedelta = timedelta(seconds=30)
    """How long a compensation (release, refund, void) may take to answer before a retry."""
    compensation_max_attempts: int = 10
    """Sends of a compensation before the saga stops in CompensationFailed for a human."""
    compensation_backoff_base: timedelta = timedelta(seconds=5)
    """Pause added after the first compensation attempt; doubles with every attempt."""
    compensation_backoff_max: timedelta = timedelta(minutes=10)
    """Cap of the compensation pause."""
    timeline_limit: int = 20
    """Entries kept in ``status.timeline`` (newest last, at most 100: the CRD's limit).
    Over the limit the oldest entries go, those that changed the phase last (see
    :data:`PHASE_CHANGES`)."""
    version: int = 1
    """The flow (:data:`FLOWS`) a saga starts on; one that started keeps its own to the end."""

    def __post_init__(self) -> None:
        for name in ("step_timeout", "compensation_timeout"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"SagaConfig.{name} must be positive")
        for name in ("backoff_base", "backoff_max", "compensation_backoff_base",
                     "compensation_backoff_max"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"SagaConfig.{name} must not be negative")
        if self.max_attempts < 1 or self.compensation_max_attempts < 1:
            raise ValueError("SagaConfig attempt budgets must be at least 1")
        if not 0 <= self.timeline_limit <= MAX_TIMELINE:
            raise ValueError(f"SagaConfig.timeline_limit must be within 0..{MAX_TIMELINE}")
        if self.version not in FLOWS:
            raise ValueError(f"SagaConfig.version must be one of {sorted(FLOWS)}")

    def forward_wait(self, attempt: int) -> timedelta:
        """Time from sending forward attempt ``attempt`` until it counts as lost."""
        return self.step_timeout + _backoff(attempt, self.backoff_base, self.backoff_max)

    def compensation_wait(self, attempt: int) -> timedelta:
        """Time from sending compensation attempt ``attempt`` until it counts as lost."""
        return self.compensation_timeout + _backoff(
            attempt, self.compensation_backoff_base, self.compensation_backoff_max
        )


def _backoff(attempt: int, base: timedelta, cap: timedelta) -> timedelta:
    delay = base
    # Doubling stops at the cap, so a step retried forever never overflows timedelta.
    for _ in range(attempt - 1):
        if delay >= cap or not delay:
            break
        delay *= 2
    return min(delay, cap)


# --------------------------------------------------------------------------------------
# The order, as written in Order.spec
# --------------------------------------------------------------------------------------


class InvalidOrderSpec(ValueError):
    """The Order's spec cannot be turned into a saga (the CRD schema should prevent it)."""


@dataclass(frozen=True)
class Customer:
    id: str
    email: str
    name: str | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"id": self.id, "email": self.email}
        if self.name is not None:
            payload["name"] = self.name
        return payload


@dataclass(frozen=True)
class LineItem:
    sku: str
    quantity: int
    unit_price: int
    """Price of one unit in minor units of the order's currency (paise, cents, yen)."""

    @property
    def subtotal(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"name": self.name, "line1": self.line1}
        if self.line2 is not None:
            payload["line2"] = self.line2
        payload.update(city=self.city, postalCode=self.postal_code, country=self.country)
        return payload


@dataclass(frozen=True)
class OrderSpec:
    """What the customer ordered; immutable except ``cancel`` and ``paused`` (the CRD
    enforces it)."""

    customer: Customer
    items: tuple[LineItem, ...]
    currency: str
    payment_token: str
    shipping_address: Address
    cancel: bool = False
    paused: bool = False

    @property
    def total(self) -> int:
        """Amount to charge, in minor units: integers, so the ledger balances exactly."""
        return sum(item.subtotal for item in self.items)

    @classmethod
    def from_manifest(cls, spec: Mapping[str, Any]) -> OrderSpec:
        """Read ``Order.spec`` (camelCase, as stored by Kubernetes)."""
        customer = _mapping(spec, "customer")
        address = _mapping(spec, "shippingAddress")
        raw_items = spec.get("items")
        if not isinstance(raw_items, list) or not raw_items:
            raise InvalidOrderSpec("spec.items must be a non-empty list")
        items = tuple(_line_item(raw, index) for index, raw in enumerate(raw_items))
        skus = [item.sku for item in items]
        if len(set(skus)) != len(skus):
            raise InvalidOrderSpec("spec.items must not repeat a sku")
        cancel = spec.get("cancel", False)
        if not isinstance(cancel, bool):
            raise InvalidOrderSpec("spec.cancel must be a boolean")
        paused = spec.get("paused", False)
        if not isinstance(paused, bool):
            raise InvalidOrderSpec("spec.paused must be a boolean")
        return cls(
            customer=Customer(
                id=_text(customer, "id", "spec.customer"),
                email=_text(customer, "email", "spec.customer"),
                name=_optional_text(customer, "name", "spec.customer"),
            ),
            items=items,
            currency=_text(spec, "currency", "spec"),
            payment_token=_text(spec, "paymentToken", "spec"),
            shipping_address=Address(
                name=_text(address, "name", "spec.shippingAddress"),
                line1=_text(address, "line1", "spec.shippingAddress"),
                line2=_optional_text(address, "line2", "spec.shippingAddress"),
                city=_text(address, "city", "spec.shippingAddress"),
                postal_code=_text(address, "postalCode", "spec.shippingAddress"),
                country=_text(address, "country", "spec.shippingAddress"),
            ),
            cancel=cancel,
            paused=paused,
        )

    def to_manifest(self) -> dict[str, Any]:
        """The inverse of :meth:`from_manifest` (``paused`` only when set)."""
        manifest: dict[str, Any] = {
            "customer": self.customer.to_payload(),
            "items": [
                {"sku": i.sku, "quantity": i.quantity, "unitPrice": i.unit_price}
                for i in self.items
            ],
            "currency": self.currency,
            "paymentToken": self.payment_token,
            "shippingAddress": self.shipping_address.to_payload(),
            "cancel": self.cancel,
        }
        if self.paused:
            manifest["paused"] = True
        return manifest


def _mapping(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise InvalidOrderSpec(f"spec.{key} must be an object")
    return value


def _text(parent: Mapping[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidOrderSpec(f"{where}.{key} must be a non-empty string")
    return value


def _optional_text(parent: Mapping[str, Any], key: str, where: str) -> str | None:
    """An optional field; empty counts as absent (the CRD and the gateway allow ``""``)."""
    return None if parent.get(key) in (None, "") else _text(parent, key, where)


def _line_item(raw: Any, index: int) -> LineItem:
    where = f"spec.items[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidOrderSpec(f"{where} must be an object")
    quantity, unit_price = raw.get("quantity"), raw.get("unitPrice")
    # bool is an int subclass; True must not become a quantity of one.
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        raise InvalidOrderSpec(f"{where}.quantity must be an integer >= 1")
    if not isinstance(unit_price, int) or isinstance(unit_price, bool) or unit_price < 0:
        raise InvalidOrderSpec(f"{where}.unitPrice must be an integer >= 0 (minor units)")
    return LineItem(sku=_text(raw, "sku", where), quantity=quantity, unit_price=unit_price)


# --------------------------------------------------------------------------------------
# The saga's steps (names and message types are the wire contract)
# --------------------------------------------------------------------------------------


class StepKind(StrEnum):
    COMPENSATABLE = "compensatable"
    """Undone by its compensation if the saga turns around after (or during) it."""
    PIVOT = "pivot"
    """Once it succeeds the order is committed; compensated only if its outcome is unknown."""
    RETRIABLE = "retriable"
    """Retried with capped backoff until it succeeds; never compensated."""
    CHECK = "check"
    """Changes nothing, so nothing to undo: a refusal or an unknown outcome turns the saga
    around, and the check itself is never compensated."""


@dataclass(frozen=True)
class StepDefinition:
    """A step of the saga: who does it, with which messages, and how it is undone."""

    name: str
    service: str
    kind: StepKind
    command: str
    success: str
    rejection: str | None = None
    compensation: str | None = None
    compensation_reply: str | None = None
    ids: tuple[str, ...] = ()
    """Status keys of the ids the service returns for this step (e.g. ``chargeId``)."""
    timeout_reason: str = ""
    """The saga's reason when this step's retry budget runs out (its outcome is unknown)."""


RESERVE = StepDefinition(
    "reserve", "inventory", StepKind.COMPENSATABLE, "ReserveStock", "StockReserved",
    rejection="StockRejected", compensation="ReleaseStock", compensation_reply="StockReleased",
    ids=("reservationId",), timeout_reason="ReservationTimedOut",
)
FRAUD_CHECK = StepDefinition(
    "fraud-check", "payment", StepKind.CHECK, "CheckFraud", "FraudCheckPassed",
    rejection="FraudSuspected", timeout_reason="FraudCheckTimedOut",
)
PAY = StepDefinition(
    "pay", "payment", StepKind.COMPENSATABLE, "ChargePayment", "PaymentCaptured",
    rejection="PaymentDeclined", compensation="RefundPayment", compensation_reply="PaymentRefunded",
    ids=("chargeId", "refundId"), timeout_reason="PaymentTimedOut",
)
SHIP = StepDefinition(
    "ship", "shipping", StepKind.PIVOT, "CreateShipment", "ShipmentCreated",
    rejection="ShipmentRejected", compensation="VoidShipment", compensation_reply="ShipmentVoided",
    ids=("shipmentId", "trackingId"), timeout_reason="ShipmentTimedOut",
)
COMMIT = StepDefinition("commit", "inventory", StepKind.RETRIABLE, "CommitStock", "StockCommitted")
NOTIFY = StepDefinition(
    "notify", "notification", StepKind.RETRIABLE, "SendNotification", "NotificationSent",
    ids=("notificationId",),
)
NOTIFY_FAILED = replace(NOTIFY, name="notify-failed")
NOTIFY_CANCELLED = replace(NOTIFY, name="notify-cancelled")

STEPS: Mapping[str, StepDefinition] = {
    step.name: step
    for step in (RESERVE, FRAUD_CHECK, PAY, SHIP, COMMIT, NOTIFY, NOTIFY_FAILED,
                 NOTIFY_CANCELLED)
}
"""Every step, in plan order (which is also the order of ``status.steps``)."""

AFTER_PIVOT = ("commit", "notify")
"""Run in parallel in phase Completing, in every flow."""


@dataclass(frozen=True)
class Flow:
    """One version of the saga's definition: the steps before the pivot, in order.

    A saga records the version it starts on (``status.sagaVersion``) and runs on that
    flow to its end, whatever version later operators start new sagas on: what it has
    done and what it still has to undo are steps of its own flow.  So a release that
    adds, removes or reorders steps adds a version here and never edits one in use;
    an operator that no longer knows a saga's version leaves the Order alone
    (:class:`UnknownSagaVersion`).  Timeouts and budgets are not part of a flow: they
    are settings (:class:`SagaConfig`), and a saga in flight keeps the deadline its
    status holds.
    """

    version: int
    forward: tuple[str, ...]
    """Run one at a time, in this order, the last one the pivot; so reverse order here is
    reverse order of completion."""

    def __post_init__(self) -> None:
        kinds = [STEPS[name].kind for name in self.forward]
        if not kinds or kinds[-1] is not StepKind.PIVOT or kinds.count(StepKind.PIVOT) != 1:
            raise ValueError(f"flow {self.version} must end with its one pivot")

    @property
    def steps(self) -> tuple[str, ...]:
        """The plan a saga of this flow starts with (``status.steps``)."""
        return self.forward + AFTER_PIVOT

    def after(self, name: str) -> str | None:
        """The forward step that follows ``name`` (None after the pivot)."""
        index = self.forward.index(name)
        return self.forward[index + 1] if index + 1 < len(self.forward) else None


FLOWS: Mapping[int, Flow] = {
    1: Flow(1, ("reserve", "pay", "ship")),
    2: Flow(2, ("reserve", "fraud-check", "pay", "ship")),
}
"""Every flow this operator can drive, by version.  Version 2 screens the payment for
fraud before charging it; the operator starts new sagas on ``SagaConfig.version``."""


class UnknownSagaVersion(ValueError):
    """The Order's saga started on a flow this operator does not know (a newer release
    started it, or an older one it was rolled back to): driving it on another flow could
    skip a step or undo the wrong ones, so the operator leaves it alone
    (:func:`unknown_version_status`)."""

    def __init__(self, version: object) -> None:
        self.version = version
        super().__init__(
            f"saga version {version!r} is not known to this operator (it knows "
            f"{', '.join(str(v) for v in sorted(FLOWS))}); the Order is left as it is until "
            "an operator that knows it runs")

TEMPLATES: Mapping[str, str] = {
    "notify": "order-confirmed",
    "notify-failed": "order-failed",
    "notify-cancelled": "order-cancelled",
}


def idempotency_key(uid: str, step: str) -> str:
    """The key of a step's forward command, its retries and its compensation."""
    return f"{uid}:{step}"


def _forward_payload(step: str, spec: OrderSpec) -> dict[str, Any]:
    lines = [{"sku": item.sku, "quantity": item.quantity} for item in spec.items]
    if step == "reserve":
        return {"items": lines}
    if step in ("fraud-check", "pay"):
        return {
            "amount": spec.total,
            "currency": spec.currency,
            "token": spec.payment_token,
            "customer": spec.customer.to_payload(),
        }
    if step == "ship":
        return {"address": spec.shipping_address.to_payload(), "items": lines}
    if step == "commit":
        return {}
    return {"template": TEMPLATES[step], "customer": spec.customer.to_payload()}


# --------------------------------------------------------------------------------------
# The saga log (becomes Order.status)
# --------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    RESERVING = "Reserving"
    CHECKING_FRAUD = "CheckingFraud"
    PAYING = "Paying"
    SHIPPING = "Shipping"
    COMPLETING = "Completing"
    COMPLETED = "Completed"
    COMPENSATING = "Compensating"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    COMPENSATION_FAILED = "CompensationFailed"


TERMINAL_PHASES = frozenset(
    {Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED, Phase.COMPENSATION_FAILED}
)
_PHASE_OF_STEP = {"reserve": Phase.RESERVING, "fraud-check": Phase.CHECKING_FRAUD,
                  "pay": Phase.PAYING, "ship": Phase.SHIPPING}
_PROGRESS_REASON = {
    Phase.RESERVING: ("ReservingStock", "Reserving stock"),
    Phase.CHECKING_FRAUD: ("CheckingFraud", "Stock reserved; screening the payment of {money}"),
    Phase.PAYING: ("ChargingPayment", "Stock reserved; charging {money}"),
    Phase.SHIPPING: ("CreatingShipment", "Payment captured; creating the shipment"),
}


class StepState(StrEnum):
    PENDING = "Pending"
    """Not started yet."""
    IN_FLIGHT = "InFlight"
    """Forward command sent (``attempts`` times); waiting for a reply until ``deadline``."""
    SUCCEEDED = "Succeeded"
    """The service confirmed the step."""
    FAILED = "Failed"
    """The service refused it (business rejection): nothing was applied, nothing to undo."""
    COMPENSATING = "Compensating"
    """Compensation sent (``compensationAttempts`` times), waiting until ``deadline``.
    Reached from Succeeded, or straight from InFlight when the outcome is unknown."""
    COMPENSATED = "Compensated"
    """The service confirmed the undo (``compensationNoop``: there was nothing to undo)."""
    COMPENSATION_FAILED = "CompensationFailed"
    """The compensation's budget ran out; waits for a human and a Resume."""
    SKIPPED = "Skipped"
    """Never started because the saga turned around first."""


_WAITING = frozenset({StepState.IN_FLIGHT, StepState.COMPENSATING})


@dataclass(frozen=True)
class Step:
    """One step's log entry."""

    name: str
    state: StepState = StepState.PENDING
    attempts: int = 0
    compensation_attempts: int = 0
    started_at: datetime | None = None
    """First forward send."""
    sent_at: datetime | None = None
    """Latest send of the command in flight (forward or compensation)."""
    deadline: datetime | None = None
    """When the command in flight counts as lost; None when nothing is in flight."""
    finished_at: datetime | None = None
    """When the forward action settled (succeeded, failed, or ran out of attempts)."""
    last_error: str | None = None
    reservation_id: str | None = None
    charge_id: str | None = None
    refund_id: str | None = None
    shipment_id: str | None = None
    tracking_id: str | None = None
    notification_id: str | None = None
    compensation_noop: bool | None = None
    unsent: bool = False
    """The command in flight never reached the broker; ``deadline`` is when to publish it
    again (the same attempt), not when it counts as lost."""
    publish_failures: int = 0
    """Failed publishes of the attempt in flight; the pause before the next doubles with each."""

    @property
    def definition(self) -> StepDefinition:
        return STEPS[self.name]

    def service_id(self, key: str) -> str | None:
        """An id the service returned, by its status key (``chargeId``, ...)."""
        return {
            "reservationId": self.reservation_id,
            "chargeId": self.charge_id,
            "refundId": self.refund_id,
            "shipmentId": self.shipment_id,
            "trackingId": self.tracking_id,
            "notificationId": self.notification_id,
        }[key]

    @property
    def waiting(self) -> bool:
        """A command of this step is in flight."""
        return self.state in _WAITING


ConditionStatus: TypeAlias = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    """A Kubernetes-style condition; ``last_transition_time`` moves only with ``status``."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: datetime


@dataclass(frozen=True)
class TimelineEntry:
    """One line of ``status.timeline``: a transition and when it happened."""

    time: datetime
    reason: str
    message: str


@dataclass(frozen=True)
class DomainEvent:
    """One transition as the world outside hears of it: an ``OrderEvent`` (the contract in
    ``vyapaar_messaging.contracts``), waiting in ``status.outbox`` until published."""

    seq: int
    time: datetime
    reason: str
    message: str
    type: Literal["Normal", "Warning"]
    phase: Phase
    """The order's phase after the decision that made the transition."""
    announced: bool
    step: str | None = None
    """The step it is about (its ``startedAt`` in the status says when it began)."""
    captured: int = 0
    refunded: int = 0


UNPUBLISHED_REASONS = frozenset({"CommandNotSent", "CommandHeld"})
"""Transitions that are not events: the operator's own delivery trouble, which says
nothing about the order (and repeats with every failed publish)."""


@dataclass(frozen=True)
class SagaState:
    """The whole saga log of one Order; ``to_status()`` is what the Order's status holds."""

    uid: str
    spec: OrderSpec
    phase: Phase = Phase.PENDING
    reason: str = "Created"
    message: str = "Waiting for the operator to start the saga"
    cancel_requested: bool = False
    version: int | None = None
    """The flow the saga runs on (:data:`FLOWS`), chosen when it starts; None before."""
    steps: tuple[Step, ...] = ()
    """The plan: its flow's steps, plus notify-failed/-cancelled once the saga turns around;
    none before it starts."""
    conditions: tuple[Condition, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    started_at: datetime | None = None
    finished_at: datetime | None = None
    paused_at: datetime | None = None
    """Since when the saga is held by ``spec.paused``; None while it runs."""
    event_seq: int = 0
    """The seq of the newest domain event (0: none yet)."""
    outbox: tuple[DomainEvent, ...] = ()
    """Domain events recorded but not yet confirmed published, oldest first."""

    @classmethod
    def new(cls, uid: str, spec: OrderSpec) -> SagaState:
        return cls(uid=uid, spec=spec)

    @property
    def flow(self) -> Flow:
        """The saga's flow; before it starts, the first one (it has no step to run yet)."""
        return FLOWS[self.version or 1]

    @property
    def is_terminal(self) -> bool:
        """Nothing more happens without a new input (for CompensationFailed: a Resume)."""
        return self.phase in TERMINAL_PHASES

    @property
    def is_paused(self) -> bool:
        return self.paused_at is not None

    @property
    def needs_repair(self) -> bool:
        """CompensationFailed: keep the finalizer, alert, wait for a human and a Resume."""
        return self.phase is Phase.COMPENSATION_FAILED

    @property
    def awaiting_replies(self) -> int:
        """Commands in flight: steps waiting for a reply."""
        return sum(1 for step in self.steps if step.waiting)

    def has_step(self, name: str) -> bool:
        return any(step.name == name for step in self.steps)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def with_step(self, step: Step) -> SagaState:
        if not step.waiting and (step.unsent or step.publish_failures):
            step = replace(step, unsent=False, publish_failures=0)  # only a waiting step has it
        return replace(self, steps=tuple(step if s.name == step.name else s for s in self.steps))

    def to_status(self) -> dict[str, Any]:
        """The JSON for ``Order.status``, exactly as the apiserver will store it.

        Unset fields are left out (the apiserver would drop a ``null`` anyway), so
        comparing this dict with the stored status tells whether a write is needed.
        Write it whole (a replace of the status subresource): a JSON merge patch
        would keep fields this dict no longer has, such as a cleared ``deadline``.
        """
        return _without_nones({
            "phase": self.phase.value,
            "reason": self.reason,
            "message": self.message,
            "total": self.spec.total,
            "currency": self.spec.currency,
            "cancelRequested": self.cancel_requested,
            "sagaVersion": self.version,
            "startedAt": _time_or_none(self.started_at),
            "finishedAt": _time_or_none(self.finished_at),
            "pausedAt": _time_or_none(self.paused_at),
            "steps": {step.name: _step_to_status(step) for step in self.steps},
            "conditions": [_condition_to_status(c) for c in self.conditions],
            "timeline": [
                {"time": format_time(e.time), "reason": e.reason, "message": e.message}
                for e in self.timeline
            ],
            "eventSeq": self.event_seq or None,
            "outbox": [_event_to_status(e) for e in self.outbox] or None,
        })

    @classmethod
    def from_status(cls, uid: str, spec: OrderSpec, status: Mapping[str, Any] | None) -> SagaState:
        """Rebuild the state from ``Order.status``; an empty status is a fresh saga.

        A saga that started before versions were recorded ran the first flow.  One whose
        version this operator does not know raises :class:`UnknownSagaVersion`.  Keys this
        module does not own (``observedGeneration``, ``total``, ...) are ignored.
        """
        if not status or status.get("phase") is None:
            return cls.new(uid, spec)
        phase = Phase(status["phase"])
        version = status.get("sagaVersion", None if phase is Phase.PENDING else 1)
        if version is not None and version not in FLOWS:
            raise UnknownSagaVersion(version)
        steps = status.get("steps") or {}
        plan: tuple[str, ...] = ()
        if version is not None:
            flow = FLOWS[version]
            outcome = tuple(n for n in ("notify-failed", "notify-cancelled") if n in steps)
            plan = flow.steps + outcome
            unknown = set(steps) - set(plan)
            if unknown:
                raise ValueError(f"status.steps has steps not in saga version {version}: "
                                 f"{sorted(unknown)}")
        return cls(
            uid=uid,
            spec=spec,
            phase=phase,
            version=version,
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            cancel_requested=bool(status.get("cancelRequested", False)),
            steps=tuple(_step_from_status(name, steps.get(name) or {}) for name in plan),
            conditions=tuple(_condition_from_status(c) for c in status.get("conditions") or ()),
            timeline=tuple(
                TimelineEntry(parse_time(e["time"]), str(e["reason"]), str(e["message"]))
                for e in status.get("timeline") or ()
            ),
            started_at=_parse_time_or_none(status.get("startedAt")),
            finished_at=_parse_time_or_none(status.get("finishedAt")),
            paused_at=_parse_time_or_none(status.get("pausedAt")),
            event_seq=int(status.get("eventSeq") or 0),
            outbox=tuple(_event_from_status(e) for e in status.get("outbox") or ()),
        )


# --------------------------------------------------------------------------------------
# Events in, decisions out
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """The Order was created (or seen for the first time): begin the saga."""

    now: datetime


@dataclass(frozen=True, kw_only=True)
class Reply:
    """A service's answer, matched to its step by the idempotency key."""

    message_type: str
    idempotency_key: str
    payload: Mapping[str, Any]
    message_id: str
    now: datetime


@dataclass(frozen=True, kw_only=True)
class Queued:
    """The Order may not start yet: ``limit`` sagas are already running (the in-flight cap)."""

    limit: int
    now: datetime


@dataclass(frozen=True)
class Tick:
    """Time passed: re-send what timed out, give up on what ran out of attempts."""

    now: datetime


@dataclass(frozen=True)
class CancelRequested:
    """``spec.cancel`` became true (the state also notices it on any event)."""

    now: datetime


@dataclass(frozen=True)
class Deleted:
    """The Order is being deleted: a cancellation; the finalizer stays until terminal."""

    now: datetime


@dataclass(frozen=True)
class Recover:
    """The operator (re)started: re-send every command the status says is in flight."""

    now: datetime


@dataclass(frozen=True)
class Resume:
    """A human repaired what made a compensation fail: retry it with a fresh budget."""

    now: datetime


@dataclass(frozen=True, kw_only=True)
class NotSent:
    """Publishing a command failed: the broker refused it or could not be reached.

    The attempt did not happen, so it must not count against the step's budget: the same
    attempt is published again after a pause (``backoff``, doubling while publishing keeps
    failing).  Had the broker taken it after all (a lost confirm), the service sees the
    idempotency key twice, which it is built for.
    """

    step: str
    compensation: bool
    attempt: int
    now: datetime


@dataclass(frozen=True, kw_only=True)
class Held:
    """A forward command the circuit breaker of its service kept back (see ``breaker``).

    Like a command the broker refused, it never left the operator: the attempt is kept,
    unsent, and published again at ``until`` (or sooner: the engine wakes the saga when
    the breaker closes) -- the saga waits at its step instead of spending its budget.
    """

    step: str
    attempt: int
    until: datetime
    now: datetime


@dataclass(frozen=True, kw_only=True)
class BreakerClosed:
    """The circuit breaker of ``service`` closed: what it held goes out now."""

    service: str
    now: datetime


@dataclass(frozen=True)
class PauseChanged:
    """``spec.paused`` differs from what the saga holds (the state also notices it on any
    event): pause, or carry on where it stopped."""

    now: datetime


Event: TypeAlias = (
    Start | Queued | Reply | Tick | CancelRequested | Deleted | Recover | Resume | NotSent
    | Held | BreakerClosed | PauseChanged
)


@dataclass(frozen=True)
class Command:
    """A message for a service; publish it only after the state holding it is written."""

    step: str
    service: str
    message_type: str
    idempotency_key: str
    payload: dict[str, Any]
    compensation: bool
    attempt: int = 1
    expires: datetime | None = None
    """When the saga may have given up on the step (its last attempt's deadline, had every
    attempt gone out on time): a service must not act on it later -- a compensation may be
    on its way.  None for compensations and for steps retried until they succeed."""


@dataclass(frozen=True)
class Transition:
    """Something that happened to the saga: a metric always; an Event and a timeline entry
    unless it is ``routine``.

    Routine transitions are the forward path going as planned (the saga started, a step
    succeeded): the step's own status entry (state, ``finishedAt``, the service's ids)
    already records them, and an Event and a timeline line for each would cost the
    apiserver three writes per step for what nobody needs to be told.  Failures,
    rejections, retries, compensations, refusals and the outcome are announced.
    """

    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"
    step: str | None = None
    routine: bool = False
    captured: int = 0
    """Money the transition captured, in minor units (the payment step succeeded)."""
    refunded: int = 0
    """Money it refunded (a refund was confirmed)."""

    @property
    def announced(self) -> bool:
        """Worth a Kubernetes Event and a ``status.timeline`` entry."""
        return not self.routine


@dataclass(frozen=True)
class Decision:
    """What ``decide`` returns: write ``state``, then publish ``commands``, report the rest."""

    state: SagaState
    commands: tuple[Command, ...] = ()
    transitions: tuple[Transition, ...] = ()


def decide(state: SagaState, event: Event, config: SagaConfig) -> Decision:
    """Apply one event: the new state, the commands to publish after writing it, the Events."""
    now = _utc(event.now)
    # spec.cancel is level-triggered: whatever the event, a cancel the saga has not yet
    # seen is handled first, so a missed CancelRequested is never lost.
    decision = _cancel_from_spec(state, now, config)
    # spec.paused as well: the pause starts or ends before the event is applied (and after
    # it, if the event took the saga out of CompensationFailed), and whatever the event
    # decides is held back while the saga is paused.
    decision = _then(decision, lambda current: _pause_from_spec(current, now, config))
    decision = _then(decision, lambda current: _known_version(current, now))
    decision = _then(decision, lambda current: _handle(current, event, now, config))
    decision = _then(decision, lambda current: _pause_from_spec(current, now, config))
    decision = _record_timeline(_hold_while_paused(decision, now), now, config)
    return _record_events(decision, now)


def forget_published(state: SagaState, upto: int) -> SagaState:
    """``state`` without the outbox's events up to seq ``upto``: the broker has them."""
    if not any(e.seq <= upto for e in state.outbox):
        return state
    return replace(state, outbox=tuple(e for e in state.outbox if e.seq > upto))


def next_deadline(state: SagaState) -> datetime | None:
    """When the operator should send the next Tick (None: nothing is waiting on time)."""
    if state.is_terminal or state.is_paused:
        return None
    deadlines = [step.deadline for step in state.steps if step.deadline is not None]
    return min(deadlines, default=None)


def _handle(state: SagaState, event: Event, now: datetime, config: SagaConfig) -> Decision:
    match event:
        case Start():
            return _start(state, now, config)
        case Queued():
            return _queue(state, event.limit, now)
        case Reply():
            return _on_reply(state, event, now, config)
        case Tick():
            return _on_tick(state, now, config)
        case CancelRequested():
            return _request_cancellation(
                state, "CancellationRequested", "Cancellation requested", now, config
            )
        case Deleted():
            return _request_cancellation(state, "DeletionRequested", "Order deleted", now, config)
        case Recover():
            return _recover(state, now, config)
        case Resume():
            return _resume(state, now, config)
        case NotSent():
            return _on_not_sent(state, event, now, config)
        case Held():
            return _on_held(state, event, now)
        case BreakerClosed():
            return _on_breaker_closed(state, event.service, now, config)
        case PauseChanged():
            return Decision(state)  # _pause_from_spec has done it


def _then(first: Decision, next_step: Callable[[SagaState], Decision]) -> Decision:
    """Chain a decision about the state ``first`` produced onto ``first``."""
    second = next_step(first.state)
    return Decision(
        second.state, first.commands + second.commands, first.transitions + second.transitions
    )


def _emit(
    state: SagaState,
    reason: str,
    message: str,
    type_: Literal["Normal", "Warning"] = "Normal",
    step: str | None = None,
    *,
    routine: bool = False,
    captured: int = 0,
    refunded: int = 0,
) -> Decision:
    return Decision(state, transitions=(
        Transition(reason, message, type_, step, routine, captured, refunded),))


PHASE_CHANGES: Mapping[str, Phase] = {
    "CompensationStarted": Phase.COMPENSATING,
    "CompensationFailed": Phase.COMPENSATION_FAILED,
    "CompensationResumed": Phase.COMPENSATING,
    "OrderCompleted": Phase.COMPLETED,
    "OrderFailed": Phase.FAILED,
    "OrderCancelled": Phase.CANCELLED,
}
"""Timeline reasons that move the order into a phase no step's ``startedAt`` tells.

With the steps' start times they make the order's phase history, which the gateway's
event stream reads from any one version of the status; so the timeline keeps these
longest when it must drop entries."""


def _record_timeline(decision: Decision, now: datetime, config: SagaConfig) -> Decision:
    announced = [t for t in decision.transitions if t.announced]
    if not announced:
        return decision
    entries = decision.state.timeline + tuple(
        TimelineEntry(now, t.reason, t.message) for t in announced
    )
    kept = _trim_timeline(entries, config.timeline_limit)
    return replace(decision, state=replace(decision.state, timeline=kept))


def _record_events(decision: Decision, now: datetime) -> Decision:
    """Every transition but the operator's delivery trouble becomes the next domain event."""
    state = decision.state
    events = list(state.outbox)
    seq = state.event_seq
    for transition in decision.transitions:
        if transition.reason in UNPUBLISHED_REASONS:
            continue
        seq += 1
        events.append(DomainEvent(
            seq=seq, time=now, reason=transition.reason, message=transition.message,
            type=transition.type, phase=state.phase, announced=transition.announced,
            step=transition.step, captured=transition.captured, refunded=transition.refunded,
        ))
    if seq == state.event_seq:
        return decision
    return replace(decision, state=replace(state, event_seq=seq, outbox=tuple(events)))


def _trim_timeline(entries: tuple[TimelineEntry, ...], limit: int
                   ) -> tuple[TimelineEntry, ...]:
    """At most ``limit`` entries: drop the oldest, phase changes only when nothing else is left."""
    excess = len(entries) - limit
    if excess <= 0:
        return entries
    others = [i for i, e in enumerate(entries) if e.reason not in PHASE_CHANGES]
    phases = [i for i, e in enumerate(entries) if e.reason in PHASE_CHANGES]
    dropped = set((others + phases)[:excess])
    return tuple(e for i, e in enumerate(entries) if i not in dropped)


# --------------------------------------------------------------------------------------
# Forward path
# --------------------------------------------------------------------------------------


def _start(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    if state.phase is not Phase.PENDING:
        return Decision(state)  # a repeated Start changes nothing
    started = replace(_planned(state, config), started_at=now)
    if state.condition("Queued") is not None:
        started = _set_condition(started, "Queued", "False", "Admitted",
                                 "A saga slot became free", now)
    decision = _emit(
        started, "SagaStarted",
        f"Order of {_money(state.spec.total, state.spec.currency)} started on saga "
        f"version {started.version}",
        step=started.flow.forward[0], routine=True,
    )
    return _then(decision, lambda s: _start_forward_step(s, s.flow.forward[0], now, config))


def _planned(state: SagaState, config: SagaConfig) -> SagaState:
    """The saga's flow chosen -- the one new sagas start on -- and its steps planned;
    once chosen it stays."""
    if state.version is not None:
        return state
    flow = FLOWS[config.version]
    return replace(state, version=flow.version, steps=tuple(Step(name) for name in flow.steps))


def _queue(state: SagaState, limit: int, now: datetime) -> Decision:
    """Wait in Pending, saying so once: the operator starts queued Orders in creation order."""
    if state.phase is not Phase.PENDING:
        return Decision(state)
    queued = state.condition("Queued")
    if queued is not None and queued.status == "True":
        return Decision(state)  # already said; the limit may change, the order stays queued
    message = f"Waiting for a free saga slot: {limit} sagas are running (the in-flight limit)"
    state = replace(state, reason="Queued", message=message)
    return Decision(_set_condition(state, "Queued", "True", "InFlightLimitReached", message, now))


def _start_forward_step(state: SagaState, name: str, now: datetime, config: SagaConfig) -> Decision:
    """Enter the phase of a step before the pivot and send its command."""
    phase = _PHASE_OF_STEP[name]
    reason, message = _PROGRESS_REASON[phase]
    state = _enter_phase(state, phase, reason, message.format(
        money=_money(state.spec.total, state.spec.currency)), now)
    return _send_forward(state, name, now, config)


def _send_forward(state: SagaState, name: str, now: datetime, config: SagaConfig) -> Decision:
    """(Re-)send a step's forward command, recording the intent first."""
    step = state.step(name)
    attempt = step.attempts + 1
    step = replace(
        step,
        state=StepState.IN_FLIGHT,
        attempts=attempt,
        started_at=step.started_at or now,
        sent_at=now,
        deadline=now + config.forward_wait(attempt),
        unsent=False,
        publish_failures=0,
    )
    return Decision(state.with_step(step), commands=(_command(state, step, config),))


def _command(state: SagaState, step: Step, config: SagaConfig) -> Command:
    """The command a waiting step has in flight (the same on every re-send)."""
    definition = step.definition
    compensation = step.state is StepState.COMPENSATING
    expires = None
    if compensation:
        assert definition.compensation is not None
        message_type, payload = definition.compensation, {}
        attempt = step.compensation_attempts
    else:
        message_type, payload = definition.command, _forward_payload(step.name, state.spec)
        attempt = step.attempts
        if definition.kind is not StepKind.RETRIABLE and step.deadline is not None:
            expires = step.deadline + sum(
                (config.forward_wait(later) for later in range(attempt + 1,
                                                               config.max_attempts + 1)),
                timedelta())
    return Command(
        step=step.name,
        service=definition.service,
        message_type=message_type,
        idempotency_key=idempotency_key(state.uid, step.name),
        payload=payload,
        compensation=compensation,
        attempt=attempt,
        expires=expires,
    )


def _on_reply(state: SagaState, reply: Reply, now: datetime, config: SagaConfig) -> Decision:
    """Apply a reply if its step still waits for exactly that; ignore it otherwise."""
    uid, _, name = reply.idempotency_key.rpartition(":")
    if uid != state.uid or not state.has_step(name):
        return Decision(state)
    step, definition = state.step(name), STEPS[name]
    if step.state is StepState.IN_FLIGHT and reply.message_type == definition.success:
        return _on_success(state, step, reply.payload, now, config)
    if step.state is StepState.IN_FLIGHT and reply.message_type == definition.rejection:
        return _on_rejection(state, step, reply.payload, now, config)
    if (
        step.state in (StepState.COMPENSATING, StepState.COMPENSATION_FAILED)
        and reply.message_type == definition.compensation_reply
    ):
        return _on_compensated(state, step, reply.payload, now, config)
    # Duplicates, replies to steps already settled, and late forward replies for a step
    # being compensated (its compensation carries the same key and undoes it) land here.
    return Decision(state)


def _on_success(
    state: SagaState, step: Step, payload: Mapping[str, Any], now: datetime, config: SagaConfig
) -> Decision:
    succeeded = replace(
        _with_ids(step, payload),
        state=StepState.SUCCEEDED, deadline=None, finished_at=now, last_error=None,
    )
    state = state.with_step(succeeded)
    captured = _amount(payload) if step.definition.success == "PaymentCaptured" else 0
    decision = _emit(state, step.definition.success, _success_message(state, succeeded),
                     step=step.name, routine=True, captured=captured)
    if step.name in state.flow.forward:
        following = state.flow.after(step.name)
        if following is None:
            return _then(decision, lambda s: _pass_pivot(s, now, config))
        return _then(decision, lambda s: _start_forward_step(s, following, now, config))
    if step.name in AFTER_PIVOT:
        return _then(decision, lambda s: _complete_if_done(s, now))
    return _then(decision, lambda s: _finish_turned_around(s, now))


def _pass_pivot(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    """The shipment exists: the order is committed, whatever is asked from now on."""
    state = _enter_phase(
        state, Phase.COMPLETING, "FinalizingOrder",
        "Shipment created; committing stock and confirming the order", now,
    )
    decision = Decision(state)
    if state.cancel_requested:
        decision = _then(decision, lambda s: _refuse_cancellation(s, now))
    for name in AFTER_PIVOT:
        decision = _then(decision, partial(_send_forward, name=name, now=now, config=config))
    return decision


def _complete_if_done(state: SagaState, now: datetime) -> Decision:
    if any(state.step(name).state is not StepState.SUCCEEDED for name in AFTER_PIVOT):
        return Decision(state)
    message = "Order completed"  # the steps' entries say what was done
    if state.cancel_requested:
        message += "; the cancellation was refused because the shipment already existed"
    state = _enter_phase(state, Phase.COMPLETED, "OrderCompleted", message, now)
    return _emit(state, "OrderCompleted", message)


# --------------------------------------------------------------------------------------
# Turning around: business failures, exhausted retries, cancellations
# --------------------------------------------------------------------------------------


def _on_rejection(
    state: SagaState, step: Step, payload: Mapping[str, Any], now: datetime, config: SagaConfig
) -> Decision:
    """The service refused: nothing was applied, so this step itself needs no undo."""
    code = str(payload.get("reason") or "UNSPECIFIED")
    detail = f"{code} ({payload['sku']})" if payload.get("sku") else code
    failed = replace(step, state=StepState.FAILED, deadline=None, finished_at=now,
                     last_error=detail)
    state = state.with_step(failed)
    message = f"{_REJECTED[step.name]}: {detail}"
    decision = _emit(state, step.definition.rejection or "StepRejected", message, "Warning",
                     step.name)
    cause, message = _failure_cause(state, _camel(code), message)
    return _then(decision, lambda s: _turn_around(s, cause, message, None, now, config))


_REJECTED = {"reserve": "Stock not reserved", "fraud-check": "Payment suspected of fraud",
             "pay": "Payment declined", "ship": "Shipment refused"}


def _turn_around(
    state: SagaState,
    cause: str,
    message: str,
    unknown_step: str | None,
    now: datetime,
    config: SagaConfig,
) -> Decision:
    """Stop going forward and undo, newest first.

    ``unknown_step`` is the step that was in flight and whose outcome is unknown (it ran
    out of attempts, or the order was cancelled while it was in flight): it is the newest,
    so it is compensated first -- its compensation undoes it or leaves a tombstone; a
    check has nothing to undo and just fails.  The outcome is Cancelled if a cancellation
    was asked for before this point, else Failed.
    """
    state = _planned(state, config)  # cancelled before it started: on the current flow
    if unknown_step is not None and STEPS[unknown_step].kind is StepKind.CHECK:
        given_up = replace(state.step(unknown_step), state=StepState.FAILED, deadline=None,
                           finished_at=now)
        state, unknown_step = state.with_step(given_up), None
    outcome_step = "notify-cancelled" if state.cancel_requested else "notify-failed"
    steps = (
        *(replace(s, state=StepState.SKIPPED) if s.state is StepState.PENDING else s
          for s in state.steps),
        Step(outcome_step),
    )
    state = replace(state, steps=steps, started_at=state.started_at or now)
    if unknown_step is not None:
        state = state.with_step(replace(state.step(unknown_step), finished_at=now))
    state = _enter_phase(state, Phase.COMPENSATING, cause, message, now)
    undo = ([unknown_step] if unknown_step else []) + _to_compensate(state)
    plan = ", ".join(STEPS[name].compensation or name for name in undo) or "nothing to undo"
    decision = _emit(state, "CompensationStarted", f"{message}; compensating: {plan}", "Warning")
    if unknown_step is not None:
        return _then(decision, lambda s: _send_compensation(s, unknown_step, now, config))
    return _then(decision, lambda s: _compensate_next(s, now, config))


def _failure_cause(state: SagaState, cause: str, message: str) -> tuple[str, str]:
    """A failure while a cancellation was pending (only possible while shipping) cancels."""
    if state.cancel_requested:
        return "CancellationRequested", f"Cancellation requested; meanwhile {message}"
    return cause, message


def _to_compensate(state: SagaState) -> list[str]:
    """Succeeded steps still to undo, newest first (the pivot never: it commits the order)."""
    return [
        name for name in reversed(state.flow.forward)
        if STEPS[name].kind is StepKind.COMPENSATABLE
        and state.step(name).state is StepState.SUCCEEDED
    ]


def _compensate_next(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    """One compensation at a time; when none is left, tell the customer."""
    if any(step.state is StepState.COMPENSATING for step in state.steps):
        return Decision(state)
    remaining = _to_compensate(state)
    if remaining:
        return _send_compensation(state, remaining[0], now, config)
    outcome_step = _outcome_step(state)
    if state.step(outcome_step).state is not StepState.PENDING:
        return Decision(state)
    return _send_forward(state, outcome_step, now, config)


def _send_compensation(state: SagaState, name: str, now: datetime, config: SagaConfig) -> Decision:
    step = state.step(name)
    attempt = step.compensation_attempts + 1
    step = replace(
        step,
        state=StepState.COMPENSATING,
        compensation_attempts=attempt,
        sent_at=now,
        deadline=now + config.compensation_wait(attempt),
        unsent=False,
        publish_failures=0,
    )
    return Decision(state.with_step(step), commands=(_command(state, step, config),))


def _on_compensated(
    state: SagaState, step: Step, payload: Mapping[str, Any], now: datetime, config: SagaConfig
) -> Decision:
    """A compensation was confirmed -- even one given up on, which heals CompensationFailed."""
    noop = payload.get("noop")
    compensated = replace(
        _with_ids(step, payload),
        state=StepState.COMPENSATED, deadline=None, last_error=None,
        compensation_noop=noop if isinstance(noop, bool) else None,
    )
    state = state.with_step(compensated)
    if state.phase is Phase.COMPENSATION_FAILED:
        state = _resume_compensating(state, now)
    refunded = 0 if noop is True else _amount(payload)
    # A refund of a capture whose reply never came (the step timed out): the capture
    # happened all the same, and the ledger has it.
    unseen = refunded if step.charge_id is None else 0
    decision = _emit(state, step.definition.compensation_reply or "StepCompensated",
                     _compensated_message(state, compensated), step=step.name,
                     captured=unseen, refunded=refunded)
    return _then(decision, lambda s: _compensate_next(s, now, config))


def _finish_turned_around(state: SagaState, now: datetime) -> Decision:
    """The customer has been told: the rolled-back order reaches its terminal phase."""
    phase = Phase.CANCELLED if _outcome_step(state) == "notify-cancelled" else Phase.FAILED
    state = _enter_phase(state, phase, state.reason, state.message, now)
    return _emit(state, f"Order{phase.value}",
                 f"{state.message}; every completed step was undone and the customer notified")


def _outcome_step(state: SagaState) -> str:
    return "notify-cancelled" if state.has_step("notify-cancelled") else "notify-failed"


# --------------------------------------------------------------------------------------
# Cancellation
# --------------------------------------------------------------------------------------


def _cancel_from_spec(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    if state.spec.cancel and not state.cancel_requested:
        return _request_cancellation(
            state, "CancellationRequested", "spec.cancel set to true", now, config
        )
    return Decision(state)


def _request_cancellation(
    state: SagaState, cause: str, message: str, now: datetime, config: SagaConfig
) -> Decision:
    """Cancel before the pivot (compensating what is done); refuse it after the pivot."""
    if state.cancel_requested or state.phase in (Phase.FAILED, Phase.CANCELLED):
        return Decision(state)
    if state.phase is Phase.COMPLETED and cause == "DeletionRequested":
        return Decision(state)  # a finished order is simply removed
    state = replace(state, cancel_requested=True)
    if state.phase in (Phase.COMPLETING, Phase.COMPLETED):
        return _refuse_cancellation(state, now)
    if state.phase is Phase.SHIPPING:
        # The shipment may be created any moment and must not be voided then; its reply
        # decides: created -> refused, rejected or timed out -> Cancelled.
        return _emit(state, "CancellationPending",
                     f"{message}; waiting for the shipment's outcome: the order is cancelled "
                     "only if no shipment is created", step="ship")
    if state.phase in (Phase.COMPENSATING, Phase.COMPENSATION_FAILED):
        return _emit(state, "CancellationNoted",
                     f"{message}; the order is already being rolled back ({state.reason})")
    in_flight = next((s for s in state.steps if s.state is StepState.IN_FLIGHT), None)
    if in_flight is None:
        return _turn_around(state, cause, message, None, now, config)
    unknown = replace(in_flight, last_error=f"Cancelled while {in_flight.definition.command} "
                      "was in flight; outcome unknown")
    return _turn_around(state.with_step(unknown), cause, message, unknown.name, now, config)


def _refuse_cancellation(state: SagaState, now: datetime) -> Decision:
    message = "The shipment was already created, so the order can no longer be cancelled"
    state = _set_condition(state, "CancellationRefused", "True", "PastPivot", message, now)
    return _emit(state, "CancellationRefused", message, "Warning")


# --------------------------------------------------------------------------------------
# Time: retries, exhausted budgets; restart; repair
# --------------------------------------------------------------------------------------


def _on_tick(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    if state.is_terminal or state.is_paused:
        return Decision(state)  # a paused saga's deadlines wait for it
    due = [s.name for s in state.steps if s.deadline is not None and s.deadline <= now]
    decision = Decision(state)
    for name in due:
        decision = _then(decision, partial(_on_deadline, name=name, now=now, config=config))
    return decision


def _on_deadline(state: SagaState, name: str, now: datetime, config: SagaConfig) -> Decision:
    step = state.step(name)
    if step.deadline is None or step.deadline > now:
        return Decision(state)  # settled by an earlier part of this same tick
    if step.unsent and step.waiting:
        return _publish_again(state, step, now, config)
    if step.state is StepState.COMPENSATING:
        return _on_compensation_timeout(state, step, now, config)
    definition = step.definition
    waited = _duration(config.forward_wait(step.attempts))
    lost = f"No reply to {definition.command} within {waited}"
    if definition.kind is StepKind.RETRIABLE or step.attempts < config.max_attempts:
        budget = "" if definition.kind is StepKind.RETRIABLE else f" of {config.max_attempts}"
        retried = replace(step, last_error=lost)
        decision = _emit(state.with_step(retried), "Retrying",
                         f"{lost}; re-sending (attempt {step.attempts + 1}{budget})",
                         "Warning", name)
        return _then(decision, lambda s: _send_forward(s, name, now, config))
    unknown = replace(step, last_error=f"No reply after {step.attempts} attempts; outcome unknown")
    cause, message = _failure_cause(
        state,
        definition.timeout_reason,
        f"{definition.command} got no reply after {step.attempts} attempts; outcome unknown",
    )
    return _turn_around(state.with_step(unknown), cause, message, name, now, config)


def _on_compensation_timeout(
    state: SagaState, step: Step, now: datetime, config: SagaConfig
) -> Decision:
    compensation = step.definition.compensation
    waited = _duration(config.compensation_wait(step.compensation_attempts))
    lost = f"No reply to {compensation} within {waited}"
    if step.compensation_attempts < config.compensation_max_attempts:
        decision = _emit(
            state.with_step(replace(step, last_error=lost)), "CompensationRetrying",
            f"{lost}; re-sending (attempt {step.compensation_attempts + 1} of "
            f"{config.compensation_max_attempts})", "Warning", step.name,
        )
        return _then(decision, lambda s: _send_compensation(s, step.name, now, config))
    message = (
        f"{compensation} for step {step.name} got no reply after {step.compensation_attempts} "
        f"attempts; repair the {step.definition.service} service, then resume the saga "
        "(docs/saga.md)"
    )
    failed = replace(step, state=StepState.COMPENSATION_FAILED, deadline=None, last_error=lost)
    state = _enter_phase(state.with_step(failed), Phase.COMPENSATION_FAILED,
                         "CompensationFailed", message, now)
    return _emit(state, "CompensationFailed", message, "Warning", step.name)


def _on_not_sent(state: SagaState, event: NotSent, now: datetime, config: SagaConfig
                 ) -> Decision:
    """The attempt in flight never left: publish it again after a pause, same attempt."""
    if not state.has_step(event.step) or state.is_terminal:
        return Decision(state)
    step = state.step(event.step)
    if event.compensation:
        current = step.state is StepState.COMPENSATING and step.compensation_attempts
        base, cap = config.compensation_backoff_base, config.compensation_backoff_max
    else:
        current = step.state is StepState.IN_FLIGHT and step.attempts
        base, cap = config.backoff_base, config.backoff_max
    if current != event.attempt or step.unsent:
        return Decision(state)  # that attempt is over, or already known to be unsent
    failures = step.publish_failures + 1
    pause = _backoff(failures, base, cap)
    command = _command(state, step, config)
    message = (f"{command.message_type} could not be published ({failures} in a row); "
               f"publishing it again in {_duration(pause)} (attempt {event.attempt}, not "
               "counted again)")
    unsent = replace(step, unsent=True, publish_failures=failures, deadline=now + pause,
                     last_error=message)
    return _emit(state.with_step(unsent), "CommandNotSent", message, "Warning", step.name,
                 routine=True)


def _on_held(state: SagaState, event: Held, now: datetime) -> Decision:
    """The attempt in flight was kept back by a circuit breaker: wait, same attempt."""
    if not state.has_step(event.step) or state.is_terminal:
        return Decision(state)
    step = state.step(event.step)
    if step.state is not StepState.IN_FLIGHT or step.attempts != event.attempt or step.unsent:
        return Decision(state)  # that attempt is over, or already waiting
    until = max(_utc(event.until), now)
    message = (f"{step.definition.command} held: the {step.definition.service} circuit "
               f"breaker is open; sending it by {format_time(until)} (attempt "
               f"{event.attempt}, not counted again)")
    held = replace(step, unsent=True, deadline=until, last_error=message)
    return _emit(state.with_step(held), "CommandHeld", message, step=step.name, routine=True)


def _on_breaker_closed(state: SagaState, service: str, now: datetime, config: SagaConfig
                       ) -> Decision:
    """Publish, now, the forward commands to ``service`` that wait unsent."""
    if state.is_paused:
        return Decision(state)  # the pause holds them still
    held = [step for step in state.steps if step.state is StepState.IN_FLIGHT
            and step.unsent and step.definition.service == service]
    commands = []
    for step in held:
        state = state.with_step(_sent_now(step, now, config))
        commands.append(_command(state, state.step(step.name), config))
    return Decision(state, tuple(commands))


def _publish_again(state: SagaState, step: Step, now: datetime, config: SagaConfig
                   ) -> Decision:
    """Publish the unsent command of a waiting step: the same attempt."""
    state = state.with_step(_sent_now(step, now, config))
    return Decision(state, commands=(_command(state, state.step(step.name), config),))


def _sent_now(step: Step, now: datetime, config: SagaConfig) -> Step:
    """An unsent command published now: its deadline is the attempt's timeout again."""
    if step.state is StepState.COMPENSATING:
        wait = config.compensation_wait(step.compensation_attempts)
    else:
        wait = config.forward_wait(step.attempts)
    return replace(step, unsent=False, sent_at=now, deadline=now + wait)


def _recover(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    """Re-send what is in flight; first apply overdue deadlines, so nothing goes out twice."""
    ticked = _on_tick(state, now, config)
    just_sent = {(c.idempotency_key, c.compensation) for c in ticked.commands}
    return _then(ticked, lambda s: _resend_in_flight(s, just_sent, now, config))


def _resend_in_flight(state: SagaState, skip: set[tuple[str, bool]], now: datetime,
                      config: SagaConfig) -> Decision:
    """The same command again (same key, same attempt): it may never have been published."""
    commands: list[Command] = []
    for step in state.steps:
        if not step.waiting:
            continue
        if step.unsent:
            step = _sent_now(step, now, config)
            state = state.with_step(step)
        command = _command(state, step, config)
        if (command.idempotency_key, command.compensation) not in skip:
            commands.append(command)
    if not commands:
        return Decision(state)
    names = ", ".join(f"{c.message_type} ({c.step})" for c in commands)
    return Decision(state, tuple(commands),
                    (Transition("Recovered", f"Operator restarted; re-sent {names}"),))


def _resume(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    """After a human repair: the failed compensation gets a fresh budget and is re-sent."""
    if state.phase is not Phase.COMPENSATION_FAILED:
        return Decision(state)
    failed = next((s for s in state.steps if s.state is StepState.COMPENSATION_FAILED), None)
    if failed is None:  # only a hand-edited status gets here; carry on compensating
        return _compensate_next(_resume_compensating(state, now), now, config)
    state = _resume_compensating(state.with_step(replace(failed, compensation_attempts=0)), now)
    decision = _emit(state, "CompensationResumed",
                     f"Resumed by a human; re-sending {failed.definition.compensation}",
                     step=failed.name)
    return _then(decision, lambda s: _send_compensation(s, failed.name, now, config))


def _resume_compensating(state: SagaState, now: datetime) -> SagaState:
    """Back to Compensating with the original cause (kept by the Compensating condition)."""
    cause = state.condition("Compensating")
    reason, message = (cause.reason, cause.message) if cause else ("Compensating", "")
    return _enter_phase(state, Phase.COMPENSATING, reason, message, now)


# --------------------------------------------------------------------------------------
# Pause
# --------------------------------------------------------------------------------------


def _pause_from_spec(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    """Start or end the pause ``spec.paused`` asks for (a finished saga has none)."""
    if state.spec.paused and not state.is_paused and not state.is_terminal:
        message = ("Paused by spec.paused: nothing is published and no deadline fires; "
                   "replies are still recorded")
        state = _set_condition(replace(state, paused_at=now), "Paused", "True", "Paused",
                               message, now)
        return _emit(state, "Paused", message)
    if not state.spec.paused and state.is_paused:
        return _unpause(state, now, config)
    return Decision(state)


def _unpause(state: SagaState, now: datetime, config: SagaConfig) -> Decision:
    """Carry on where it stopped: every command in flight goes out now -- those held, and
    those published before the pause, the same attempt again (their expiry may have passed
    while paused, and a service drops an expired command unanswered) -- with its timeout
    counted from now: the time paused is nobody's timeout."""
    assert state.paused_at is not None
    paused_for = max(now - state.paused_at, timedelta(0))
    commands: list[Command] = []
    for step in state.steps:
        if step.waiting:
            step = _sent_now(step, now, config)
            state = state.with_step(step)
            commands.append(_command(state, step, config))
    message = f"Carried on after a pause of {_duration(paused_for)}"
    if commands:
        message += "; sent " + ", ".join(f"{c.message_type} ({c.step})" for c in commands)
    state = _set_condition(replace(state, paused_at=None), "Paused", "False", "Resumed",
                           message, now)
    return _then(Decision(state, tuple(commands)), lambda s: _emit(s, "Resumed", message))


def _hold_while_paused(decision: Decision, now: datetime) -> Decision:
    """While paused, the commands decided are kept as unsent (published on resume); once the
    saga has finished, a pause has nothing left to hold."""
    state = decision.state
    if not state.is_paused:
        return decision
    if state.is_terminal:
        message = "The saga finished while paused (its last replies came in)"
        state = _set_condition(replace(state, paused_at=None), "Paused", "False",
                               "SagaFinished", message, now)
        return Decision(state, decision.commands, decision.transitions)
    for command in decision.commands:
        state = state.with_step(replace(state.step(command.step), unsent=True, deadline=None))
    return Decision(state, (), decision.transitions)


# --------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------


def _known_version(state: SagaState, now: datetime) -> Decision:
    """An operator that knows the version clears what one that did not said."""
    said = state.condition("UnknownSagaVersion")
    if said is None or said.status != "True":
        return Decision(state)
    message = f"Saga version {state.version} is known to this operator; carrying on"
    return _emit(_set_condition(state, "UnknownSagaVersion", "False", "KnownVersion",
                                message, now), "KnownSagaVersion", message)


def unknown_version_status(status: Mapping[str, Any], unknown: UnknownSagaVersion,
                           now: datetime) -> dict[str, Any] | None:
    """``status`` with the condition saying why the operator leaves the Order alone, or
    None when it says so already: the rest of the status -- the saga log of a flow this
    operator does not know -- stays exactly as it is."""
    conditions = [c for c in status.get("conditions") or () if isinstance(c, Mapping)]
    said = next((c for c in conditions if c.get("type") == "UnknownSagaVersion"), None)
    if said is not None and said.get("status") == "True" and said.get("message") == str(unknown):
        return None
    condition = _condition_to_status(
        Condition("UnknownSagaVersion", "True", "NotKnownToThisOperator", str(unknown), now))
    others = [dict(c) for c in conditions if c.get("type") != "UnknownSagaVersion"]
    return {**status, "conditions": [*others, condition]}


# --------------------------------------------------------------------------------------
# Phase and conditions
# --------------------------------------------------------------------------------------


def _enter_phase(
    state: SagaState, phase: Phase, reason: str, message: str, now: datetime
) -> SagaState:
    """Set phase, reason and message, and the conditions that follow from them.

    Ready is True only when Completed.  Compensating is True from the turnaround until
    Failed/Cancelled -- also while stuck in CompensationFailed, and it keeps the original
    cause, which is how a Resume restores it.  CompensationFailed is True only in that phase.
    """
    state = replace(
        state, phase=phase, reason=reason, message=message,
        finished_at=now if phase in TERMINAL_PHASES else None,
    )
    ready: ConditionStatus = "True" if phase is Phase.COMPLETED else "False"
    state = _set_condition(state, "Ready", ready, reason, message, now)
    if phase is Phase.COMPENSATING:
        state = _set_condition(state, "Compensating", "True", reason, message, now)
    elif phase in (Phase.FAILED, Phase.CANCELLED):
        state = _set_condition(state, "Compensating", "False", "Compensated",
                               "Every completed step was undone", now)
    if phase is Phase.COMPENSATION_FAILED:
        state = _set_condition(state, "CompensationFailed", "True", reason, message, now)
    elif state.condition("CompensationFailed") is not None:
        state = _set_condition(state, "CompensationFailed", "False", "CompensationResumed",
                               "The failed compensation went through", now)
    return state


def _set_condition(
    state: SagaState,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
) -> SagaState:
    old = state.condition(type_)
    if old is None:
        return replace(
            state, conditions=(*state.conditions, Condition(type_, status, reason, message, now))
        )
    since = old.last_transition_time if old.status == status else now
    new = Condition(type_, status, reason, message, since)
    return replace(state, conditions=tuple(new if c.type == type_ else c for c in state.conditions))


# --------------------------------------------------------------------------------------
# Small helpers: ids, messages, time, (de)serialisation
# --------------------------------------------------------------------------------------


def _with_ids(step: Step, payload: Mapping[str, Any]) -> Step:
    """Copy the ids this step's service returns (chargeId, ...) from a reply payload."""
    found = {key: str(payload[key]) for key in step.definition.ids if payload.get(key) is not None}
    if not found:
        return step
    return replace(
        step,
        reservation_id=found.get("reservationId", step.reservation_id),
        charge_id=found.get("chargeId", step.charge_id),
        refund_id=found.get("refundId", step.refund_id),
        shipment_id=found.get("shipmentId", step.shipment_id),
        tracking_id=found.get("trackingId", step.tracking_id),
        notification_id=found.get("notificationId", step.notification_id),
    )


def _amount(payload: Mapping[str, Any]) -> int:
    """A reply's ``amount`` (minor units; 0 if it has none)."""
    amount = payload.get("amount")
    return amount if isinstance(amount, int) and not isinstance(amount, bool) else 0


def _success_message(state: SagaState, step: Step) -> str:
    money = _money(state.spec.total, state.spec.currency)
    messages = {
        "reserve": f"Reserved {sum(i.quantity for i in state.spec.items)} unit(s) "
                   f"(reservation {step.reservation_id})",
        "fraud-check": f"No sign of fraud in the payment of {money}",
        "pay": f"Captured {money} (charge {step.charge_id})",
        "ship": f"Shipment {step.shipment_id} created (tracking {step.tracking_id}); "
                "the order is committed",
        "commit": "Reserved stock committed",
    }
    return messages.get(step.name, f"Sent the {TEMPLATES.get(step.name)} notification "
                                   f"({step.notification_id})")


def _compensated_message(state: SagaState, step: Step) -> str:
    if step.compensation_noop:
        return (f"{step.definition.compensation}: nothing to undo; a tombstone now refuses a "
                f"late {step.definition.command}")
    messages = {
        "reserve": "Released the reserved stock",
        "pay": f"Refunded {_money(state.spec.total, state.spec.currency)} "
               f"(refund {step.refund_id})",
        "ship": "Voided the shipment",
    }
    return messages[step.name]


_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK"})


def _money(amount: int, currency: str) -> str:
    if currency in _ZERO_DECIMAL_CURRENCIES:
        return f"{amount} {currency}"
    return f"{amount // 100}.{amount % 100:02d} {currency}"


def _camel(code: str) -> str:
    """OUT_OF_STOCK -> OutOfStock: a Kubernetes-style reason from a service's reason code."""
    words = "".join(c if c.isalnum() else " " for c in code).split()
    return "".join(word.capitalize() for word in words) or "Unspecified"


def _duration(delta: timedelta) -> str:
    return f"{delta.total_seconds():g}s"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("event times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a 'Z': the fraction only as precise as the time, so round-trips
    are exact and a millisecond clock (the operator's) writes three digits, not six."""
    moment = moment.astimezone(UTC)
    if not moment.microsecond:
        fraction = ""
    elif moment.microsecond % 1000:
        fraction = f".{moment.microsecond:06d}"
    else:
        fraction = f".{moment.microsecond // 1000:03d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def parse_time(text: str) -> datetime:
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _time_or_none(moment: datetime | None) -> str | None:
    return None if moment is None else format_time(moment)


def _parse_time_or_none(text: Any) -> datetime | None:
    return None if text is None else parse_time(str(text))


def _without_nones(status: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if value is not None}


def _step_to_status(step: Step) -> dict[str, Any]:
    definition = step.definition
    status: dict[str, Any] = {"state": step.state.value, "attempts": step.attempts}
    if step.compensation_attempts:
        status["compensationAttempts"] = step.compensation_attempts
    status.update(
        startedAt=_time_or_none(step.started_at),
        # Left out while it equals startedAt (a first attempt): the reader defaults it.
        sentAt=None if step.sent_at == step.started_at else _time_or_none(step.sent_at),
        deadline=_time_or_none(step.deadline),
        finishedAt=_time_or_none(step.finished_at),
        lastError=step.last_error,
    )
    for key in definition.ids:
        status[key] = step.service_id(key)
    if definition.compensation is not None:
        status["compensationNoop"] = step.compensation_noop
    if step.unsent:
        status["unsent"] = True
    if step.publish_failures:
        status["publishFailures"] = step.publish_failures
    return _without_nones(status)


def _step_from_status(name: str, status: Mapping[str, Any]) -> Step:
    noop = status.get("compensationNoop")
    step = Step(
        name=name,
        state=StepState(status.get("state") or StepState.PENDING.value),
        attempts=int(status.get("attempts") or 0),
        compensation_attempts=int(status.get("compensationAttempts") or 0),
        started_at=_parse_time_or_none(status.get("startedAt")),
        sent_at=_parse_time_or_none(status.get("sentAt") or status.get("startedAt")),
        deadline=_parse_time_or_none(status.get("deadline")),
        finished_at=_parse_time_or_none(status.get("finishedAt")),
        last_error=None if status.get("lastError") is None else str(status["lastError"]),
        compensation_noop=noop if isinstance(noop, bool) else None,
        unsent=status.get("unsent") is True,
        publish_failures=int(status.get("publishFailures") or 0),
    )
    return _with_ids(step, status)


def _event_to_status(event: DomainEvent) -> dict[str, Any]:
    return _without_nones({
        "seq": event.seq,
        "time": format_time(event.time),
        "reason": event.reason,
        "message": event.message,
        "type": None if event.type == "Normal" else event.type,
        "step": event.step,
        "phase": event.phase.value,
        "announced": event.announced or None,
        "captured": event.captured or None,
        "refunded": event.refunded or None,
    })


def _event_from_status(status: Mapping[str, Any]) -> DomainEvent:
    return DomainEvent(
        seq=int(status["seq"]),
        time=parse_time(str(status["time"])),
        reason=str(status["reason"]),
        message=str(status.get("message") or ""),
        type="Warning" if status.get("type") == "Warning" else "Normal",
        phase=Phase(status["phase"]),
        announced=status.get("announced") is True,
        step=None if status.get("step") is None else str(status["step"]),
        captured=int(status.get("captured") or 0),
        refunded=int(status.get("refunded") or 0),
    )


def _condition_to_status(condition: Condition) -> dict[str, Any]:
    return {
        "type": condition.type,
        "status": condition.status,
        "reason": condition.reason,
        "message": condition.message,
        "lastTransitionTime": format_time(condition.last_transition_time),
    }


def _condition_from_status(status: Mapping[str, Any]) -> Condition:
    value = status.get("status")
    if value not in ("True", "False", "Unknown"):
        raise ValueError(f"condition {status.get('type')!r} has invalid status {value!r}")
    return Condition(
        type=str(status["type"]),
        status=value,
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        last_transition_time=parse_time(str(status["lastTransitionTime"])),
    )


__all__ = [
    "AFTER_PIVOT",
    "FLOWS",
    "PHASE_CHANGES",
    "STEPS",
    "TEMPLATES",
    "TERMINAL_PHASES",
    "UNPUBLISHED_REASONS",
    "Address",
    "BreakerClosed",
    "CancelRequested",
    "Command",
    "Condition",
    "Customer",
    "Decision",
    "Deleted",
    "DomainEvent",
    "Event",
    "Flow",
    "Held",
    "InvalidOrderSpec",
    "LineItem",
    "NotSent",
    "OrderSpec",
    "PauseChanged",
    "Phase",
    "Queued",
    "Recover",
    "Reply",
    "Resume",
    "SagaConfig",
    "SagaState",
    "Start",
    "Step",
    "StepDefinition",
    "StepKind",
    "StepState",
    "Tick",
    "TimelineEntry",
    "Transition",
    "UnknownSagaVersion",
    "decide",
    "forget_published",
    "format_time",
    "idempotency_key",
    "next_deadline",
    "parse_time",
    "unknown_version_status",
]
