"""Background processes start once, stop with everything they forked, and leave nothing behind."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from vyapaar_stack.processes import Process, StackError, _group_alive


def test_starting_twice_is_harmless(tmp_path: Path) -> None:
    proc = Process("sleeper", tmp_path)
    first = proc.start(["sleep", "60"])
    second = proc.start(["sleep", "60"])
    try:
        assert first == second
        assert proc.is_running()
    finally:
        proc.stop()


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    proc = Process("forker", tmp_path)
    pid = proc.start(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    assert proc.stop(timeout=5)
    assert not _group_alive(pid)
    assert not proc.pid_file.exists()
    assert not proc.stop()  # stopping what is not running is a no-op


def test_a_stale_pid_file_is_not_mistaken_for_a_running_process(tmp_path: Path) -> None:
    proc = Process("ghost", tmp_path)
    proc.pid_file.write_text("999999")
    assert not proc.is_running()
    assert not proc.pid_file.exists()


def test_relaunch_starts_it_again_with_the_same_command_and_environment(tmp_path: Path) -> None:
    proc = Process("printer", tmp_path)
    proc.start(["sh", "-c", 'echo "run with $GREETING"; sleep 60'], env={"GREETING": "namaste"})
    wait_for_lines(proc, "run with namaste", 1)
    proc.stop(timeout=5)
    assert proc.launch_file.stat().st_mode & 0o777 == 0o600  # it may hold credentials
    pid = proc.relaunch()
    try:
        assert proc.pid() == pid
        wait_for_lines(proc, "run with namaste", 2)  # the same log file, appended to
    finally:
        proc.stop(timeout=5)


def wait_for_lines(proc: Process, text: str, count: int) -> None:
    for _ in range(100):
        if proc.log_file.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not {count} times in {proc.log_file}")


def test_relaunching_what_never_ran_here_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="never started here"):
        Process("stranger", tmp_path).relaunch()


def test_a_signal_reaches_the_whole_group_and_sigkill_leaves_nothing(tmp_path: Path) -> None:
    proc = Process("frozen", tmp_path)
    pid = proc.start(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    try:
        assert proc.signal(signal.SIGSTOP)
        assert _state(pid) == "T"
        assert proc.signal(signal.SIGCONT)
        assert _state(pid) in ("S", "R")
        assert proc.signal(signal.SIGKILL)
        assert not _group_alive(pid)
        assert not proc.is_running()
        assert not proc.signal(signal.SIGKILL)  # nothing left to signal
    finally:
        proc.stop(timeout=5)


def test_stop_ends_a_frozen_process_too(tmp_path: Path) -> None:
    proc = Process("sleeper", tmp_path)
    pid = proc.start(["sleep", "60"])
    proc.signal(signal.SIGSTOP)
    assert proc.stop(timeout=5)
    assert not _group_alive(pid)


def _state(pid: int) -> str:
    for _ in range(50):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state != "R":
            return state
        time.sleep(0.02)
    return state
