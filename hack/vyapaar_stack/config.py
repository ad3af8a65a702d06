"""Where the local stack lives and which loopback ports it uses.

Every value can be overridden by an environment variable, so two stacks (or a
stack and a machine's own PostgreSQL/RabbitMQ/Redis) never clash. Defaults
stay clear of the services' standard ports (5432, 5672, 6379, 9090, 6443).
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the shell-style KEY=VALUE pins that hack/provision.sh also sources."""
    versions: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = " ".join(shlex.split(value))
    return versions


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the local stack (VYAPAAR_<NAME>_PORT overrides each)."""

    apiserver: int = field(default_factory=lambda: _env_int("VYAPAAR_APISERVER_PORT", 26443))
    postgres: int = field(default_factory=lambda: _env_int("VYAPAAR_POSTGRES_PORT", 25432))
    amqp: int = field(default_factory=lambda: _env_int("VYAPAAR_AMQP_PORT", 25673))
    rabbitmq_dist: int = field(
        default_factory=lambda: _env_int("VYAPAAR_RABBITMQ_DIST_PORT", 25674)
    )
    epmd: int = field(default_factory=lambda: _env_int("VYAPAAR_EPMD_PORT", 25675))
    rabbitmq_management: int = field(
        default_factory=lambda: _env_int("VYAPAAR_RABBITMQ_MANAGEMENT_PORT", 25676)
    )
    rabbitmq_prometheus: int = field(
        default_factory=lambda: _env_int("VYAPAAR_RABBITMQ_PROMETHEUS_PORT", 25692)
    )
    redis: int = field(default_factory=lambda: _env_int("VYAPAAR_REDIS_PORT", 26379))
    prometheus: int = field(default_factory=lambda: _env_int("VYAPAAR_PROMETHEUS_PORT", 29090))
    # Jaeger (the trace backend): OTLP in, its query API out, its own metrics.
    otlp_http: int = field(default_factory=lambda: _env_int("VYAPAAR_OTLP_HTTP_PORT", 24318))
    otlp_grpc: int = field(default_factory=lambda: _env_int("VYAPAAR_OTLP_GRPC_PORT", 24317))
    jaeger_query: int = field(
        default_factory=lambda: _env_int("VYAPAAR_JAEGER_QUERY_PORT", 26686)
    )
    jaeger_query_grpc: int = field(
        default_factory=lambda: _env_int("VYAPAAR_JAEGER_QUERY_GRPC_PORT", 26685)
    )
    jaeger_metrics: int = field(
        default_factory=lambda: _env_int("VYAPAAR_JAEGER_METRICS_PORT", 28888)
    )


@dataclass(frozen=True)
class NodeNetwork:
    """Addresses of the real node (`vyapaar stack up --node real`).

    The node lives on a bridge of our own, so pods reach the host (and the host's
    PostgreSQL/RabbitMQ/Redis) at `node_ip` without touching the machine's own
    interfaces. The Service range is kube-apiserver's default, which kwokctl keeps.
    """

    bridge: str = field(default_factory=lambda: os.environ.get("VYAPAAR_NODE_BRIDGE", "vyapaar0"))
    node_ip: str = field(default_factory=lambda: os.environ.get("VYAPAAR_NODE_IP", "10.87.0.1"))
    pod_subnet: str = field(
        default_factory=lambda: os.environ.get("VYAPAAR_POD_SUBNET", "10.87.0.0/24")
    )
    node_name: str = "vyapaar-node"
    service_cidr: str = "10.0.0.0/24"
    kubernetes_service_ip: str = "10.0.0.1"
    cluster_dns_ip: str = "10.0.0.10"
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        net = ipaddress.ip_network(self.pod_subnet)
        if ipaddress.ip_address(self.node_ip) not in net:
            raise ValueError(
                f"VYAPAAR_NODE_IP {self.node_ip} is not inside VYAPAAR_POD_SUBNET {net}"
            )
        if net.overlaps(ipaddress.ip_network(self.service_cidr)):
            raise ValueError(f"the pod subnet {net} overlaps the Service range {self.service_cidr}")

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_network(self.pod_subnet).prefixlen


@dataclass(frozen=True)
class StackConfig:
    """Paths and ports of one local stack."""

    state_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("VYAPAAR_STATE_DIR", REPO_ROOT / ".state")
        ).resolve()
    )
    cache_dir: Path = field(
        default_factory=lambda: Path(
            os.environ.get("VYAPAAR_CACHE", Path.home() / ".cache" / "vyapaar")
        ).resolve()
    )
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    cluster_name: str = "vyapaar"
    fake_nodes: int = field(default_factory=lambda: _env_int("VYAPAAR_FAKE_NODES", 3))
    node: NodeNetwork = field(default_factory=NodeNetwork)

    @property
    def node_ip(self) -> str:
        """The real node's address: pods reach the host (and its services) here."""
        return self.node.node_ip

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def database_url(self) -> str:
        return f"postgresql://vyapaar@{self.host}:{self.ports.postgres}/vyapaar"

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.ports.amqp}/"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.ports.redis}/0"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host}:{self.ports.prometheus}"

    @property
    def rabbitmq_management_url(self) -> str:
        return f"http://{self.host}:{self.ports.rabbitmq_management}"

    @property
    def otlp_endpoint(self) -> str:
        """Where the product's OTLP/HTTP exporters send spans (OTEL_EXPORTER_OTLP_ENDPOINT)."""
        return f"http://{self.host}:{self.ports.otlp_http}"

    @property
    def traces_url(self) -> str:
        """Jaeger's query API: ``GET {traces_url}/api/v3/traces/{trace_id}``."""
        return f"http://{self.host}:{self.ports.jaeger_query}"

    def pod_env(self) -> dict[str, str]:
        """The stack's PostgreSQL/RabbitMQ/Redis URLs as seen from a pod on the real node.

        They listen on the node address too while the real node is up; PostgreSQL trusts
        the pod subnet and RabbitMQ lets `guest` in from it (local development only).
        """
        ip = self.node_ip
        return {
            "VYAPAAR_DATABASE_URL": f"postgresql://vyapaar@{ip}:{self.ports.postgres}/vyapaar",
            "VYAPAAR_AMQP_URL": f"amqp://guest:guest@{ip}:{self.ports.amqp}/",
            "VYAPAAR_REDIS_URL": f"redis://{ip}:{self.ports.redis}/0",
        }

    def env(self) -> dict[str, str]:
        """The variables a process needs to use this stack (what `stack env` prints)."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "VYAPAAR_DATABASE_URL": self.database_url,
            "VYAPAAR_AMQP_URL": self.amqp_url,
            "VYAPAAR_REDIS_URL": self.redis_url,
            "VYAPAAR_PROMETHEUS_URL": self.prometheus_url,
            "VYAPAAR_RABBITMQ_MANAGEMENT_URL": self.rabbitmq_management_url,
            "VYAPAAR_TRACES_URL": self.traces_url,
        }
