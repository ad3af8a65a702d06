"""One component of the local stack at a time: stopped, killed, frozen, started again the way
the stack started it -- while the rest runs on."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from vyapaar_services.__main__ import SERVICES as LAUNCHED
from vyapaar_stack import components, system
from vyapaar_stack.config import StackConfig
from vyapaar_stack.processes import Process, http_ok
from vyapaar_stack.testing import OPERATOR_ENV, System


def vyapaar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vyapaar_cli", "stack", *args],
                          capture_output=True, text=True, timeout=180)


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def state_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
def test_the_operator_killed_without_grace_comes_back_as_it_was(running_system: System) -> None:
    operator = running_system.operator()
    before = operator.pid()
    assert before is not None
    argv = Path(f"/proc/{before}/cmdline").read_bytes()
    env = environment(before)
    assert env["VYAPAAR_STEP_TIMEOUT_SECONDS"] == OPERATOR_ENV["VYAPAAR_STEP_TIMEOUT_SECONDS"]

    killed = vyapaar("kill", "operator", "--signal", "KILL")
    assert killed.returncode == 0, killed.stderr
    assert "operator: SIGKILL sent" in killed.stdout
    assert not operator.is_running()

    started = vyapaar("start", "operator")
    assert started.returncode == 0, started.stderr
    assert "operator: ready in" in started.stdout
    after = operator.pid()
    assert after is not None and after != before
    # the same command and environment (the tests' short timeouts), the same log file
    assert Path(f"/proc/{after}/cmdline").read_bytes() == argv
    assert environment(after) == env
    assert operator.log_file.read_text().count("--- start ") >= 2


@pytest.mark.slow
def test_a_frozen_service_answers_nothing_until_it_is_thawed(running_system: System) -> None:
    payment = Process("payment", running_system.config.state_dir / "run")
    pid = payment.pid()
    assert pid is not None
    ready = f"{running_system.url('payment')}/readyz"
    try:
        assert vyapaar("kill", "payment", "--signal", "STOP").returncode == 0
        assert state_of(pid) == "T"
        assert not http_ok(ready)
    finally:
        assert vyapaar("kill", "payment", "--signal", "CONT").returncode == 0
    deadline = time.monotonic() + 10
    while not http_ok(ready):
        assert time.monotonic() < deadline, "payment did not answer again after SIGCONT"
        time.sleep(0.1)
    assert payment.pid() == pid  # the same process, never restarted


@pytest.mark.slow
def test_restart_brings_a_service_back_with_a_new_process(running_system: System) -> None:
    payment = Process("payment", running_system.config.state_dir / "run")
    before = payment.pid()
    restarted = vyapaar("restart", "payment")
    assert restarted.returncode == 0, restarted.stderr
    assert payment.pid() not in (None, before)
    assert http_ok(f"{running_system.url('payment')}/readyz")


def test_every_service_of_the_image_is_a_stack_component_with_its_own_port() -> None:
    """Analytics too: started, stopped, restarted, scraped and reported like the others."""
    assert (*system.SERVICES, "gateway") == LAUNCHED
    product = [c.name for c in components._product_components(StackConfig())]
    assert product == [*system.SERVICES, "gateway", "operator"]
    ports = [system.PORTS.service(name) for name in LAUNCHED]
    ports += [system.PORTS.operator_health, system.PORTS.operator_metrics]
    assert len(set(ports)) == len(ports)


def test_the_control_plane_processes_are_components_too(running_system: System) -> None:
    known = components.components(running_system.config)
    for name in ("etcd", "kube-apiserver", "rabbitmq", "postgres", "redis", "operator",
                 "gateway", "inventory", "payment", "shipping", "notification", "analytics"):
        assert known[name].running(), f"{name} is not seen running"
        assert known[name].ready(), f"{name} is not seen ready"


@pytest.mark.parametrize(("args", "message"), [
    (("restart", "no-such-thing"), "no component 'no-such-thing'; one of: "),
    (("kill", "operator", "--signal", "NOPE"), "unknown signal 'NOPE'"),
])
def test_a_wrong_name_or_signal_is_a_clear_error_that_changes_nothing(
        running_system: System, args: tuple[str, ...], message: str) -> None:
    before = running_system.operator().pid()
    result = vyapaar(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert running_system.operator().pid() == before


@pytest.mark.slow
def test_the_controllers_outlive_a_restart_of_the_apiserver(running_system: System,
                                                           kubectl: Any) -> None:
    """Nothing restarts them here, so they must not exit when their lease cannot be renewed:
    without them a new namespace never gets its ServiceAccount."""
    config = running_system.config
    assert vyapaar("restart", "kube-apiserver").returncode == 0
    time.sleep(15)  # longer than a lease's renew deadline
    for name in ("kube-controller-manager", "kube-scheduler"):
        assert components.find(config, name).running(), f"{name} exited"
    namespace = f"restart-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", namespace)
    try:
        # Their watches reconnect with client-go's backoff (up to 30 s between relists, and
        # an apiserver restart on a busy machine can take as long): allow for two rounds.
        deadline = time.monotonic() + 90
        while kubectl("get", "serviceaccount", "default", "-n", namespace,
                      check=False).returncode != 0:
            assert time.monotonic() < deadline, "no ServiceAccount: the controllers are gone"
            time.sleep(0.5)
    finally:
        kubectl("delete", "namespace", namespace, "--wait=false")
