"""`helm lint --strict` passes for every tested scenario, and a chart without infrastructure
refuses to render with the key to set."""

from __future__ import annotations

from pathlib import Path

from vyapaar_stack import chart

KUBE = ("--kube-version", chart.kube_version())


def test_helm_lint_strict_passes(helm, scenario: Path) -> None:
    result = helm("lint", "--strict", *KUBE, str(chart.CHART), "-f", str(scenario))
    assert "0 chart(s) failed" in result.stdout


def test_without_infrastructure_the_chart_says_which_key_to_set(helm) -> None:
    result = helm("template", "x", str(chart.CHART), *KUBE, check=False)
    assert result.returncode != 0
    assert "rabbitmq.existingSecret" in result.stderr
    assert "rabbitmq.bundled.enabled=true" in result.stderr


def test_bundled_and_existing_secret_together_are_refused(helm) -> None:
    result = helm("template", "x", str(chart.CHART), *KUBE, "-f",
                  str(chart.CHART / "ci" / "byo-values.yaml"),
                  "--set", "postgresql.bundled.enabled=true", check=False)
    assert result.returncode != 0
    assert "postgresql: set either postgresql.existingSecret or postgresql.bundled.enabled" \
        in result.stderr
