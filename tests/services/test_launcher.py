"""``python -m vyapaar_services NAME`` runs one service by name: the services image's command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from vyapaar_services.__main__ import SERVICES


def launch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vyapaar_services", *args],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"})


@pytest.mark.parametrize("args", [(), ("analytics",), ("common",)])
def test_an_unknown_or_missing_name_fails_at_once_with_the_list(args: tuple[str, ...]) -> None:
    result = launch(*args)
    assert result.returncode == 64
    assert "choose one of: inventory, payment, shipping, notification, gateway" in result.stderr


def test_a_known_name_starts_that_service() -> None:
    for name in SERVICES:  # without settings each stops at once, naming what it misses
        result = launch(name)
        assert result.returncode != 0 and result.returncode != 64
        missing = "VYAPAAR_REDIS_URL" if name == "gateway" else "VYAPAAR_DATABASE_URL"
        assert missing in result.stderr, result.stderr
