"""`vyapaar bench-gateway` on the real system: every kind of request measured, and nothing
left behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from vyapaar_stack.bench.gateway import KINDS, main
from vyapaar_stack.testing import System


@pytest.mark.slow
def test_each_kind_of_request_is_measured_and_its_orders_removed(
    running_system: System, tmp_path: Path, kubectl: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "gateway.json"
    assert main(running_system.config, clients=2, seconds=1.0, out=out, plots=False) == 0

    report = json.loads(out.read_text())
    assert [r["kind"] for r in report["results"]] == list(KINDS)
    for result in report["results"]:
        assert result["requests"] > 0 and result["errors"] == 0, result
        assert 0 < result["p50_ms"] <= result["p99_ms"]
        assert result["gateway_cpu_ms_per_request"] > 0
    assert "REQUEST    REQ/S" in capsys.readouterr().out
    phases = kubectl("get", "namespaces", "-o",
                     "jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}").stdout
    left = [n for n in phases.split() if n.startswith("vyn-bench-gateway-")]
    assert all(n.endswith("=Terminating") for n in left), left  # its orders freed, going
