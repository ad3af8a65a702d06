"""`vyapaar bench` on the real system: one tiny point, end to end, with the calibration."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from vyapaar_stack.bench.sweep import Options, Progress, run
from vyapaar_stack.testing import System


@pytest.mark.slow
async def test_one_tiny_point_is_measured_and_explained(running_system: System,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "bench" / "report.json"
    progress = io.StringIO()
    options = Options(rates=[5.0], orders_per_point=5, skus=2, out=out, calibration_writes=10,
                      idle_seconds=1.0, plots=False, stall_timeout=60.0)

    data = await run(options, Progress(stream=progress, live=False), running_system.config)

    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    [point] = data["points"]
    assert (point["created"], point["completed"]) == (5, 5), point["outcomes"]
    assert point["writes_per_order"]["orders/status"] > 0
    assert point["status_bytes"]["median"] > 0
    assert point["object_bytes"]["median"] > point["status_bytes"]["median"]
    assert point["latency_s"]["p50"] > 0
    assert point["cpu_ms_per_order"]["kube-apiserver"] > 0
    assert point["peak_rss_mib"]["operator"] > 0
    # the test settings make the operator ignore vyn-*: the calibration ran
    calibration = data["calibration"]
    assert calibration["full"]["status_bytes"] > calibration["minimal"]["status_bytes"] > 0
    assert calibration["minimal"]["writes"] == 10
    assert "[1/1] vyapaar 5/s x 5: 5/5 completed" in progress.getvalue()
