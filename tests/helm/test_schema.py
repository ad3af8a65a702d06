"""values.schema.json refuses what the chart would not understand, naming the key.

Every object the chart defines has `additionalProperties: false`; maps of user-chosen keys
(labels, annotations, resources) type their values instead; a few Kubernetes types passed
through unchanged (affinity terms) say so in a `$comment`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from vyapaar_stack import chart

KUBE = ("--kube-version", chart.kube_version())

SCHEMA = json.loads((chart.CHART / "values.schema.json").read_text())
BYO = chart.CHART / "ci" / "byo-values.yaml"

#: (values, where the error must point, what it must name)
REFUSED = [
    ({"gateway": {"enabled": True}}, "at ''", "'gateway'"),
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
]


@pytest.mark.parametrize(("values", "where", "names"), REFUSED,
                         ids=[where for _, where, _ in REFUSED])
def test_invalid_values_are_refused_naming_the_key(helm, tmp_path: Path, values: dict[str, Any],
                                                   where: str, names: str) -> None:
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


def test_the_default_values_satisfy_the_schema_shape(helm) -> None:
    helm("lint", "--strict", *KUBE, str(chart.CHART), "-f", str(BYO))
