"""``python -m vyapaar_services NAME`` runs one service by name: the services image's command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from vyapaar_services.__main__ import SERVICES
from vyapaar_services.common.config import DEFAULT_HTTP_PORTS


def launch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vyapaar_services", *args],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})


@pytest.mark.parametrize("args", [(), ("reporting",), ("common",)])
def test_an_unknown_or_missing_name_fails_at_once_with_the_list(args: tuple[str, ...]) -> None:
    result = launch(*args)
    assert result.returncode == 64
    assert ("choose one of: inventory, payment, shipping, notification, analytics, gateway"
            in result.stderr)


@pytest.mark.parametrize("name", SERVICES)
def test_a_known_name_starts_that_service(name: str) -> None:
    result = launch(name)  # without settings each stops at once, naming what it misses
    assert result.returncode != 0 and result.returncode != 64, result.stderr
    missing = "VYAPAAR_REDIS_URL" if name == "gateway" else "VYAPAAR_DATABASE_URL"
    assert missing in result.stderr, result.stderr


def test_every_service_it_runs_has_a_default_port_of_its_own() -> None:
    assert set(SERVICES) == set(DEFAULT_HTTP_PORTS)
    assert len(set(DEFAULT_HTTP_PORTS.values())) == len(DEFAULT_HTTP_PORTS)


def test_analytics_takes_its_own_commands_after_its_name() -> None:
    """`analytics rebuild`: the one-shot replay of the event log, from the same image."""
    helped = launch("analytics", "rebuild", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--idle-seconds" in helped.stdout
    result = launch("analytics", "rebuild")  # without settings: refused, naming them
    assert result.returncode == 2, result.stderr
    assert "VYAPAAR_DATABASE_URL" in result.stderr
