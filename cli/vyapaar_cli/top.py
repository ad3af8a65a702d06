"""`vyapaar top`: the key saga figures, live from Prometheus, in a terminal.

    vyapaar top                 # refresh every 2 s until Ctrl-C
    vyapaar top --once          # print one frame and exit (scripts, tests)
    vyapaar top --prometheus-url http://prometheus:9090 --interval 5

Prometheus: ``--prometheus-url``, else ``$VYAPAAR_PROMETHEUS_URL``, else the development
stack's when that is installed (:mod:`vyapaar_cli.plugins`), else ``localhost:9090``.

Shows orders per second by outcome and the failure ratio, sagas in flight by phase (and how
many are stuck or await a repair), p50/p99 saga duration, compensations, dead-letter queue
depth, outbox lag, scrape targets that are down and the alerts that fire. Every figure is one
PromQL query over the metrics described in docs/observability.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from vyapaar_cli.settings import Settings

#: Prometheus' own default address, used when neither a flag nor the environment names one
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"

PHASES = ("Pending", "Reserving", "CheckingFraud", "Paying", "Shipping", "Completing",
          "Compensating")
OUTCOMES = ("Completed", "Failed", "Cancelled")


class PrometheusError(Exception):
    """Prometheus did not answer, or refused a query."""


Sample = tuple[dict[str, str], float]


class Prometheus:
    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}",
                                        timeout=self.timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{path}: HTTP {exc.code}: {exc.read()[:200]!r}") from exc
        except (OSError, ValueError) as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[Sample]:
        """An instant query: (labels, value) of every series."""
        data = self._get("/api/v1/query", {"query": expr})
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["alerts"])


@dataclass
class Frame:
    """The figures of one refresh."""

    at: datetime
    window: str
    outcomes: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    stuck: float = 0.0
    awaiting_repair: float = 0.0
    paused: float = 0.0
    breakers: dict[str, float] = field(default_factory=dict)
    p50: float = math.nan
    p99: float = math.nan
    compensations: dict[str, float] = field(default_factory=dict)
    dlq: dict[str, float] = field(default_factory=dict)
    outbox_lag: dict[str, float] = field(default_factory=dict)
    outbox_pending: dict[str, float] = field(default_factory=dict)
    targets_up: list[str] = field(default_factory=list)
    targets_down: list[str] = field(default_factory=list)
    firing: list[str] = field(default_factory=list)


def _by(samples: list[Sample], label: str) -> dict[str, float]:
    return {labels.get(label, ""): value for labels, value in samples}


def _one(samples: list[Sample]) -> float:
    return samples[0][1] if samples else 0.0


def collect(prometheus: Prometheus, window: str = "1m") -> Frame:
    q = prometheus.query
    frame = Frame(at=datetime.now(UTC), window=window)
    frame.outcomes = _by(q(f"sum by (outcome) "
                           f"(rate(vyapaar_saga_orders_finished_total[{window}]))"), "outcome")
    frame.phases = _by(q("sum by (phase) (vyapaar_saga_in_flight)"), "phase")
    frame.stuck = _one(q("sum(vyapaar_saga_stuck)"))
    frame.awaiting_repair = _one(q("sum(vyapaar_saga_awaiting_repair)"))
    frame.paused = _one(q("sum(vyapaar_saga_paused)"))
    frame.breakers = _by(q("max by (service) (vyapaar_circuit_breaker_state)"), "service")
    durations = "sum by (le) (rate(vyapaar_saga_duration_seconds_bucket[5m]))"
    frame.p50 = _one(q(f"histogram_quantile(0.5, {durations})")) or math.nan
    frame.p99 = _one(q(f"histogram_quantile(0.99, {durations})")) or math.nan
    frame.compensations = _by(q("sum by (step) "
                                "(increase(vyapaar_saga_compensations_total[5m]))"), "step")
    frame.dlq = _by(q("max by (queue) (vyapaar_dlq_messages)"), "queue")
    frame.outbox_lag = _by(q("max by (service) (vyapaar_outbox_oldest_unsent_age_seconds)"),
                           "service")
    frame.outbox_pending = _by(q("max by (service) (vyapaar_outbox_pending_messages)"),
                               "service")
    for labels, value in q("up"):
        name = f"{labels.get('job', '?')}@{labels.get('instance', '?')}"
        (frame.targets_up if value >= 1 else frame.targets_down).append(name)
    frame.firing = sorted(
        alert["labels"].get("alertname", "?")
        + "".join(f" {k}={v}" for k, v in sorted(alert["labels"].items())
                  if k not in ("alertname", "severity"))
        for alert in prometheus.alerts() if alert.get("state") == "firing"
    )
    return frame


BREAKER_STATES = {0: "closed", 1: "HALF-OPEN", 2: "OPEN"}


def _number(value: float, unit: str = "", digits: int = 2) -> str:
    if math.isnan(value):
        return "-"
    if unit == "s":
        if value == 0:
            return "0s"
        return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.{digits}f}s"
    if unit == "%":
        return f"{value * 100:.1f}%"
    return f"{value:.{digits}f}" if value != int(value) else f"{int(value)}"


def _pairs(values: dict[str, float], order: tuple[str, ...] = (), unit: str = "",
           digits: int = 2) -> str:
    names = [n for n in order if n in values] + sorted(n for n in values if n not in order)
    return "  ".join(f"{name} {_number(values[name], unit, digits)}" for name in names) or "-"


def _nonzero(values: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in values.items() if value}


def render(frame: Frame, url: str) -> str:
    total = sum(frame.outcomes.values())
    failure = frame.outcomes.get("Failed", 0.0) / total if total else math.nan
    in_flight = sum(frame.phases.values())
    compensations = sum(frame.compensations.values())
    dlq = sum(frame.dlq.values())
    worst_lag = max(frame.outbox_lag.values(), default=0.0)
    rows = [
        ("orders/s", f"{_pairs(frame.outcomes, OUTCOMES, digits=3)}   "
                     f"total {_number(total, digits=3)}   failed {_number(failure, '%')}"),
        ("in flight", f"{_pairs(frame.phases, PHASES, digits=0)}   total {_number(in_flight)}"
                      f"   stuck {_number(frame.stuck)}"
                      f"   awaiting repair {_number(frame.awaiting_repair)}"
                      f"   paused {_number(frame.paused)}"),
        ("breakers", "  ".join(f"{name} {BREAKER_STATES.get(int(value), '?')}"
                               for name, value in sorted(frame.breakers.items())) or "-"),
        ("saga duration", f"p50 {_number(frame.p50, 's')}   p99 {_number(frame.p99, 's')}"
                          "   (last 5m)"),
        ("compensations", f"{_number(compensations, digits=0)} in the last 5m   "
                          f"{_pairs(_nonzero(frame.compensations), digits=0)}"),
        ("dlq depth", f"{_number(dlq)}   {_pairs(_nonzero(frame.dlq))}"),
        ("outbox lag", f"max {_number(worst_lag, 's')}   {_pairs(frame.outbox_lag, unit='s')}"),
        ("outbox pending", _pairs(frame.outbox_pending, digits=0)),
        ("targets", f"{len(frame.targets_up)} up, {len(frame.targets_down)} down"
                    + (f": {', '.join(sorted(frame.targets_down))}" if frame.targets_down
                       else "")),
        ("alerts firing", ", ".join(frame.firing) if frame.firing else "none"),
    ]
    header = (f"vyapaar top — {url} — {frame.at.strftime('%Y-%m-%d %H:%M:%S')} UTC "
              f"(rates over {frame.window})")
    return "\n".join([header, "", *(f"{name.upper():<16}{text}" for name, text in rows)]) + "\n"


EXAMPLES = """examples:
  vyapaar top                                          # refresh every 2 s until Ctrl-C
  vyapaar top --once                                   # one frame, for scripts
  vyapaar top --prometheus-url http://prometheus:9090 --window 5m
"""


def add_arguments(subparsers: Any, settings: Settings | None = None) -> argparse.ArgumentParser:
    """Add the ``top`` command to an argparse sub-parsers object."""
    settings = settings or Settings()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "top",
        help="the key saga figures, live from Prometheus",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    parser.add_argument(
        "--prometheus-url",
        default=settings.get("VYAPAAR_PROMETHEUS_URL", DEFAULT_PROMETHEUS_URL),
        help="Prometheus to query (default: $VYAPAAR_PROMETHEUS_URL, else %(default)s)",
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between refreshes (default: %(default)s)")
    parser.add_argument("--window", default="1m",
                        help="range of the per-second rates (default: %(default)s)")
    return parser


def run(args: argparse.Namespace, *, out: TextIO | None = None,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Print frames; 0 on Ctrl-C (or after one good frame with --once), 1 on an error."""
    stream = out or sys.stdout
    prometheus = Prometheus(args.prometheus_url)
    clear = "\x1b[H\x1b[2J" if not args.once and stream.isatty() else ""
    try:
        while True:
            try:
                text = render(collect(prometheus, args.window), prometheus.url)
                failed = False
            except PrometheusError as exc:
                text = f"vyapaar top: {exc}\n"
                failed = True
            stream.write(clear + text)
            stream.flush()
            if args.once:
                return 1 if failed else 0
            sleep(args.interval)
    except KeyboardInterrupt:
        return 0
