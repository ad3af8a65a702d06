"""Background processes start once, stop with everything they forked, and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

from vyapaar_stack.processes import Process, _group_alive


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
