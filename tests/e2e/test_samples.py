"""The sample orders in manifests/samples end as their headers promise (what `make demo` shows)."""

from __future__ import annotations

from typing import Any

from vyapaar_stack import demo
from vyapaar_stack.testing import System


def test_every_sample_reaches_its_expected_phase(running_system: System, kubectl: Any) -> None:
    demo.seed_stock(running_system.config, demo.load_stock())
    namespace = "samples-e2e"
    kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true")
    rows = demo.run_samples(running_system.config, namespace=namespace, timeout=120)
    wrong = [r for r in rows if r["phase"] != r["expected"]]
    assert not wrong, wrong
