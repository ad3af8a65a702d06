"""pytest fixtures that give tests a real control plane and real infrastructure.

By default the local stack (hack/vyapaar_stack) is brought up once per test
session, lazily: only the parts a collected test asks for. Point the tests at
something else and the same tests run there instead:

- ``KUBECONFIG`` set (and ``VYAPAAR_STACK`` not ``local``): use that cluster
  (kind, a cloud cluster); the CRDs in crds/ are applied to it.
- ``VYAPAAR_DATABASE_URL``, ``VYAPAAR_AMQP_URL``, ``VYAPAAR_REDIS_URL``,
  ``VYAPAAR_PROMETHEUS_URL``, ``VYAPAAR_TRACES_URL``: use those services.

The stack is left running after the session so the next run starts in
seconds; ``make down`` (or ``vyapaar stack down``) stops it.

Markers: ``cluster`` and ``infra`` are added automatically from the fixtures a
test uses; ``docker`` tests are skipped with a clear reason when no Docker
engine answers (pytest-kind needs one).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import cluster, images, infra, node
from .cli import install_crds, stack_up
from .config import StackConfig

CLUSTER_FIXTURES = {"kubeconfig", "k8s_api", "namespace", "crds"}
INFRA_FIXTURES = {
    "database_url",
    "amqp_url",
    "redis_url",
    "prometheus_url",
    "rabbitmq_management_url",
    "traces_url",
}


def _use_local_cluster() -> bool:
    return os.environ.get("VYAPAAR_STACK") == "local" or not os.environ.get("KUBECONFIG")


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "node: needs the local stack's real kubelet node (root); skipped otherwise")
    # pytest-kind downloads kind and kubectl unless given binaries: hand it ours, built
    # from Go modules by hack/provision.sh.
    bins = StackConfig().cache_dir / "bin"
    for option, name in (("kind_bin", "kind"), ("kind_kubectl_bin", "kubectl")):
        if hasattr(config.option, option) and not getattr(config.option, option):
            setattr(config.option, option, str(bins / name))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    docker_checked: bool | None = None
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
        if fixtures & INFRA_FIXTURES:
            item.add_marker(pytest.mark.infra)
        if item.get_closest_marker("docker") is not None:
            if docker_checked is None:
                docker_checked = docker_available()
            if not docker_checked:
                item.add_marker(
                    pytest.mark.skip(
                        reason="needs a Docker engine (pytest-kind creates a kind cluster); "
                        "`docker info` did not answer on this machine"
                    )
                )


@pytest.fixture(scope="session")
def stack_config() -> StackConfig:
    return StackConfig()


def can_run_a_real_node() -> bool:
    """The real node needs root (kubelet, containerd, iptables, a bridge)."""
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def local_infra(stack_config: StackConfig) -> StackConfig:
    """Start the local infrastructure once (a no-op for parts already up).

    As root, the real node's bridge is made first, so PostgreSQL, RabbitMQ and Redis also
    listen on the node address from the start and a later `real_node` restarts nothing.
    """
    if can_run_a_real_node():
        node.prepare_network(stack_config)
    infra.up(stack_config)
    return stack_config


@pytest.fixture(scope="session")
def real_node(local_infra: StackConfig, crds: Path) -> StackConfig:
    """The local stack with one real kubelet node: pods run for real (needs root)."""
    if not can_run_a_real_node():
        pytest.skip("the real node needs root (kubelet, containerd, iptables, a bridge)")
    if not _use_local_cluster():
        pytest.skip("the real node joins the local control plane, not $KUBECONFIG's cluster")
    stack_up(local_infra, None, real_node=True)
    return local_infra


#: the tag of the product images the session builds and loads on the real node
IMAGE_TAG = "e2e"


@pytest.fixture(scope="session")
def product_images(real_node: StackConfig) -> str:
    """The product images built from the Dockerfile and loaded on the real node; their tag."""
    for archive in images.build_product_images(real_node, IMAGE_TAG).values():
        node.load_image(real_node, archive)
    return IMAGE_TAG


@pytest.fixture(scope="session")
def infra_images(real_node: StackConfig) -> dict[str, str]:
    """The PostgreSQL/RabbitMQ/Redis stand-ins loaded on the real node: component -> ref."""
    for archive in images.build_infra_images(real_node).values():
        node.load_image(real_node, archive)
    return dict(images.INFRA_IMAGES)


def _service_url(request: pytest.FixtureRequest, env: str, attr: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    config: StackConfig = request.getfixturevalue("local_infra")
    return str(getattr(config, attr))


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    return _service_url(request, "VYAPAAR_DATABASE_URL", "database_url")


@pytest.fixture(scope="session")
def amqp_url(request: pytest.FixtureRequest) -> str:
    return _service_url(request, "VYAPAAR_AMQP_URL", "amqp_url")


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    return _service_url(request, "VYAPAAR_REDIS_URL", "redis_url")


@pytest.fixture(scope="session")
def prometheus_url(request: pytest.FixtureRequest) -> str:
    return _service_url(request, "VYAPAAR_PROMETHEUS_URL", "prometheus_url")


@pytest.fixture(scope="session")
def rabbitmq_management_url(request: pytest.FixtureRequest) -> str:
    return _service_url(request, "VYAPAAR_RABBITMQ_MANAGEMENT_URL", "rabbitmq_management_url")


@pytest.fixture(scope="session")
def traces_url(request: pytest.FixtureRequest) -> str:
    """The trace backend's query API (Jaeger: ``/api/v3/traces/{trace_id}``)."""
    return _service_url(request, "VYAPAAR_TRACES_URL", "traces_url")


@pytest.fixture(scope="session")
def kubeconfig(stack_config: StackConfig) -> Path:
    """A kubeconfig for a ready cluster: the local one, or $KUBECONFIG's."""
    if _use_local_cluster():
        cluster.up(stack_config)
        return stack_config.kubeconfig
    return Path(os.environ["KUBECONFIG"])


@pytest.fixture(scope="session")
def crds(kubeconfig: Path, stack_config: StackConfig) -> Path:
    """The project's CRDs, installed and Established."""
    install_crds(stack_config, kubeconfig)
    return kubeconfig


@pytest.fixture(scope="session")
async def k8s_api(kubeconfig: Path) -> AsyncIterator[Any]:
    """An authenticated kubernetes_asyncio ApiClient for the cluster."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
async def namespace(k8s_api: Any) -> AsyncIterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it)."""
    from kubernetes_asyncio import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(k8s_api)
    await core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"vyapaar.dev/test": "true"})
        )
    )
    try:
        yield name
    finally:
        await core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path, stack_config: StackConfig) -> Iterator[object]:
    """Run kubectl against the test cluster: kubectl('get', 'orders', '-n', ns)."""

    def run(
        *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = cluster.kubectl(
            stack_config, *args, check=False, input=input, kubeconfig=kubeconfig
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result

    yield run
