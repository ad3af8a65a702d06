"""The same CRDs install on a kind cluster (pytest-kind); needs a Docker engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.docker
def test_crds_install_on_a_kind_cluster(kind_cluster: Any) -> None:
    for manifest in sorted(CRDS.glob("*.yaml")):
        kind_cluster.kubectl("apply", "--server-side", "-f", str(manifest))
    out = kind_cluster.kubectl("get", "crd", "-o", "name")
    assert "orders.vyapaar.dev" in out
