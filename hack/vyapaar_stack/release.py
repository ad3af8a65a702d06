"""Helm releases of the chart on the local stack's real node, with private infrastructure.

A release installed with bring-your-own infrastructure uses the stack's PostgreSQL,
RabbitMQ and Redis (reached by pods at the node address), each isolated for that release:
a database of its own, a RabbitMQ virtual host of its own and a Redis database number of
its own. So several releases, and the local processes the other tests run, never consume
each other's messages or read each other's rows.

    urls = isolate(config, "vyn-demo")         # the release's own database, vhost, Redis DB
    kubectl apply -f <(infra_secret("vyn-demo", urls))
    helm install ... -f helm/vyapaar-nexus/ci/local-stack-values.yaml
    release_isolation_drop(config, "vyn-demo")  # after `helm uninstall`
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from typing import Any

from .config import REPO_ROOT, StackConfig
from .infra import rabbitmqctl
from .processes import StackError

CHART = REPO_ROOT / "helm" / "vyapaar-nexus"
LOCAL_VALUES = CHART / "ci" / "local-stack-values.yaml"
#: the Secret the chart's local-stack values name, and its keys
INFRA_SECRET = "vyapaar-infrastructure"

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _check_name(name: str) -> None:
    if not _NAME.match(name) or len(name) > 50:
        raise StackError(f"{name!r} is not a usable release name (lowercase letters, digits, '-')")


def database_name(name: str) -> str:
    return name.replace("-", "_")


def redis_db(name: str) -> int:
    """A Redis database number in 1..15 (0 stays the local processes'), stable per name."""
    return 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % 15


def _psql(config: StackConfig, sql: str) -> None:
    from .infra import POSTGRES_BIN

    result = subprocess.run(
        [str(POSTGRES_BIN / "psql"), "-h", config.host, "-p", str(config.ports.postgres),
         "-U", "vyapaar", "-d", "vyapaar", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise StackError(f"psql: {result.stderr.strip()}")


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
    pods = config.pod_env()
    base_db = pods["VYAPAAR_DATABASE_URL"].rsplit("/", 1)[0]
    base_redis = pods["VYAPAAR_REDIS_URL"].rsplit("/", 1)[0]
    return {
        "amqp-url": pods["VYAPAAR_AMQP_URL"].rstrip("/") + f"/{name}",
        "database-url": f"{base_db}/{database}",
        "redis-url": f"{base_redis}/{redis_db(name)}",
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
