"""Peers for the throughput benchmark: the same order saga, with the same SQL effects on the
same PostgreSQL, orchestrated by DBOS Transact and by Temporal.

Why: a figure for our saga means little alone; these run the identical work (one
transaction per step, same rows, same idempotency checks: see :mod:`.common`) under two
well-known durable-execution engines, so the benchmark can put them side by side.

    point = await run_point("dbos", database_url=url, orders=300, rate=50.0)
    ...
    await shutdown()

Each peer's resources (DBOS's runtime; Temporal's server and worker process) start on the
first point and are reused by the next ones; their start-up is not measured.
``python -m vyapaar_stack.bench.peers --help`` measures points from the command line.
Nothing here imports ``dbos`` or ``temporalio`` until a peer is used (both optional:
``pip install -e 'hack[bench]'``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["PEERS", "SCHEMAS", "PeerPoint", "available", "run_orders", "run_point", "shutdown"]

PEERS: tuple[str, ...] = ("dbos", "temporal")
#: the schema of the stack's database where each peer keeps the saga's tables
SCHEMAS: dict[str, str] = {"dbos": "peer_dbos", "temporal": "peer_temporal"}


@dataclass(frozen=True)
class PeerPoint:
    """One load point of one peer."""

    peer: str  # "dbos", "temporal" (or "temporal-dev-server" if that fallback were used)
    offered_rate: float  # orders/s offered
    orders: int
    completed: int
    failed: int
    elapsed_s: float  # first start -> last terminal
    latencies_s: list[float]  # per order: start -> terminal
    cpu_s_by_process: dict[str, float]  # CPU seconds during the point, by process


class _Peer(Protocol):
    async def start(self) -> None: ...
    async def run(self, order: Any) -> str: ...
    async def stop(self) -> None: ...


_started: dict[str, _Peer] = {}
log = logging.getLogger(__name__)


def _just(pid: int) -> Callable[[], Sequence[int]]:
    return lambda: [pid]


def available(peer: str) -> str | None:
    """None if runnable, else why not (missing package or binary)."""
    if peer not in PEERS:
        return f"unknown peer {peer!r} (known: {', '.join(PEERS)})"
    package = {"dbos": "dbos", "temporal": "temporalio"}[peer]
    if importlib.util.find_spec(package) is None:
        return f"the Python package {package!r} is not installed (pip install -e 'hack[bench]')"
    if peer == "temporal":
        from .temporal_server import missing

        return missing()
    return None


async def _peer(peer: str, database_url: str) -> tuple[_Peer, str, dict[str, int]]:
    """The started peer (starting it on first use), its schema, and the pids it owns."""
    if peer == "dbos":
        from .dbos_saga import SCHEMA as DBOS_SCHEMA
        from .dbos_saga import DbosPeer

        started = _started.get(peer)
        if started is None:
            started = DbosPeer(database_url)
            await started.start()
            _started[peer] = started
        return started, DBOS_SCHEMA, {}
    from .temporal_saga import SCHEMA as TEMPORAL_SCHEMA
    from .temporal_saga import TemporalPeer

    existing = _started.get(peer)
    if isinstance(existing, TemporalPeer):
        return existing, TEMPORAL_SCHEMA, existing.pids
    temporal = TemporalPeer(database_url)
    await temporal.start()
    _started[peer] = temporal
    return temporal, TEMPORAL_SCHEMA, temporal.pids


async def run_point(peer: str, *, database_url: str, orders: int, rate: float,
                    skus: int = 50) -> PeerPoint:
    """``orders`` sagas started at ``rate``/s (open loop), each one item of one of ``skus``
    generously stocked SKUs with a valid payment token; measured from the first planned
    start to the last outcome. CPU: this process (the load generator, and for DBOS the
    engine itself), the peer's own processes, and PostgreSQL (postmaster and backends)."""
    from . import common

    reason = available(peer)
    if reason is not None:
        raise RuntimeError(f"peer {peer} is not available: {reason}")
    if orders <= 0 or rate <= 0 or skus <= 0:
        raise ValueError("orders, rate and skus must be positive")
    instance, schema, pids = await _peer(peer, database_url)
    await common.ensure_schema(database_url, schema)
    await common.seed_stock(database_url, schema, common.sku_names(skus))
    batch = common.make_orders(f"{peer}-{common.run_tag()}", orders, skus)

    self_name = "python (load generator + DBOS)" if peer == "dbos" else "python (load generator)"
    groups: dict[str, Callable[[], Sequence[int]]] = {
        self_name: _just(os.getpid()),
        "postgres": common.postgres_pids(await common.postmaster_pid(database_url)),
        **{name: _just(pid) for name, pid in pids.items()},
    }
    meter = common.CpuMeter(groups)
    meter.start()
    result = await common.drive(instance.run, batch, rate)
    cpu = meter.stop()
    for error in result.errors:
        log.warning("peer %s: an order failed: %s", peer, error)
    label = peer
    if peer == "temporal":
        label = getattr(instance, "variant", peer)
    return PeerPoint(peer=label, offered_rate=rate, orders=orders, completed=result.completed,
                     failed=result.failed, elapsed_s=result.elapsed_s,
                     latencies_s=list(result.latencies_s), cpu_s_by_process=cpu)


async def run_orders(peer: str, *, database_url: str, orders: Sequence[Any]) -> list[str]:
    """Run the given :class:`.common.Order` s at once; their outcomes (``Completed`` or
    ``Failed:<reason>``), in order. For tests and spot checks: stock is not seeded."""
    import asyncio

    from . import common

    reason = available(peer)
    if reason is not None:
        raise RuntimeError(f"peer {peer} is not available: {reason}")
    instance, schema, _ = await _peer(peer, database_url)
    await common.ensure_schema(database_url, schema)
    return list(await asyncio.gather(*(instance.run(order) for order in orders)))


async def shutdown() -> None:
    """Stop whatever the peers started (DBOS's runtime, Temporal's worker and server)."""
    while _started:
        _, instance = _started.popitem()
        await instance.stop()
