"""The benchmark's peers (vyapaar_stack.bench.peers): the saga plan and the load generator on
their own, then each peer's SQL effects on the real PostgreSQL.

DBOS runs wherever ``dbos`` is installed (``pip install -e 'hack[bench]'``); Temporal also
needs its server built (hack/bench/peers/build-temporal.sh), which CI does not do: those
cases skip, saying why.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from vyapaar_stack.bench import peers
from vyapaar_stack.bench.peers import common, dbos_saga, temporal_saga


class _RecordingSteps:
    """Fake steps: record the calls, reject at one chosen step."""

    def __init__(self, reject: str | None = None) -> None:
        self.reject = reject
        self.calls: list[str] = []

    async def _forward(self, name: str) -> str | None:
        self.calls.append(name)
        return "NOPE" if self.reject == name else None

    async def reserve(self, order: common.Order) -> str | None:
        return await self._forward("reserve")

    async def pay(self, order: common.Order) -> str | None:
        return await self._forward("pay")

    async def ship(self, order: common.Order) -> tuple[str | None, str | None]:
        reason = await self._forward("ship")
        return (None, reason) if reason else ("VN000000000000", None)

    async def release(self, order: common.Order) -> None:
        self.calls.append("release")

    async def refund(self, order: common.Order) -> None:
        self.calls.append("refund")

    async def void(self, order: common.Order) -> None:
        self.calls.append("void")

    async def commit(self, order: common.Order) -> None:
        self.calls.append("commit")

    async def notify(self, order: common.Order, template: str, data: dict[str, Any]) -> None:
        self.calls.append(f"notify:{template}")


@pytest.mark.parametrize(("reject", "outcome", "calls"), [
    (None, "Completed", ["reserve", "pay", "ship", "commit", "notify:order-confirmed"]),
    ("reserve", "Failed:NOPE", ["reserve", "notify:order-failed"]),
    ("pay", "Failed:NOPE", ["reserve", "pay", "release", "notify:order-failed"]),
    ("ship", "Failed:NOPE",
     ["reserve", "pay", "ship", "void", "refund", "release", "notify:order-failed"]),
])
async def test_the_saga_compensates_in_reverse_order(reject: str | None, outcome: str,
                                                     calls: list[str]) -> None:
    steps = _RecordingSteps(reject)
    assert await common.order_saga(common.Order(uid="o-1", sku="S"), steps) == outcome
    assert steps.calls == calls


async def test_the_load_is_open_loop_and_timed_from_the_planned_start() -> None:
    started: list[float] = []
    loop = asyncio.get_running_loop()

    async def slow(order: common.Order) -> str:
        started.append(loop.time())
        await asyncio.sleep(0.2)  # far longer than the gap between starts
        return "Failed:X" if order.uid.endswith("3") else common.COMPLETED

    result = await common.drive(slow, common.make_orders("t", 10, 3), rate=100.0)

    assert (result.completed, result.failed) == (9, 1)
    # all ten started within 90 ms, none waiting for an earlier one's 200 ms to end
    assert max(started) - min(started) < 0.19
    assert all(0.19 < latency < 1.0 for latency in result.latencies_s)
    assert 0.28 < result.elapsed_s < 1.2


def test_peers_report_why_they_cannot_run() -> None:
    assert peers.available("nope") is not None
    for peer in peers.PEERS:
        reason = peers.available(peer)
        assert reason is None or "install" in reason or "build" in reason or "run " in reason
    assert peers.SCHEMAS == {"dbos": dbos_saga.SCHEMA, "temporal": temporal_saga.SCHEMA}


def _runnable(peer: str) -> Any:
    reason = peers.available(peer)
    return pytest.param(peer, marks=pytest.mark.skipif(reason is not None,
                                                       reason=f"{peer}: {reason}"))


@pytest.fixture(scope="module")
async def peer_shutdown() -> AsyncIterator[None]:
    """Peers start once for the module (as in the benchmark) and stop at its end."""
    yield
    await peers.shutdown()


@pytest.mark.parametrize("peer", [_runnable(p) for p in peers.PEERS])
async def test_a_peer_has_our_sagas_sql_effects(peer: str, database_url: str,
                                                peer_shutdown: None) -> None:
    schema = peers.SCHEMAS[peer]
    tag = secrets.token_hex(3).upper()
    good_sku, declined_sku = f"SKU-PEERTEST-{tag}-A", f"SKU-PEERTEST-{tag}-B"
    await common.ensure_schema(database_url, schema)
    await common.seed_stock(database_url, schema, [good_sku, declined_sku], available=10)
    good = [common.Order(uid=f"{peer}-test-{tag}-{i}", sku=good_sku) for i in range(3)]
    declined = common.Order(uid=f"{peer}-test-{tag}-declined", sku=declined_sku,
                            payment_token="tok_decline")
    unknown = common.Order(uid=f"{peer}-test-{tag}-unknown", sku=f"SKU-PEERTEST-{tag}-NONE")

    outcomes = await asyncio.wait_for(
        peers.run_orders(peer, database_url=database_url, orders=[*good, declined, unknown]),
        180)

    assert outcomes == ["Completed"] * 3 + ["Failed:CARD_DECLINED", "Failed:UNKNOWN_SKU"]
    conn = await asyncpg.connect(database_url)
    try:
        async def rows(sql: str, *args: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in await conn.fetch(sql.format(s=schema), *args)]

        # stock: three units committed; the declined order's unit is back; nothing held
        assert await rows("SELECT sku, available, held, committed FROM {s}.stock "
                          "WHERE sku = ANY($1) ORDER BY sku", [good_sku, declined_sku]) == [
            (good_sku, 7, 0, 3), (declined_sku, 10, 0, 0)]
        uids = [o.uid for o in good]
        assert await rows("SELECT status, count(*) FROM {s}.reservations "
                          "WHERE order_uid = ANY($1) GROUP BY status", uids) == [("committed", 3)]
        assert await rows("SELECT kind, amount, currency FROM {s}.ledger_entries "
                          "WHERE order_uid = ANY($1)", uids) == [("charge", 100, "INR")] * 3
        assert await rows("SELECT count(*) FROM {s}.shipments WHERE order_uid = ANY($1) "
                          "AND status = 'created' AND tracking_id LIKE 'VN%'", uids) == [(3,)]
        assert await rows("SELECT template, count(*) FROM {s}.notifications "
                          "WHERE order_uid = ANY($1) GROUP BY template",
                          uids) == [("order-confirmed", 3)]

        # the declined payment compensated: released, no money moved, nothing shipped
        assert await rows("SELECT status FROM {s}.reservations WHERE order_uid = $1",
                          declined.uid) == [("released",)]
        assert await rows("SELECT status, reason FROM {s}.payments WHERE order_uid = $1",
                          declined.uid) == [("declined", "CARD_DECLINED")]
        assert await rows("SELECT count(*) FROM {s}.ledger_entries WHERE order_uid = $1",
                          declined.uid) == [(0,)]
        assert await rows("SELECT count(*) FROM {s}.shipments WHERE order_uid = $1",
                          declined.uid) == [(0,)]
        assert await rows("SELECT template FROM {s}.notifications WHERE order_uid = $1",
                          declined.uid) == [("order-failed",)]
        # an unknown SKU is refused before anything else happens
        assert await rows("SELECT status, reason FROM {s}.reservations WHERE order_uid = $1",
                          unknown.uid) == [("rejected", "UNKNOWN_SKU")]
        assert await rows("SELECT count(*) FROM {s}.payments WHERE order_uid = $1",
                          unknown.uid) == [(0,)]
    finally:
        await conn.close()


@pytest.mark.parametrize("peer", [_runnable(p) for p in peers.PEERS])
async def test_a_point_is_measured(peer: str, database_url: str, peer_shutdown: None) -> None:
    point = await asyncio.wait_for(
        peers.run_point(peer, database_url=database_url, orders=6, rate=20.0, skus=2), 180)

    assert point.peer.startswith(peer)
    assert (point.orders, point.completed, point.failed) == (6, 6, 0)
    assert len(point.latencies_s) == 6 and min(point.latencies_s) > 0
    assert point.elapsed_s >= max(point.latencies_s)
    assert "postgres" in point.cpu_s_by_process
    assert all(v >= 0 for v in point.cpu_s_by_process.values())
    if peer == "temporal":
        assert {"temporal-server", "temporal-worker"} <= set(point.cpu_s_by_process)
