"""One source of truth: the chart's CRD, rules and dashboards are the repository's files,
and its README documents every value.

The chart holds copies (Helm reads nothing outside it); these specs fail, naming the command
that fixes it, as soon as a copy or the README's values table drifts.
"""

from __future__ import annotations

import json

import yaml
from vyapaar_stack import chart
from vyapaar_stack.config import REPO_ROOT

FIX = "run: .venv/bin/python -m vyapaar_stack.chart sync"
VALUES_TEXT = (chart.CHART / "values.yaml").read_text()


def test_every_copy_in_the_chart_equals_its_source() -> None:
    wanted = chart.expected_copies()
    assert {p.name for p in wanted} >= {"orders.vyapaar.dev.yaml", "vyapaar.rules.yaml",
                                         "messaging.json", "saga-overview.json", "services.json"}
    stale = [p for p in chart.stale_files(wanted) if p.parent in set(chart._copy_folders())]
    assert not stale, f"stale copies {[str(p.relative_to(REPO_ROOT)) for p in stale]}; {FIX}"


def test_the_prometheus_rule_carries_exactly_the_rules_file_groups(render) -> None:
    objects = render(chart.CHART / "ci" / "full-values.yaml")
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    rules = REPO_ROOT / "manifests" / "prometheus" / "rules" / "vyapaar.rules.yaml"
    source = yaml.safe_load(rules.read_text())
    assert rule["spec"]["groups"] == source["groups"]


def test_each_dashboard_is_one_sidecar_configmap_with_the_json_unchanged(render) -> None:
    objects = render(chart.CHART / "ci" / "full-values.yaml")
    maps = [o for o in objects if o["kind"] == "ConfigMap"
            and o["metadata"]["labels"].get("grafana_dashboard") == "1"]
    sources = sorted((REPO_ROOT / "grafana" / "dashboards").glob("*.json"))
    assert len(maps) == len(sources)
    rendered = {key: value for cm in maps for key, value in cm["data"].items()}
    for source in sources:
        assert json.loads(rendered[source.name]) == json.loads(source.read_text()), source.name
        assert rendered[source.name] == source.read_text().rstrip("\n")


def test_the_crd_is_the_repository_crd_plus_release_labels_and_keep(render) -> None:
    objects = render(chart.CHART / "ci" / "byo-values.yaml")
    (crd,) = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    source = yaml.safe_load((REPO_ROOT / "crds" / "orders.vyapaar.dev.yaml").read_text())
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["name"] == source["metadata"]["name"]
    assert source["metadata"]["labels"].items() <= crd["metadata"]["labels"].items()
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_the_crd_can_be_left_to_someone_else_or_not_kept(render) -> None:
    kinds = [o["kind"] for o in render(chart.CHART / "ci" / "namespaced-values.yaml")]
    assert "CustomResourceDefinition" not in kinds
    unkept = render(chart.CHART / "ci" / "byo-values.yaml", set_values=("crds.keep=false",))
    (crd,) = [o for o in unkept if o["kind"] == "CustomResourceDefinition"]
    assert "annotations" not in crd["metadata"]


def test_every_value_is_documented_in_values_yaml() -> None:
    documented = [d.path for d in chart.documented_values(VALUES_TEXT)]
    values = yaml.safe_load(VALUES_TEXT)
    undocumented = [leaf for leaf in chart.leaf_paths(values)
                    if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
    for doc in chart.documented_values(VALUES_TEXT):
        assert doc.description, doc.path
        chart.lookup(values, doc.path)  # every documented key exists


def test_the_readme_values_table_is_current_and_lists_every_documented_key() -> None:
    readme = (chart.CHART / "README.md").read_text()
    assert readme == chart.expected_readme(readme, VALUES_TEXT), f"README values table: {FIX}"
    for doc in chart.documented_values(VALUES_TEXT):
        assert f"| `{doc.path}` |" in readme
