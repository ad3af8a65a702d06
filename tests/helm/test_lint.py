"""`helm lint --strict` passes for every tested scenario, and a chart without infrastructure
refuses to render with the key to set."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from vyapaar_stack import chart

KUBE = ("--kube-version", chart.kube_version())
BYO = chart.CHART / "ci" / "byo-values.yaml"
Helm = Callable[..., subprocess.CompletedProcess[str]]


def test_helm_lint_strict_passes(helm: Helm, scenario: Path) -> None:
    result = helm("lint", "--strict", *KUBE, str(chart.CHART), "-f", str(scenario))
    assert "0 chart(s) failed" in result.stdout


def test_without_infrastructure_the_chart_says_which_key_to_set(helm: Helm) -> None:
    result = helm("template", "x", str(chart.CHART), *KUBE, check=False)
    assert result.returncode != 0
    assert "rabbitmq.existingSecret" in result.stderr
    assert "rabbitmq.bundled.enabled=true" in result.stderr


def test_bundled_and_existing_secret_together_are_refused(helm: Helm) -> None:
    result = helm("template", "x", str(chart.CHART), *KUBE, "-f",
                  str(chart.CHART / "ci" / "byo-values.yaml"),
                  "--set", "postgresql.bundled.enabled=true", check=False)
    assert result.returncode != 0
    assert "postgresql: set either postgresql.existingSecret or postgresql.bundled.enabled" \
        in result.stderr


#: (--set values over byo-values.yaml, what the refusal must say)
GATEWAY_REFUSALS = [
    (("redis.existingSecret=",),
     "gateway: needs Redis (rate limits, idempotency keys): set redis.existingSecret"),
    (("gateway.existingSecret=my-tokens",),
     "gateway: with gateway.existingSecret the chart cannot see the tenants' namespaces: "
     "list them in gateway.rbac.namespaces"),
    (("gateway.existingSecret=my-tokens", "gateway.rbac.namespaces={shop-a}",
      "gateway.tenants[0].name=a", "gateway.tenants[0].namespace=shop-a",
      "gateway.tenants[0].token=0123456789abcdef"),
     "gateway: set either gateway.tenants (the chart writes the tokens Secret) or "
     "gateway.existingSecret (yours), not both"),
    (("gateway.tenants[0].name=a", "gateway.tenants[0].namespace=shop-a",
      "gateway.tenants[0].token=0123456789abcdef", "gateway.tenants[1].name=a",
      "gateway.tenants[1].namespace=shop-b", "gateway.tenants[1].token=fedcba9876543210"),
     'gateway.tenants: the name "a" is used twice'),
]


@pytest.mark.parametrize(("sets", "message"), GATEWAY_REFUSALS,
                         ids=["no-redis", "secret-without-namespaces", "secret-and-tenants",
                              "duplicate-tenant"])
def test_a_gateway_the_chart_cannot_run_is_refused_saying_why(
        helm: Helm, sets: tuple[str, ...], message: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    result = helm("template", "x", str(chart.CHART), *KUBE, "-f", str(BYO), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_what_the_gateway_needs_is_enough(helm: Helm) -> None:
    """The refusals above each have their way out."""
    for sets in (("redis.existingSecret=", "gateway.enabled=false"),
                 ("gateway.existingSecret=my-tokens", "gateway.rbac.namespaces={shop-a}"),
                 ("gateway.existingSecret=my-tokens", "gateway.rbac.scope=cluster"),
                 ("gateway.existingSecret=my-tokens", "rbac.create=false")):
        helm("template", "x", str(chart.CHART), *KUBE, "-f", str(BYO),
             *[a for s in sets for a in ("--set", s)])
