"""The images: the product's Dockerfiles and the infrastructure stand-ins, built with buildah
on the local debootstrap base (no Docker, no registry), run like pods with a read-only root.

The first run builds everything (minutes); later runs reuse the layer and archive caches
under ``<cache>/images``. Sizes and build times are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vyapaar_services.common.config import DEFAULT_HTTP_PORTS
from vyapaar_stack import images
from vyapaar_stack.config import REPO_ROOT, StackConfig

SERVICES = ("inventory", "payment", "shipping", "notification", "analytics")
PRODUCT = ("operator", "services")
TAG = "test"
MiB = 1024 * 1024


def _missing_prerequisite() -> str | None:
    for tool in ("buildah", "skopeo", "debootstrap", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (DEBIAN_NODE_PACKAGES in hack/versions.env)"
    if os.geteuid() != 0:
        return "image builds need root (debootstrap, buildah chroot isolation, namespaces)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing_prerequisite() is not None,
                       reason=_missing_prerequisite() or ""),
]


def timed(what: str, build: Callable[[], Any]) -> Any:
    started = time.monotonic()
    result = build()
    print(f"\n{what}: {time.monotonic() - started:.1f}s", file=sys.stderr)
    return result


@pytest.fixture(scope="module")
def config() -> StackConfig:
    """The machine's image cache (that is what keeps builds fast), and a state dir of the
    tests' own beside it, so that a second run of unchanged sources skips the builds."""
    cache = StackConfig().cache_dir
    return StackConfig(state_dir=cache / "images" / "test-state", cache_dir=cache)


@pytest.fixture(scope="module")
def product(config: StackConfig) -> dict[str, Path]:
    return timed("product images", lambda: images.build_product_images(config, TAG))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def infra(config: StackConfig) -> dict[str, Path]:
    return timed("stand-in images", lambda: images.build_infra_images(config))  # type: ignore[no-any-return]


def oci_config(archive: Path) -> dict[str, Any]:
    """The image configuration as stored in the archive containerd will import."""
    result = subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{archive}"],
                            capture_output=True, text=True, check=True)
    config: dict[str, Any] = json.loads(result.stdout)["config"]
    return config


# --- the base ---------------------------------------------------------------------------------


def test_the_base_is_cached_by_its_recipe_so_a_second_build_is_instant(
        config: StackConfig) -> None:
    archive = timed("base image (first call)", lambda: images.build_base(config))
    started = time.monotonic()
    assert images.build_base(config) == archive
    assert time.monotonic() - started < 5
    assert archive.parent == config.cache_dir / "images" / "archives"
    assert images.image_id(config, images.BASE_IMAGE) is not None


def test_the_mirror_comes_from_apt_sources_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://other.invalid/x\nSuites: nodistro\n"
        "Components: main\n")
    assert images.debian_mirror([tmp_path]) == "http://mirror.invalid/debian"
    (tmp_path / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://one.invalid/d bookworm main\n")
    assert images.debian_mirror([tmp_path / "sources.list"]) == "http://one.invalid/d"
    assert images.debian_mirror([tmp_path / "missing"]) is None  # debootstrap's default


# --- product images: configuration ----------------------------------------------------------


@pytest.mark.parametrize("name", PRODUCT)
def test_product_images_run_as_a_numeric_non_root_user(product: dict[str, Path],
                                                       name: str) -> None:
    assert oci_config(product[name])["User"] == "65532:65532"


@pytest.mark.parametrize("name", PRODUCT)
def test_product_images_carry_the_oci_labels(product: dict[str, Path], name: str) -> None:
    labels = oci_config(product[name])["Labels"]
    assert labels["org.opencontainers.image.title"] == f"vyapaar-{name}"
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.version"] == TAG
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


@pytest.mark.parametrize("name", PRODUCT)
def test_product_images_write_no_bytecode_and_buffer_no_output(product: dict[str, Path],
                                                               name: str) -> None:
    env = dict(e.split("=", 1) for e in oci_config(product[name])["Env"])
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/vyapaar/bin:")


def test_the_operator_image_runs_the_operator_under_tini(product: dict[str, Path]) -> None:
    config = oci_config(product["operator"])
    assert config["Entrypoint"] == ["/usr/bin/tini", "--"]
    assert config["Cmd"] == ["python", "-m", "vyapaar_operator"]


def test_the_services_image_exposes_the_port_of_every_service(product: dict[str, Path]) -> None:
    exposed = set(oci_config(product["services"]).get("ExposedPorts") or {})
    assert exposed == {f"{port}/tcp" for port in DEFAULT_HTTP_PORTS.values()}


def test_the_services_image_runs_the_service_named_by_its_command(
        product: dict[str, Path]) -> None:
    config = oci_config(product["services"])
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "python", "-m", "vyapaar_services"]
    assert config["Cmd"] == ["inventory"]


# --- product images: contents -----------------------------------------------------------------


@pytest.mark.parametrize("name", PRODUCT)
def test_product_images_hold_no_pip_compilers_caches_or_build_leftovers(
        config: StackConfig, product: dict[str, Path], name: str) -> None:
    with images.mounted(config, images.product_ref(name, TAG)) as root:
        present = [path for path in (
            "root/.cache", "opt/build", "wheels", "src", "usr/bin/gcc", "usr/bin/cc",
            "usr/bin/make", "opt/vyapaar/bin/pip", "var/lib/apt/lists/deb.debian.org_debian_"
            "dists_bookworm_InRelease",
        ) if (root / path).exists()]
        site = next((root / "opt/vyapaar/lib").glob("python3*/site-packages"))
        leftovers = [p.name for p in site.iterdir() if p.name.startswith(("pip", "setuptools"))]
    assert present == []
    assert leftovers == []


@pytest.mark.parametrize("name", PRODUCT)
def test_product_images_stay_small(config: StackConfig, product: dict[str, Path],
                                   name: str) -> None:
    size = images.image_size(config, images.product_ref(name, TAG))
    archive = product[name].stat().st_size
    print(f"\n{name}: {size / MiB:.0f} MiB on disk, archive {archive / MiB:.0f} MiB",
          file=sys.stderr)
    assert size < 250 * MiB


# --- product images: they start, as their user, on a read-only root -------------------------


def in_image(config: StackConfig, name: str, *argv: str, entrypoint: bool = True,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run in a product image as its user, read-only root (like `kubectl exec` if not
    `entrypoint`)."""
    return images.run_in_image(config, images.product_ref(name, TAG), list(argv),
                               entrypoint=entrypoint, env=env)


def test_the_check_harness_gives_a_read_only_root_and_a_writable_tmp(
        config: StackConfig, product: dict[str, Path]) -> None:
    result = in_image(config, "operator", "python", "-c",
                      "import os, pathlib; pathlib.Path('/tmp/x').write_text('ok');"
                      "print(os.getuid(), os.getgid());"
                      "open('/opt/vyapaar/new', 'w')")
    assert result.stdout.split() == ["65532", "65532"]
    assert "Read-only file system" in result.stderr
    assert "Tini is not running as PID 1" not in result.stderr


def test_the_operator_starts_and_stops_cleanly_on_sigterm_through_tini(
        config: StackConfig, product: dict[str, Path], tmp_path: Path) -> None:
    """The real entry point, with no cluster to reach: every import, the handlers and the
    settings load on a read-only root, and SIGTERM to PID 1 (tini) stops kopf cleanly."""
    log = tmp_path / "operator.log"
    with images.started_in_image(config, images.product_ref("operator", TAG),
                                 log=log) as operator:
        wait_for(lambda: "kube-config" in log.read_text() or operator.poll() is not None,
                 "the operator's first attempt to reach the cluster", 60)
    output = log.read_text()
    assert operator.returncode == 0, output[-3000:]
    assert "Signal SIGTERM is received. Operator is stopping." in output, output[-3000:]
    assert "Read-only file system" not in output
    assert "Tini is not running as PID 1" not in output


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_starts_and_reads_its_settings(config: StackConfig,
                                                    product: dict[str, Path],
                                                    service: str) -> None:
    """The launcher runs the named service, which stops at once on its missing settings."""
    result = in_image(config, "services", service)
    assert result.returncode != 0
    assert "missing required environment" in result.stderr, result.stderr[-3000:]
    assert "VYAPAAR_DATABASE_URL" in result.stderr


def test_the_launcher_refuses_an_unknown_service_with_the_list(
        config: StackConfig, product: dict[str, Path]) -> None:
    result = in_image(config, "services", "reporting")
    assert result.returncode == 64
    assert result.stderr.strip() == (
        "vyapaar_services: unknown service 'reporting'; "
        "choose one of: inventory, payment, shipping, notification, analytics, gateway")


@pytest.mark.parametrize("name", PRODUCT)
def test_the_product_cli_is_in_both_images(config: StackConfig, product: dict[str, Path],
                                           name: str) -> None:
    result = in_image(config, name, "vyapaar", "--help", entrypoint=False)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "stack" not in result.stdout.split()  # the development tooling is not in it


# --- stand-ins -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "binary"), [
    ("postgresql", "postgres"), ("rabbitmq", "rabbitmq-server"), ("redis", "redis-server")])
def test_stand_ins_run_as_the_official_images_numeric_user(
        infra: dict[str, Path], name: str, binary: str) -> None:
    config = oci_config(infra[name])
    assert config["User"] == "999:999"
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "docker-entrypoint.sh"]
    assert config["Cmd"] == [binary]


def wait_for(check: Callable[[], bool], what: str, within: float = 90,
             process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `check`; give up early if `process` (the server being waited for) has died."""
    deadline = time.monotonic() + within
    while not check():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {within}s")
        time.sleep(0.5)


def host(pid: int, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A host command inside the network namespace of the stand-in `pid`."""
    return subprocess.run(images.nsenter_argv(pid, argv), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "server.log"
    yield log
    if log.exists():
        print(f"\n--- {log}\n{log.read_text()[-3000:]}", file=sys.stderr)


def test_postgres_stand_in_creates_the_user_and_database_from_the_environment(
        config: StackConfig, infra: dict[str, Path], server_log: Path) -> None:
    env = {"POSTGRES_USER": "shop", "POSTGRES_PASSWORD": "s3cret", "POSTGRES_DB": "orders"}
    with images.started_in_image(
            config, images.INFRA_IMAGES["postgresql"], env=env, log=server_log,
            writable={"/var/lib/postgresql/data": "999:999", "/var/run/postgresql": "999:999"},
            stop_signal=signal.SIGINT) as server:
        wait_for(lambda: host(server.pid, "pg_isready", "-h", "127.0.0.1", "-p", "5432",
                              "-U", "shop", "-q").returncode == 0, "postgres", process=server)
        query = query_as_shop(server.pid, "SELECT current_user || ' ' || current_database() "
                              "|| ' ' || current_setting('server_version_num')")
        assert query.returncode == 0, query.stderr
        user, database, version = query.stdout.split()
        assert (user, database, version[:2]) == ("shop", "orders", "15")
        # Inside the container local connections are trusted, as in the official image;
        # every other client must give the password.
        rules = query_as_shop(server.pid, "SELECT type || ' ' || auth_method FROM "
                              "pg_hba_file_rules WHERE address = 'all'")
        assert rules.stdout.split("\n")[0].strip() == "host scram-sha-256", rules


def query_as_shop(pid: int, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        images.nsenter_argv(pid, ["psql", "-h", "127.0.0.1", "-U", "shop", "-d", "orders",
                                  "-tAc", sql]),
        capture_output=True, text=True, env={**os.environ, "PGPASSWORD": "s3cret"},
        check=False, timeout=30)


def test_postgres_stand_in_refuses_to_start_without_a_password(
        config: StackConfig, infra: dict[str, Path]) -> None:
    result = images.run_in_image(config, images.INFRA_IMAGES["postgresql"])
    assert result.returncode == 1
    assert "superuser password is not specified" in result.stderr


def test_redis_stand_in_takes_the_charts_arguments(
        config: StackConfig, infra: dict[str, Path], server_log: Path) -> None:
    with images.started_in_image(config, images.INFRA_IMAGES["redis"],
                                 ["--requirepass", "s3cret"], log=server_log,
                                 writable={"/data": "999:999"}) as server:
        wait_for(lambda: host(server.pid, "redis-cli", "-a", "s3cret", "--no-auth-warning",
                              "ping").stdout.strip() == "PONG", "redis", process=server)
        unauthenticated = host(server.pid, "redis-cli", "ping")
        assert "NOAUTH" in unauthenticated.stdout + unauthenticated.stderr
        info = host(server.pid, "redis-cli", "-a", "s3cret", "--no-auth-warning",
                    "info", "server").stdout
        assert "redis_version:7." in info
        assert host(server.pid, "redis-cli", "-a", "s3cret", "--no-auth-warning",
                    "config", "get", "dir").stdout.split()[-1] == "/data"


AMQP_LOGIN = """
import asyncio, sys, aio_pika
async def main():
    connection = await aio_pika.connect(sys.argv[1], timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"hi"), routing_key=queue.name)
        message = await queue.get(timeout=5)
        print(message.body.decode())
asyncio.run(main())
"""


def test_rabbitmq_stand_in_serves_amqp_management_and_metrics_for_the_default_user(
        config: StackConfig, infra: dict[str, Path], server_log: Path) -> None:
    env = {"RABBITMQ_DEFAULT_USER": "shop", "RABBITMQ_DEFAULT_PASS": "s3cret"}
    with images.started_in_image(config, images.INFRA_IMAGES["rabbitmq"], env=env,
                                 log=server_log,
                                 writable={"/var/lib/rabbitmq": "999:999"}) as server:
        def metrics() -> subprocess.CompletedProcess[str]:
            return host(server.pid, "curl", "-sf", "http://127.0.0.1:15692/metrics")

        wait_for(lambda: metrics().returncode == 0, "rabbitmq prometheus endpoint", 120,
                 process=server)
        assert "rabbitmq_build_info" in metrics().stdout or "rabbitmq_" in metrics().stdout
        overview = host(server.pid, "curl", "-sf", "-u", "shop:s3cret",
                        "http://127.0.0.1:15672/api/overview")
        assert overview.returncode == 0, overview.stderr
        assert json.loads(overview.stdout)["rabbitmq_version"].startswith("3.10")
        amqp = host(server.pid, sys.executable, "-c", AMQP_LOGIN,
                    "amqp://shop:s3cret@127.0.0.1:5672/")
        assert amqp.stdout.strip() == "hi", amqp.stderr[-2000:]
        guest = host(server.pid, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     "-u", "guest:guest", "http://127.0.0.1:15672/api/overview")
        assert guest.stdout == "401"  # only the configured user exists


def test_a_service_image_gets_ready_against_the_stand_ins_as_in_a_bundled_install(
        config: StackConfig, product: dict[str, Path], infra: dict[str, Path],
        tmp_path: Path) -> None:
    """PostgreSQL, RabbitMQ, Redis and the inventory service, each from its image, share one
    network namespace (like a pod's containers): the service connects to all three,
    migrates its schema and reports ready."""
    secret = "s3cret"
    try:
        with contextlib.ExitStack() as pod:
            postgres = pod.enter_context(images.started_in_image(
                config, images.INFRA_IMAGES["postgresql"], log=tmp_path / "postgres.log",
                env={"POSTGRES_USER": "vyapaar", "POSTGRES_PASSWORD": secret,
                     "POSTGRES_DB": "vyapaar"},
                writable={"/var/lib/postgresql/data": "999:999",
                          "/var/run/postgresql": "999:999"},
                stop_signal=signal.SIGINT))
            netns = postgres.pid
            pod.enter_context(images.started_in_image(
                config, images.INFRA_IMAGES["rabbitmq"], log=tmp_path / "rabbitmq.log",
                env={"RABBITMQ_DEFAULT_USER": "vyapaar", "RABBITMQ_DEFAULT_PASS": secret},
                writable={"/var/lib/rabbitmq": "999:999"}, join=netns))
            pod.enter_context(images.started_in_image(
                config, images.INFRA_IMAGES["redis"], ["--requirepass", secret],
                log=tmp_path / "redis.log", writable={"/data": "999:999"}, join=netns))
            pod.enter_context(images.started_in_image(
                config, images.product_ref("services", TAG), ["inventory"],
                log=tmp_path / "inventory.log", join=netns, env={
                    "VYAPAAR_DATABASE_URL":
                        f"postgresql://vyapaar:{secret}@127.0.0.1:5432/vyapaar",
                    "VYAPAAR_AMQP_URL": f"amqp://vyapaar:{secret}@127.0.0.1:5672/",
                    "VYAPAAR_REDIS_URL": f"redis://:{secret}@127.0.0.1:6379/0",
                }))
            wait_for(lambda: host(netns, "curl", "-sf",
                                  "http://127.0.0.1:8081/readyz").returncode == 0,
                     "the inventory service's readiness", 180)
            metrics = host(netns, "curl", "-sf", "http://127.0.0.1:8081/metrics").stdout
            assert "python_info" in metrics or "process_" in metrics
    finally:
        for log in sorted(tmp_path.glob("*.log")):
            print(f"\n--- {log.name}\n{log.read_text()[-1500:]}", file=sys.stderr)


def test_the_repository_ignores_what_no_image_needs() -> None:
    """The build context is the repository root: local state never reaches a build."""
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"
    for needed in ("!pyproject.toml", "!operator/", "!services/", "!messaging/", "!cli/"):
        assert needed in ignore
