"""The product itself on the local stack: the operator and the services as local processes.

Each runs from the project's virtualenv with the stack's URLs in its
environment, logs to .state/run/<name>.log, and is registered with the local
Prometheus as a scrape target.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .config import StackConfig
from .infra import register_scrape_target
from .processes import Process, http_ok, wait_until

SERVICES = ("inventory", "payment", "shipping", "notification")


@dataclass(frozen=True)
class Ports:
    inventory: int = int(os.environ.get("VYAPAAR_INVENTORY_PORT", 28081))
    payment: int = int(os.environ.get("VYAPAAR_PAYMENT_PORT", 28082))
    shipping: int = int(os.environ.get("VYAPAAR_SHIPPING_PORT", 28083))
    notification: int = int(os.environ.get("VYAPAAR_NOTIFICATION_PORT", 28084))
    operator_health: int = int(os.environ.get("VYAPAAR_OPERATOR_HEALTH_PORT", 28090))
    operator_metrics: int = int(os.environ.get("VYAPAAR_OPERATOR_METRICS_PORT", 28091))

    def service(self, name: str) -> int:
        return int(getattr(self, name))


PORTS = Ports()


def service_url(config: StackConfig, name: str) -> str:
    return f"http://{config.host}:{PORTS.service(name)}"


def _process(config: StackConfig, name: str) -> Process:
    return Process(name, config.state_dir / "run")


def _base_env(config: StackConfig) -> dict[str, str]:
    return {**config.env(), "PYTHONUNBUFFERED": "1"}


def start_service(config: StackConfig, name: str, extra_env: Mapping[str, str] | None = None
                  ) -> Process:
    proc = _process(config, name)
    env = {
        **_base_env(config),
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
        **_base_env(config),
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


def up(config: StackConfig) -> None:
    """Start the services, then the operator, and wait until all answer."""
    for name in SERVICES:
        start_service(config, name)
    for name in SERVICES:
        wait_service(config, name)
    start_operator(config)
    wait_operator(config)


def down(config: StackConfig) -> None:
    _process(config, "operator").stop()
    for name in SERVICES:
        _process(config, name).stop()


def status(config: StackConfig) -> dict[str, bool]:
    states = {name: http_ok(f"{service_url(config, name)}/readyz") for name in SERVICES}
    states["operator"] = http_ok(f"http://{config.host}:{PORTS.operator_health}/healthz")
    return states
