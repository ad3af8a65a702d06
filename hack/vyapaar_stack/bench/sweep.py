"""The whole benchmark run: idle baseline, a sweep of offered rates, the write calibration,
the peers, then the report, the plots and the table — with progress on stderr throughout.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config

from .. import system
from ..config import StackConfig
from . import (
    DEFAULT_CALIBRATION_WRITES,
    DEFAULT_IDLE_SECONDS,
    DEFAULT_OUT,
    DEFAULT_RATES,
    DEFAULT_SECONDS_PER_POINT,
    DEFAULT_SKUS,
    DEFAULT_STALL_TIMEOUT,
    calibrate,
    report,
)
from .load import BenchError, Context, run_point
from .procstat import BENCH_CLIENT, ProcessSet, discover
from .report import IdleBaseline, PointMeasurement, PointSummary


@dataclass
class Options:
    rates: Sequence[float] = DEFAULT_RATES
    orders_per_point: int | None = None  # else rate x seconds_per_point
    seconds_per_point: float = DEFAULT_SECONDS_PER_POINT
    skus: int = DEFAULT_SKUS
    out: Path = DEFAULT_OUT
    calibration_writes: int = DEFAULT_CALIBRATION_WRITES
    idle_seconds: float = DEFAULT_IDLE_SECONDS
    peers: Sequence[str] = ()
    plots: bool = True
    stall_timeout: float = DEFAULT_STALL_TIMEOUT

    def orders_at(self, rate: float) -> int:
        if self.orders_per_point:
            return self.orders_per_point
        return max(1, round(rate * self.seconds_per_point))


@dataclass
class Progress:
    """One line per point, rewritten in place on a terminal; notes on their own lines."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    label: str = ""
    planned: int = 0
    live: bool = field(default_factory=lambda: sys.stderr.isatty())

    def note(self, message: str) -> None:
        self._clear()
        print(message, file=self.stream, flush=True)

    def begin(self, label: str, planned: int) -> None:
        self.label, self.planned = label, planned
        self.update(0, {})

    def update(self, created: int, outcomes: Mapping[str, int]) -> None:
        if self.live:
            done = sum(outcomes.values())
            print(f"\r\033[K{self.label}: created {created}/{self.planned}  terminal {done}  "
                  f"completed {outcomes.get('Completed', 0)}", end="", file=self.stream,
                  flush=True)

    def end(self, line: str) -> None:
        self.note(f"{self.label}: {line}")

    def _clear(self) -> None:
        if self.live:
            print("\r\033[K", end="", file=self.stream)


def _point_line(p: PointSummary) -> str:
    p99 = p.latency_s["p99"]
    gross, net = p.cpu_ms_per_order_total or 0.0, p.cpu_ms_per_order_total_net or 0.0
    return (f"{p.completed}/{p.created} completed, {p.failed} failed, {p.unfinished} unfinished; "
            f"{p.throughput:.1f}/s{'' if p.sustained else ' (not sustained)'}; p99 "
            f"{'-' if p99 is None else f'{p99 * 1000:.0f} ms'}; CPU {gross:.1f} ms/order"
            + (f" ({net:.1f} net of idle)" if abs(gross - net) > 0.05 else ""))


def preflight(config: StackConfig) -> tuple[int, dict[str, str]]:
    """The operator's pid and environment, or a clear error when the system is not up."""
    if not config.kubeconfig.exists():
        raise BenchError("the local stack is not running: start the system first (make demo)")
    down = [name for name, ok in system.status(config).items() if not ok]
    if "operator" in down:
        raise BenchError("the operator is not running: start the system first (make demo)")
    if down:
        raise BenchError(f"not answering: {', '.join(down)}: start the system first "
                         "(make demo)")
    pid = discover(config).roots.get("operator", [None])[0]
    if pid is None:
        raise BenchError("the operator answers but its process was not found (no "
                         ".state/run/operator.pid): is it the local stack's?")
    return pid, calibrate.read_environ(pid)


async def _connect(config: StackConfig) -> Any:
    configuration = client.Configuration()
    await kube_config.load_kube_config(str(config.kubeconfig),
                                       client_configuration=configuration)
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


async def _our_sweep(ctx: Context, options: Options, progress: Progress, idle: IdleBaseline
                     ) -> tuple[list[PointSummary], dict[str, Any] | None]:
    points: list[PointSummary] = []
    sample: dict[str, Any] | None = None
    for i, rate in enumerate(options.rates, 1):
        orders = options.orders_at(rate)
        progress.begin(f"[{i}/{len(options.rates)}] vyapaar {rate:g}/s x {orders}", orders)
        result = await run_point(ctx, rate=rate, orders=orders, skus=options.skus,
                                 on_progress=progress.update)
        summary = report.summarize(result.measurement, idle)
        points.append(summary)
        sample = sample or result.sample_status
        progress.end(_point_line(summary))
    return points, sample


async def _calibration(ctx: Context, options: Options, progress: Progress, idle: IdleBaseline,
                       environ: Mapping[str, str], points: Sequence[PointSummary],
                       sample: dict[str, Any] | None) -> dict[str, Any]:
    patterns = calibrate.operator_patterns(environ)
    namespace = calibrate.calibration_namespace(patterns)
    if namespace is None:
        reason = ("the running operator acts on every namespace (VYAPAAR_NAMESPACES is "
                  f"{environ.get('VYAPAAR_NAMESPACES') or 'unset'}), so it would take over "
                  "the calibration Order; run the operator with VYAPAAR_NAMESPACES='!vyn-*' "
                  "(as the tests do) to calibrate")
        progress.note(f"calibration skipped: {reason}")
        return {"skipped": reason}
    if options.calibration_writes <= 0:
        return {"skipped": "--calibration-writes 0"}
    progress.note(f"calibration: {options.calibration_writes} status writes of each size in "
                  f"{namespace} (ignored by the operator) ...")
    full, minimal = await calibrate.status_writes(
        ctx, idle, namespace=namespace, full_status=sample, writes=options.calibration_writes)
    return report.calibration_json(full, minimal, points, namespace)


def _peer_measurement(point: Any) -> PointMeasurement:
    """A peers.PeerPoint as the same measurement our points make."""
    return PointMeasurement(
        system=point.peer, offered_rate=point.offered_rate, planned=point.orders,
        created=point.orders, outcomes={"Completed": point.completed, "Failed": point.failed},
        elapsed_s=point.elapsed_s, latencies_s=list(point.latencies_s),
        cpu_s=dict(point.cpu_s_by_process), window_s=point.elapsed_s,
        unfinished=max(0, point.orders - point.completed - point.failed))


async def _peer_sweeps(config: StackConfig, options: Options, progress: Progress
                       ) -> dict[str, list[PointSummary] | str]:
    """Each requested peer over the same rates, or the reason it did not run."""
    if not options.peers:
        return {}
    try:
        peers = importlib.import_module(f"{__package__}.peers")
    except ImportError as exc:
        reason = f"the peers package is not available ({exc})"
        progress.note(f"peers skipped: {reason}")
        return dict.fromkeys(options.peers, reason)
    results: dict[str, list[PointSummary] | str] = {}
    try:
        for peer in options.peers:
            reason = peers.available(peer)
            if reason:
                progress.note(f"peer {peer} skipped: {reason}")
                results[peer] = reason
                continue
            summaries: list[PointSummary] = []
            try:
                for i, rate in enumerate(options.rates, 1):
                    orders = options.orders_at(rate)
                    progress.begin(f"[{i}/{len(options.rates)}] {peer} {rate:g}/s x {orders}",
                                   orders)
                    point = await peers.run_point(peer, database_url=config.database_url,
                                                  orders=orders, rate=rate, skus=options.skus)
                    summaries.append(report.summarize(_peer_measurement(point),
                                                      IdleBaseline.none()))
                    progress.end(_point_line(summaries[-1]))
            except Exception as exc:  # a peer's failure must not lose our results
                progress.note(f"peer {peer} failed: {type(exc).__name__}: {exc}")
                results[peer] = f"failed: {type(exc).__name__}: {exc}"
                continue
            results[peer] = summaries
    finally:
        await peers.shutdown()
    return results


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


async def run(options: Options, progress: Progress | None = None,
              config: StackConfig | None = None) -> dict[str, Any]:
    """Run the benchmark on the running local stack; write and return the report."""
    progress = progress or Progress()
    config = config or StackConfig()
    started = _now()
    operator_pid, environ = preflight(config)
    processes: ProcessSet = discover(config)
    missing = sorted(set(report.CONTROL_PLANE_WRITE) - set(processes.roots))
    if missing:
        progress.note(f"not found, so not measured: {', '.join(missing)}")
    api = await _connect(config)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            ctx = Context(config=config, api=api, http=http, processes=processes,
                          stall_timeout=options.stall_timeout, on_note=progress.note)
            progress.note(f"measuring the idle system for {options.idle_seconds:g} s ...")
            idle = await calibrate.idle_baseline(ctx, options.idle_seconds)
            points, sample = await _our_sweep(ctx, options, progress, idle)
            calibration = await _calibration(ctx, options, progress, idle, environ, points,
                                             sample)
    finally:
        await api.close()
    peers = await _peer_sweeps(config, options, progress)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    data = report.build(
        settings=settings,
        operator={"pid": operator_pid, "settings": calibrate.operator_settings(environ)},
        idle=idle, points=points, calibration=calibration, peers=peers, started_at=started,
        finished_at=_now(), tracing=bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")))
    data["processes"] = {name: pids for name, pids in ctx.processes.roots.items()
                         if name != BENCH_CLIENT}
    if options.plots:
        from . import plots  # matplotlib: only when drawing

        written = plots.write_all(data, options.out.parent)
        data["plots"] = [str(p.relative_to(options.out.parent)) for p in written]
    report.write(options.out, data)
    return data


def main(options: Options) -> int:
    """Run, print the table and where the files are; one line on stderr if it cannot."""
    try:
        data = asyncio.run(run(options))
    except BenchError as exc:
        print(f"vyapaar: error: {exc}", file=sys.stderr)
        return 1
    except client.exceptions.ApiException as exc:
        print(f"vyapaar: error: the apiserver answered {exc.status} {exc.reason}",
              file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"vyapaar: error: {exc}: is the system running? (make demo)", file=sys.stderr)
        return 1
    print(report.table(data))
    print()
    print(f"report: {options.out}")
    for name in data["plots"]:
        print(f"plot:   {options.out.parent / name}")
    return 0
