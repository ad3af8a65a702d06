#!/usr/bin/env python3
"""A dashboard lint: the rules of grafana/dashboard-linter that matter here, and rules for
SQL panels (Grafana's PostgreSQL data source).

    python grafana/lint.py [--prometheus-url URL] [grafana/dashboards/*.json]

Rules (each problem is reported as ``<dashboard> / <panel>: <rule>: <detail>``):

- ``template-datasource``: the dashboard has a ``datasource`` template variable of type
  ``datasource`` for Prometheus if it queries Prometheus, and one for PostgreSQL
  (``grafana-postgresql-datasource``) if it queries SQL;
- ``datasource-provisioned``: a PostgreSQL data source variable starts on (``current``) a data
  source that grafana/provisioning/datasources provisions, with that uid and type;
- ``panel-datasource`` / ``target-datasource``: every panel and every target uses a data
  source variable of its type (``${datasource}``, ``${analytics}``), never a hard-coded
  data source, and a target the data source of its panel;
- ``panel-type``: no deprecated panel types (``graph``, ``singlestat``, ...): only
  timeseries, stat, table, bargauge (and rows);
- ``panel-units``: every panel sets a known unit (``fieldConfig.defaults.unit``), and so
  does every override that sets one;
- ``panel-title``: titles are set and unique within the dashboard;
- ``target-rate-interval``: every ``rate``/``irate``/``increase`` uses ``[$__rate_interval]``;
- ``target-promql``: every query parses -- asked of a real Prometheus
  (``GET /api/v1/query``; a parse error is a 400 ``bad_data``), with Grafana's variables
  substituted (:func:`substitute`);
- ``target-sql``: every SQL target has ``rawSql``, a ``format`` (``time_series`` or
  ``table``) and is raw SQL in code mode (``rawQuery: true``, ``editorMode: code``: the
  visual builder would rewrite it);
- ``target-sql-macro``: only macros Grafana's PostgreSQL data source knows
  (:data:`POSTGRES_MACROS`), with their number of arguments, always called with
  parentheses, and no parenthesis inside their arguments (Grafana's pattern,
  :data:`MACRO_CALL`, ends a call at the first ``)``: ``$__timeFilter(coalesce(a, b))``
  would break);
- ``target-sql-variable``: every ``$var``/``${var}``/``${var:format}`` is a variable of the
  dashboard or a Grafana global, and every format is one Grafana has (:data:`FORMATS`); the
  SQL queries of query variables are held to this and the macro rule too;
- ``target-sql-time``: a ``time_series`` query selects a ``time`` column and has an
  ``ORDER BY`` (Grafana turns long results into series only sorted by time).

:func:`expand_sql` expands a panel's SQL as Grafana does before PostgreSQL runs it
(variables, then the global substitutions, then the PostgreSQL macros);
tests/grafana/test_business_live.py runs every panel so expanded on the real database.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCES_DIR = Path(__file__).resolve().parent / "provisioning" / "datasources"
ALLOWED_PANEL_TYPES = frozenset({"timeseries", "stat", "table", "bargauge", "row"})
PROMETHEUS = "prometheus"
POSTGRES = "grafana-postgresql-datasource"
TYPE_ALIASES = {"postgres": POSTGRES}  # the PostgreSQL plugin's id before Grafana 10.3
SQL_TYPES = frozenset({POSTGRES})
SQL_FORMATS = frozenset({"time_series", "table"})
KNOWN_UNITS = frozenset({
    "none", "short", "percent", "percentunit", "bool", "bool_yes_no", "locale",
    "s", "ms", "µs", "ns", "m", "h", "d", "dtdurations", "dtdhms",
    "bytes", "decbytes", "bits", "decbits", "Bps", "binBps", "bps",
    "ops", "reqps", "rps", "wps", "iops", "eps", "mps", "recps", "rowsps", "cps",
    "opm", "reqpm", "rpm", "wpm", "epm", "mpm", "recpm", "rowspm", "cpm",
    "currencyINR", "currencyUSD", "currencyEUR", "currencyGBP", "currencyJPY",
    "dateTimeAsIso", "dateTimeAsSystem",
})  # fmt: skip
RATE_FUNCTIONS = re.compile(r"\b(rate|irate|increase)\s*\(")
RANGE = re.compile(r"\[([^\]]*)\]")

POSTGRES_MACROS: Mapping[str, tuple[int, int]] = {
    "__time": (1, 1), "__timeEpoch": (1, 1), "__timeFilter": (1, 1),
    "__timeFrom": (0, 0), "__timeTo": (0, 0),
    "__timeGroup": (2, 3), "__timeGroupAlias": (2, 3),
    "__unixEpochFilter": (1, 1), "__unixEpochNanoFilter": (1, 1),
    "__unixEpochFrom": (0, 0), "__unixEpochTo": (0, 0),
    "__unixEpochNanoFrom": (0, 0), "__unixEpochNanoTo": (0, 0),
    "__unixEpochGroup": (2, 3), "__unixEpochGroupAlias": (2, 3),
}  # fmt: skip
"""The macros of Grafana's PostgreSQL data source (pkg/tsdb/grafana-postgresql-datasource/
macros.go, and ``$__unixEpochFrom()``/``$__unixEpochTo()`` of sqleng): name -> (least, most)
arguments."""
GLOBALS = frozenset({"__interval", "__interval_ms", "__from", "__to", "__range", "__range_s",
                     "__range_ms", "__rate_interval", "__dashboard", "__org", "__user",
                     "__timezone"})
"""Grafana's global variables (the ones a query may use)."""
FORMATS = frozenset({"csv", "distributed", "doublequote", "glob", "json", "lucene",
                     "percentencode", "pipe", "raw", "regex", "singlequote", "sqlstring",
                     "text", "queryparam", "date"})
"""Grafana's variable formats (``${var:format}``)."""
MACRO_CALL = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
"""Grafana's own pattern of a macro call (macros.go): arguments end at the first ``)``."""
VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
"""Grafana's pattern of a variable reference (templateSrv): ``$var``, ``[[var:fmt]]``,
``${var.field:fmt}``."""
TIME_COLUMN = re.compile(r"""\bAS\s+"?time"?(?![\w"])|\$__(time|timeEpoch|timeGroupAlias|"""
                         r"""unixEpochGroupAlias)\(""", re.IGNORECASE)

Dashboard = Mapping[str, Any]


def panels(dashboard: Dashboard) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _source_type(reference: Any) -> str:
    """The plugin type of a data source reference (a Prometheus one when it does not say)."""
    if isinstance(reference, Mapping):
        kind = str(reference.get("type") or PROMETHEUS)
        return TYPE_ALIASES.get(kind, kind)
    return PROMETHEUS


def is_sql(panel: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Whether a target is SQL: it has ``rawSql``, or its (panel's) data source is SQL."""
    reference = target.get("datasource") or panel.get("datasource")
    return "rawSql" in target or _source_type(reference) in SQL_TYPES


def targets(dashboard: Dashboard) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expression) of every Prometheus query of the dashboard."""
    for panel in panels(dashboard):
        for item in panel.get("targets", []):
            if not is_sql(panel, item):
                yield panel.get("title", ""), item.get("refId", ""), item.get("expr", "")


def sql_targets(dashboard: Dashboard) -> Iterator[tuple[str, str, str, str]]:
    """(panel title, refId, rawSql, format) of every SQL query of the dashboard."""
    for panel in panels(dashboard):
        for item in panel.get("targets", []):
            if is_sql(panel, item):
                yield (panel.get("title", ""), item.get("refId", ""), item.get("rawSql", ""),
                       item.get("format", ""))


def variables(dashboard: Dashboard) -> dict[str, Mapping[str, Any]]:
    """The dashboard's template variables by name."""
    return {str(v.get("name")): v for v in dashboard.get("templating", {}).get("list", [])}


def substitute(expr: str, *, rate_interval: str = "20s", interval: str = "5s",
               range_: str = "1h") -> str:
    """The query as Grafana sends it: its global variables replaced with values.

    Grafana's ``$__rate_interval`` is max(``$__interval`` + scrape interval, 4 x scrape
    interval): 20 s for the 5 s scrape interval of the local stack.
    """
    seconds = _seconds(range_)
    values = {
        "__rate_interval": rate_interval,
        "__interval": interval,
        "__interval_ms": str(int(_seconds(interval) * 1000)),
        "__range": range_,
        "__range_s": str(int(seconds)),
        "__range_ms": str(int(seconds * 1000)),
        "datasource": "prometheus",
    }

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, ".*")  # any other (multi-value) variable: match everything

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    return int(match.group(1)) * units[match.group(2)]


# -- SQL: Grafana's expansion, step by step ------------------------------------------------

VariableValue = str | Sequence[str]
"""A variable's value: one string, or a list (a multi-value variable, even of one value)."""


def format_variable(value: VariableValue, fmt: str | None) -> str:
    """A variable's value in SQL, as Grafana's templateSrv formats it for a SQL data source.

    Without a format, the SQL data source's own ``interpolateVariable`` applies: a
    multi-value (list) value is each value quoted as a string literal, comma-separated; a
    single value is inserted as it is, its ``'`` doubled. The formats here are Grafana's.
    """
    values = [value] if isinstance(value, str) else list(value)
    if fmt is None:
        if isinstance(value, str):
            return value.replace("'", "''")
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "raw" or fmt == "csv":
        return ",".join(values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    raise ValueError(f"variable format {fmt!r} is not implemented here")


def rfc3339(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC time, as Grafana writes its time range in SQL."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _go_float(value: float) -> str:
    """Go's ``%v`` of a float64: its shortest digits, with an exponent from 1e6 on or
    below 1e-4 (``3600``, ``0.5``, ``2.592e+06``)."""
    digits = Decimal(repr(value)).normalize()
    sign, numerals, exponent = digits.as_tuple()
    assert isinstance(exponent, int)
    magnitude = len(numerals) + exponent - 1
    if -4 <= magnitude < 6:
        return f"{digits:f}"
    mantissa = "".join(map(str, numerals))
    head = mantissa[0] + ("." + mantissa[1:] if len(mantissa) > 1 else "")
    return f"{'-' if sign else ''}{head}e{'+' if magnitude >= 0 else '-'}{abs(magnitude):02d}"


def _macro(name: str, args: list[str], time_from: datetime, time_to: datetime) -> str:
    """One macro of Grafana's PostgreSQL data source (macros.go), without TimescaleDB."""
    low, high = POSTGRES_MACROS.get(name, (-1, -1))
    if low < 0:
        raise ValueError(f"unknown macro ${name}()")
    if not low <= len(args) <= high:
        raise ValueError(f"${name}() takes {low} to {high} arguments, not {args}")
    start, end = rfc3339(time_from), rfc3339(time_to)
    epoch_from, epoch_to = int(time_from.timestamp()), int(time_to.timestamp())
    nano_from, nano_to = epoch_from * 10**9, epoch_to * 10**9
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        # a third argument (fill: NULL, previous or a value) fills the frames, not the SQL
        seconds = _go_float(_seconds(args[1].strip("'")))
        group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
        return group + (' AS "time"' if name.endswith("Alias") else "")
    if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
        seconds = _go_float(_seconds(args[1].strip("'")))
        group = f"floor(({args[0]})/{seconds})*{seconds}"
        return group + (' AS "time"' if name.endswith("Alias") else "")
    if name == "__unixEpochFilter":
        return f"{args[0]} >= {epoch_from} AND {args[0]} <= {epoch_to}"
    if name == "__unixEpochNanoFilter":
        return f"{args[0]} >= {nano_from} AND {args[0]} <= {nano_to}"
    if name == "__unixEpochFrom":
        return str(epoch_from)
    if name == "__unixEpochTo":
        return str(epoch_to)
    if name == "__unixEpochNanoFrom":
        return str(nano_from)
    return str(nano_to)  # __unixEpochNanoTo


def expand_sql(raw_sql: str, *, time_from: datetime, time_to: datetime,
               variables: Mapping[str, VariableValue] | None = None,
               interval: str = "1m") -> str:
    """A panel's SQL as PostgreSQL receives it from Grafana 11.6, with the dashboard's time
    range and these variable values. Grafana's three passes, in its order:

    1. the browser replaces template variables (:func:`format_variable`; the global
       ``$__from``/``$__to`` are epoch milliseconds, ``$__interval`` the panel's interval),
       leaving the macros (``$__timeFilter``, ...) alone;
    2. the server's substitutions common to SQL data sources (``sqleng.Interpolate``):
       ``$__interval_ms``, ``$__interval``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``;
    3. the PostgreSQL macro engine (``macros.go``): each ``$__name(args)`` (arguments up to
       the first ``)``, split at commas) becomes SQL, e.g. ``$__timeFilter(t)`` ->
       ``t BETWEEN '<from RFC 3339>' AND '<to>'``, ``$__timeGroupAlias(t, '1h')`` ->
       ``floor(extract(epoch from t)/3600)*3600 AS "time"``; a ``$__timeGroup(...)``
       followed by a comma becomes ``$__timeGroupAlias`` (Grafana's 5.3 compatibility).

    An unknown variable or macro raises ``ValueError``: Grafana would send it through and
    PostgreSQL would fail on it.
    """
    values = dict(variables or {})
    interval_ms = int(_seconds(interval) * 1000)
    range_s = int((time_to - time_from).total_seconds())
    builtins = {
        "__from": str(int(time_from.timestamp() * 1000)),
        "__to": str(int(time_to.timestamp() * 1000)),
        "__interval": interval, "__interval_ms": str(interval_ms),
        "__range_s": str(range_s), "__range_ms": str(range_s * 1000), "__range": f"{range_s}s",
    }

    def variable(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in POSTGRES_MACROS or (name.startswith("__")
                                        and match.string[match.end():match.end() + 1] == "("):
            return match.group(0)  # a macro (known or not): the macro pass expands it
        if name in builtins:
            return builtins[name]
        if name not in values:
            raise ValueError(f"no value for the variable {match.group(0)}")
        return format_variable(values[name], fmt)

    text = VARIABLE.sub(variable, raw_sql)
    text = text.replace("$__interval_ms", str(interval_ms)).replace("$__interval", interval)
    text = text.replace("$__unixEpochFrom()", str(int(time_from.timestamp())))
    text = text.replace("$__unixEpochTo()", str(int(time_to.timestamp())))

    def macro(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__timeGroup" and text[match.end():match.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in match.group(2).split(",")] if match.group(2).strip() else []
        return _macro(name, args, time_from, time_to)

    return MACRO_CALL.sub(macro, text)


def sql_problems(raw_sql: str, dashboard_variables: Mapping[str, Any],
                 format_: str | None = None) -> list[tuple[str, str]]:
    """(rule, detail) of everything wrong with one SQL text (a target's, or a variable's
    query when ``format_`` is None)."""
    problems: list[tuple[str, str]] = []
    for match in MACRO_CALL.finditer(raw_sql):
        name, argument = match.group(1), match.group(2)
        if name not in POSTGRES_MACROS:
            problems.append(("target-sql-macro", f"${name}() is not a macro of Grafana's "
                             "PostgreSQL data source"))
            continue
        low, high = POSTGRES_MACROS[name]
        count = len(argument.split(",")) if argument.strip() else 0
        if not low <= count <= high:
            problems.append(("target-sql-macro", f"${name}() takes {low} to {high} "
                             f"argument(s), not {count}"))
        if "(" in argument:
            problems.append(("target-sql-macro", f"${name}({argument}...: a parenthesis in "
                             "its argument ends the call early (write the comparison out, "
                             "with $__timeFrom() and $__timeTo())"))
    for match in re.finditer(r"\$(__\w+)(?!\w)(?!\()", raw_sql):
        if match.group(1) in POSTGRES_MACROS:
            problems.append(("target-sql-macro", f"${match.group(1)} without parentheses "
                             "is not expanded"))
    for match in VARIABLE.finditer(raw_sql):
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in POSTGRES_MACROS:
            continue
        if name not in dashboard_variables and name not in GLOBALS:
            problems.append(("target-sql-variable", f"{match.group(0)}: no such variable"))
        if fmt is not None and fmt not in FORMATS:
            problems.append(("target-sql-variable", f"{match.group(0)}: unknown format"))
    if format_ == "time_series":
        if not TIME_COLUMN.search(raw_sql):
            problems.append(("target-sql-time", 'a time_series query selects no "time" '
                             "column (AS \"time\", $__time(), $__timeGroupAlias(), ...)"))
        if not re.search(r"\bORDER\s+BY\b", raw_sql, re.IGNORECASE):
            problems.append(("target-sql-time", "a time_series query without ORDER BY "
                             "(Grafana needs the rows sorted by time)"))
    return problems


# -- the rules -------------------------------------------------------------------------------


def provisioned_datasources(directory: Path = DATASOURCES_DIR) -> dict[str, str]:
    """uid -> plugin type of every data source provisioned in ``directory``'s YAML files."""
    import yaml  # only here: the rest of the lint needs nothing beyond the standard library

    found: dict[str, str] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        for source in (yaml.safe_load(path.read_text()) or {}).get("datasources") or []:
            kind = str(source.get("type", ""))
            found[str(source.get("uid", ""))] = TYPE_ALIASES.get(kind, kind)
    return found


def _variable_name(uid: Any) -> str | None:
    match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", str(uid))
    return (match.group(1) or match.group(2)) if match else None


def _datasource_problem(reference: Any, sources: Mapping[str, str],
                        kind: str | None = None) -> str | None:
    """Why ``reference`` is not a data source variable (of type ``kind``), or None."""
    uid = reference.get("uid") if isinstance(reference, Mapping) else reference
    name = _variable_name(uid)
    if name is None or name not in sources:
        return f"data source {reference!r} is not a data source variable " \
               f"({', '.join('${' + n + '}' for n in sorted(sources)) or 'none defined'})"
    if isinstance(reference, Mapping) and _source_type(reference) != sources[name]:
        return f"data source {reference!r} is of type {_source_type(reference)}, " \
               f"${{{name}}} of type {sources[name]}"
    if kind is not None and sources[name] != kind:
        return f"data source {reference!r} is not of its panel's type {kind}"
    return None


def lint(dashboard: Dashboard, *, prometheus_url: str | None = None,
         provisioned: Mapping[str, str] | None = None) -> list[str]:
    """Every problem of one dashboard; with ``prometheus_url`` every PromQL query is parsed
    there. ``provisioned``: uid -> type of the provisioned data sources (default: those of
    grafana/provisioning/datasources)."""
    name = dashboard.get("title") or dashboard.get("uid") or "?"
    problems: list[str] = []

    def report(where: str, rule: str, detail: str) -> None:
        problems.append(f"{name} / {where}: {rule}: {detail}")

    declared = variables(dashboard)
    sources = {n: TYPE_ALIASES.get(str(v.get("query")), str(v.get("query")))
               for n, v in declared.items() if v.get("type") == "datasource"}
    uses_sql = any(True for _ in sql_targets(dashboard))
    uses_promql = any(True for _ in targets(dashboard))
    if uses_promql and sources.get("datasource") != PROMETHEUS:
        report("templating", "template-datasource",
               "no 'datasource' variable of type datasource for prometheus")
    if uses_sql and POSTGRES not in sources.values():
        report("templating", "template-datasource",
               f"no variable of type datasource for {POSTGRES}")
    if uses_sql:
        known = provisioned_datasources() if provisioned is None else provisioned
        for variable_name, source_kind in sources.items():
            if source_kind not in SQL_TYPES:
                continue
            current = declared[variable_name].get("current") or {}
            uid = current.get("value") if isinstance(current, Mapping) else None
            if known.get(str(uid)) != source_kind:
                report(f"${variable_name}", "datasource-provisioned",
                       f"starts on data source {uid!r}, which grafana/provisioning does not "
                       f"provision as a {source_kind} (provisioned: {dict(known)})")
    for variable_name, variable in declared.items():
        if variable.get("type") == "query" and _source_type(variable.get("datasource")) \
                in SQL_TYPES:
            for rule, detail in sql_problems(str(variable.get("query", "")), declared):
                report(f"${variable_name}", rule, detail)

    titles: dict[str, int] = {}
    for panel in panels(dashboard):
        title = str(panel.get("title") or "")
        where = title or f"panel {panel.get('id')}"
        titles[title] = titles.get(title, 0) + 1
        if not title:
            report(where, "panel-title", "no title")
        kind = panel.get("type")
        if kind not in ALLOWED_PANEL_TYPES:
            report(where, "panel-type", f"{kind!r} is deprecated or not allowed "
                   f"(use one of {sorted(ALLOWED_PANEL_TYPES - {'row'})})")
        if kind == "row":
            continue
        field_config = panel.get("fieldConfig", {})
        unit = field_config.get("defaults", {}).get("unit")
        if not unit:
            report(where, "panel-units", "no unit in fieldConfig.defaults.unit")
        elif unit not in KNOWN_UNITS:
            report(where, "panel-units", f"unknown unit {unit!r}")
        for override in field_config.get("overrides", []):
            for prop in override.get("properties", []):
                if prop.get("id") == "unit" and prop.get("value") not in KNOWN_UNITS:
                    report(where, "panel-units", f"unknown unit {prop.get('value')!r} in the "
                           f"override of {override.get('matcher', {}).get('options')!r}")
        problem = _datasource_problem(panel.get("datasource"), sources)
        if problem:
            report(where, "panel-datasource", problem)
        panel_kind = _source_type(panel.get("datasource"))
        items = panel.get("targets") or []
        if not items:
            report(where, "panel-targets", "no queries")
        refs = [item.get("refId") for item in items]
        if len(set(refs)) != len(refs) or None in refs:
            report(where, "panel-targets", f"refIds missing or repeated: {refs}")
        for item in items:
            ref = f"{where} [{item.get('refId')}]"
            if "datasource" in item:
                problem = _datasource_problem(item["datasource"], sources, panel_kind)
                if problem:
                    report(ref, "target-datasource", problem)
            if is_sql(panel, item):
                for rule, detail in sql_target_problems(item, declared):
                    report(ref, rule, detail)
                continue
            expr = item.get("expr")
            if not expr:
                report(ref, "target-promql", "no expression")
                continue
            for detail in rate_interval_problems(expr):
                report(ref, "target-rate-interval", detail)
            if prometheus_url:
                error = parse_error(prometheus_url, substitute(expr))
                if error:
                    report(ref, "target-promql", error)
    for title, count in titles.items():
        if title and count > 1:
            report(title, "panel-title", f"used by {count} panels")
    return problems


def sql_target_problems(item: Mapping[str, Any],
                        declared: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(rule, detail) of the ``target-sql*`` rules one SQL target breaks."""
    raw_sql = item.get("rawSql")
    if not isinstance(raw_sql, str) or not raw_sql.strip():
        return [("target-sql", "no rawSql")]
    problems = []
    fmt = item.get("format")
    if fmt not in SQL_FORMATS:
        problems.append(("target-sql", f"format {fmt!r} is not one of {sorted(SQL_FORMATS)}"))
    if item.get("rawQuery") is not True or item.get("editorMode") != "code":
        problems.append(("target-sql", "not raw SQL in code mode (rawQuery: true, editorMode: "
                         "code): the visual builder would rewrite rawSql"))
    return problems + sql_problems(raw_sql, declared, str(fmt))


def _balanced(text: str, start: int) -> str:
    """The text inside the parenthesis opened just before ``start``."""
    depth = 1
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[start:index]
    return text[start:]


def rate_interval_problems(expr: str) -> list[str]:
    problems = []
    for match in RATE_FUNCTIONS.finditer(expr):
        argument = _balanced(expr, match.end())
        ranges = RANGE.findall(argument)
        if not ranges:
            problems.append(f"{match.group(1)}() without a range")
        problems += [f"{match.group(1)}() over [{r}], not [$__rate_interval]"
                     for r in ranges if r.strip() not in ("$__rate_interval",
                                                          "${__rate_interval}")]
    return problems


def query(prometheus_url: str, path: str, params: Mapping[str, str],
          timeout: float = 30) -> tuple[int, dict[str, Any]]:
    """GET a Prometheus API path; (HTTP status, decoded JSON body)."""
    url = f"{prometheus_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, {"status": "error", "error": body.decode(errors="replace")}


def parse_error(prometheus_url: str, expr: str) -> str | None:
    """None if Prometheus parses (and evaluates) ``expr``; else its error."""
    status, body = query(prometheus_url, "/api/v1/query", {"query": expr})
    if status == 200 and body.get("status") == "success":
        return None
    return f"{body.get('errorType', status)}: {body.get('error', body)}"


def load(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in paths]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lint the Grafana dashboards.")
    parser.add_argument("files", nargs="*", type=Path,
                        help="dashboard JSON files (default: grafana/dashboards/*.json)")
    parser.add_argument("--prometheus-url", default=os.environ.get("VYAPAAR_PROMETHEUS_URL"),
                        help="check that every query parses there (default: "
                        "$VYAPAAR_PROMETHEUS_URL; without it the PromQL rule is skipped)")
    parser.add_argument("--provisioning", type=Path, default=DATASOURCES_DIR,
                        help="directory of the data source provisioning files whose uids the "
                        "SQL dashboards may start on (default: %(default)s)")
    args = parser.parse_args(argv)
    provisioned = provisioned_datasources(args.provisioning)
    files = args.files or sorted(DASHBOARDS_DIR.glob("*.json"))
    problems: list[str] = []
    uids: dict[str, Path] = {}
    for path, dashboard in load(files):
        uid = dashboard.get("uid")
        if uid in uids:
            problems.append(f"{path}: uid {uid!r} also used by {uids[uid]}")
        uids[str(uid)] = path
        problems += lint(dashboard, prometheus_url=args.prometheus_url,
                         provisioned=provisioned)
    for problem in problems:
        print(problem)
    print(f"{len(files)} dashboard(s), {len(problems)} problem(s)"
          + ("" if args.prometheus_url else " (PromQL not checked: no --prometheus-url)"),
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
