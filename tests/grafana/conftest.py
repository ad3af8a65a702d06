"""Fixtures of the dashboard specs: the generator and lint modules (grafana/*.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"


def load_grafana_module(name: str) -> ModuleType:
    """Import grafana/<name>.py (a script folder, not a package)."""
    qualified = f"vyapaar_grafana_{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, GRAFANA / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def lint() -> ModuleType:
    return load_grafana_module("lint")


@pytest.fixture(scope="session")
def generate() -> ModuleType:
    return load_grafana_module("generate")
