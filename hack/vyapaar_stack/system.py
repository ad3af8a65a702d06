"""The product itself on the local stack: the operator, the services and the gateway as
local processes.

Each runs from the project's virtualenv with the stack's URLs in its
environment, logs to .state/run/<name>.log, and is registered with the local
Prometheus as a scrape target.

The gateway's tenants are in .state/gateway/tokens.yaml (it re-reads the file when it
changes): the demo tenant, whose token is made once and kept in .state/gateway/demo-token,
and whatever tenants the tests add for their own namespaces (and take out again).

The gateway talks to the apiserver as a ServiceAccount with exactly the chart's gateway
RBAC (its rules read from the kustomize base, which is rendered from the chart) and a token
of that ServiceAccount in .state/gateway/kubeconfig: what passes on the local stack passes
with the permissions a cluster install grants, and no more. The objects have names of the
local stack's own, so that installing and removing the chart or the kustomize base on the
same cluster (the tests do) leaves the local gateway's identity alone.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import cluster
from .chart import BASE_RELEASE, KUSTOMIZE_BASE
from .config import StackConfig
from .infra import register_scrape_target
from .processes import Process, http_ok, wait_until

#: the saga's services: each has a command queue and an outbox (what chaos plays faults on)
SAGA_SERVICES = ("inventory", "payment", "shipping", "notification")
#: every service with a database the stack runs: the saga's, and analytics (a read model of
#: the operator's order events, off the saga's path)
SERVICES = (*SAGA_SERVICES, "analytics")


@dataclass(frozen=True)
class Ports:
    inventory: int = int(os.environ.get("VYAPAAR_INVENTORY_PORT", 28081))
    payment: int = int(os.environ.get("VYAPAAR_PAYMENT_PORT", 28082))
    shipping: int = int(os.environ.get("VYAPAAR_SHIPPING_PORT", 28083))
    notification: int = int(os.environ.get("VYAPAAR_NOTIFICATION_PORT", 28084))
    analytics: int = int(os.environ.get("VYAPAAR_ANALYTICS_PORT", 28085))
    gateway: int = int(os.environ.get("VYAPAAR_GATEWAY_PORT", 28080))
    operator_health: int = int(os.environ.get("VYAPAAR_OPERATOR_HEALTH_PORT", 28090))
    operator_metrics: int = int(os.environ.get("VYAPAAR_OPERATOR_METRICS_PORT", 28091))

    def service(self, name: str) -> int:
        return int(getattr(self, name))


PORTS = Ports()


def service_url(config: StackConfig, name: str) -> str:
    return f"http://{config.host}:{PORTS.service(name)}"


def _process(config: StackConfig, name: str) -> Process:
    return Process(name, config.state_dir / "run")


def tracing_enabled() -> bool:
    """Tracing is on by default on the local stack; ``VYAPAAR_TRACING=0`` turns it off."""
    return os.environ.get("VYAPAAR_TRACING", "1").strip().lower() not in ("0", "false", "off",
                                                                          "no", "")


def tracing_env(config: StackConfig, name: str) -> dict[str, str]:
    """The OpenTelemetry settings of one product process: its spans go to the stack's Jaeger
    (nothing while tracing is off: with no OTLP endpoint the product does not trace)."""
    if not tracing_enabled():
        return {}
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": config.otlp_endpoint,
        "OTEL_SERVICE_NAME": name,
        # Export twice a second (the default is 5 s), so a finished order's trace is whole
        # in Jaeger moments later; a queue large enough for the benchmark's bursts.
        "OTEL_BSP_SCHEDULE_DELAY": "500",
        "OTEL_BSP_MAX_QUEUE_SIZE": "16384",
    }


def _base_env(config: StackConfig, name: str) -> dict[str, str]:
    return {**config.env(), "PYTHONUNBUFFERED": "1", **tracing_env(config, name)}


def start_service(config: StackConfig, name: str, extra_env: Mapping[str, str] | None = None
                  ) -> Process:
    proc = _process(config, name)
    env = {
        **_base_env(config, name),
        "VYAPAAR_HTTP_HOST": config.host,
        "VYAPAAR_HTTP_PORT": str(PORTS.service(name)),
        **(extra_env or {}),
    }
    proc.start([sys.executable, "-m", f"vyapaar_services.{name}"], env=env)
    register_scrape_target(config, name, [f"{config.host}:{PORTS.service(name)}"])
    return proc


#: Namespaces of the Helm releases on the real node (tests, `vyapaar demo --cluster`, the
#: benchmark's calibration): their own operators, or none, own the Orders there.
HELM_NAMESPACE_PREFIX = "vyn-"


def start_operator(config: StackConfig, extra_env: Mapping[str, str] | None = None) -> Process:
    proc = _process(config, "operator")
    env = {
        **_base_env(config, "operator"),
        "VYAPAAR_NAMESPACES": f"!{HELM_NAMESPACE_PREFIX}*",
        "VYAPAAR_HOST": config.host,
        "VYAPAAR_HEALTH_PORT": str(PORTS.operator_health),
        "VYAPAAR_METRICS_PORT": str(PORTS.operator_metrics),
        **(extra_env or {}),
    }
    proc.start([sys.executable, "-m", "vyapaar_operator"], env=env)
    register_scrape_target(config, "operator", [f"{config.host}:{PORTS.operator_metrics}"])
    return proc


def wait_service(config: StackConfig, name: str, timeout: float = 60) -> None:
    wait_until(lambda: http_ok(f"{service_url(config, name)}/readyz"), what=name,
               timeout=timeout, process=_process(config, name))


def wait_operator(config: StackConfig, timeout: float = 60) -> None:
    url = f"http://{config.host}:{PORTS.operator_health}/healthz"
    wait_until(lambda: http_ok(url), what="operator", timeout=timeout,
               process=_process(config, "operator"))


# -- the gateway ------------------------------------------------------------------------------

#: the demo's tenant: its orders go to the demo's namespace
DEMO_TENANT = {"name": "demo", "namespace": "vyapaar-demo"}


def gateway_dir(config: StackConfig) -> Path:
    return config.state_dir / "gateway"


def tokens_file(config: StackConfig) -> Path:
    return gateway_dir(config) / "tokens.yaml"


def demo_token(config: StackConfig) -> str:
    """The demo tenant's token: made once, kept with the stack's state."""
    path = gateway_dir(config) / "demo-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def read_tenants(config: StackConfig) -> list[dict[str, Any]]:
    path = tokens_file(config)
    if not path.exists():
        return []
    return list((yaml.safe_load(path.read_text()) or {}).get("tenants") or [])


def write_tenants(config: StackConfig, tenants: list[dict[str, Any]]) -> None:
    """Replace the gateway's tenants (atomically: it may be reading the file)."""
    path = tokens_file(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(yaml.safe_dump({"tenants": tenants}, sort_keys=False))
    scratch.chmod(0o600)
    scratch.replace(path)


#: the chart's gateway identity, as the kustomize base renders it
BASE_GATEWAY = f"{BASE_RELEASE}-gateway"
GATEWAY_RBAC = ("serviceaccount", "clusterrole", "clusterrolebinding")
#: the local gateway's identity: the same RBAC under names no install of the chart uses
GATEWAY_ACCOUNT = "vyapaar-local-gateway"
GATEWAY_NAMESPACE = "vyapaar-local"
#: how long the gateway's ServiceAccount token lasts; every gateway start makes a new one
GATEWAY_TOKEN_HOURS = 24 * 7


def gateway_rbac() -> list[dict[str, Any]]:
    """The chart's gateway ServiceAccount, ClusterRole and binding, renamed for the stack."""
    objects = []
    for kind in GATEWAY_RBAC:
        obj = yaml.safe_load((KUSTOMIZE_BASE / f"{kind}-{BASE_GATEWAY}.yaml").read_text())
        obj["metadata"]["name"] = GATEWAY_ACCOUNT
        obj["metadata"]["labels"] = {"app.kubernetes.io/part-of": "vyapaar-local-stack"}
        if obj["kind"] == "ServiceAccount":
            obj["metadata"]["namespace"] = GATEWAY_NAMESPACE
        if obj["kind"] == "ClusterRoleBinding":
            obj["roleRef"]["name"] = GATEWAY_ACCOUNT
            obj["subjects"] = [{"kind": "ServiceAccount", "name": GATEWAY_ACCOUNT,
                                "namespace": GATEWAY_NAMESPACE}]
        objects.append(obj)
    return objects


def gateway_kubeconfig(config: StackConfig) -> Path:
    """A kubeconfig for the local gateway's ServiceAccount, its RBAC applied first."""
    cluster.kubectl(config, "create", "namespace", GATEWAY_NAMESPACE, check=False)
    cluster.kubectl(config, "apply", "-f", "-",
                    input=yaml.safe_dump_all(gateway_rbac(), sort_keys=False))
    token = cluster.kubectl(config, "create", "token", GATEWAY_ACCOUNT, "-n", GATEWAY_NAMESPACE,
                            f"--duration={GATEWAY_TOKEN_HOURS}h").stdout.strip()
    admin = yaml.safe_load(config.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": GATEWAY_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "gateway", "context": {"cluster": "local",
                                                     "user": GATEWAY_ACCOUNT}}],
        "current-context": "gateway",
    }
    path = gateway_dir(config) / "kubeconfig"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig))
    path.chmod(0o600)
    return path


def start_gateway(config: StackConfig, extra_env: Mapping[str, str] | None = None) -> Process:
    others = [t for t in read_tenants(config) if t.get("name") != DEMO_TENANT["name"]]
    write_tenants(config, [{**DEMO_TENANT, "token": demo_token(config)}, *others])
    proc = _process(config, "gateway")
    env = {
        **_base_env(config, "gateway"),
        "KUBECONFIG": str(gateway_kubeconfig(config)),
        "VYAPAAR_HTTP_HOST": config.host,
        "VYAPAAR_HTTP_PORT": str(PORTS.gateway),
        "VYAPAAR_GATEWAY_TOKENS_FILE": str(tokens_file(config)),
        **(extra_env or {}),
    }
    proc.start([sys.executable, "-m", "vyapaar_services.gateway"], env=env)
    register_scrape_target(config, "gateway", [f"{config.host}:{PORTS.gateway}"])
    return proc


def gateway_url(config: StackConfig) -> str:
    return f"http://{config.host}:{PORTS.gateway}"


def wait_gateway(config: StackConfig, timeout: float = 60) -> None:
    wait_until(lambda: http_ok(f"{gateway_url(config)}/readyz"), what="gateway",
               timeout=timeout, process=_process(config, "gateway"))


# -- all of it ----------------------------------------------------------------------------------


def up(config: StackConfig) -> None:
    """Start the services and the gateway, then the operator, and wait until all answer."""
    for name in SERVICES:
        start_service(config, name)
    start_gateway(config)
    for name in SERVICES:
        wait_service(config, name)
    wait_gateway(config)
    start_operator(config)
    wait_operator(config)


def down(config: StackConfig) -> None:
    _process(config, "operator").stop()
    _process(config, "gateway").stop()
    for name in SERVICES:
        _process(config, name).stop()


def running(config: StackConfig) -> bool:
    """Whether the system's processes are all alive (ready or not: the infrastructure under
    them may be restarting)."""
    return all(_process(config, name).pid() is not None
               for name in (*SERVICES, "gateway", "operator"))


def status(config: StackConfig) -> dict[str, bool]:
    states = {name: http_ok(f"{service_url(config, name)}/readyz") for name in SERVICES}
    states["gateway"] = http_ok(f"{gateway_url(config)}/readyz")
    states["operator"] = http_ok(f"http://{config.host}:{PORTS.operator_health}/healthz")
    return states
