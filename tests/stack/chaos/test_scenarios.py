"""`vyapaar chaos` against the running system: every kind of fault, every invariant.

Each scenario runs a small load of every kind of order through the tool itself (as a person
would run it) and passes only if every invariant held; the numbers are printed. The last
spec shows the verdict is not vacuous: a payment service that forgets the processor's
idempotency key, built here and nowhere else, is caught charging twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from vyapaar_stack import system
from vyapaar_stack.chaos.plan import FAULT_KINDS, SCENARIOS
from vyapaar_stack.processes import Process
from vyapaar_stack.testing import System

#: together they play every kind of fault (checked below)
IN_THE_SUITE = ("operator-kill", "rolling-restarts", "broker-outage", "apiserver-outage",
                "slow-operator", "flaky-processors", "poison-and-duplicates")


def chaos(report: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "vyapaar_cli", "chaos", *args, "--report", str(report)],
        capture_output=True, text=True, timeout=600)
    print(result.stdout)  # the verdict table and the numbers, in the test log
    print(result.stderr[-4000:])
    return result, (json.loads(report.read_text()) if report.exists() else {})


def test_the_scenarios_in_the_suite_play_every_kind_of_fault() -> None:
    kinds = {fault.kind for name in IN_THE_SUITE for fault in SCENARIOS[name]}
    assert kinds == set(FAULT_KINDS)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", IN_THE_SUITE)
def test_every_invariant_holds_under(running_system: System, tmp_path: Path,
                                    scenario: str) -> None:
    result, report = chaos(tmp_path / "report.json", "--scenario", scenario, "--orders", "16",
                           "--rate", "4", "--seed", "22")
    assert result.returncode == 0, result.stdout
    assert len(report["orders"]["by_kind"]) == 6  # seed 22: every kind of order
    assert report["passed"]
    assert all(v["held"] for v in report["verdicts"])
    assert [f["error"] for f in report["faults"]] == [None] * len(SCENARIOS[scenario])
    assert report["orders"]["created"] == 16
    assert report["orders"]["act_failures"] == []  # every cancellation and deletion was made
    assert "verdict: every invariant held" in result.stdout
    assert len(report["timeline"]["finished"]) == 16
    assert (tmp_path / "report.png").stat().st_size > 10_000  # the timeline, faults shaded


FORGETFUL_PAYMENT = '''
"""The payment service with one bug: each processor call gets a fresh idempotency key."""
import uuid

from vyapaar_services.common.service import run_service
from vyapaar_services.payment import app, processor


class ForgetfulProcessor(processor.SimulatedProcessor):
    async def charge(self, *, idempotency_key, **call):
        return await super().charge(idempotency_key=f"{idempotency_key}:{uuid.uuid4()}",
                                    **call)


processor.SimulatedProcessor = ForgetfulProcessor
run_service("payment", app.create_app)
'''


@pytest.fixture
def forgetful_payment(running_system: System, tmp_path: Path) -> Iterator[None]:
    config = running_system.config
    payment = Process("payment", config.state_dir / "run")
    record = json.loads(payment.launch_file.read_text())
    payment.stop()
    script = tmp_path / "forgetful_payment.py"
    script.write_text(FORGETFUL_PAYMENT)
    payment.start([sys.executable, str(script)], env=record["env"])
    try:
        system.wait_service(config, "payment")
        yield
    finally:
        payment.stop()
        system.start_service(config, "payment")
        system.wait_service(config, "payment")


@pytest.mark.slow
def test_a_payment_service_that_forgets_the_idempotency_key_is_caught_charging_twice(
        forgetful_payment: None, tmp_path: Path) -> None:
    result, report = chaos(tmp_path / "report.json", "--scenario", "lost-commits",
                           "--orders", "12", "--rate", "4", "--seed", "3")
    assert result.returncode == 1
    failed = {v["invariant"]: v["violations"] for v in report["verdicts"] if not v["held"]}
    assert "at most one capture per order" in failed
    assert "no money moved that the ledger does not show" in failed
    assert "verdict: FAILED" in result.stdout
