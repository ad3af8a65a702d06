"""What `vyapaar orders pause|resume|retry` does to each Order it chose (pure).

The command itself, against the running system, is specified in tests/e2e/test_operations.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from vyapaar_cli.main import main
from vyapaar_cli.orders import RESUME_ANNOTATION, plan


def order(name: str, phase: str | None, *, paused: bool = False) -> dict[str, Any]:
    status = {"phase": phase} if phase else {}
    return {"metadata": {"namespace": "shop", "name": name, "uid": f"uid-{name}"},
            "spec": {"paused": paused} if paused else {}, "status": status}


def test_pause_holds_every_running_saga_and_leaves_finished_and_paused_ones_alone() -> None:
    changes = plan("pause", [order("new", None), order("paying", "Paying"),
                             order("held", "Shipping", paused=True),
                             order("done", "Completed"), order("stuck", "CompensationFailed")])
    assert [(c.name, c.action, c.why) for c in changes] == [
        ("new", "pause", ""), ("paying", "pause", ""), ("held", None, "already paused"),
        ("done", None, "finished"), ("stuck", "pause", "")]
    assert changes[0].patch == {"spec": {"paused": True}}
    assert changes[0].phase == "Pending"


@pytest.mark.parametrize("command", ["resume", "retry"])
def test_resume_unpauses_and_repairs_whichever_each_order_needs(command: str) -> None:
    changes = plan(command, [order("held", "Paying", paused=True),
                             order("stuck", "CompensationFailed"),
                             order("held-stuck", "CompensationFailed", paused=True),
                             order("running", "Paying"), order("done", "Failed")])
    assert [(c.name, c.action, c.why) for c in changes] == [
        ("held", "unpause", ""), ("stuck", "repair", ""), ("held-stuck", "unpause+repair", ""),
        ("running", None, "not paused"), ("done", None, "finished")]
    assert changes[0].patch == {"spec": {"paused": False}}
    assert changes[1].patch == {"metadata": {"annotations": {RESUME_ANNOTATION: "vyapaar orders"}}}
    assert changes[2].patch == {"spec": {"paused": False},
                                "metadata": {"annotations": {RESUME_ANNOTATION: "vyapaar orders"}}}


def test_a_bad_rate_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["orders", "pause", "-n", "shop", "--rate", "0"]) == 2
    assert "vyapaar: error: --rate must be positive" in capsys.readouterr().err


def test_an_unusable_kubeconfig_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Any) -> None:
    missing = tmp_path / "nope.yaml"
    assert main(["orders", "resume", "-A", "--kubeconfig", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "no usable kubeconfig" in err and "Traceback" not in err
