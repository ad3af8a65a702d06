"""The development commands (`vyapaar stack`, a plugin of the product CLI) answer for the
local stack, and the product commands default to it while the dev tooling is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from vyapaar_stack.config import StackConfig


def vyapaar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vyapaar_cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_stack_env_prints_what_a_shell_needs(stack_config: StackConfig) -> None:
    out = vyapaar("stack", "env").stdout
    assert f"export KUBECONFIG={stack_config.kubeconfig}" in out
    assert "export VYAPAAR_AMQP_URL=" in out


def test_stack_status_reports_the_infrastructure_up(local_infra: StackConfig,
                                                     kubeconfig: Path) -> None:
    out = vyapaar("stack", "status").stdout
    for part in ("kube-apiserver", "postgres", "rabbitmq", "redis", "prometheus"):
        assert any(line.split() == [part, "up"] for line in out.splitlines()), out


def test_dlq_list_shows_every_dead_letter_queue(local_infra: StackConfig) -> None:
    result = vyapaar("dlq", "list")
    assert result.returncode == 0, result.stderr
    for queue in ("inventory.commands.dlq", "payment.commands.dlq", "operator.replies.dlq"):
        assert queue in result.stdout


def test_infra_secret_prints_the_charts_secret_with_the_urls_pods_use(
        stack_config: StackConfig) -> None:
    result = vyapaar("stack", "infra-secret", "--namespace", "shop")
    assert result.returncode == 0, result.stderr
    secret = yaml.safe_load(result.stdout)
    assert (secret["kind"], secret["metadata"]) == (
        "Secret", {"name": "vyapaar-infrastructure", "namespace": "shop"})
    node_ip = stack_config.node_ip
    assert secret["stringData"] == {
        "amqp-url": f"amqp://guest:guest@{node_ip}:{stack_config.ports.amqp}/",
        "database-url": f"postgresql://vyapaar@{node_ip}:{stack_config.ports.postgres}/vyapaar",
        "redis-url": f"redis://{node_ip}:{stack_config.ports.redis}/0",
    }


def test_images_refuses_a_ref_that_is_not_a_product_image() -> None:
    result = vyapaar("stack", "images", "--ref", "docker.io/library/redis:7")
    assert result.returncode == 1
    assert "expected localhost/vyapaar/{operator,services}:TAG" in result.stderr
    assert "Traceback" not in result.stderr
