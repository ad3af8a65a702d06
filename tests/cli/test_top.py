"""`vyapaar top`: one frame of the key saga figures, live from the local stack's Prometheus."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
from vyapaar_cli import top
from vyapaar_cli.main import build_parser
from vyapaar_cli.settings import Settings
from vyapaar_stack import system
from vyapaar_stack.testing import System, order_manifest


def parse(*argv: str) -> argparse.Namespace:
    """``vyapaar top ARGV`` as the installed command line parses it (with its plugins)."""
    return build_parser().parse_args(["top", *argv])


def once(prometheus_url: str) -> tuple[int, str]:
    out = io.StringIO()
    code = top.run(parse("--once", "--prometheus-url", prometheus_url), out=out)
    return code, out.getvalue()


def field(frame: str, row: str) -> str:
    match = re.search(rf"^{row.upper()}\s+(.*)$", frame, flags=re.MULTILINE)
    assert match, f"no {row} row in:\n{frame}"
    return match.group(1)


async def scraped_since_start(http: aiohttp.ClientSession, prometheus_url: str,
                              operator_url: str) -> None:
    """Wait until Prometheus holds a sample of the running operator process, so the orders'
    increments are seen as increases (not as the first value of a restarted counter)."""
    async with http.get(f"{operator_url}/metrics") as resp:
        started = re.search(r"^process_start_time_seconds (\S+)$", await resp.text(), re.M)
    assert started, "the operator exports no process_start_time_seconds"
    query = {"query": 'process_start_time_seconds{job="operator"}'}
    for _ in range(60):
        async with http.get(f"{prometheus_url}/api/v1/query", params=query) as resp:
            result = (await resp.json())["data"]["result"]
        if result and float(result[0]["value"][1]) == float(started[1]):
            return
        await asyncio.sleep(1)
    raise AssertionError("Prometheus never scraped the running operator")


async def test_once_prints_one_frame_with_the_live_figures(
    running_system: System, prometheus_url: str, http: aiohttp.ClientSession,
    unique_sku: Callable[[str], str], seed_stock: Any, apply_order: Any, wait_for_phase: Any,
) -> None:
    operator_url = f"http://{running_system.config.host}:{system.PORTS.operator_metrics}"
    await scraped_since_start(http, prometheus_url, operator_url)
    sku = unique_sku("SKU-TOP")
    await seed_stock({sku: 2})
    apply_order(order_manifest("top-ok", sku=sku))
    apply_order(order_manifest("top-declined", sku=sku, token="tok_decline"))
    assert (await wait_for_phase("top-ok"))["status"]["phase"] == "Completed"
    assert (await wait_for_phase("top-declined"))["status"]["phase"] == "Failed"

    async with http.get(f"{prometheus_url}/api/v1/targets") as resp:
        up = len((await resp.json())["data"]["activeTargets"])

    frame = ""
    for _ in range(30):  # the next scrapes (every 5 s) bring the two orders in
        code, frame = once(prometheus_url)
        assert code == 0, frame
        completed = re.search(r"Completed (\d+\.\d+)", field(frame, "orders/s"))
        failed = re.search(r"Failed (\d+\.\d+)", field(frame, "orders/s"))
        if (completed and failed and float(completed[1]) > 0 and float(failed[1]) > 0
                and field(frame, "targets").endswith(" 0 down")):
            break
        await asyncio.sleep(2)
    else:
        raise AssertionError(f"the finished orders (or a target) never showed:\n{frame}")

    assert frame.startswith(f"vyapaar top — {prometheus_url}")
    for row in ("in flight", "saga duration", "compensations", "dlq depth", "outbox lag",
                "targets", "alerts firing"):
        field(frame, row)
    assert re.search(r"p50 \d", field(frame, "saga duration"))
    assert "reserve" in field(frame, "compensations")  # the declined order released stock
    assert field(frame, "targets") == f"{up} up, 0 down"
    for phase in top.PHASES:
        assert f"{phase} " in field(frame, "in flight")
    assert "paused 0" in field(frame, "in flight")
    assert field(frame, "breakers") == ("inventory closed  notification closed  "
                                        "payment closed  shipping closed")


def test_once_exits_1_when_prometheus_does_not_answer() -> None:
    code, frame = once("http://127.0.0.1:9")
    assert code == 1
    assert "cannot reach Prometheus at http://127.0.0.1:9" in frame


def test_the_refresh_loop_redraws_until_interrupted() -> None:
    frames: list[float] = []

    def sleep(seconds: float) -> None:
        frames.append(seconds)
        if len(frames) == 3:
            raise KeyboardInterrupt

    out = io.StringIO()
    code = top.run(parse("--prometheus-url", "http://127.0.0.1:9", "--interval", "0.5"),
                   out=out, sleep=sleep)
    assert code == 0  # Ctrl-C is the normal way out
    assert frames == [0.5, 0.5, 0.5]
    assert out.getvalue().count("cannot reach Prometheus") == 3


def test_defaults_come_from_the_environment_or_the_local_stack(monkeypatch: Any) -> None:
    monkeypatch.setenv("VYAPAAR_PROMETHEUS_URL", "http://prometheus.example:9090")
    args = parse()
    assert args.prometheus_url == "http://prometheus.example:9090"
    assert (args.once, args.interval) == (False, 2.0)
    monkeypatch.delenv("VYAPAAR_PROMETHEUS_URL")
    assert parse().prometheus_url.startswith("http://127.0.0.1:")


def test_without_the_development_tooling_the_default_is_prometheus_own(monkeypatch: Any) -> None:
    monkeypatch.delenv("VYAPAAR_PROMETHEUS_URL", raising=False)
    parser = argparse.ArgumentParser(prog="vyapaar")
    top.add_arguments(parser.add_subparsers(dest="command"), Settings(defaults={}))
    assert parser.parse_args(["top"]).prometheus_url == "http://localhost:9090"


def test_it_runs_as_a_module(prometheus_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vyapaar_cli", "top", "--once", "--prometheus-url", prometheus_url],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ORDERS/S" in result.stdout and "TARGETS" in result.stdout
