"""`vyapaar order`: orders placed, read, listed, followed and cancelled through the running
gateway, as a tenant (``gateway_tenant``) sees them -- the real gateway, operator and
services; the only thing between the command and the gateway in the stream specs is a TCP
proxy that drops (or holds) a real connection."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from vyapaar_cli import order as order_cli
from vyapaar_cli.errors import CliError
from vyapaar_cli.main import build_parser, main
from vyapaar_cli.settings import Settings
from vyapaar_stack import system
from vyapaar_stack.testing import GatewayTenant, System

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "manifests" / "samples" / "order-completed.yaml"
VYAPAAR = Path(sys.executable).parent / "vyapaar"
FORWARD = ["Pending", "Reserving", "Paying", "Shipping", "Completing", "Completed"]
LINE = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)")

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def vyapaar(gateway_tenant: GatewayTenant, capsys: pytest.CaptureFixture[str]) -> Run:
    """``vyapaar order ARGV`` in this process, as the tenant: (exit code, stdout, stderr)."""

    def run(*argv: str, gateway: str | None = None, token: str | None = None
            ) -> tuple[int, str, str]:
        capsys.readouterr()
        # --token=T: a token may start with "-"
        code = main(["order", *argv, f"--gateway={gateway or gateway_tenant.url}",
                     f"--token={token or gateway_tenant.token}"])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def manifest(tmp_path: Path, sku: str, *, token: str = "tok_visa", quantity: int = 1) -> Path:
    """A copy of the completed-order sample, for this test's SKU (and payment token)."""
    document = yaml.safe_load(SAMPLE.read_text())
    document["spec"]["items"] = [{"sku": sku, "quantity": quantity, "unitPrice": 349900}]
    document["spec"]["paymentToken"] = token
    path = tmp_path / f"order-{sku.lower()}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def transitions(out: str) -> list[tuple[int, str, str, str]]:
    """(seq, time, phase, reason) of each line `watch` printed."""
    found = []
    for line in out.splitlines():
        match = LINE.match(line)
        if match:
            found.append((int(match[1]), match[2], match[3], match[4]))
    return found


def created_name(out: str) -> str:
    match = re.match(r"^(order-[a-z0-9]+) created", out)
    assert match, out
    return match[1]


@pytest.fixture
def slow_payment(running_system: System) -> Iterator[Callable[[int], None]]:
    """Make the payment service answer after ``ms`` milliseconds (its fault injection)."""

    def set_latency(ms: int) -> None:
        request = urllib.request.Request(
            f"{running_system.url('payment')}/admin/faults", method="PUT",
            data=json.dumps({"errorRate": 0, "latencyMs": ms}).encode(),
            headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=5).close()

    yield set_latency
    set_latency(0)


class CuttingProxy:
    """A TCP proxy in front of the gateway. Its first connection carries the server's answer
    up to the end of the transition whose id is ``cut_after``, then is closed (``hold``:
    kept open and silent); later connections pass through. Keeps each request's bytes."""

    def __init__(self, target: str, cut_after: int, *, hold: bool = False) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.cut_after, self.hold = cut_after, hold
        self.requests: list[bytes] = []
        self.cut = threading.Event()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        for sock in [self._server, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            index = len(self.requests)
            self.requests.append(b"")
            try:
                upstream = socket.create_connection(self.target)
            except OSError:  # the gateway restarts: as if the proxy were not there
                client.close()
                continue
            self._sockets += [client, upstream]
            threading.Thread(target=self._up, args=(client, upstream, index), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, index == 0),
                             daemon=True).start()

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(65536)
        except OSError:
            return b""

    def _up(self, client: socket.socket, upstream: socket.socket, index: int) -> None:
        while data := self._recv(client):
            self.requests[index] += data
            try:
                upstream.sendall(data)
            except OSError:
                return

    def _down(self, upstream: socket.socket, client: socket.socket, cut: bool) -> None:
        buffered = b""
        while data := self._recv(upstream):
            if not cut:
                try:
                    client.sendall(data)
                except OSError:
                    return
                continue
            buffered += data
            start = buffered.find(f"id: {self.cut_after}\n".encode())
            end = buffered.find(b"\n\n\r\n", start) if start >= 0 else -1
            if end >= 0:  # the end of that event's HTTP chunk
                client.sendall(buffered[:end + 4])
                self.cut.set()
                if not self.hold:
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    upstream.close()
                return

    def last_event_ids(self) -> list[str | None]:
        """The Last-Event-ID header of each request (None: none sent)."""
        found = []
        for request in self.requests:
            match = re.search(rb"^Last-Event-ID: *(\S+)\r$", request, flags=re.M | re.I)
            found.append(match[1].decode() if match else None)
        return found


@pytest.fixture
def proxies() -> Iterator[Callable[..., CuttingProxy]]:
    made: list[CuttingProxy] = []

    def make(target: str, cut_after: int, *, hold: bool = False) -> CuttingProxy:
        made.append(CuttingProxy(target, cut_after, hold=hold))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# -- create, get, list ------------------------------------------------------------------------


async def test_an_order_created_from_a_sample_manifest_is_shown_by_get_and_list(
    vyapaar: Run, tmp_path: Path, seed_stock: Any, unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-CLI")
    await seed_stock({sku: 5})
    path = manifest(tmp_path, sku)

    code, out, err = vyapaar("create", "-f", str(path))
    assert code == 0, err
    name = created_name(out)
    assert re.search(r"\(phase Pending; idempotency key [0-9a-f-]{36}\)$", out.strip()), out
    assert "order-completed" in err  # the manifest's name is not the order's: it says so

    code, out, err = vyapaar("get", name, "-o", "json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["name"] == name
    assert shown["spec"] == {**yaml.safe_load(path.read_text())["spec"], "cancel": False}

    code, out, err = vyapaar("watch", name)  # the saga runs to its end
    assert code == 0, err
    code, out, err = vyapaar("get", name)
    assert code == 0, err
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "REASON", "TOTAL", "AGE"]
    assert row.split()[:2] == [name, "Completed"] and "3499.00 INR" in row
    steps = out[out.index("STEP"):].splitlines()[1:]  # then one row per step, in saga order
    assert [line.split()[0] for line in steps] == ["reserve", "pay", "ship", "commit", "notify"]

    code, out, err = vyapaar("list")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["NAME", "PHASE", "REASON", "TOTAL", "AGE"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == [name]
    code, out, _ = vyapaar("list", "-o", "yaml")
    assert [o["name"] for o in yaml.safe_load(out)["items"]] == [name]


async def test_the_same_idempotency_key_twice_gives_the_same_order(
    vyapaar: Run, tmp_path: Path, unique_sku: Callable[[str], str],
) -> None:
    path = manifest(tmp_path, unique_sku("SKU-CLI-IDEM"))
    code, first, err = vyapaar("create", "-f", str(path), "--idempotency-key", "cli-1", "-o",
                               "name")
    assert code == 0, err
    code, again, err = vyapaar("create", "-f", str(path), "--idempotency-key", "cli-1")
    assert code == 0, err
    assert again.startswith(f"{first.strip()} already created with idempotency key cli-1")
    code, listed, _ = vyapaar("list", "-o", "name")
    assert listed.split() == [first.strip()]  # one order, not two

    # the same key with another order is a client bug: refused, with the gateway's reason
    other = manifest(tmp_path, unique_sku("SKU-CLI-OTHER"))
    code, out, err = vyapaar("create", "-f", str(other), "--idempotency-key", "cli-1")
    assert code == 1 and out == ""
    assert "422 Idempotency-Key reused" in err


async def test_list_all_follows_the_continue_tokens(
    vyapaar: Run, tmp_path: Path, unique_sku: Callable[[str], str],
) -> None:
    names = set()
    for n in range(3):
        code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, unique_sku(f"S{n}"))),
                                 "-o", "name")
        assert code == 0, err
        names.add(out.strip())
    code, out, err = vyapaar("list", "--limit", "1", "-o", "name")
    assert code == 0 and len(out.split()) == 1
    token = re.search(r"--continue (\S+)", err)
    assert token, err
    code, out, err = vyapaar("list", "--limit", "1", "--continue", token[1], "-o", "name")
    assert code == 0 and len(out.split()) == 1 and out.split()[0] in names
    code, out, err = vyapaar("list", "--limit", "1", "--all", "-o", "name")
    assert code == 0, err
    assert sorted(out.split()) == sorted(names) and "more orders" not in err


# -- watch -------------------------------------------------------------------------------------


async def test_watch_prints_each_transition_in_order_and_exits_0_when_completed(
    vyapaar: Run, tmp_path: Path, seed_stock: Any, unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-CLI-WATCH")
    await seed_stock({sku: 5})
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, sku)))
    assert code == 0, err
    name = created_name(out)

    code, out, err = vyapaar("watch", name)
    assert code == 0, err
    lines = transitions(out)
    assert [phase for _, _, phase, _ in lines] == FORWARD
    assert [seq for seq, *_ in lines] == list(range(1, 7))
    assert lines[-1][3] == "OrderCompleted"
    times = [datetime.fromisoformat(when) for _, when, _, _ in lines]
    assert times == sorted(times)


async def test_create_with_watch_follows_the_order_to_its_end(
    vyapaar: Run, tmp_path: Path, seed_stock: Any, unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-CLI-CW")
    await seed_stock({sku: 5})
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, sku)), "--watch")
    assert code == 0, err
    assert created_name(out)
    assert [phase for _, _, phase, _ in transitions(out)] == FORWARD


async def test_watch_of_a_declined_order_ends_with_failed_and_exits_3(
    vyapaar: Run, tmp_path: Path, seed_stock: Any, unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-CLI-DECL")
    await seed_stock({sku: 5})
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, sku, token="tok_decline")))
    assert code == 0, err
    code, out, err = vyapaar("watch", created_name(out))
    assert code == order_cli.EXIT_CODES["Failed"] == 3
    phases = [phase for _, _, phase, _ in transitions(out)]
    assert phases[:3] == ["Pending", "Reserving", "Paying"]
    assert phases[-2:] == ["Compensating", "Failed"]
    assert "CARD_DECLINED" in out.splitlines()[-1]


async def test_watch_resumes_a_dropped_stream_after_the_last_transition_without_duplicates(
    vyapaar: Run, gateway_tenant: GatewayTenant, tmp_path: Path, seed_stock: Any,
    unique_sku: Callable[[str], str], slow_payment: Callable[[int], None],
    proxies: Callable[..., CuttingProxy],
) -> None:
    sku = unique_sku("SKU-CLI-DROP")
    await seed_stock({sku: 5})
    slow_payment(3000)  # the saga is still paying when the connection drops
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, sku)))
    assert code == 0, err
    proxy = proxies(gateway_tenant.url, cut_after=3)  # dropped right after "Paying"

    code, out, err = vyapaar("watch", created_name(out), gateway=proxy.url)
    assert code == 0, err
    assert proxy.cut.is_set()
    assert [seq for seq, *_ in transitions(out)] == list(range(1, 7))
    assert [phase for _, _, phase, _ in transitions(out)] == FORWARD
    assert proxy.last_event_ids()[:2] == [None, "3"]


def test_ctrl_c_stops_watch_cleanly_with_exit_code_130(
    vyapaar: Run, gateway_tenant: GatewayTenant, tmp_path: Path,
    unique_sku: Callable[[str], str], proxies: Callable[..., CuttingProxy],
) -> None:
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, unique_sku("SKU-CLI-INT"))),
                             "-o", "name")
    assert code == 0, err
    proxy = proxies(gateway_tenant.url, cut_after=1, hold=True)  # then silence: still waiting
    process = subprocess.Popen(
        [str(VYAPAAR), "order", "watch", out.strip(), "--gateway", proxy.url,
         f"--token={gateway_tenant.token}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert [seq for seq, *_ in transitions(first)] == [1], first
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert transitions(rest) == []


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_before_the_pivot_is_accepted_and_watch_exits_4_cancelled(
    vyapaar: Run, tmp_path: Path, seed_stock: Any, unique_sku: Callable[[str], str],
    slow_payment: Callable[[int], None],
) -> None:
    sku = unique_sku("SKU-CLI-CANCEL")
    await seed_stock({sku: 5})
    slow_payment(2000)
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, sku)), "-o", "name")
    assert code == 0, err
    name = out.strip()
    code, out, err = vyapaar("cancel", name)
    assert code == 0, err
    assert out.startswith(f"{name}: cancellation requested")
    code, out, err = vyapaar("watch", name)
    assert code == order_cli.EXIT_CODES["Cancelled"] == 4
    assert transitions(out)[-1][2] == "Cancelled"


async def test_cancel_of_a_completed_order_prints_the_refusal_and_exits_1(
    vyapaar: Run, tmp_path: Path, seed_stock: Any, unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-CLI-LATE")
    await seed_stock({sku: 5})
    code, out, err = vyapaar("create", "-f", str(manifest(tmp_path, sku)), "--watch")
    assert code == 0, err
    name = created_name(out)
    code, out, err = vyapaar("cancel", name)
    assert code == 1 and out == ""
    assert err.startswith(f"vyapaar: error: cannot cancel {name}: The shipment was already "
                          "created")
    assert len(err.splitlines()) == 1


# -- problems ----------------------------------------------------------------------------------


async def test_a_bad_token_is_one_clear_line_and_exit_1(vyapaar: Run) -> None:
    code, out, err = vyapaar("list", token="not-a-token-of-this-gateway")
    assert code == 1 and out == ""
    assert err == ("vyapaar: error: 401 Unauthorized: The bearer token is not valid. The token "
                   "comes from --token or $VYAPAAR_GATEWAY_TOKEN.\n")


def test_a_bad_token_from_the_environment_as_the_installed_command_sees_it(
    gateway_tenant: GatewayTenant,
) -> None:
    env = {**os.environ, "VYAPAAR_GATEWAY_URL": gateway_tenant.url,
           "VYAPAAR_GATEWAY_TOKEN": "not-a-token-of-this-gateway"}
    result = subprocess.run([str(VYAPAAR), "order", "get", "order-x"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "401 Unauthorized" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


async def test_an_invalid_order_file_prints_each_field_at_fault(
    vyapaar: Run, tmp_path: Path, unique_sku: Callable[[str], str],
) -> None:
    path = manifest(tmp_path, unique_sku("SKU-CLI-BAD"), quantity=0)
    document = yaml.safe_load(path.read_text())
    del document["spec"]["currency"]
    path.write_text(yaml.safe_dump(document))
    code, out, err = vyapaar("create", "-f", str(path))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "vyapaar: error: 422 Invalid order: 2 fields at fault:",
        "  currency: 'currency' is a required property",
        "  items.0.quantity: 0 is less than the minimum of 1",
    ]
    code, listed, _ = vyapaar("list", "-o", "name")
    assert listed == ""  # nothing was created


async def test_a_file_that_is_no_order_is_refused_before_anything_is_sent(
    vyapaar: Run, tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [\n")
    code, _, err = vyapaar("create", "-f", str(broken))
    assert code == 2 and "is neither JSON nor YAML (line 2)" in err
    service = tmp_path / "service.yaml"
    service.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {}\n")
    code, _, err = vyapaar("create", "-f", str(service))
    assert code == 2 and "is a Service, not an Order" in err
    code, _, err = vyapaar("create", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read" in err and "No such file" in err


async def test_a_bare_spec_on_standard_input_is_accepted(
    vyapaar: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    unique_sku: Callable[[str], str],
) -> None:
    import io

    spec = yaml.safe_load(manifest(tmp_path, unique_sku("SKU-CLI-STDIN")).read_text())["spec"]
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(spec)))
    code, out, err = vyapaar("create", "-f", "-", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["spec"]["items"] == spec["items"]
    assert err == ""  # no manifest name to mention


async def test_an_unknown_order_is_not_found(vyapaar: Run) -> None:
    for argv in (("get", "order-nope"), ("watch", "order-nope"), ("cancel", "order-nope")):
        code, out, err = vyapaar(*argv)
        assert code == 1 and out == ""
        assert err == "vyapaar: error: 404 Not Found: Order 'order-nope' does not exist.\n"


async def test_the_rate_limit_is_reported_with_its_retry_after(
    vyapaar: Run, gateway_tenant: GatewayTenant, http: aiohttp.ClientSession,
) -> None:
    async def hit() -> int:
        async with http.get(f"{gateway_tenant.url}/api/v1/orders?limit=1",
                            headers=gateway_tenant.headers) as response:
            return response.status

    for _ in range(5):
        await asyncio.gather(*(hit() for _ in range(60)))  # well past 20 per second
        code, out, err = vyapaar("list")
        if code == 1:
            break
    assert code == 1 and out == ""
    assert re.fullmatch(r"vyapaar: error: 429 Too Many Requests: .+ \(Retry-After: \d+ s\)\n",
                        err), err


def test_a_gateway_that_does_not_answer_is_one_line(gateway_tenant: GatewayTenant,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["order", "watch", "order-x", "--gateway", "http://127.0.0.1:9",
                 f"--token={gateway_tenant.token}"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("vyapaar: error: cannot reach the gateway at http://127.0.0.1:9: "
                   "connection refused\n")


# -- settings ----------------------------------------------------------------------------------


def test_without_a_token_it_says_which_flag_or_variable_to_set() -> None:
    parser = build_parser(Settings(defaults={}, environ={}))
    args = parser.parse_args(["order", "list", "--gateway", "http://127.0.0.1:9"])
    with pytest.raises(CliError) as refused:
        args.func(args)
    assert refused.value.exit_code == 2
    assert str(refused.value) == "no gateway token: pass --token or set VYAPAAR_GATEWAY_TOKEN"
    args = parser.parse_args(["order", "list", "--token", "t"])
    with pytest.raises(CliError, match="pass --gateway or set VYAPAAR_GATEWAY_URL"):
        args.func(args)


def test_defaults_come_from_the_environment_or_the_local_stack(
    running_system: System, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VYAPAAR_GATEWAY_URL", "https://gateway.example")
    monkeypatch.setenv("VYAPAAR_GATEWAY_TOKEN", "from-the-environment")
    args = build_parser().parse_args(["order", "get", "x"])
    assert (args.gateway, args.token) == ("https://gateway.example", "from-the-environment")
    monkeypatch.delenv("VYAPAAR_GATEWAY_URL")
    monkeypatch.delenv("VYAPAAR_GATEWAY_TOKEN")
    args = build_parser().parse_args(["order", "get", "x"])
    assert args.gateway == system.gateway_url(running_system.config)
    assert args.token == system.demo_token(running_system.config)
    # the flags win, before or after the action
    args = build_parser().parse_args(["order", "--token", "a", "get", "x", "--gateway", "b"])
    assert (args.token, args.gateway) == ("a", "b")
    args = build_parser().parse_args(["order", "--token", "a", "get", "x", "--token", "c"])
    assert args.token == "c"


def test_the_demo_token_works_against_the_local_stack(running_system: System,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["order", "list", "--limit", "1", "-o", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert set(json.loads(out)) == {"items", "continue"}


def test_the_help_lists_the_actions_and_the_exit_codes() -> None:
    result = subprocess.run([str(VYAPAAR), "order", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    for action in ("create", "get", "list", "watch", "cancel"):
        assert action in result.stdout
    assert "exit codes:" in result.stdout and "VYAPAAR_GATEWAY_TOKEN" in result.stdout


def test_amounts_are_written_in_the_currency_s_units() -> None:
    assert order_cli.money(349900, "INR") == "3499.00 INR"
    assert order_cli.money(5, "USD") == "0.05 USD"
    assert order_cli.money(1500, "JPY") == "1500 JPY"
    assert order_cli.money(1234, "KWD") == "1.234 KWD"
    assert order_cli.money(None, "INR") == "-"


def test_an_order_whose_saga_has_not_started_shows_the_sum_of_its_items() -> None:
    created = {"name": "order-x", "createdAt": "2026-01-01T00:00:00Z", "status": {},
               "spec": {"currency": "INR", "items": [{"sku": "A", "quantity": 2,
                                                      "unitPrice": 150},
                                                     {"sku": "B", "quantity": 1,
                                                      "unitPrice": 1}]}}
    now = datetime(2026, 1, 1, 0, 3, tzinfo=UTC)
    assert order_cli.order_row(created, now) == ["order-x", "Pending", "-", "3.01 INR", "3m"]


def test_the_event_parser_follows_the_server_sent_events_format() -> None:
    parser = order_cli.EventParser()
    lines = [b"retry: 5000\n", b"\n", b": heartbeat\n", b"\n", b"id: 7\r\n",
             b"event: transition\n", b"data: {\"seq\": 7,\n", b"data: \"phase\": \"Paying\"}\n",
             b"\n", b"event: end\n", b"data: {}\n", b"\n"]
    events = list(parser.events(lines))
    assert parser.retry == 5.0
    assert [(e.type, e.id) for e in events] == [("transition", "7"), ("end", "7")]
    assert json.loads(events[0].data) == {"seq": 7, "phase": "Paying"}


def test_it_runs_as_a_module(gateway_tenant: GatewayTenant) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vyapaar_cli", "order", "list", "--gateway", gateway_tenant.url,
         f"--token={gateway_tenant.token}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "no orders\n" and time.monotonic() - started < 30
