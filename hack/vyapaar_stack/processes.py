"""Background processes with a pid file and a log file each.

Written by hand rather than with a supervisor (supervisord, honcho): the stack
needs only start-detached, is-it-running, stop-the-whole-group and
wait-until-ready, and a supervisor would be one more long-lived process to
manage. Each process runs in its own session so that stopping it also stops
whatever it forked (RabbitMQ's Erlang VM, PostgreSQL's backends).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A component of the local stack could not be started or reached."""


@dataclass(frozen=True)
class Process:
    """One named background process whose files live in `run_dir`."""

    name: str
    run_dir: Path
    #: The signal that asks for a clean, prompt shutdown (PostgreSQL: SIGINT, "fast").
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid if the process is alive, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return None
        except PermissionError:
            return pid
        if _is_zombie(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None

    @property
    def launch_file(self) -> Path:
        """How it was last started (argv, full environment, cwd, user): `relaunch` reads it."""
        return self.run_dir / f"{self.name}.launch.json"

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> int:
        """Start `argv` detached unless it already runs; return its pid."""
        return self._launch(list(argv), {**os.environ, **(env or {})},
                            str(cwd) if cwd else None, user)

    def relaunch(self) -> int:
        """Start it again exactly as it was last started: the same command, environment and
        log file (a restart must not silently change its settings)."""
        try:
            record = json.loads(self.launch_file.read_text())
        except FileNotFoundError:
            raise StackError(f"{self.name} was never started here; start the stack first"
                             ) from None
        return self._launch(record["argv"], record["env"], record["cwd"], record["user"])

    def _launch(self, argv: list[str], env: dict[str, str], cwd: str | None,
                user: str | None) -> int:
        existing = self.pid()
        if existing is not None:
            return existing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {argv}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                user=user,
                start_new_session=True,
            )
        self.pid_file.write_text(str(proc.pid))
        record = {"argv": argv, "env": env, "cwd": cwd, "user": user}
        self.launch_file.touch(mode=0o600)  # the environment may hold credentials
        self.launch_file.write_text(json.dumps(record, indent=1))
        return proc.pid

    def signal(self, sig: signal.Signals) -> bool:
        """Send `sig` to the whole process group (SIGKILL: no graceful shutdown; SIGSTOP and
        SIGCONT: freeze and thaw). True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, sig)
        if sig is signal.SIGKILL:
            while _group_alive(pid):
                time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)
        return True

    def stop(self, timeout: float = 20.0) -> bool:
        """SIGTERM the process group, then SIGKILL after `timeout`. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, self.stop_signal)
        _signal_group(pid, signal.SIGCONT)  # a frozen (SIGSTOPped) process acts on it only now
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    """Is any live (non-zombie) process left in the group?"""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def http_ok(url: str) -> bool:
    """Does `url` answer 200 within two seconds?"""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    process: Process | None = None,
    interval: float = 0.25,
) -> None:
    """Poll `check` until it holds; fail early if `process` died, with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and not process.is_running():
            raise StackError(f"{what}: process exited; log {process.log_file}:\n{process.tail()}")
        time.sleep(interval)
    detail = f"; log {process.log_file}:\n{process.tail()}" if process else ""
    raise StackError(f"{what}: not ready after {timeout:.0f}s{detail}")
