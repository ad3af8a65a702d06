"""values.schema.json refuses what the chart would not understand, naming the key.

Every object the chart defines has `additionalProperties: false`; maps of user-chosen keys
(labels, annotations, resources) type their values instead; a few Kubernetes types passed
through unchanged (affinity terms) say so in a `$comment`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vyapaar_stack import chart

KUBE = ("--kube-version", chart.kube_version())

SCHEMA = json.loads((chart.CHART / "values.schema.json").read_text())
BYO = chart.CHART / "ci" / "byo-values.yaml"
Helm = Callable[..., subprocess.CompletedProcess[str]]
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"  # sha256 of "test"


def tenant(**fields: str) -> dict[str, Any]:
    return {"gateway": {"tenants": [{"name": "storefront-a", "namespace": "shop-a", **fields}]}}


#: (values, where the error must point, what it must name)
REFUSED = [
    ({"gatewy": {"enabled": True}}, "at ''", "'gatewy'"),
    ({"operator": {"replicas": 2}}, "at '/operator'", "'replicas'"),
    ({"services": {"inventory": {"autoscaling": {"maxReplica": 3}}}},
     "at '/services/inventory/autoscaling'", "'maxReplica'"),
    ({"networkPolicy": {"external": {"redis": {"ports": [6379], "to": [{"ipBlok": {}}]}}}},
     "at '/networkPolicy/external/redis/to/0'", "'ipBlok'"),
    ({"operator": {"metricsPort": "9100"}}, "at '/operator/metricsPort'", "integer"),
    ({"operator": {"watchNamespaces": "orders"}}, "at '/operator/watchNamespaces'", "array"),
    ({"services": {"payment": {"faults": {"errorRate": 2, "latencyMs": 0}}}},
     "at '/services/payment/faults/errorRate'", "maximum"),
    ({"rabbitmq": {"bundled": {"enabled": "yes"}}}, "at '/rabbitmq/bundled/enabled'", "boolean"),
    ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "at '/operator/image/pullPolicy'",
     "IfNotPresent"),
    ({"services": {"inventory": {"dbSchema": "Bad-Schema"}}},
     "at '/services/inventory/dbSchema'", "Bad-Schema"),
    ({"services": {"analytics": {"enabled": "yes"}}}, "at '/services/analytics/enabled'",
     "boolean"),
    ({"services": {"analytics": {"port": 0}}}, "at '/services/analytics/port'", "minimum"),
    ({"services": {"analytics": {"replica": 2}}}, "at '/services/analytics'", "'replica'"),
    # tracing: an OTLP/HTTP URL or nothing
    ({"tracing": {"otlpEndpoint": "otel-collector:4317"}}, "at '/tracing/otlpEndpoint'",
     "does not match"),
    ({"tracing": {"networkPolicy": {"port": 70000}}}, "at '/tracing/networkPolicy/port'",
     "maximum"),
    # the gateway
    ({"gateway": {"replica": 2}}, "at '/gateway'", "'replica'"),
    ({"gateway": {"rateLimit": "fast"}}, "at '/gateway/rateLimit'", "'fast' does not match"),
    ({"gateway": {"rateLimit": "0/second"}}, "at '/gateway/rateLimit'", "'0/second'"),
    ({"gateway": {"port": 80}}, "at '/gateway/port'", "minimum"),
    ({"gateway": {"maxBodyBytes": 0}}, "at '/gateway/maxBodyBytes'", "minimum"),
    ({"gateway": {"idempotencyTtlSeconds": "1d"}}, "at '/gateway/idempotencyTtlSeconds'",
     "integer"),
    ({"gateway": {"rbac": {"scope": "everywhere"}}}, "at '/gateway/rbac/scope'", "'cluster'"),
    ({"gateway": {"rbac": {"scope": "namespaces", "namespaces": ["Shop_A"]}}},
     "at '/gateway/rbac/namespaces/0'", "Shop_A"),
    ({"gateway": {"service": {"type": "Ingress"}}}, "at '/gateway/service/type'", "ClusterIP"),
    ({"gateway": {"existingSecret": "My_Tokens"}}, "at '/gateway/existingSecret'", "My_Tokens"),
    ({"gateway": {"tenants": "storefront-a"}}, "at '/gateway/tenants'", "array"),
    (tenant(), "at '/gateway/tenants/0'", "missing property 'tokenSha256'"),
    (tenant(tokenSha256=SHA, token="a-token-of-sixteen-chars"), "at '/gateway/tenants/0'",
     "subschemas 0, 1 matched"),
    (tenant(tokenSha256="abc"), "at '/gateway/tenants/0/tokenSha256'", "'abc'"),
    (tenant(token="short"), "at '/gateway/tenants/0/token'", "minLength"),
    (tenant(token="has spaces in the token"), "at '/gateway/tenants/0/token'", "pattern"),
    (tenant(tokenSha256=SHA, secret="x"), "at '/gateway/tenants/0'", "'secret'"),
    ({"gateway": {"tenants": [{"name": "a b", "namespace": "shop-a", "tokenSha256": SHA}]}},
     "at '/gateway/tenants/0/name'", "'a b'"),
    ({"gateway": {"tenants": [{"name": "a", "namespace": "Shop_A", "tokenSha256": SHA}]}},
     "at '/gateway/tenants/0/namespace'", "Shop_A"),
    ({"networkPolicy": {"gatewayFrom": [{"namespaceSelectr": {}}]}},
     "at '/networkPolicy/gatewayFrom/0'", "'namespaceSelectr'"),
]


@pytest.mark.parametrize(("values", "where", "names"), REFUSED,
                         ids=[where for _, where, _ in REFUSED])
def test_invalid_values_are_refused_naming_the_key(helm: Helm, tmp_path: Path,
                                                   values: dict[str, Any], where: str,
                                                   names: str) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text(yaml.safe_dump(values))
    result = helm("template", "x", str(chart.CHART), *KUBE, "-f", str(BYO), "-f", str(bad),
                  check=False)
    assert result.returncode != 0, f"accepted: {values}"
    assert where in result.stderr and names in result.stderr, result.stderr


def _objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, child in node.items():
            yield from _objects(child, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _objects(child, f"{path}/{index}")


def test_every_object_schema_is_closed_or_typed() -> None:
    for path, node in _objects(SCHEMA):
        if "passthrough" in node.get("$comment", ""):
            continue
        extra = node.get("additionalProperties")
        if "properties" in node:
            assert extra is False, f"{path} accepts unknown keys"
        else:
            assert isinstance(extra, dict) and "type" in extra, f"{path}: untyped map"


def test_the_default_values_satisfy_the_schema_shape(helm: Helm) -> None:
    helm("lint", "--strict", *KUBE, str(chart.CHART), "-f", str(BYO))


@pytest.mark.parametrize(("rate", "accepted"), [
    ("20/second", True), ("100 per minute", True), ("5/second;100/minute", True),
    ("10/2 minutes", True), ("1/day, 30 per month", True),
    ("fast", False), ("20/fortnight", False), ("/second", False), ("20/", False),
    ("0/second", False),
])
def test_the_gateway_rate_limit_is_the_limits_notation(helm: Helm, tmp_path: Path, rate: str,
                                                       accepted: bool) -> None:
    """What the schema accepts, `limits` (which the gateway parses it with at start) parses:
    a bad rate fails `helm install`, not the pod."""
    from limits import parse_many

    values = tmp_path / "rate.yaml"
    values.write_text(yaml.safe_dump({"gateway": {"rateLimit": rate}}))
    result = helm("template", "x", str(chart.CHART), *KUBE, "-f", str(BYO), "-f", str(values),
                  check=False)
    assert (result.returncode == 0) == accepted, result.stderr
    if accepted:
        assert parse_many(rate), rate
