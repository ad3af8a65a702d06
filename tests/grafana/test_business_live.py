"""The Business dashboard's SQL, run on the real PostgreSQL of the stack, gives the right figures.

A unique schema gets the analytics service's own migrations (``vyapaar_services.analytics.
migrations``, applied with the common ones by ``vyapaar_services.common.db.migrate``, as the
service does), then a few known orders, events and revenue days: inside the dashboard's
time range (``now-7d`` to now) and one order, its events and its day before it. Every panel's
``rawSql`` is expanded as Grafana would (``grafana/lint.py``: ``expand_sql``, with that range
and the variables' values: the schema, and every currency as "All" does) and run as a role
that may only read that schema (USAGE and SELECT, like the data source's role); each panel's
rows are checked against figures computed here from the known rows, for all currencies and
for USD alone. The schema and the role are dropped afterwards.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest
from vyapaar_services.common import db

ROOT = Path(__file__).resolve().parents[2]
BUSINESS = json.loads((ROOT / "grafana" / "dashboards" / "business.json").read_text())
ANALYTICS_MIGRATIONS = "vyapaar_services.analytics.migrations"
FINAL = ("Completed", "Failed", "Cancelled", "CompensationFailed")

#: The read model as the brief describes it, used only when the analytics service's own
#: migrations are not there (they are: this is the fallback of a repository without them).
FALLBACK_DDL = """
CREATE TABLE orders (uid text PRIMARY KEY, namespace text, name text, phase text NOT NULL,
    reason text NOT NULL, saga_version int, total bigint NOT NULL, currency text NOT NULL,
    started_at timestamptz, finished_at timestamptz, last_seq int NOT NULL,
    updated_at timestamptz NOT NULL);
CREATE TABLE order_events (uid text NOT NULL, seq int NOT NULL, event_id uuid NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL, reason text NOT NULL, message text NOT NULL,
    severity text NOT NULL, step text, step_started_at timestamptz, phase text NOT NULL,
    announced bool NOT NULL, captured bigint NOT NULL, refunded bigint NOT NULL,
    PRIMARY KEY (uid, seq));
CREATE TABLE revenue_daily (day date NOT NULL, currency text NOT NULL,
    captured bigint NOT NULL DEFAULT 0, refunded bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency));
CREATE VIEW step_outcomes AS SELECT step, reason, severity, occurred_at,
    EXTRACT(EPOCH FROM occurred_at - step_started_at)::double precision AS duration_seconds
    FROM order_events WHERE step IS NOT NULL;
"""


def service_migrations() -> list[db.Migration] | None:
    """The analytics service's migrations after the common ones, as it applies them; None
    when the service's migration package is missing."""
    try:
        if importlib.util.find_spec(ANALYTICS_MIGRATIONS) is None:
            return None
    except ModuleNotFoundError:
        return None
    own = db.load_migrations(ANALYTICS_MIGRATIONS, "analytics")
    if not any(m.version == "analytics/0001_read_model" for m in own):
        return None
    return [*db.common_migrations(), *own]


# -- the known rows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    uid: str
    phase: str
    currency: str
    total: int
    started_at: datetime
    finished_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    uid: str
    seq: int
    reason: str
    severity: str
    step: str | None
    occurred_at: datetime
    step_started_at: datetime | None = None
    message: str = ""

    @property
    def text(self) -> str:
        """The event's message (its reason when the test gives none)."""
        return self.message or self.reason


@dataclass(frozen=True)
class Rows:
    """The rows of one test, around ``now`` (the end of the dashboard's range)."""

    start: datetime  # the dashboard's range: now-7d
    end: datetime  # now
    orders: list[Order]
    events: list[Event]
    revenue: list[tuple[date, str, int, int]]  # day, currency, captured, refunded


def known_rows(now: datetime) -> Rows:
    t = now - timedelta(minutes=1)
    h = timedelta(hours=1)
    s = timedelta(seconds=1)
    m = timedelta(minutes=1)
    old = t - timedelta(days=10)  # before the range

    def order(key: str, phase: str, currency: str, total: int, started: datetime,
              finished: datetime | None, updated: datetime | None = None) -> Order:
        return Order(f"uid-{key}", phase, currency, total, started, finished,
                     updated or finished or started)

    a, b, c = t - 50 * h, t - 26 * h, t - 25 * h
    d, g = t - 20 * h, t - 3 * h
    orders = [
        order("a", "Completed", "INR", 150000, a, a + 2 * m),
        order("b", "Completed", "INR", 50000, b, b + m),
        order("c", "Failed", "INR", 20000, c, c + 2 * m),
        order("d", "Completed", "USD", 2500, d, d + 3 * m),
        order("e", "Cancelled", "USD", 4000, t - 10 * h, t - 10 * h + m),
        order("f", "Completed", "JPY", 1500, t - 5 * h, t - 5 * h + m),
        order("g", "CompensationFailed", "INR", 30000, g, None, g + 4 * m),
        order("h", "Reserving", "INR", 10000, t - h, None),
        order("z", "Failed", "INR", 99900, old, old + m),  # before the range
    ]
    events = [
        # reserve: forward replies after 1, 2 and 3 s (a compensation's reply and retries do
        # not count as step durations)
        Event("uid-a", 1, "StockReserved", "Normal", "reserve", a + s, a),
        Event("uid-b", 1, "StockReserved", "Normal", "reserve", b + 2 * s, b),
        Event("uid-c", 1, "StockReserved", "Normal", "reserve", c + 3 * s, c),
        Event("uid-c", 4, "StockReleased", "Normal", "reserve", c + 60 * s, c + 59 * s),
        Event("uid-g", 1, "Retrying", "Warning", "reserve", g + 10 * s, g,
              "No reply from inventory; sent again (attempt 2 of 4)"),
        Event("uid-g", 2, "Retrying", "Warning", "reserve", g + 20 * s, g,
              "No reply from inventory; sent again (attempt 3 of 4)"),
        # pay: forward replies after 3, 5, 2 (declined) and 4 s
        Event("uid-a", 2, "PaymentCaptured", "Normal", "pay", a + 5 * s, a + 2 * s),
        Event("uid-b", 2, "PaymentCaptured", "Normal", "pay", b + 7 * s, b + 2 * s),
        Event("uid-c", 2, "PaymentDeclined", "Warning", "pay", c + 6 * s, c + 4 * s,
              "Payment declined: card_declined"),
        Event("uid-d", 1, "PaymentCaptured", "Normal", "pay", d + 4 * s, d),
        Event("uid-c", 3, "CompensationStarted", "Warning", None, c + 7 * s,
              message="Payment declined; compensating: reserve"),
        Event("uid-c", 5, "OrderFailed", "Normal", None, c + 2 * m),
        Event("uid-g", 3, "CompensationFailed", "Warning", "pay", g + 4 * m, g + 30 * s,
              "RefundPayment ran out of retries"),
        # before the range: a slow refusal that must not count
        Event("uid-z", 1, "PaymentDeclined", "Warning", "pay", old, old - 100 * s,
              "Payment declined: insufficient_funds"),
    ]
    day = t.date()
    revenue = [
        (day - timedelta(days=2), "INR", 200000, 0),
        (day - timedelta(days=1), "INR", 20000, 20000),
        (day - timedelta(days=1), "USD", 6500, 0),
        (day, "USD", 0, 4000),
        (day, "JPY", 1500, 0),
        (old.date(), "INR", 99900, 0),  # before the range
    ]
    return Rows(now - timedelta(days=7), now, orders, events, revenue)


async def insert(conn: asyncpg.Connection, schema: str, rows: Rows) -> None:
    q = db.quote_ident(schema)
    await conn.executemany(
        f"""INSERT INTO {q}.orders (uid, namespace, name, phase, reason, saga_version, total,
                currency, started_at, finished_at, last_seq, updated_at)
            VALUES ($1, 'shop', $1, $2, $2, 1, $3, $4, $5, $6, 1, $7)""",
        [(o.uid, o.phase, o.total, o.currency, o.started_at, o.finished_at, o.updated_at)
         for o in rows.orders])
    await conn.executemany(
        f"""INSERT INTO {q}.order_events (uid, seq, event_id, occurred_at, reason, message,
                severity, step, step_started_at, phase, announced, captured, refunded)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'Paying', true, 0, 0)""",
        [(e.uid, e.seq, uuid.uuid4(), e.occurred_at, e.reason, e.text,
          e.severity, e.step, e.step_started_at) for e in rows.events])
    await conn.executemany(
        f"INSERT INTO {q}.revenue_daily (day, currency, captured, refunded) "
        f"VALUES ($1, $2, $3, $4)", rows.revenue)


# -- the figures each panel must show, computed from the known rows ---------------------------


def inside(moment: datetime | None, rows: Rows) -> bool:
    return moment is not None and rows.start <= moment <= rows.end


def minor_per_major(currency: str) -> int:
    return 1 if currency == "JPY" else 100


def expected(rows: Rows, currencies: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Panel title -> its rows (columns by name, in order)."""
    orders = [o for o in rows.orders if o.currency in currencies]
    by_uid = {o.uid: o for o in rows.orders}
    days = (rows.start.date(), rows.end.date())
    revenue = [r for r in rows.revenue if days[0] <= r[0] <= days[1] and r[1] in currencies]

    net_per_day = [{"time": datetime(d.year, d.month, d.day, tzinfo=UTC), "metric": c,
                    "net": Decimal(cap - ref) / minor_per_major(c)}
                   for d, c, cap, ref in sorted(revenue, key=lambda r: (r[0], r[1]))]
    totals: dict[str, list[int]] = {}
    for _, currency, captured, refunded in revenue:
        total = totals.setdefault(currency, [0, 0])
        total[0] += captured
        total[1] += refunded
    by_currency = [{
        "currency": c, "captured": Decimal(cap) / minor_per_major(c),
        "refunded": Decimal(ref) / minor_per_major(c),
        "net": Decimal(cap - ref) / minor_per_major(c),
        "refunded share": ref / cap if cap else None, "net (minor units)": cap - ref,
    } for c, (cap, ref) in sorted(totals.items())]

    final = Counter(o.phase for o in orders
                    if o.phase in FINAL and inside(o.finished_at or o.updated_at, rows))
    finished = [o for o in orders if inside(o.finished_at, rows)]
    completed = sum(o.phase == "Completed" for o in finished)
    started = [o for o in orders if inside(o.started_at, rows)]
    hours = Counter((int(o.started_at.timestamp()) // 3600 * 3600,
                     o.phase if o.phase in FINAL else "In progress") for o in started)

    failures: dict[tuple[str, str], list[Event]] = {}
    for e in rows.events:
        if inside(e.occurred_at, rows) and by_uid[e.uid].currency in currencies and (
                e.severity == "Warning" or e.reason in ("StockRejected", "FraudSuspected",
                                                         "PaymentDeclined", "ShipmentRejected")):
            failures.setdefault((e.reason, e.step or ""), []).append(e)
    reasons = sorted(failures.items(),
                     key=lambda kv: (-len({e.uid for e in kv[1]}), -len(kv[1]), kv[0][0]))

    forward = [e for e in rows.events if inside(e.occurred_at, rows) and e.step
               and e.step_started_at and e.reason in ("StockReserved", "PaymentCaptured",
                                                      "PaymentDeclined")]
    steps = []
    for step in sorted({e.step for e in forward if e.step}):
        durations = sorted((e.occurred_at - e.step_started_at).total_seconds()
                           for e in forward if e.step == step and e.step_started_at)
        steps.append({"step": step, "replies": len(durations),
                      "refused": sum(e.reason == "PaymentDeclined" for e in forward
                                     if e.step == step),
                      "p50": percentile(durations, 0.5), "p95": percentile(durations, 0.95),
                      "mean": sum(durations) / len(durations)})

    return {
        "Net revenue per day": net_per_day,
        "Revenue by currency": by_currency,
        "Orders by final phase": [{phase: final[phase] for phase in FINAL}],
        "Conversion rate": [{"conversion": completed / len(finished) if finished else None}],
        "Orders started": [{"started": len(started)}],
        "In progress now": [{"in progress": sum(o.phase not in FINAL for o in orders)}],
        "Orders started per hour": [{"time": t, "metric": p, "orders": n}
                                    for (t, p), n in sorted(hours.items())],
        "Top failure reasons": [{
            "reason": reason, "step": step, "orders": len({e.uid for e in events}),
            "events": len(events), "last seen": max(e.occurred_at for e in events),
            "latest message": max(events, key=lambda e: e.occurred_at).text,
        } for (reason, step), events in reasons[:10]],
        "Step duration by step": steps,
    }


def percentile(values: Sequence[float], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear between the two nearest ranks."""
    position = fraction * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def same(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, float) or isinstance(actual, float):
        return wanted is not None and actual is not None and \
            math.isclose(float(actual), float(wanted), rel_tol=1e-9, abs_tol=1e-9)
    return bool(actual == wanted)


def as_time(value: Any) -> Any:
    """A ``time`` column as Grafana reads it: epoch seconds (numeric) or a date/timestamp."""
    if isinstance(value, Decimal | int | float):
        return int(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return value


# -- the test ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadModel:
    pool: asyncpg.Pool
    schema: str
    reader: str | None  # the read-only role queries run as (None: not allowed to make one)
    migrated_by_the_service: bool

    async def run(self, sql: str) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            if self.reader:
                await conn.execute(f"SET ROLE {db.quote_ident(self.reader)}")
            try:
                return list(await conn.fetch(sql))
            finally:
                if self.reader:
                    await conn.execute("RESET ROLE")


@pytest.fixture
async def read_model(database_url: str) -> AsyncIterator[ReadModel]:
    schema = f"t_business_{uuid.uuid4().hex[:12]}"
    reader = f"{schema}_reader"
    q, r = db.quote_ident(schema), db.quote_ident(reader)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    made_reader = False
    try:
        migrations = service_migrations()
        if migrations is not None:
            await db.migrate(pool, schema, migrations)
        else:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"CREATE SCHEMA {q}")
                await conn.execute(f"SET LOCAL search_path TO {q}")
                await conn.execute(FALLBACK_DDL)
        async with pool.acquire() as conn:
            me = await conn.fetchrow(
                "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            if me and (me["rolsuper"] or me["rolcreaterole"]):
                await conn.execute(f"CREATE ROLE {r} NOLOGIN")
                made_reader = True
                if not me["rolsuper"]:
                    await conn.execute(f"GRANT {r} TO CURRENT_USER")
                await conn.execute(f"GRANT USAGE ON SCHEMA {q} TO {r}")
                await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {q} TO {r}")
        yield ReadModel(pool, schema, reader if made_reader else None, migrations is not None)
    finally:
        async with pool.acquire() as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {q} CASCADE")
            if made_reader:
                await conn.execute(f"DROP ROLE IF EXISTS {r}")
        await pool.close()


def dashboard_range(now: datetime) -> tuple[datetime, datetime]:
    """The dashboard's default time range (``now-7d`` to ``now``) at ``now``."""
    match = re.fullmatch(r"now-(\d+)([mhd])", BUSINESS["time"]["from"])
    assert match and BUSINESS["time"]["to"] == "now", BUSINESS["time"]
    unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return now - timedelta(**{unit: int(match.group(1))}), now


async def test_every_business_panel_shows_the_figures_of_the_read_model(
    read_model: ReadModel, lint: ModuleType,
) -> None:
    if not read_model.migrated_by_the_service:
        warnings.warn(f"{ANALYTICS_MIGRATIONS} is missing: the read model is the test's own "
                      "DDL (FALLBACK_DDL), not the analytics service's", stacklevel=1)
    now = datetime.now(UTC).replace(microsecond=0)
    start, end = dashboard_range(now)
    rows = known_rows(now)
    assert (rows.start, rows.end) == (start, end)
    async with read_model.pool.acquire() as conn:
        await insert(conn, read_model.schema, rows)
    variables = {v["name"]: v for v in BUSINESS["templating"]["list"]}

    def expand(sql: str, currencies: Sequence[str]) -> str:
        return str(lint.expand_sql(sql, time_from=start, time_to=end, variables={
            "schema": read_model.schema, "currency": list(currencies)}))

    # the variables: the schema is found (as the read-only role too), the currencies listed
    found = await read_model.run(expand(variables["schema"]["query"], []))
    assert read_model.schema in [r[0] for r in found]
    options = [r[0] for r in await read_model.run(expand(variables["currency"]["query"], []))]
    assert options == ["INR", "JPY", "USD"]

    targets = list(lint.sql_targets(BUSINESS))
    assert len(targets) == 9
    for currencies in (options, ["USD"]):  # "All", then one currency
        wanted = expected(rows, currencies)
        assert {title for title, *_ in targets} == set(wanted), "a panel without expectations"
        for title, ref, raw_sql, fmt in targets:
            where = f"{title} [{ref}] ({', '.join(currencies)})"
            records = await read_model.run(expand(raw_sql, currencies))
            check(where, fmt, records, wanted[title])


def check(where: str, fmt: str, records: list[asyncpg.Record],
          wanted: list[dict[str, Any]]) -> None:
    columns = list(records[0].keys()) if records else []
    if fmt == "time_series" and records:  # what Grafana needs of a time series
        assert "time" in columns, f"{where}: no time column"
        times = [as_time(r["time"]) for r in records]
        assert times == sorted(times), f"{where}: not sorted by time"
    actual = [{k: (as_time(v) if k == "time" else v) for k, v in r.items()} for r in records]
    if wanted and actual:
        assert columns == list(wanted[0]), f"{where}: columns {columns}"

    def mismatch() -> str:
        return f"{where}:\n got  {actual}\n want {wanted}"

    assert len(actual) == len(wanted), mismatch()
    for got, want in zip(actual, wanted, strict=True):
        for key, value in want.items():
            if key == "time" and isinstance(got[key], int):
                value = int(value.timestamp()) if isinstance(value, datetime) else value
            assert same(got[key], value), f"{key}: " + mismatch()
