"""What a chaos run does, decided before it starts: the orders and the fault schedule.

Pure and seeded: the same seed gives the same orders (kinds, SKUs, times, when each
cancellation or deletion comes) and the same faults, so a run that found something can be
run again. Nothing here touches the stack (that is :mod:`.faults` and :mod:`.run`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: The kinds of order in the load, and what each should end as without faults.
ORDER_KINDS: Mapping[str, str] = {
    "normal": "Completed",
    "decline": "Failed",         # the card is declined (tok_decline)
    "out-of-stock": "Failed",    # a SKU that has no stock
    "undeliverable": "Failed",   # the carrier refuses the address
    "cancel": "Cancelled",       # spec.cancel at a random moment (Completed if too late)
    "delete": "deleted",         # the Order deleted at a random moment
}
DEFAULT_MIX: Mapping[str, float] = {
    "normal": 0.6, "decline": 0.08, "out-of-stock": 0.08, "undeliverable": 0.08,
    "cancel": 0.08, "delete": 0.08,
}
EMPTY_SKU = "SKU-CHAOS-EMPTY"
"""Never stocked: orders of kind out-of-stock ask for it."""


@dataclass(frozen=True)
class PlannedOrder:
    name: str
    kind: str
    sku: str
    quantity: int
    unit_price: int
    at: float
    """Seconds after the load starts when it is created."""
    act_after: float | None = None
    """For cancel and delete: seconds after its creation when that happens."""


#: What a fault does (its `target`: a component of the stack, a service, or a queue's service).
FAULT_KINDS: Mapping[str, str] = {
    "kill": "SIGKILL the component (no graceful shutdown), then start it as the stack does",
    "restart": "stop the component gracefully and start it again",
    "outage": "stop the component for `duration` seconds, then start it",
    "freeze": "SIGSTOP the component for `duration` seconds (a slow process), then SIGCONT",
    "latency": "add `value` ms to every call of the service's processor for `duration` s",
    "errors": "fail `value` of the service's processor calls (transient) for `duration` s",
    "lost-commits": "fail `value` of payment's handlings after the processor acted",
    "poison": "publish `value` malformed messages to the service's command queue",
    "duplicates": "send the replies the services sent in the last `duration` s once more",
}
#: Where each kind of fault may act (the random mode draws from these).
TARGETS: Mapping[str, Sequence[str]] = {
    "kill": ("operator", "inventory", "payment", "shipping", "notification", "gateway"),
    "restart": ("operator", "payment", "redis", "kube-apiserver"),
    "outage": ("rabbitmq", "postgres", "kube-apiserver", "etcd", "redis"),
    "freeze": ("operator", "payment", "inventory"),
    "latency": ("payment", "shipping"),
    "errors": ("payment", "shipping"),
    "lost-commits": ("payment",),
    "poison": ("inventory", "payment", "shipping", "notification"),
    "duplicates": ("services",),
}


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    target: str
    duration: float = 0.0
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.at < 0 or self.duration < 0:
            raise ValueError("a fault's time and duration cannot be negative")

    @property
    def ends(self) -> float:
        return self.at + self.duration

    def describe(self) -> str:
        extra = {
            "outage": f" for {self.duration:g}s", "freeze": f" for {self.duration:g}s",
            "latency": f" +{self.value:g}ms for {self.duration:g}s",
            "errors": f" {self.value:.0%} for {self.duration:g}s",
            "lost-commits": f" {self.value:.0%} for {self.duration:g}s",
            "poison": f" x{self.value:g}", "duplicates": f" of the last {self.duration:g}s",
        }.get(self.kind, "")
        return f"{self.kind} {self.target}{extra}"


@dataclass(frozen=True)
class Plan:
    seed: int
    orders: tuple[PlannedOrder, ...]
    faults: tuple[Fault, ...]
    skus: tuple[str, ...] = field(default=())

    @property
    def load_seconds(self) -> float:
        return max((o.at for o in self.orders), default=0.0)

    @property
    def faults_end(self) -> float:
        return max((f.ends for f in self.faults), default=0.0)

    def stock(self) -> dict[str, int]:
        """Stock to seed: enough for every order that asks for a stocked SKU."""
        wanted: Counter[str] = Counter()
        for order in self.orders:
            if order.sku != EMPTY_SKU:
                wanted[order.sku] += order.quantity
        return {sku: wanted[sku] for sku in self.skus} | {EMPTY_SKU: 0}

    def kinds(self) -> Counter[str]:
        return Counter(o.kind for o in self.orders)


def plan_orders(rng: random.Random, *, orders: int, rate: float, skus: Sequence[str],
                mix: Mapping[str, float] = DEFAULT_MIX) -> tuple[PlannedOrder, ...]:
    unknown = set(mix) - set(ORDER_KINDS)
    if unknown:
        raise ValueError(f"unknown order kinds {sorted(unknown)}; known: {', '.join(ORDER_KINDS)}")
    if orders < 1 or rate <= 0 or not skus:
        raise ValueError("a load needs at least one order, a positive rate and a SKU")
    kinds, weights = zip(*((k, w) for k, w in mix.items() if w > 0), strict=True)
    planned = []
    for i in range(orders):
        kind = rng.choices(kinds, weights)[0]
        sku = EMPTY_SKU if kind == "out-of-stock" else rng.choice(list(skus))
        act_after = rng.uniform(0.0, 4.0) if kind in ("cancel", "delete") else None
        planned.append(PlannedOrder(f"c{i:05d}", kind, sku, rng.randint(1, 2),
                                    rng.choice((500, 1299, 4999)), i / rate, act_after))
    return tuple(planned)


def sku_names(count: int) -> tuple[str, ...]:
    return tuple(f"SKU-CHAOS-{i:02d}" for i in range(count))


# -- named scenarios ---------------------------------------------------------------------------

SCENARIOS: Mapping[str, tuple[Fault, ...]] = {
    "operator-kill": (Fault(2, "kill", "operator"), Fault(9, "kill", "operator")),
    "services-kill": tuple(Fault(2 + 2 * i, "kill", s) for i, s in enumerate(
        ("payment", "inventory", "shipping", "notification", "gateway"))),
    "rolling-restarts": (Fault(2, "restart", "payment"), Fault(5, "restart", "redis"),
                         Fault(8, "restart", "kube-apiserver")),
    "broker-outage": (Fault(3, "outage", "rabbitmq", duration=10),),
    "database-outage": (Fault(3, "outage", "postgres", duration=8),),
    "apiserver-outage": (Fault(3, "outage", "kube-apiserver", duration=8),),
    "etcd-outage": (Fault(3, "outage", "etcd", duration=6),),
    "redis-outage": (Fault(2, "outage", "redis", duration=8),),
    "slow-operator": (Fault(2, "freeze", "operator", duration=6),
                      Fault(10, "freeze", "operator", duration=3)),
    "flaky-processors": (Fault(1, "latency", "payment", duration=8, value=400),
                         Fault(1, "errors", "shipping", duration=8, value=0.3),
                         Fault(4, "lost-commits", "payment", duration=6, value=0.3)),
    "lost-commits": (Fault(1, "lost-commits", "payment", duration=4, value=1.0),),
    "poison-and-duplicates": (Fault(2, "poison", "payment", value=3),
                              Fault(3, "poison", "inventory", value=2),
                              Fault(6, "duplicates", "services", duration=6)),
}


def random_faults(rng: random.Random, *, seconds: float, count: int) -> tuple[Fault, ...]:
    """`count` faults at random moments in the first `seconds`, none of them overlapping
    another of the same target (two outages of one component at once are one outage)."""
    faults: list[Fault] = []
    busy: dict[str, float] = {}
    for _ in range(count * 4):
        if len(faults) == count:
            break
        kind = rng.choice(list(FAULT_KINDS))
        target = rng.choice(list(TARGETS[kind]))
        at = round(rng.uniform(0.0, seconds), 1)
        duration = {"outage": rng.uniform(3, 12), "freeze": rng.uniform(2, 6),
                    "latency": rng.uniform(3, 10), "errors": rng.uniform(3, 10),
                    "lost-commits": rng.uniform(3, 10), "duplicates": 10.0}.get(kind, 0.0)
        value = {"latency": rng.choice((200, 500, 1000)), "errors": rng.choice((0.2, 0.5)),
                 "lost-commits": rng.choice((0.2, 0.5)), "poison": rng.randint(1, 3)}.get(kind, 0)
        fault = Fault(at, kind, target, round(duration, 1), float(value))
        if busy.get(target, -1.0) >= at:
            continue
        busy[target] = fault.ends + 2.0
        faults.append(fault)
    return tuple(sorted(faults, key=lambda f: f.at))


def make_plan(*, seed: int, orders: int, rate: float, skus: int, scenario: str | None,
              random_count: int = 0, mix: Mapping[str, float] = DEFAULT_MIX) -> Plan:
    """The run's plan: a named scenario's faults, or `random_count` random ones."""
    rng = random.Random(seed)
    names = sku_names(skus)
    planned = plan_orders(rng, orders=orders, rate=rate, skus=names, mix=mix)
    if scenario is not None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
        faults = SCENARIOS[scenario]
    else:
        span = max(planned[-1].at, 1.0)
        faults = random_faults(rng, seconds=span, count=random_count)
    return Plan(seed, planned, faults, names)
