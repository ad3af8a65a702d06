"""The Grafana dashboards: generated as code and current, lint-clean, every query parses."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "grafana" / "provisioning"


def load(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_the_three_dashboards_exist() -> None:
    titles = {load(path)["title"] for path in DASHBOARDS}
    assert titles == {"Vyapaar Nexus / Saga overview", "Vyapaar Nexus / Services",
                      "Vyapaar Nexus / Messaging"}


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
    good = load(DASHBOARDS[0])
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
