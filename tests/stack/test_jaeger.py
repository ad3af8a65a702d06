"""The stack's trace backend (Jaeger v2, in memory): OTLP in, the query API out, on the stack's
own ports; the product's processes pointed at it unless VYAPAAR_TRACING=0."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from typing import Any

import aiohttp
import pytest
from vyapaar_stack import components, infra, system
from vyapaar_stack.config import StackConfig

#: Jaeger's all-in-one defaults, which the stack's configuration must not bind
STANDARD_PORTS = {4317, 4318, 16686, 16685, 5778, 5779, 13133, 14250, 14268, 6831, 6832,
                  9411, 8888}


def test_jaeger_listens_only_on_the_stacks_ports() -> None:
    config = StackConfig()
    text = json.dumps(infra.jaeger_config(config))
    ports = config.ports
    for port in (ports.otlp_http, ports.otlp_grpc, ports.jaeger_query, ports.jaeger_query_grpc,
                 ports.jaeger_metrics):
        assert f"{port}" in text
    assert not any(f":{p}\"" in text or f": {p}" in text for p in STANDARD_PORTS)
    memory = infra.jaeger_config(config)["extensions"]["jaeger_storage"]  # type: ignore[index]
    assert memory["backends"]["memstore"]["memory"]["max_traces"] == infra.JAEGER_MAX_TRACES
    assert config.env()["VYAPAAR_TRACES_URL"] == f"http://127.0.0.1:{ports.jaeger_query}"


def test_the_product_traces_on_the_stack_unless_told_not_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    config = StackConfig()
    monkeypatch.delenv("VYAPAAR_TRACING", raising=False)
    env = system.tracing_env(config, "payment")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://127.0.0.1:{config.ports.otlp_http}"
    assert env["OTEL_SERVICE_NAME"] == "payment"
    assert env["OTEL_BSP_SCHEDULE_DELAY"] == "500"
    for off in ("0", "false", "off"):
        monkeypatch.setenv("VYAPAAR_TRACING", off)
        assert system.tracing_env(config, "payment") == {}


def otlp_json(trace_id: str, spans: list[tuple[str, str, str]], service: str) -> dict[str, Any]:
    """An OTLP/HTTP JSON export request: (span id, parent id, name) for each span."""
    now = time.time_ns()
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "tests.stack"}, "spans": [
            {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 1,
             **({"parentSpanId": parent} if parent else {}),
             "startTimeUnixNano": str(now + i * 1000), "endTimeUnixNano": str(now + 10**6),
             "attributes": [{"key": "vyapaar.attempt", "value": {"intValue": str(i + 1)}}]}
            for i, (span_id, parent, name) in enumerate(spans)]}],
    }]}


async def test_a_span_sent_over_otlp_is_read_back_by_its_trace_id(
        local_infra: StackConfig, traces_url: str) -> None:
    config = local_infra
    trace_id, root, child = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"{traces_url}/api/v3/traces/{trace_id}") as unknown:
            assert unknown.status == 404
        body = otlp_json(trace_id, [(root, "", "saga Start"),
                                    (child, root, "send ReserveStock")], "tests-jaeger")
        async with http.post(f"{config.otlp_endpoint}/v1/traces", json=body) as sent:
            assert sent.status == 200, await sent.text()
        deadline = time.monotonic() + 15
        while True:
            async with http.get(f"{traces_url}/api/v3/traces/{trace_id}") as resp:
                if resp.status == 200:
                    document = await resp.json(content_type=None)
                    break
                assert resp.status == 404, await resp.text()
            assert time.monotonic() < deadline, "the span never became readable"
            await asyncio.sleep(0.2)
        async with http.get(f"{traces_url}/api/v3/services") as services:
            assert "tests-jaeger" in (await services.json(content_type=None))["services"]
    [resource] = document["result"]["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": "tests-jaeger"}} in (
        resource["resource"]["attributes"])
    spans = {s["spanId"]: s for scope in resource["scopeSpans"] for s in scope["spans"]}
    assert set(spans) == {root, child}
    assert spans[child]["parentSpanId"] == root and spans[child]["name"] == "send ReserveStock"
    assert not spans[root].get("parentSpanId")
    assert {s["traceId"] for s in spans.values()} == {trace_id}


def test_jaeger_is_a_component_scraped_by_prometheus(local_infra: StackConfig) -> None:
    config = local_infra
    jaeger = components.find(config, "jaeger")
    assert jaeger.group == "infrastructure"
    assert jaeger.running() and jaeger.ready()
    target = json.loads((infra.prometheus_targets_dir(config) / "jaeger.json").read_text())
    assert target[0]["targets"] == [f"{config.host}:{config.ports.jaeger_metrics}"]
    url = f"http://{config.host}:{config.ports.jaeger_metrics}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        metrics = resp.read().decode()
    assert "otelcol_receiver_accepted_spans" in metrics


def test_stack_status_and_env_show_the_trace_backend(local_infra: StackConfig) -> None:
    env = {**os.environ, "VYAPAAR_STATE_DIR": str(local_infra.state_dir)}
    printed = subprocess.run([sys.executable, "-m", "vyapaar_cli", "stack", "env"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert f"export VYAPAAR_TRACES_URL={local_infra.traces_url}" in printed.stdout
    status = subprocess.run([sys.executable, "-m", "vyapaar_cli", "stack", "status"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert any(line.split() == ["jaeger", "up"] for line in status.stdout.splitlines()), (
        status.stdout)


def test_the_bench_report_says_whether_the_system_traced() -> None:
    from vyapaar_stack.bench import report
    from vyapaar_stack.bench.report import IdleBaseline

    def build(tracing: bool | None) -> dict[str, Any]:
        return report.build(settings={}, operator={}, idle=IdleBaseline.none(), points=[],
                            calibration=None, peers={}, started_at="", finished_at="",
                            tracing=tracing)

    assert build(True)["tracing"] == "on" and "Tracing: on" in report.table(build(True))
    assert build(False)["tracing"] == "off" and "Tracing: off" in report.table(build(False))
    assert build(None)["tracing"] is None and "Tracing" not in report.table(build(None))
