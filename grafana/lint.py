#!/usr/bin/env python3
"""A dashboard lint: the rules of grafana/dashboard-linter that matter here.

    python grafana/lint.py [--prometheus-url URL] [grafana/dashboards/*.json]

Rules (each problem is reported as ``<dashboard> / <panel>: <rule>: <detail>``):

- ``template-datasource``: the dashboard has a ``datasource`` template variable of type
  ``datasource`` for Prometheus;
- ``panel-datasource`` / ``target-datasource``: every panel and every target uses it
  (``${datasource}``), never a hard-coded data source;
- ``panel-type``: no deprecated panel types (``graph``, ``singlestat``, ...): only
  timeseries, stat, table, bargauge (and rows);
- ``panel-units``: every panel sets a known unit (``fieldConfig.defaults.unit``);
- ``panel-title``: titles are set and unique within the dashboard;
- ``target-rate-interval``: every ``rate``/``irate``/``increase`` uses ``[$__rate_interval]``;
- ``target-promql``: every query parses -- asked of a real Prometheus
  (``GET /api/v1/query``; a parse error is a 400 ``bad_data``), with Grafana's variables
  substituted (:func:`substitute`).
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
ALLOWED_PANEL_TYPES = frozenset({"timeseries", "stat", "table", "bargauge", "row"})
DATASOURCE_UIDS = frozenset({"${datasource}", "$datasource"})
KNOWN_UNITS = frozenset({
    "none", "short", "percent", "percentunit", "bool", "bool_yes_no",
    "s", "ms", "µs", "ns", "m", "h", "d", "dtdurations", "dtdhms",
    "bytes", "decbytes", "bits", "decbits", "Bps", "binBps", "bps",
    "ops", "reqps", "rps", "wps", "iops", "eps", "mps", "recps", "rowsps", "cps",
    "opm", "reqpm", "rpm", "wpm", "epm", "mpm", "recpm", "rowspm", "cpm",
})  # fmt: skip
RATE_FUNCTIONS = re.compile(r"\b(rate|irate|increase)\s*\(")
RANGE = re.compile(r"\[([^\]]*)\]")

Dashboard = Mapping[str, Any]


def panels(dashboard: Dashboard) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: Dashboard) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expression) of every Prometheus query of the dashboard."""
    for panel in panels(dashboard):
        for item in panel.get("targets", []):
            yield panel.get("title", ""), item.get("refId", ""), item.get("expr", "")


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
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    return int(match.group(1)) * units[match.group(2)]


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


def _uses_datasource_variable(reference: Any) -> bool:
    if isinstance(reference, str):
        return reference in DATASOURCE_UIDS
    if isinstance(reference, Mapping):
        return reference.get("uid") in DATASOURCE_UIDS and reference.get("type", "prometheus") \
            == "prometheus"
    return False


def lint(dashboard: Dashboard, *, prometheus_url: str | None = None) -> list[str]:
    """Every problem of one dashboard; with ``prometheus_url`` every query is parsed there."""
    name = dashboard.get("title") or dashboard.get("uid") or "?"
    problems: list[str] = []

    def report(where: str, rule: str, detail: str) -> None:
        problems.append(f"{name} / {where}: {rule}: {detail}")

    variables = dashboard.get("templating", {}).get("list", [])
    if not any(v.get("name") == "datasource" and v.get("type") == "datasource"
               and v.get("query") == "prometheus" for v in variables):
        report("templating", "template-datasource",
               "no 'datasource' variable of type datasource for prometheus")

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
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        if not unit:
            report(where, "panel-units", "no unit in fieldConfig.defaults.unit")
        elif unit not in KNOWN_UNITS:
            report(where, "panel-units", f"unknown unit {unit!r}")
        if not _uses_datasource_variable(panel.get("datasource")):
            report(where, "panel-datasource",
                   f"data source {panel.get('datasource')!r} is not ${{datasource}}")
        items = panel.get("targets") or []
        if not items:
            report(where, "panel-targets", "no queries")
        refs = [item.get("refId") for item in items]
        if len(set(refs)) != len(refs) or None in refs:
            report(where, "panel-targets", f"refIds missing or repeated: {refs}")
        for item in items:
            ref = f"{where} [{item.get('refId')}]"
            if "datasource" in item and not _uses_datasource_variable(item["datasource"]):
                report(ref, "target-datasource",
                       f"data source {item['datasource']!r} is not ${{datasource}}")
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
    args = parser.parse_args(argv)
    files = args.files or sorted(DASHBOARDS_DIR.glob("*.json"))
    problems: list[str] = []
    uids: dict[str, Path] = {}
    for path, dashboard in load(files):
        uid = dashboard.get("uid")
        if uid in uids:
            problems.append(f"{path}: uid {uid!r} also used by {uids[uid]}")
        uids[str(uid)] = path
        problems += lint(dashboard, prometheus_url=args.prometheus_url)
    for problem in problems:
        print(problem)
    print(f"{len(files)} dashboard(s), {len(problems)} problem(s)"
          + ("" if args.prometheus_url else " (PromQL not checked: no --prometheus-url)"),
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
