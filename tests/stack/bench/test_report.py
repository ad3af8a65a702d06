"""The pure parts of `vyapaar bench`: what the figures mean, pinned without a running stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from vyapaar_stack.bench import apiserver, calibrate, plots, procstat, report
from vyapaar_stack.bench.report import IdleBaseline, PointMeasurement, PointSummary
from vyapaar_stack.bench.sweep import _peer_measurement

METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="201",component="apiserver",dry_run="",group="vyapaar.dev",\
resource="orders",scope="resource",subresource="",verb="POST",version="v1alpha1"} 10
apiserver_request_total{code="200",component="apiserver",dry_run="",group="vyapaar.dev",\
resource="orders",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 55
apiserver_request_total{code="409",component="apiserver",dry_run="",group="vyapaar.dev",\
resource="orders",scope="resource",subresource="status",verb="PUT",version="v1alpha1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="vyapaar.dev",\
resource="orders",scope="resource",subresource="",verb="PATCH",version="v1alpha1"} 20
apiserver_request_total{code="200",component="apiserver",dry_run="",group="vyapaar.dev",\
resource="orders",scope="resource",subresource="",verb="GET",version="v1alpha1"} 70
apiserver_request_total{code="200",component="apiserver",dry_run="",group="vyapaar.dev",\
resource="orders",scope="namespace",subresource="",verb="WATCH",version="v1alpha1"} 3
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",\
resource="events",scope="resource",subresource="",verb="POST",version="v1"} 1.2e+01
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",\
resource="namespaces",scope="resource",subresource="",verb="DELETE",version="v1"} 1
apiserver_request_total_other{verb="POST",resource="orders"} 99
apiserver_request_duration_seconds_count{verb="POST",resource="orders"} 99
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
process_cpu_seconds_total 12.34
"""


def test_apiserver_metrics_give_writes_conflicts_and_reads_by_resource() -> None:
    counts = apiserver.request_counts(METRICS)
    assert apiserver.writes_by_resource(counts) == {
        "orders": 30, "orders/status": 60, "events": 12}
    assert apiserver.conflicts_by_resource(counts) == {"orders/status": 5}
    assert apiserver.reads_by_resource(counts) == {"orders": 70}  # WATCH is not a read
    assert apiserver.cpu_seconds(METRICS) == pytest.approx(12.34)
    assert apiserver.resource_requests(counts) == 10 + 55 + 5 + 20 + 70 + 3 + 12 + 1


def test_a_delta_of_two_scrapes_counts_what_was_served_between() -> None:
    before = apiserver.request_counts(METRICS)
    after = apiserver.request_counts(METRICS.replace("} 55", "} 58"))
    assert apiserver.writes_by_resource(apiserver.delta(after, before)) == {"orders/status": 3}


def test_proc_pid_stat_survives_a_command_name_with_spaces_and_parentheses() -> None:
    line = ("4242 (tricky (name) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 "
            "150 25 7 3 20 0 1 0 100 1000 200 18446744073709551615")
    stat = procstat.parse_pid_stat(line)
    assert (stat.pid, stat.comm, stat.state, stat.ppid) == (4242, "tricky (name) x", "S", 1)
    assert (stat.utime, stat.stime, stat.cutime, stat.cstime) == (150, 25, 7, 3)
    assert stat.ticks == 185


def test_proc_stat_splits_busy_from_idle() -> None:
    text = "cpu  100 5 50 1000 20 3 2 1 40 0\ncpu0 50 2 25 500 10 1 1 0 20 0\nintr 1\n"
    # guest (40) is already inside user: not counted twice
    assert procstat.parse_proc_stat(text) == procstat.MachineCpu(busy=161, idle=1020)


def test_status_fields_in_kib() -> None:
    text = "Name:\tpython3\nVmHWM:\t  123456 kB\nVmRSS:\t   100000 kB\n"
    assert procstat.parse_status_kib(text, "VmHWM") == 123456
    assert procstat.parse_status_kib(text, "VmSwap") is None


def _fake_proc(root: Path, processes: dict[int, tuple[int, int]], busy: int) -> None:
    """pid -> (ppid, utime ticks), and the machine's busy ticks."""
    root.mkdir(exist_ok=True)
    for pid, (ppid, utime) in processes.items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "stat").write_text(
            f"{pid} (p{pid}) S {ppid} {pid} {pid} 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1 0")
        (root / str(pid) / "status").write_text(f"VmHWM:\t{pid} kB\n")
    (root / "stat").write_text(f"cpu  {busy} 0 0 1000 0 0 0 0 0 0\n")


def test_a_component_counts_its_whole_process_tree_once(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    # postgres (10) forks backends 11 and 12; 12 forks 13; 20 is another component
    _fake_proc(proc, {10: (1, 100), 11: (10, 50), 12: (10, 25), 13: (12, 5), 20: (1, 300)},
               busy=2000)
    ticks = iter([1.0, 3.0])
    processes = procstat.ProcessSet({"postgres": [10], "redis": [20], "gone": [99]},
                                    proc=proc, clock=lambda: next(ticks))
    before = processes.snapshot()
    _fake_proc(proc, {10: (1, 200), 11: (10, 50), 12: (10, 25), 13: (12, 5), 20: (1, 300)},
               busy=2500)
    delta = processes.snapshot().minus(before)
    tck = procstat.CLK_TCK
    assert before.cpu_s == pytest.approx({"postgres": 180 / tck, "redis": 300 / tck,
                                          "gone": 0.0})
    assert delta.cpu_s == pytest.approx({"postgres": 100 / tck, "redis": 0.0, "gone": 0.0})
    assert delta.at == 2.0
    assert delta.machine_busy_s == pytest.approx(500 / tck)
    assert processes.peak_rss_mib("redis") == pytest.approx(20 / 1024)


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert report.percentile(values, 50) == pytest.approx(50.5)
    assert report.percentile(values, 99) == pytest.approx(99.01)
    assert report.percentile([3.0], 90) == 3.0
    assert report.percentile([], 50) is None


def measurement(rate: float, *, orders: int = 100, elapsed: float | None = None,
                latency: float = 0.5, completed: int | None = None,
                cpu: dict[str, float] | None = None, system: str = report.OURS
                ) -> PointMeasurement:
    done = orders if completed is None else completed
    return PointMeasurement(
        system=system, offered_rate=rate, planned=orders, created=orders,
        outcomes={"Completed": done, "Failed": orders - done},
        elapsed_s=elapsed if elapsed is not None else (orders - 1) / rate + latency,
        latencies_s=[latency] * orders,
        cpu_s=cpu if cpu is not None else {"kube-apiserver": 2.0, "etcd": 0.5, "operator": 3.0,
                                           procstat.BENCH_CLIENT: 1.0},
        window_s=10.0, machine_busy_s=8.0,
        writes={"orders/status": 6 * done, "orders": 2 * done, "leases": 10},
        conflicts={"orders/status": done // 10}, reads={"orders": 7 * done},
        status_bytes=[1300, 1350, 1400], object_bytes=[3300, 3350, 3400],
        peak_rss_mib={"operator": 120.0})


IDLE = IdleBaseline(seconds=10.0, cpu_s_per_s={"kube-apiserver": 0.05, "operator": 0.01},
                    machine_busy_per_s=0.2, writes_per_s={"leases": 1.0})


def test_a_point_is_summarized_per_completed_order_and_net_of_idle() -> None:
    s = report.summarize(measurement(10.0), IDLE)
    assert (s.completed, s.failed, s.unfinished) == (100, 0, 0)
    assert s.sustained
    assert s.latency_s["p99"] == pytest.approx(0.5)
    assert s.cpu_ms_per_order["kube-apiserver"] == pytest.approx(20.0)
    assert s.cpu_ms_per_order_net["kube-apiserver"] == pytest.approx(15.0)  # 2 - 0.05 x 10
    assert s.cpu_ms_per_order_total == pytest.approx(55.0)  # the load generator left out
    assert s.cpu_ms_per_order_total_net == pytest.approx(49.0)
    assert s.control_plane_write_ms_per_order == pytest.approx(20.0)
    assert s.writes_per_order == {"orders/status": 6.0, "orders": 2.0, "leases": 0.1}
    assert s.writes_per_order_total_net == pytest.approx(8.0)  # the idle leases subtracted
    assert s.conflicts_per_order == {"orders/status": 0.1}
    assert s.status_bytes == {"median": 1350.0, "max": 1400.0}
    assert s.machine_busy_ms_per_order == pytest.approx(80.0)
    assert s.restarted == []
    m = measurement(10.0)
    m.restarted = ["operator"]
    assert report.summarize(m, IDLE).restarted == ["operator"]


def test_a_short_point_that_keeps_up_is_sustained_and_a_saturated_one_is_not() -> None:
    # 20 orders at 20/s with 0.5 s latency: 20 / (0.95 + 0.5) = 13.8/s, yet it keeps up
    keeping_up = report.summarize(measurement(20.0, orders=20), IDLE)
    assert keeping_up.throughput < 0.95 * 20 and keeping_up.sustained
    # 200 orders at 40/s served at 10/s: the queue grows, so does the latency
    saturated = PointMeasurement(
        system=report.OURS, offered_rate=40.0, planned=200, created=200,
        outcomes={"Completed": 200}, elapsed_s=20.0,
        latencies_s=[i / 10 - i / 40 + 0.5 for i in range(200)], cpu_s={})
    summary = report.summarize(saturated, IDLE)
    assert summary.throughput == pytest.approx(10.0) and not summary.sustained
    assert summary.completion_rate == pytest.approx(199 / 19.5)


def test_a_slow_start_does_not_hide_a_growing_queue() -> None:
    # 100 orders at 10/s: every latency is seconds long, and they finish at 7.8/s
    m = measurement(10.0, latency=3.0)
    m.elapsed_s, m.first_terminal_s = 13.0, 0.3
    summary = report.summarize(m, IDLE)
    assert summary.completion_rate == pytest.approx(99 / 12.7)
    assert not summary.sustained


def test_a_point_that_fails_orders_is_not_sustained() -> None:
    assert not report.summarize(measurement(5.0, completed=90), IDLE).sustained
    assert report.summarize(measurement(5.0, completed=97), IDLE).sustained


def test_nothing_completed_gives_no_per_order_figures() -> None:
    s = report.summarize(measurement(5.0, completed=0), IDLE)
    assert s.completed == 0 and s.failed == 100 and not s.sustained
    assert s.cpu_ms_per_order_total is None and s.writes_per_order == {}


def summary(rate: float, throughput: float, p99: float, cpu: float,
            system: str = report.OURS) -> PointSummary:
    """A point with the figures the comparison reads."""
    s = report.summarize(measurement(rate, system=system), IdleBaseline.none())
    s.throughput, s.sustained = throughput, throughput >= 0.95 * rate
    s.latency_s = {"p50": p99 / 2, "p90": p99 / 1.5, "p99": p99, "max": p99}
    s.cpu_ms_per_order_total = cpu
    return s


OURS = [summary(5, 5.0, 0.4, 60.0), summary(10, 9.9, 0.5, 50.0), summary(20, 12.0, 9.0, 45.0)]
PEER = [summary(5, 5.0, 0.1, 10.0, "dbos"), summary(10, 9.6, 0.2, 8.0, "dbos"),
        summary(20, 19.5, 0.3, 7.0, "dbos")]


def test_saturation_is_the_most_achieved_and_the_common_rate_what_all_sustain() -> None:
    assert report.saturation(OURS) == 12.0
    assert report.common_rate({"vyapaar": OURS, "dbos": PEER}) == 10
    assert report.common_rate({"vyapaar": OURS[2:], "dbos": PEER}) is None


def test_the_comparison_puts_ours_over_theirs() -> None:
    comp = report.comparison({"vyapaar": OURS, "dbos": PEER})
    assert comp["common_rate"] == 10
    dbos = comp["systems"]["dbos"]
    assert dbos["saturation_throughput"] == 19.5
    assert dbos["p99_s_at_common_rate"] == 0.2
    assert dbos["ours_over_theirs"] == {
        "saturation_throughput": pytest.approx(12.0 / 19.5),
        "p99_s_at_common_rate": pytest.approx(0.5 / 0.2),
        "cpu_ms_per_order_at_common_rate": pytest.approx(50.0 / 8.0)}


def test_the_calibration_prices_an_order_in_minimal_writes() -> None:
    minimal = report.WriteCost("minimal", writes=200, status_bytes=70, wall_s=2.0,
                               cpu_s={"kube-apiserver": 0.3, "etcd": 0.1})
    full = report.WriteCost("full", writes=200, status_bytes=1400, wall_s=3.0,
                            cpu_s={"kube-apiserver": 0.5, "etcd": 0.1})
    points = [report.summarize(measurement(10.0), IDLE)]
    cal = report.calibration_json(full, minimal, points, "vyn-bench-calib-x")
    assert cal["minimal"]["apiserver_ms_per_write"] == pytest.approx(1.5)
    assert cal["minimal"]["control_plane_ms_per_write"] == pytest.approx(2.0)
    assert cal["full"]["control_plane_ms_per_write"] == pytest.approx(3.0)
    assert cal["headline"]["offered_rate"] == 10.0
    assert cal["headline"]["minimal_writes"] == pytest.approx(49.0 / 2.0)


def test_the_operator_ignores_the_calibration_namespace_only_when_told_to() -> None:
    assert not calibrate.namespace_watched("vyn-bench-calib-1", ["!vyn-*"])
    assert calibrate.namespace_watched("bench-abc-r5", ["!vyn-*"])
    assert calibrate.namespace_watched("vyn-bench-calib-1", [])  # clusterwide
    assert not calibrate.namespace_watched("bench-abc", ["shop-*"])
    assert calibrate.calibration_namespace(["!vyn-*"]) is not None
    assert calibrate.calibration_namespace([]) is None
    environ = {"VYAPAAR_NAMESPACES": "!vyn-*, ", "VYAPAAR_AMQP_URL": "amqp://u:secret@h/",
               "VYAPAAR_STEP_TIMEOUT_SECONDS": "3", "HOME": "/root"}
    assert calibrate.operator_patterns(environ) == ("!vyn-*",)
    assert calibrate.operator_settings(environ) == {
        "VYAPAAR_NAMESPACES": "!vyn-*, ", "VYAPAAR_STEP_TIMEOUT_SECONDS": "3"}


def test_a_peer_point_becomes_the_same_measurement() -> None:
    point = SimpleNamespace(peer="dbos", offered_rate=5.0, orders=10, completed=9, failed=0,
                            elapsed_s=2.5, latencies_s=[0.1] * 9,
                            cpu_s_by_process={"dbos": 0.4, "postgres": 0.2})
    s = report.summarize(_peer_measurement(point), IdleBaseline.none())
    assert (s.system, s.completed, s.unfinished) == ("dbos", 9, 1)
    assert s.cpu_ms_per_order_total == pytest.approx(600 / 9)


def full_report(with_peer: bool) -> dict[str, object]:
    minimal = report.WriteCost("minimal", 200, 70, 2.0, {"kube-apiserver": 0.3, "etcd": 0.1})
    peers: dict[str, list[PointSummary] | str] = {"temporal": "not installed"}
    if with_peer:
        peers["dbos"] = PEER
    return report.build(
        settings={"rates": [5, 10, 20]}, operator={"pid": 1, "settings": {}}, idle=IDLE,
        points=OURS, calibration=report.calibration_json(None, minimal, OURS, "vyn-x"),
        peers=peers, started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T00:10:00+00:00")


def test_the_report_is_json_with_every_section() -> None:
    data = json.loads(json.dumps(full_report(with_peer=True)))
    assert data["schema"] == report.SCHEMA
    assert set(data) >= {"settings", "operator", "idle", "points", "calibration", "peers",
                         "comparison", "host", "plots"}
    point = data["points"][0]
    assert set(point) >= {"offered_rate", "throughput", "sustained", "latency_s",
                          "cpu_ms_per_order", "cpu_ms_per_order_net", "writes_per_order",
                          "status_bytes", "object_bytes", "peak_rss_mib", "outcomes"}
    assert data["peers"]["temporal"] == {"skipped": "not installed"}
    assert len(data["peers"]["dbos"]["points"]) == 3
    assert report.points_of(data, "dbos")[2].throughput == 19.5
    assert data["comparison"]["common_rate"] == 10


def test_the_table_reads_as_markdown_with_the_headline() -> None:
    text = report.table(full_report(with_peer=True))
    assert text.startswith("| offered/s | created | completed |")
    assert "CPU per order = " in text and "x a minimal status write" in text
    assert "| kube-apiserver |" in text
    assert "| dbos | 19.5 |" in text
    assert "Peer temporal skipped: not installed" in text


def test_plots_are_written_as_png_files(tmp_path: Path) -> None:
    written = plots.write_all(full_report(with_peer=True), tmp_path / "plots")
    assert sorted(p.name for p in written) == [
        "comparison.png", "cpu_per_order.png", "latency.png", "throughput.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    alone = plots.write_all(full_report(with_peer=False), tmp_path / "alone")
    assert "comparison.png" not in {p.name for p in alone}


def test_bench_without_a_stack_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vyapaar_cli", "bench", "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "VYAPAAR_STATE_DIR": str(tmp_path / "no-stack")})
    assert result.returncode == 1
    assert result.stderr.strip() == ("vyapaar: error: the local stack is not running: start "
                                     "the system first (make demo)")


def test_bench_refuses_bad_rates() -> None:
    result = subprocess.run([sys.executable, "-m", "vyapaar_cli", "bench", "--rates", "5,x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a list of numbers: '5,x'" in result.stderr


def test_a_saga_is_timed_from_its_start_not_from_its_wait_in_the_queue() -> None:
    from vyapaar_stack.bench.load import saga_durations


    queued = {"status": {"phase": "Completed", "startedAt": "2026-12-01T00:00:10Z",
                         "finishedAt": "2026-12-01T00:00:10.400Z",
                         "conditions": [{"type": "Queued", "status": "False"}]}}
    straight = {"status": {"phase": "Completed", "startedAt": "2026-12-01T00:00:00Z",
                           "finishedAt": "2026-12-01T00:00:00.250Z", "conditions": []}}
    running = {"status": {"phase": "Paying", "startedAt": "2026-12-01T00:00:00Z"}}
    assert saga_durations([queued, straight, running]) == ([0.25, 0.4], 1)
