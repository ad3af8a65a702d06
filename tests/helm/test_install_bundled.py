"""The chart's demo mode: RabbitMQ, PostgreSQL and Redis started by the chart itself.

Installed on the local stack's real node with the Debian-made stand-ins of the official
images (same entry-point contract, no registry), in a `restricted` namespace: every pod,
the bundled ones too, is admitted and becomes Ready, and a sample order completes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import yaml
from vyapaar_stack import demo, release
from vyapaar_stack.config import REPO_ROOT, StackConfig
from vyapaar_stack.release import Release
from vyapaar_stack.testing import HELM_NAMESPACE_PREFIX

pytestmark = [pytest.mark.slow, pytest.mark.node]

BUNDLED_VALUES = release.CHART / "ci" / "bundled-values.yaml"
SAMPLE = REPO_ROOT / "manifests" / "samples" / "order-completed.yaml"


@pytest.fixture(scope="module")
def bundled(real_node: StackConfig, product_images: str,
            infra_images: dict[str, str]) -> Iterator[Release]:
    demo_release = Release(real_node, f"{HELM_NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}")
    try:
        demo_release.install(BUNDLED_VALUES, bring_your_own=False,
                             sets=release.product_images(product_images),
                             strings=release.stand_in_images())
        yield demo_release
    finally:
        demo_release.delete()


def test_the_bundled_infrastructure_runs_beside_the_product(bundled: Release) -> None:
    components = {p["metadata"]["labels"].get("app.kubernetes.io/component"): p
                  for p in bundled.pods()}
    assert {"rabbitmq", "postgresql", "redis"} <= set(components)
    for pod in components.values():
        assert pod["spec"]["nodeName"] == bundled.config.node.node_name
        assert all(c["ready"] for c in pod["status"]["containerStatuses"])


def test_a_sample_order_completes(bundled: Release) -> None:
    bundled.put_stock(demo.load_stock())
    bundled.kubectl("apply", "-n", bundled.namespace, "-f", str(SAMPLE))
    name = yaml.safe_load(SAMPLE.read_text())["metadata"]["name"]
    assert bundled.wait_terminal([name]) == {name: "Completed"}


def test_no_password_is_a_default(bundled: Release) -> None:
    """The bundled instances' passwords were generated for this release."""
    secrets = bundled.kubectl("get", "secrets", "-n", bundled.namespace, "-o", "yaml")
    for weak in ("password: guest", "guest:guest", "changeme", "postgres:postgres"):
        assert weak not in secrets
