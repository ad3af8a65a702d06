"""Fixtures of the chart specs: the real helm binary, rendering, and the ci/ scenarios.

helm and kubectl are the ones hack/provision.sh builds into ~/.cache/vyapaar/bin; the
cluster specs use the project's pytest plugin (`kubeconfig`, `kubectl`, `namespace`).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vyapaar_stack import chart
from vyapaar_stack.cluster import StackError

SCENARIOS = sorted((chart.CHART / "ci").glob("*-values.yaml"))
Render = Callable[..., list[dict[str, Any]]]
Helm = Callable[..., subprocess.CompletedProcess[str]]

#: minimal prometheus-operator CRDs (kinds only, spec not validated) for server dry-runs
MONITORING_CRDS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {plural}.monitoring.coreos.com
  labels: {{vyapaar.dev/test: minimal-monitoring-crd}}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}, listKind: {kind}List}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])


@pytest.fixture(scope="session")
def helm_path() -> Path:
    try:
        return chart.helm_binary()
    except StackError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="session")
def helm(helm_path: Path) -> Helm:
    """Run helm: helm('lint', '--strict', CHART)."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(helm_path), *args], capture_output=True, text=True,
                                timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def render(helm_path: Path) -> Render:
    """render(values_file, ..., release=, namespace=, set_values=[...], api_versions=[...])."""

    def run(*values: Path, release: str = "vyapaar", namespace: str = "vyapaar",
            set_values: tuple[str, ...] = (), api_versions: tuple[str, ...] = (),
            ) -> list[dict[str, Any]]:
        return chart.template(*values, release=release, namespace=namespace,
                              set_values=set_values, helm=helm_path, api_versions=api_versions)

    return run


@pytest.fixture(scope="session")
def monitoring_crds(kubectl: Any) -> Iterator[None]:
    """ServiceMonitor and PrometheusRule kinds, only if the cluster lacks them (removed after)."""
    created = []
    kinds = (("ServiceMonitor", "servicemonitors"), ("PrometheusRule", "prometheusrules"))
    for kind, plural in kinds:
        name = f"{plural}.monitoring.coreos.com"
        if kubectl("get", "crd", name, check=False).returncode != 0:
            kubectl("apply", "-f", "-", input=MONITORING_CRDS.format(
                kind=kind, plural=plural, singular=kind.lower()))
            created.append(name)
    for name in created:
        kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=30s")
    yield
    for name in created:
        kubectl("delete", "crd", name, "--wait=false", check=False)


@pytest.fixture
def release_name() -> str:
    """A release name of its own, so cluster-scoped objects of parallel runs never clash."""
    return f"vy{uuid.uuid4().hex[:8]}"
