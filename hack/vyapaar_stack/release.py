"""Helm releases of the chart on the local stack's real node, with private infrastructure.

A release installed with bring-your-own infrastructure uses the stack's PostgreSQL,
RabbitMQ and Redis (reached by pods at the node address), each isolated for that release:
a database of its own, a RabbitMQ virtual host of its own and a Redis database number of
its own. So several releases, and the local processes the other tests run, never consume
each other's messages or read each other's rows.

    demo = Release(config, "vyn-demo")          # the release's own database, vhost, Redis DB
    demo.install(LOCAL_VALUES, sets={"operator.image.tag": "dev", ...})
    demo.put_stock({"SKU-1": 10}); demo.kubectl("apply", ...); demo.wait_terminal([...])
    demo.uninstall(); demo.delete()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from . import cluster
from .config import REPO_ROOT, StackConfig
from .infra import POSTGRES_BIN, rabbitmqctl
from .processes import StackError

CHART = REPO_ROOT / "helm" / "vyapaar-nexus"
LOCAL_VALUES = CHART / "ci" / "local-stack-values.yaml"
#: the Secret the chart's local-stack values name, and its keys
INFRA_SECRET = "vyapaar-infrastructure"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 50:
        raise StackError(f"{name!r} is not a usable release name (lowercase letters, digits, '-')")


def product_images(tag: str) -> dict[str, str]:
    """Values that run the product images of ``tag`` built on the local stack (imported into
    the node's containerd: never pulled), and leave the CRD, installed already, alone."""
    sets = {"crds.enabled": "false"}
    for name in ("operator", "services"):
        sets |= {f"{name}.image.repository": f"localhost/vyapaar/{name}",
                 f"{name}.image.tag": tag, f"{name}.image.pullPolicy": "Never"}
    return sets


def stand_in_images() -> dict[str, str]:
    """Values (strings) that run the bundled infrastructure from the local stand-ins."""
    from .images import INFRA_IMAGES

    sets: dict[str, str] = {}
    for component, ref in INFRA_IMAGES.items():
        repository, _, tag = ref.rpartition(":")
        prefix = f"{component}.bundled.image"
        sets |= {f"{prefix}.repository": repository, f"{prefix}.tag": tag,
                 f"{prefix}.pullPolicy": "Never"}
    return sets


def database_name(name: str) -> str:
    return name.replace("-", "_")


def redis_db(name: str) -> int:
    """A Redis database number in 1..15 (0 stays the local processes'), stable per name."""
    return 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 15


def _psql(config: StackConfig, sql: str) -> None:
    result = subprocess.run(
        [str(POSTGRES_BIN / "psql"), "-h", config.host, "-p", str(config.ports.postgres),
         "-U", "vyapaar", "-d", "vyapaar", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise StackError(f"psql: {result.stderr.strip()}")


def shared_urls(config: StackConfig) -> dict[str, str]:
    """The chart's Secret keys -> the stack's infrastructure as pods on the node reach it."""
    pods = config.pod_env()
    return {"amqp-url": pods["VYAPAAR_AMQP_URL"], "database-url": pods["VYAPAAR_DATABASE_URL"],
            "redis-url": pods["VYAPAAR_REDIS_URL"]}


def isolate(config: StackConfig, name: str) -> dict[str, str]:
    """Create the release's database and virtual host; return the URLs its pods use."""
    _check_name(name)
    database = database_name(name)
    _psql(config, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    _psql(config, f"CREATE DATABASE {database}")
    for args in (("delete_vhost", name), ("add_vhost", name),
                 ("set_permissions", "-p", name, "guest", ".*", ".*", ".*")):
        result = rabbitmqctl(config, *args)
        if result.returncode != 0 and args[0] != "delete_vhost":
            raise StackError(f"rabbitmqctl {' '.join(args)}: {result.stderr.strip()}")
    shared = shared_urls(config)
    return {
        "amqp-url": shared["amqp-url"].rstrip("/") + f"/{name}",
        "database-url": shared["database-url"].rsplit("/", 1)[0] + f"/{database}",
        "redis-url": shared["redis-url"].rsplit("/", 1)[0] + f"/{redis_db(name)}",
    }


def drop_isolation(config: StackConfig, name: str) -> None:
    """Remove the release's database and virtual host (harmless when they are gone)."""
    _check_name(name)
    _psql(config, f"DROP DATABASE IF EXISTS {database_name(name)} WITH (FORCE)")
    rabbitmqctl(config, "delete_vhost", name)


def infra_secret(namespace: str, urls: dict[str, str]) -> dict[str, Any]:
    """The Secret the chart reads the infrastructure URLs from (`existingSecret`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": INFRA_SECRET, "namespace": namespace},
        "type": "Opaque",
        "stringData": dict(urls),
    }


TERMINAL_PHASES = frozenset({"Completed", "Failed", "Cancelled", "CompensationFailed"})


class Release:
    """One Helm release of the chart on the local stack, in a namespace of its own that
    enforces the `restricted` Pod Security profile, with an operator watching only it.

    ``install()`` creates the namespace (and, for bring-your-own infrastructure, the
    release's isolated database/vhost and the Secret), ``uninstall()`` removes the release,
    ``delete()`` everything else it made.
    """

    def __init__(self, config: StackConfig, namespace: str, name: str = "vyn") -> None:
        _check_name(namespace)
        self.config = config
        self.namespace = namespace
        self.name = name
        self.urls: dict[str, str] = {}

    # -- tools ----------------------------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None) -> str:
        return cluster.kubectl(self.config, *args, input=input).stdout

    def helm(self, *args: str, timeout: float = 600) -> str:
        argv = [str(cluster.tool(self.config, "helm")), "--kubeconfig",
                str(self.config.kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                check=False)
        if result.returncode != 0:
            raise StackError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    @property
    def database_url(self) -> str:
        """The release's own database (when isolated), as the host reaches it."""
        config = self.config
        return (f"postgresql://vyapaar@{config.host}:{config.ports.postgres}/"
                f"{database_name(self.namespace)}")

    @property
    def fullname(self) -> str:
        """The chart's prefix of every object name (its `vyapaar.fullname` helper)."""
        return self.name if "vyapaar-nexus" in self.name else f"{self.name}-vyapaar-nexus"

    # -- lifecycle --------------------------------------------------------------------------
    def install(self, *values: Path, sets: dict[str, str] | None = None,
                strings: dict[str, str] | None = None, bring_your_own: bool = True) -> None:
        """``helm install --wait``; ``sets`` go as ``--set`` (typed), ``strings`` as
        ``--set-string`` (image tags like ``15`` that must stay strings)."""
        self.kubectl("create", "namespace", self.namespace)
        self.kubectl("label", "namespace", self.namespace,
                     "pod-security.kubernetes.io/enforce=restricted",
                     "pod-security.kubernetes.io/warn=restricted")
        if bring_your_own:
            self.kubectl("apply", "-f", "-",
                         input=json.dumps(infra_secret(self.namespace, self.isolate())))
        args = ["install", self.name, str(CHART), "-n", self.namespace, "--wait",
                "--timeout", "300s"]
        for path in values:
            args += ["-f", str(path)]
        every = {"operator.watchNamespaces": f"{{{self.namespace}}}", **(sets or {})}
        for key, value in every.items():
            args += ["--set", f"{key}={value}"]
        for key, value in (strings or {}).items():
            args += ["--set-string", f"{key}={value}"]
        self.helm(*args)

    def isolate(self) -> dict[str, str]:
        """Give the release its own database, vhost and Redis DB; their URLs for pods."""
        self.urls = isolate(self.config, self.namespace)
        return self.urls

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, "-n", self.namespace, "--wait")

    def delete(self) -> None:
        """Remove whatever is left (release, namespace, isolated infrastructure)."""
        with contextlib.suppress(StackError):
            self.uninstall()
        cluster.kubectl(self.config, "delete", "namespace", self.namespace, "--wait=false",
                        "--ignore-not-found", check=False)
        if self.urls:
            drop_isolation(self.config, self.namespace)

    # -- looking at it ----------------------------------------------------------------------
    def pods(self) -> list[dict[str, Any]]:
        return list(json.loads(self.kubectl("get", "pods", "-n", self.namespace,
                                            "-o", "json"))["items"])

    def order(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", "order.vyapaar.dev", name, "-n",
                                            self.namespace, "-o", "json")))

    def put_stock(self, stock: dict[str, int]) -> None:
        """Seed stock through the inventory service's API (via the apiserver's proxy)."""
        for sku, available in stock.items():
            path = (f"/api/v1/namespaces/{self.namespace}/services/"
                    f"http:{self.fullname}-inventory:http/proxy/api/v1/stock/{sku}")
            self.kubectl("replace", "--raw", path, "-f", "-",
                         input=json.dumps({"available": available}))

    def wait_terminal(self, names: list[str], within: float = 240) -> dict[str, str]:
        """Each named Order's final phase, once all are final."""
        deadline = time.monotonic() + within
        while True:
            items = json.loads(self.kubectl("get", "order.vyapaar.dev", "-n", self.namespace,
                                            "-o", "json"))["items"]
            phases = {o["metadata"]["name"]: (o.get("status") or {}).get("phase", "")
                      for o in items}
            if all(phases.get(n) in TERMINAL_PHASES for n in names):
                return {n: phases[n] for n in names}
            if time.monotonic() > deadline:
                stuck = {n: phases.get(n) for n in names if phases.get(n) not in TERMINAL_PHASES}
                raise StackError(f"orders not final within {within:.0f}s: {stuck}")
            time.sleep(1)
