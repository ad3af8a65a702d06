"""The Grafana dashboards: generated as code and current, lint-clean, every query parses;
the Business dashboard's SQL follows Grafana's PostgreSQL data source (tests/grafana/
test_business_live.py runs it on the real database)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"
BUSINESS = ROOT / "grafana" / "dashboards" / "business.json"
POSTGRES = "grafana-postgresql-datasource"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_the_four_dashboards_exist() -> None:
    titles = {load(path)["title"] for path in DASHBOARDS}
    assert titles == {"Vyapaar Nexus / Saga overview", "Vyapaar Nexus / Services",
                      "Vyapaar Nexus / Messaging", "Vyapaar Nexus / Business"}


def test_the_committed_json_is_what_the_generator_writes() -> None:
    result = subprocess.run([sys.executable, "grafana/generate.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_check_fails_when_a_dashboard_is_edited_by_hand_or_extra(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "grafana" / "dashboards", tmp_path, dirs_exist_ok=True)
    check = [sys.executable, "grafana/generate.py", "--check", "--dashboards", str(tmp_path)]
    assert subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0

    edited = tmp_path / "services.json"
    edited.write_text(edited.read_text().replace('"reqps"', '"short"', 1))
    result = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "services.json: out of date" in result.stderr

    subprocess.run([sys.executable, "grafana/generate.py", "--dashboards", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True)
    (tmp_path / "hand-made.json").write_text("{}")
    result = subprocess.run(check, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "hand-made.json: not generated" in result.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_passes_the_lint(path: Path, lint: ModuleType) -> None:
    assert lint.lint(load(path)) == []


def test_dashboard_uids_are_unique_and_every_panel_type_is_current() -> None:
    dashboards = [load(path) for path in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    types = {p["type"] for d in dashboards for p in d["panels"]}
    assert types <= {"timeseries", "stat", "table", "bargauge", "row"}
    assert {"timeseries", "stat"} <= types


def test_every_query_parses_in_the_real_prometheus(prometheus_url: str,
                                                   lint: ModuleType) -> None:
    problems = []
    count = 0
    for path in DASHBOARDS:
        problems += lint.lint(load(path), prometheus_url=prometheus_url)
        count += sum(1 for _ in lint.targets(load(path)))
    assert problems == []
    assert count >= 60  # the check really ran over every query


def test_the_lint_reports_each_rule(prometheus_url: str, lint: ModuleType) -> None:
    good = load(ROOT / "grafana" / "dashboards" / "messaging.json")
    bad = copy.deepcopy(good)
    panels = [p for p in bad["panels"] if p["type"] != "row"]
    panels[0]["type"] = "graph"
    panels[1]["fieldConfig"]["defaults"].pop("unit")
    panels[2]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    panels[3]["targets"][0]["expr"] = "sum(rate(vyapaar_saga_orders_finished_total[5m]))"
    panels[4]["targets"][0]["expr"] = "sum by (phase (vyapaar_saga_in_flight)"
    panels[5]["title"] = panels[6]["title"]
    panels[7]["fieldConfig"]["defaults"]["unit"] = "orders per fortnight"
    bad["templating"]["list"] = []

    problems = "\n".join(lint.lint(bad, prometheus_url=prometheus_url))
    for rule in ("panel-type", "panel-units", "panel-datasource", "target-rate-interval",
                 "target-promql", "panel-title", "template-datasource"):
        assert f": {rule}: " in problems, f"{rule} not reported:\n{problems}"
    assert "unknown unit 'orders per fortnight'" in problems
    assert "bad_data" in problems  # Prometheus itself refused the broken expression


def test_grafana_variables_are_substituted_as_grafana_does(lint: ModuleType) -> None:
    expr = ("sum(rate(x[$__rate_interval])) / sum(increase(y[${__rate_interval}])) "
            "+ z[$__range] + w{job=~\"$job\"}")
    assert lint.substitute(expr) == (
        'sum(rate(x[20s])) / sum(increase(y[20s])) + z[1h] + w{job=~".*"}')
    assert lint.rate_interval_problems("rate(x[$__rate_interval]) + irate(y[1m])") == [
        "irate() over [1m], not [$__rate_interval]"]


def test_provisioning_gives_a_stock_grafana_the_data_source_and_the_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    assert datasources["apiVersion"] == 1
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "${VYAPAAR_PROMETHEUS_URL}"

    providers = yaml.safe_load((PROVISIONING / "dashboards" / "vyapaar.yaml").read_text())
    assert providers["apiVersion"] == 1
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "${VYAPAAR_GRAFANA_DASHBOARDS}"
    doc = (ROOT / "docs" / "observability.md").read_text()
    assert "VYAPAAR_GRAFANA_DASHBOARDS" in doc and "grafana/provisioning" in doc


# -- Business: SQL over the analytics read model ----------------------------------------------


def sql_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_business_dashboard_is_sql_over_the_read_model_through_its_variables() -> None:
    business = load(BUSINESS)
    variables = {v["name"]: v for v in business["templating"]["list"]}
    assert list(variables) == ["analytics", "schema", "currency"]  # each after what it uses
    assert variables["analytics"]["type"] == "datasource"
    assert variables["analytics"]["query"] == POSTGRES
    assert variables["analytics"]["current"]["value"] == "vyapaar-analytics"
    assert variables["schema"]["current"]["value"] == "analytics"
    assert "information_schema.tables" in variables["schema"]["query"]
    currency = variables["currency"]
    assert currency["multi"] is True and currency["includeAll"] is True
    assert currency["current"]["value"] == ["$__all"]
    assert currency["query"] == 'SELECT DISTINCT currency FROM ${schema:doublequote}.orders ' \
                                "ORDER BY 1"

    source = {"type": POSTGRES, "uid": "${analytics}"}
    tables = set()
    for panel in sql_panels(business):
        assert panel["datasource"] == source, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source
            assert target["rawQuery"] is True and target["editorMode"] == "code"
            assert target["format"] in ("table", "time_series")
            tables |= set(re.findall(r"\$\{schema:doublequote\}\.(\w+)", target["rawSql"]))
            assert not re.search(r"\b(FROM|JOIN)\s+(?!\$\{schema)", target["rawSql"]), \
                f"{panel['title']}: a table not qualified with the schema variable"
    assert tables == {"orders", "order_events", "revenue_daily", "step_outcomes"}
    assert business["timezone"] == "utc"  # the read model's days are UTC days


def test_the_lint_reports_each_sql_rule(lint: ModuleType) -> None:
    assert lint.lint(load(BUSINESS)) == []
    bad = load(BUSINESS)
    panels = sql_panels(bad)
    by_title = {p["title"]: p for p in panels}
    series = by_title["Orders started per hour"]["targets"][0]
    series["rawSql"] = series["rawSql"].replace("$__timeGroupAlias(started_at, '1h')",
                                                "$__timeGroup(started_at, '1h') AS hour")
    series["rawSql"] = series["rawSql"].replace("ORDER BY 1, 2", "")
    phases = by_title["Orders by final phase"]["targets"][0]
    phases["rawSql"] = phases["rawSql"].replace(
        "coalesce(finished_at, updated_at) BETWEEN $__timeFrom() AND $__timeTo()",
        "$__timeFilter(coalesce(finished_at, updated_at)) AND $__dateFilter(day)")
    conversion = by_title["Conversion rate"]["targets"][0]
    conversion["rawSql"] += " AND $shop = 'x' AND currency IN (${currency:bogus})"
    conversion.pop("format")
    started = by_title["Orders started"]["targets"][0]
    started["rawQuery"] = False
    started["rawSql"] = started["rawSql"].replace("$__timeFilter(started_at)",
                                                  "$__timeFilter started_at")
    by_title["In progress now"]["targets"][0]["rawSql"] = ""
    by_title["Revenue by currency"]["datasource"] = {"type": POSTGRES, "uid": "P44368ADAD746BC27"}
    by_title["Net revenue per day"]["fieldConfig"]["overrides"][0]["properties"][0]["value"] = \
        "rupees"
    variables = {v["name"]: v for v in bad["templating"]["list"]}
    variables["analytics"]["current"]["value"] = "someone-elses-postgres"
    variables["currency"]["query"] = "SELECT currency FROM $tenant.orders"

    problems = "\n".join(lint.lint(bad))
    for detail in (
        "$analytics: datasource-provisioned: starts on data source 'someone-elses-postgres'",
        "$currency: target-sql-variable: $tenant: no such variable",
        "Orders started per hour [A]: target-sql-time: a time_series query selects no \"time\"",
        "Orders started per hour [A]: target-sql-time: a time_series query without ORDER BY",
        "Orders by final phase [A]: target-sql-macro: $__timeFilter(coalesce(finished_at, "
        "updated_at...: a parenthesis",
        "Orders by final phase [A]: target-sql-macro: $__dateFilter() is not a macro",
        "Conversion rate [A]: target-sql: format None is not one of",
        "Conversion rate [A]: target-sql-variable: $shop: no such variable",
        "Conversion rate [A]: target-sql-variable: ${currency:bogus}: unknown format",
        "Orders started [A]: target-sql: not raw SQL in code mode",
        "Orders started [A]: target-sql-macro: $__timeFilter without parentheses",
        "In progress now [A]: target-sql: no rawSql",
        "Revenue by currency: panel-datasource: data source {'type': "
        "'grafana-postgresql-datasource', 'uid': 'P44368ADAD746BC27'} is not a data source "
        "variable",
        "Net revenue per day: panel-units: unknown unit 'rupees' in the override of 'INR'",
    ):
        assert detail in problems, f"not reported: {detail}\n{problems}"

    # a Prometheus data source variable does not do for SQL panels, nor the reverse
    bad = load(BUSINESS)
    bad["templating"]["list"][0]["query"] = "prometheus"
    problems = "\n".join(lint.lint(bad))
    assert f"template-datasource: no variable of type datasource for {POSTGRES}" in problems
    assert "is of type grafana-postgresql-datasource, ${analytics} of type prometheus" \
        in problems


def test_sql_is_expanded_as_grafana_does(lint: ModuleType) -> None:
    # the examples of Grafana's PostgreSQL documentation (macros), its range 05:01:17-05:06:17
    start, end = datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC), datetime(2017, 4, 21, 5, 6, 17,
                                                                      tzinfo=UTC)

    def expand(sql: str, **variables: Any) -> str:
        return str(lint.expand_sql(sql, time_from=start, time_to=end, variables=variables))

    assert expand("$__time(dateColumn)") == 'dateColumn AS "time"'
    assert expand("$__timeEpoch(dateColumn)") == 'extract(epoch from dateColumn) as "time"'
    assert expand("WHERE $__timeFilter(dateColumn)") == \
        "WHERE dateColumn BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'"
    assert expand("$__timeFrom() $__timeTo()") == "'2017-04-21T05:01:17Z' '2017-04-21T05:06:17Z'"
    assert expand("$__timeGroupAlias(dateColumn,'5m')") == \
        'floor(extract(epoch from dateColumn)/300)*300 AS "time"'
    assert expand("SELECT $__timeGroup(dateColumn, '1h', 0), v") == \
        'SELECT floor(extract(epoch from dateColumn)/3600)*3600 AS "time", v'  # 5.3 compat
    assert expand("GROUP BY $__timeGroup(dateColumn,'30d')") == \
        "GROUP BY floor(extract(epoch from dateColumn)/2.592e+06)*2.592e+06"
    assert expand("$__unixEpochFilter(c) $__unixEpochFrom() $__unixEpochTo()") == \
        "c >= 1492750877 AND c <= 1492751177 1492750877 1492751177"
    assert expand("$__unixEpochNanoFilter(c)") == \
        "c >= 1492750877000000000 AND c <= 1492751177000000000"
    assert expand("$__unixEpochGroupAlias(c, '1m')") == 'floor((c)/60)*60 AS "time"'
    assert expand("$__interval $__interval_ms $__from") == "1m 60000 1492750877000"
    # variables, as a SQL data source interpolates them
    assert expand("currency IN ($currency)", currency=["INR", "USD"]) == \
        "currency IN ('INR','USD')"
    assert expand("[[currency]] ${currency}", currency=["O'B"]) == "'O''B' 'O''B'"
    assert expand("name = '$name'", name="O'Brien") == "name = 'O''Brien'"
    assert expand("${schema:doublequote}.orders ${schema:raw} ${schema:sqlstring}",
                  schema="analytics") == '"analytics".orders analytics \'analytics\''
    with pytest.raises(ValueError, match="no value for the variable"):
        expand("$tenant")
    with pytest.raises(ValueError, match="unknown macro"):
        expand("$__dateFilter(day)")
    with pytest.raises(ValueError, match="arguments"):
        expand("$__timeGroup(day)")
    with pytest.raises(ValueError, match="not a duration"):
        expand("$__timeGroup(day, '1M')")  # calendar months: Grafana's own code, not here


def test_the_analytics_datasource_is_provisioned_with_no_secret(lint: ModuleType) -> None:
    text = (PROVISIONING / "datasources" / "analytics.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["type"] == POSTGRES and source["uid"] == "vyapaar-analytics"
    assert source["isDefault"] is False  # Prometheus stays the default
    placeholders = {
        "url": source["url"], "user": source["user"],
        "database": source["jsonData"]["database"], "sslmode": source["jsonData"]["sslmode"],
        "password": source["secureJsonData"]["password"],
    }
    for key, value in placeholders.items():
        assert re.fullmatch(r"\$\{VYAPAAR_ANALYTICS_DB_[A-Z]+\}", value), (key, value)
    assert "password" not in source and "password" not in source["jsonData"]
    assert lint.provisioned_datasources()["vyapaar-analytics"] == POSTGRES
    doc = (ROOT / "docs" / "observability.md").read_text()
    for name in ("VYAPAAR_ANALYTICS_DB_HOST", "VYAPAAR_ANALYTICS_DB_PASSWORD", "vyapaar-analytics"):
        assert name in doc


def test_the_business_constants_are_the_systems(generate: ModuleType) -> None:
    """The dashboard's lists of phases, reasons and currencies are those of the code."""
    from vyapaar_messaging import contracts
    from vyapaar_operator import saga

    replies = contracts.REPLIES.values()

    def compensation(reply: contracts.ReplySpec) -> bool:
        return contracts.COMMANDS[reply.command].kind is contracts.CommandKind.COMPENSATION

    assert set(generate.FORWARD_OUTCOMES) == {r.type for r in replies if not compensation(r)}
    assert set(generate.REJECTIONS) == {r.type for r in replies if not r.ok}
    assert set(generate.ZERO_DECIMAL_CURRENCIES) == set(saga._ZERO_DECIMAL_CURRENCIES)
    crd = yaml.safe_load((ROOT / "crds" / "orders.vyapaar.dev.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(generate.CURRENCIES) == set(spec["properties"]["currency"]["enum"])
    readmodel = pytest.importorskip("vyapaar_services.analytics.readmodel")
    assert set(generate.TERMINAL_PHASES) == set(readmodel.TERMINAL_PHASES)
    assert set(generate.FORWARD_OUTCOMES) == set(readmodel.OutcomeReasons.from_contracts().forward)
