#!/usr/bin/env python3
"""Generate the Grafana dashboards of Vyapaar Nexus as code.

    python grafana/generate.py            # (re)write grafana/dashboards/*.json
    python grafana/generate.py --check    # exit 1 if regenerating would change a file

The dashboards are built with Grafana's own Python SDK, the Foundation SDK
(``grafana-foundation-sdk`` on PyPI, pinned in pyproject.toml's dev extra). Its builders
(dashboard, row, timeseries/stat/table panels, Prometheus queries, the data source
variable) and enums are generated from the dashboard schema of the Grafana version they
target (11.6, ``schemaVersion`` 41) and fully typed (``py.typed``): a misspelt option, a
wrong enum value or a field of the wrong type is an error of ``mypy grafana/generate.py``
rather than a key Grafana silently ignores, as it was with the hand-built dicts this
replaced. The SDK's encoder (``cog.encoder.JSONEncoder``) writes the JSON, with keys
sorted: the output is deterministic and does not depend on the SDK's field order.

The rules stay as before: only ``timeseries``/``stat``/``table`` panels, the data source is
the ``${datasource}`` template variable, every panel has a unit, and every
rate()/increase() uses ``$__rate_interval``. ``grafana/lint.py`` checks those rules on the
JSON; ``tests/grafana`` runs it and proves every query returns data from the real
Prometheus after a real run. Metric names: docs/observability.md.

The Business dashboard is the exception in data source: it reads the analytics read model
(orders, order_events, revenue_daily, step_outcomes) from PostgreSQL, through the
``${analytics}`` variable (Grafana's PostgreSQL data source, by default the one provisioned
as ``vyapaar-analytics``), in raw SQL with Grafana's macros (``$__timeFilter`` and co.). The
SDK has no model of that data source's queries, so :class:`SQLQuery` is one, written as
Grafana 11.6 stores it. ``grafana/lint.py`` checks its rules and expands its macros as
Grafana does; ``tests/grafana/test_business_live.py`` runs every panel against the real
PostgreSQL and checks the figures.

Layout is the SDK's: a row starts a new line, panels fill it left to right, and a line
wraps once its widths reach 24 (Grafana's grid) -- so the widths of a line add up to 24.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, Self, TypeAlias, TypeVar

from grafana_foundation_sdk.builders import common as viz
from grafana_foundation_sdk.builders import dashboard as board
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import stat as stat_panel
from grafana_foundation_sdk.builders import table as table_panel
from grafana_foundation_sdk.builders import timeseries as timeseries_panel
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as schema
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"
TAG = "vyapaar"
REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

Item: TypeAlias = board.Row | timeseries_panel.Panel | stat_panel.Panel | table_panel.Panel
"""What a dashboard is made of, in order: rows and the panels below each."""

SQLFormat: TypeAlias = Literal["time_series", "table"]
"""How Grafana's SQL data sources shape a result: a time series needs a ``time`` column."""


class SQLQuery(Dataquery):
    """A query of Grafana's PostgreSQL data source, in code mode (raw SQL).

    The SDK has no model for it; this writes what Grafana 11.6 stores (``SQLQuery`` of
    ``@grafana/sql``): ``rawSql``, ``format``, ``rawQuery: true`` and ``editorMode: code``, so
    the query editor opens on the SQL and never regenerates it from a visual-builder model.
    """

    def __init__(self, raw_sql: str, format_val: SQLFormat,
                 datasource: schema.DataSourceRef, ref_id: str = "") -> None:
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.datasource = datasource
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {"datasource": self.datasource, "editorMode": "code", "format": self.format_val,
                "rawQuery": True, "rawSql": self.raw_sql, "refId": self.ref_id}


class SQLTarget(Builder[SQLQuery]):
    """Builds a :class:`SQLQuery`; its refId is set by the panel, like a Prometheus one's."""

    def __init__(self, raw_sql: str, format_val: SQLFormat,
                 datasource: schema.DataSourceRef) -> None:
        self._internal = SQLQuery(raw_sql, format_val, datasource)

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def build(self) -> SQLQuery:
        return self._internal


Target: TypeAlias = prometheus.Dataquery | SQLTarget
"""A panel's query: PromQL (most dashboards) or SQL (Business)."""


class PanelBuilder(Protocol):
    """The setters the SDK's timeseries, stat and table panel builders share."""

    def title(self, title: str, /) -> Self: ...
    def description(self, description: str, /) -> Self: ...
    def datasource(self, datasource: schema.DataSourceRef, /) -> Self: ...
    def unit(self, unit: str, /) -> Self: ...
    def span(self, w: int, /) -> Self: ...
    def height(self, h: int, /) -> Self: ...
    def with_target(self, target: Builder[Dataquery], /) -> Self: ...
    def override_by_name(self, name: str,
                         properties: list[schema.DynamicConfigValue], /) -> Self: ...


P = TypeVar("P", bound=PanelBuilder)


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def datasource() -> schema.DataSourceRef:
    """The ``${datasource}`` template variable, as a panel's or a query's data source."""
    return schema.DataSourceRef(type_val="prometheus", uid="${datasource}")


def target(expr: str, legend: str = "__auto", *,
           instant: bool = False) -> prometheus.Dataquery:
    """A Prometheus query; ``instant`` ones are table rows (format ``table``).

    Its refId is set by the panel (:func:`panel`), from its position.
    """
    query = (prometheus.Dataquery().datasource(datasource()).editor_mode(QueryEditorMode.CODE)
             .expr(expr).legend_format(legend))
    if instant:
        return query.instant().format(PromQueryFormat.TABLE)
    return query.range().format(PromQueryFormat.TIME_SERIES)


def panel(builder: P, title: str, description: str, unit: str,
          targets: Sequence[Target], width: int, height: int,
          source: schema.DataSourceRef | None = None) -> P:
    """What every panel has: title, description, data source, unit, size, queries A, B, ...

    The data source is ``${datasource}`` (Prometheus) unless ``source`` says otherwise.
    """
    builder.title(title).description(description).datasource(source or datasource()).unit(unit)
    builder.span(width).height(height)
    for index, query in enumerate(targets):
        builder.with_target(query.ref_id(REF_IDS[index]))
    return builder


def timeseries(
    title: str,
    description: str,
    unit: str,
    *targets: Target,
    width: int = 12,
    height: int = 8,
    stack: bool = False,
    bars: bool = False,
    points: bool = False,
    signed: bool = False,
    source: schema.DataSourceRef | None = None,
) -> timeseries_panel.Panel:
    """A time series from 0 up (unless ``signed``: it may go below): lines (or ``bars``),
    ``stack``-ed or not, legend below; ``points`` marks every value (sparse series)."""
    builder = (
        timeseries_panel.Panel()
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(25 if stack else 10)
        .show_points(common.VisibilityMode.ALWAYS if points else common.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(viz.StackingConfig()
                  .mode(common.StackingMode.NORMAL if stack else common.StackingMode.NONE)
                  .group("A"))
        .legend(viz.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM).show_legend(True))
        .tooltip(viz.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                 .sort(common.SortOrder.DESCENDING))
    )
    if not signed:
        builder.min(0)
    return panel(builder, title, description, unit, targets, width, height, source)


def stat(
    title: str,
    description: str,
    unit: str,
    *targets: Target,
    width: int = 4,
    height: int = 4,
    red_above: float | None = None,
    decimals: int | None = None,
    graph: bool = True,
    source: schema.DataSourceRef | None = None,
) -> stat_panel.Panel:
    """The last value, big, over its sparkline (unless not ``graph``: a table's row has
    none); green, or red from ``red_above`` on."""
    steps = [schema.Threshold(color="green", value=None)]
    if red_above is not None:
        steps.append(schema.Threshold(color="red", value=red_above))
    builder = (
        stat_panel.Panel()
        .color_scheme(board.FieldColor().mode(schema.FieldColorModeId.THRESHOLDS))
        .thresholds(board.ThresholdsConfig().mode(schema.ThresholdsMode.ABSOLUTE).steps(steps))
        .reduce_options(viz.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA if graph else common.BigValueGraphMode.NONE)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
        .text_mode(common.BigValueTextMode.AUTO)
    )
    if decimals is not None:
        builder.decimals(decimals)
    return panel(builder, title, description, unit, targets, width, height, source)


def table(title: str, description: str, unit: str, *targets: Target,
          width: int = 12, height: int = 8,
          source: schema.DataSourceRef | None = None) -> table_panel.Panel:
    """A table: of instant queries, merged into one row per label set; or (``source`` set)
    the rows of one SQL query, as they come."""
    builder = table_panel.Panel().show_header(True).cell_height(common.TableCellHeight.SM)
    if source is None:
        builder.with_transformation(schema.DataTransformerConfig(id_val="merge", options={}))
    return panel(builder, title, description, unit, targets, width, height, source)


def row(title: str) -> board.Row:
    """An expanded row: a full-width title over the panels that follow it."""
    return board.Row(title).collapsed(False)


def quantile(q: float, metric: str, by: str = "", selector: str = "") -> str:
    """PromQL: the ``q`` quantile of histogram ``metric`` (by ``by``) over $__rate_interval."""
    labels = f"le, {by}" if by else "le"
    return (f"histogram_quantile({q}, sum by ({labels}) "
            f"(rate({metric}_bucket{selector}[{RATE}])))")


def rate(metric: str, by: str = "", selector: str = "") -> str:
    """PromQL: the per-second rate of counter ``metric`` (summed, by ``by``)."""
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}{selector}[{RATE}]))"


def builtin_annotations() -> board.AnnotationQuery:
    """Grafana's built-in annotations (and alerts), hidden from the annotation toggles."""
    return (board.AnnotationQuery().name("Annotations & Alerts").built_in(1).type("dashboard")
            .datasource(schema.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)"))


def datasource_variable() -> board.DatasourceVariable:
    """The ``datasource`` variable: any Prometheus data source (the default one first)."""
    return (board.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .hide(schema.VariableHide.DONT_HIDE).multi(False).include_all(False).regex(""))


def dashboard(uid: str, title: str, description: str, items: list[Item], *,
              variables: Sequence[Builder[schema.VariableModel]] | None = None,
              since: str = "now-1h", refresh: str = "10s",
              timezone: str = "") -> schema.Dashboard:
    """One dashboard: linked to the others (same tag), its items numbered and laid out.

    Its variables are ``${datasource}`` (Prometheus) unless ``variables`` says otherwise; it
    shows ``since`` to now, refreshed every ``refresh``, in the browser's time zone (or
    ``timezone``).
    """
    builder = (
        board.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .tooltip(schema.DashboardCursorSync.CROSSHAIR)
        .refresh(refresh)
        .version(1)
        .time(since, "now")
        .timezone(timezone)
        .fiscal_year_start_month(0)
        .live_now(False)
        .week_start("")
        .link(board.DashboardLink("Vyapaar Nexus").type(schema.DashboardLinkType.DASHBOARDS)
              .tags([TAG]).as_dropdown(False).include_vars(True).keep_time(True))
        .annotation(builtin_annotations())
    )
    for variable in variables if variables is not None else [datasource_variable()]:
        builder.with_variable(variable)
    for number, item in enumerate(items, start=1):
        if isinstance(item, board.Row):
            builder.with_row(item.id(number))
        else:
            builder.with_panel(item.id(number))
    return builder.build()


# --------------------------------------------------------------------------------------
# Saga overview
# --------------------------------------------------------------------------------------

FINISHED = "vyapaar_saga_orders_finished_total"


def saga_overview() -> schema.Dashboard:
    failed = f'sum(rate({FINISHED}{{outcome="Failed"}}[{RATE}]))'
    panels: list[Item] = [
        row("Now"),
        stat("Orders finished", "Orders reaching Completed, Failed or Cancelled per second.",
             "ops", target(f"sum(rate({FINISHED}[{RATE}]))", "finished"), decimals=2),
        stat("Failure ratio", "Share of the finished orders that ended Failed "
             "(alert VyapaarSagaFailureRatioHigh: over 25% for 5 minutes).", "percentunit",
             target(f"{failed} / sum(rate({FINISHED}[{RATE}]))", "failed"), red_above=0.25),
        stat("Sagas in flight", "Orders not yet in a terminal phase.", "short",
             target("sum(vyapaar_saga_in_flight)", "in flight")),
        stat("Stuck sagas", "Sagas older than the operator's saga deadline "
             "(alert VyapaarSagaStuck).", "short",
             target("sum(vyapaar_saga_stuck)", "stuck"), red_above=1),
        stat("Awaiting repair", "Sagas in CompensationFailed: a compensation ran out of "
             "retries; repair the service and resume (alert VyapaarCompensationFailed).",
             "short", target("sum(vyapaar_saga_awaiting_repair)", "CompensationFailed"),
             red_above=1),
        stat("Saga p99 duration", "99th percentile of the time from a saga's start to its "
             "outcome.", "s", target(quantile(0.99, "vyapaar_saga_duration_seconds"), "p99")),
        row("Throughput and outcomes"),
        timeseries("Orders finished by outcome", "Orders per second reaching each outcome.",
                   "ops", target(rate(FINISHED, "outcome"), "{{outcome}}"), stack=True),
        timeseries("Sagas in flight by phase", "Non-terminal sagas known to the operator, "
                   "by phase.", "short",
                   target("sum by (phase) (vyapaar_saga_in_flight)", "{{phase}}"), stack=True),
        timeseries("Queued and paused", "Orders waiting in Pending for a saga slot, the "
                   "limit of sagas running at once (0: none), and sagas held by spec.paused "
                   "(vyapaar orders pause|resume).", "short",
                   target("sum(vyapaar_saga_queued)", "queued"),
                   target("max(vyapaar_saga_in_flight_limit)", "limit"),
                   target("sum(vyapaar_saga_paused)", "paused")),
        timeseries("Saga duration percentiles", "Time from a saga's start to its outcome.",
                   "s",
                   target(quantile(0.5, "vyapaar_saga_duration_seconds"), "p50"),
                   target(quantile(0.9, "vyapaar_saga_duration_seconds"), "p90"),
                   target(quantile(0.99, "vyapaar_saga_duration_seconds"), "p99")),
        timeseries("Saga duration p95 by outcome", "95th percentile of the saga duration for "
                   "each outcome.", "s",
                   target(quantile(0.95, "vyapaar_saga_duration_seconds", "outcome"),
                          "{{outcome}}")),
        timeseries("Sagas started by flow version", "Sagas started per second, by the saga "
                   "version they run on to their end (docs/saga.md, Saga versions): during a "
                   "rollout of a new flow, new orders move to it while those in flight "
                   "finish on theirs.", "ops",
                   target(rate("vyapaar_saga_started_total", "version"), "version {{version}}"),
                   stack=True),
        row("Steps"),
        timeseries("Step duration p95 by step", "95th percentile from a step's first command "
                   "to its successful reply (retries included).", "s",
                   target(quantile(0.95, "vyapaar_saga_step_duration_seconds", "step",
                                   '{outcome="succeeded"}'), "{{step}}")),
        timeseries("Step outcomes", "Steps settling per second, by step and outcome "
                   "(succeeded, rejected, unknown: no reply within the budget or cancelled "
                   "in flight).", "ops",
                   target(rate("vyapaar_saga_step_duration_seconds_count", "step, outcome"),
                          "{{step}} {{outcome}}")),
        timeseries("Retries by step", "Commands sent again per second: after a timeout, or "
                   "re-sent after an operator restart (recovery).", "ops",
                   target(rate("vyapaar_saga_retries_total", "step, kind, reason"),
                          "{{step}} {{kind}} ({{reason}})")),
        timeseries("Timeouts by step", "Deadlines that passed without a reply, per second.",
                   "ops",
                   target(rate("vyapaar_saga_timeouts_total", "step, kind"),
                          "{{step}} {{kind}}")),
        row("Compensations"),
        timeseries("Compensations by step", "Compensations started per second, by step.",
                   "ops", target(rate("vyapaar_saga_compensations_total", "step"), "{{step}}"),
                   stack=True),
        timeseries("Compensations by reason", "Compensations started per second, by the "
                   "reason the saga turned around (only reasons seen in the window).", "ops",
                   target(rate("vyapaar_saga_compensations_total", "reason") + " > 0",
                          "{{reason}}"), stack=True),
        timeseries("Compensations completed", "Compensations confirmed per second: undone, or "
                   "noop (nothing to undo; a tombstone refuses a late forward command).", "ops",
                   target(rate("vyapaar_saga_compensations_completed_total", "step, result"),
                          "{{step}} {{result}}")),
        timeseries("Compensation failures", "Compensations that ran out of retries in the "
                   "interval (the saga entered CompensationFailed).", "short",
                   target(f"sum by (step) (increase(vyapaar_saga_compensation_failures_total"
                          f"[{RATE}]))", "{{step}}"), bars=True),
        row("Saga age"),
        timeseries("Oldest saga age by phase", "Age of the oldest non-terminal saga in each "
                   "phase, against the deadline after which it counts as stuck.", "s",
                   target("max by (phase) (vyapaar_saga_oldest_age_seconds)", "{{phase}}"),
                   target("max(vyapaar_saga_deadline_seconds)", "deadline")),
        timeseries("Stuck sagas by phase", "Non-terminal sagas older than the deadline.",
                   "short", target("sum by (phase) (vyapaar_saga_stuck)", "{{phase}}"),
                   stack=True),
        row("Operator"),
        timeseries("Replies applied and ignored", "Service replies per second: applied, or "
                   "ignored (duplicate, late or no longer relevant).", "ops",
                   target(rate("vyapaar_saga_replies_total", "result"), "{{result}}")),
        timeseries("Commands published", "Commands the operator published per second, by kind.",
                   "ops",
                   target(rate("vyapaar_saga_commands_published_total", "kind"), "{{kind}}")),
        timeseries("Status write conflicts", "Order status writes refused with 409 Conflict "
                   "(re-read and decided again) per second.", "ops",
                   target(rate("vyapaar_saga_status_conflicts_total"), "conflicts")),
        timeseries("Transitions by reason", "Saga transitions (Kubernetes Events) per second.",
                   "ops",
                   target(rate("vyapaar_saga_transitions_total", "reason"), "{{reason}}")),
        row("Circuit breakers"),
        timeseries("Circuit breaker state", "The operator's breaker toward each service: 0 "
                   "closed, 1 half-open (probing), 2 open: forward commands held, sagas wait "
                   "at that step (alert VyapaarCircuitBreakerOpen).", "short",
                   target("max by (service) (vyapaar_circuit_breaker_state)", "{{service}}")),
        timeseries("Commands held by a breaker", "Forward commands an open breaker kept back, "
                   "per second, by service.", "ops",
                   target(rate("vyapaar_circuit_breaker_held_commands_total", "service"),
                          "{{service}}")),
    ]
    return dashboard("vyapaar-saga-overview", "Vyapaar Nexus / Saga overview",
                     "Order sagas: throughput by outcome, phases, durations, compensations, "
                     "retries and stuck sagas (operator metrics).", panels)


# --------------------------------------------------------------------------------------
# Services
# --------------------------------------------------------------------------------------

HTTP = "vyapaar_http_requests_total"
COMMAND_QUEUES = '{queue=~".+\\\\.commands"}'


def services() -> schema.Dashboard:
    errors = (f'(sum by (service) (rate({HTTP}{{status=~"5.."}}[{RATE}])) or '
              f"sum by (service) (rate({HTTP}[{RATE}])) * 0)")
    panels: list[Item] = [
        row("HTTP (rate, errors, duration)"),
        timeseries("Request rate by service", "HTTP requests per second (the scrapes of "
                   "/metrics included).", "reqps", target(rate(HTTP, "service"), "{{service}}")),
        timeseries("Error ratio by service", "Share of HTTP responses with a 5xx status.",
                   "percentunit",
                   target(f"{errors} / {rate(HTTP, 'service')}", "{{service}}")),
        timeseries("Request duration p99 by service", "99th percentile of the HTTP request "
                   "duration.", "s",
                   target(quantile(0.99, "vyapaar_http_request_duration_seconds", "service"),
                          "{{service}}")),
        timeseries("Requests by route and status", "HTTP requests per second by route "
                   "template and status code.", "reqps",
                   target(rate(HTTP, "service, method, route, status"),
                          "{{service}} {{method}} {{route}} {{status}}")),
        row("Gateway (the public order API)"),
        timeseries("Gateway orders created and replayed", "Orders created through the "
                   "gateway per second, and creates answered with an earlier request's order "
                   "(same Idempotency-Key), by tenant.", "ops",
                   target(rate("vyapaar_gateway_orders_created_total", "tenant"),
                          "{{tenant}} created"),
                   target(rate("vyapaar_gateway_idempotent_replays_total", "tenant"),
                          "{{tenant}} replayed")),
        timeseries("Gateway requests over the rate limit", "Requests refused with 429 per "
                   "second, by tenant (each token has VYAPAAR_GATEWAY_RATE_LIMIT).", "reqps",
                   target(rate("vyapaar_gateway_rate_limited_requests_total", "tenant"),
                          "{{tenant}}")),
        timeseries("Gateway event streams open", "Server-sent-event streams of order "
                   "transitions held open now (order pages, storefronts following orders).",
                   "short", target("sum(vyapaar_gateway_event_streams)", "streams")),
        row("Commands"),
        timeseries("Commands handled by outcome", "Commands consumed per second by each "
                   "service, by outcome (ok, retry, dead_lettered).", "mps",
                   target(rate("vyapaar_messages_consumed_total", "queue, outcome",
                               COMMAND_QUEUES), "{{queue}} {{outcome}}")),
        timeseries("Command handling duration p95", "95th percentile of the time in the "
                   "command handler (one database transaction).", "s",
                   target(quantile(0.95, "vyapaar_message_handling_duration_seconds", "queue",
                                   COMMAND_QUEUES), "{{queue}}")),
        timeseries("Simulated processor calls", "Calls to the simulated payment processor and "
                   "carrier per second, by outcome (injected_error: fault injection).", "ops",
                   target(rate("vyapaar_processor_calls_total", "service, operation, outcome"),
                          "{{service}} {{operation}} {{outcome}}")),
        row("Outbox and inbox"),
        timeseries("Outbox pending messages", "Outbox rows not yet published by the relay.",
                   "short",
                   target("max by (service) (vyapaar_outbox_pending_messages)", "{{service}}")),
        timeseries("Outbox lag", "Age of the oldest unpublished outbox row (alert "
                   "VyapaarOutboxLag: over 30 s for a minute).", "s",
                   target("max by (service) (vyapaar_outbox_oldest_unsent_age_seconds)",
                          "{{service}}")),
        timeseries("Outbox published", "Outbox rows published with a confirm per second.",
                   "mps",
                   target(rate("vyapaar_outbox_published_messages_total", "service"),
                          "{{service}}")),
        timeseries("Inbox duplicates and idempotent replays", "Exact redeliveries caught by "
                   "the inbox, and retried commands answered from their stored result, per "
                   "second.", "mps",
                   target(rate("vyapaar_inbox_duplicates_total", "service"),
                          "{{service}} duplicate"),
                   target(rate("vyapaar_idempotent_replays_total", "service"),
                          "{{service}} replay")),
        row("Database and processes"),
        timeseries("Database pool in use", "asyncpg pool connections acquired, against the "
                   "connections open.", "short",
                   target("max by (service) (vyapaar_db_pool_connections_in_use)",
                          "{{service}} in use"),
                   target("max by (service) (vyapaar_db_pool_connections)", "{{service}} open")),
        timeseries("Database pool utilisation", "Share of the open pool connections in use.",
                   "percentunit",
                   target("sum by (service) (vyapaar_db_pool_connections_in_use) / "
                          "sum by (service) (vyapaar_db_pool_connections)", "{{service}}")),
        timeseries("CPU by process", "CPU seconds per second of each scraped process.",
                   "percentunit",
                   target(rate("process_cpu_seconds_total", "job"), "{{job}}")),
        timeseries("Resident memory by process", "Resident memory of each scraped process.",
                   "bytes",
                   target("sum by (job) (process_resident_memory_bytes)", "{{job}}")),
        table("Targets", "Scrape targets: up (1) or down (0; alert VyapaarTargetDown), time per "
              "scrape and samples per scrape.", "short",
              target("min by (job, instance) (up)", "up", instant=True),
              target("max by (job, instance) (scrape_duration_seconds)", "scrape seconds",
                     instant=True),
              target("max by (job, instance) (scrape_samples_scraped)", "samples",
                     instant=True), width=24),
    ]
    return dashboard("vyapaar-services", "Vyapaar Nexus / Services",
                     "The services and the gateway: HTTP rate, errors and duration; the "
                     "gateway's orders, rate limits and streams; commands; outbox and inbox; "
                     "database pool; processes.", panels)


# --------------------------------------------------------------------------------------
# Messaging
# --------------------------------------------------------------------------------------

MAIN_QUEUES = '{queue!~".+\\\\.(dlq|retry\\\\..+)"}'
RETRY_QUEUES = '{queue=~".+\\\\.retry\\\\..+"}'
DLQS = '{queue=~".+\\\\.dlq"}'


def messaging() -> schema.Dashboard:
    panels: list[Item] = [
        row("Queues"),
        stat("Dead-lettered messages", "Messages waiting in every dead-letter queue (alert "
             "VyapaarDeadLetterQueueNotEmpty).", "short",
             target("sum(max by (queue) (vyapaar_dlq_messages))", "in DLQs"), red_above=1,
             width=6),
        stat("Ready messages", "Messages ready in the work queues (RabbitMQ).", "short",
             target(f"sum(rabbitmq_detailed_queue_messages_ready{MAIN_QUEUES})", "ready"),
             width=6),
        stat("Unacknowledged messages", "Messages delivered and being handled (RabbitMQ).",
             "short",
             target(f"sum(rabbitmq_detailed_queue_messages_unacked{MAIN_QUEUES})", "unacked"),
             width=6),
        stat("Waiting for a retry", "Messages in the delay queues, waiting for their next "
             "attempt (RabbitMQ).", "short",
             target(f"sum(rabbitmq_detailed_queue_messages{RETRY_QUEUES})", "retrying"),
             width=6),
        timeseries("Queue depth", "Messages ready in each work queue (RabbitMQ).", "short",
                   target(f"sum by (queue) (rabbitmq_detailed_queue_messages_ready"
                          f"{MAIN_QUEUES})", "{{queue}}")),
        timeseries("Unacknowledged by queue", "Messages delivered to a consumer and not yet "
                   "acknowledged (RabbitMQ).", "short",
                   target(f"sum by (queue) (rabbitmq_detailed_queue_messages_unacked"
                          f"{MAIN_QUEUES})", "{{queue}}")),
        timeseries("Dead-letter queue depth", "Messages in each dead-letter queue, as sampled "
                   "by its consumer and as RabbitMQ reports it.", "short",
                   target("max by (queue) (vyapaar_dlq_messages)", "{{queue}} (consumer)"),
                   target(f"sum by (queue) (rabbitmq_detailed_queue_messages{DLQS})",
                          "{{queue}} (broker)")),
        timeseries("Retry queue depth", "Messages waiting in each delay queue (RabbitMQ).",
                   "short",
                   target(f"sum by (queue) (rabbitmq_detailed_queue_messages{RETRY_QUEUES})",
                          "{{queue}}")),
        row("Flow"),
        timeseries("Published by exchange", "Messages published per second with a publisher "
                   "confirm, by exchange and outcome.", "mps",
                   target(rate("vyapaar_messages_published_total", "exchange, outcome"),
                          "{{exchange}} {{outcome}}")),
        timeseries("Consumed by queue", "Messages consumed per second, by queue and outcome.",
                   "mps",
                   target(rate("vyapaar_messages_consumed_total", "queue, outcome"),
                          "{{queue}} {{outcome}}")),
        timeseries("Redelivered by queue", "Messages the broker delivered again per second "
                   "(a consumer died or nacked before acking).", "mps",
                   target(rate("vyapaar_messages_redelivered_total", "queue"), "{{queue}}")),
        timeseries("Delayed retries by queue", "Messages sent to a delay queue per second, by "
                   "queue and delay tier.", "mps",
                   target(rate("vyapaar_messages_retried_total", "queue, tier"),
                          "{{queue}} {{tier}}")),
        timeseries("Dead-lettered by queue", "Messages moved to a dead-letter queue per second, "
                   "by queue and reason (poison, permanent, exhausted).", "mps",
                   target(rate("vyapaar_messages_dead_lettered_total", "queue, reason"),
                          "{{queue}} {{reason}}")),
        timeseries("Handling duration p95 by queue", "95th percentile of the time in the "
                   "message handler.", "s",
                   target(quantile(0.95, "vyapaar_message_handling_duration_seconds", "queue"),
                          "{{queue}}")),
        row("Broker"),
        timeseries("Broker message rates", "Messages received, delivered and redelivered by "
                   "RabbitMQ per second.", "mps",
                   target(rate("rabbitmq_global_messages_received_total"), "received"),
                   target(rate("rabbitmq_global_messages_delivered_total"), "delivered"),
                   target(rate("rabbitmq_global_messages_redelivered_total"), "redelivered")),
        timeseries("Connections, channels and consumers", "Open AMQP connections, channels "
                   "and consumers.", "short",
                   target("sum(rabbitmq_connections)", "connections"),
                   target("sum(rabbitmq_channels)", "channels"),
                   target("sum(rabbitmq_consumers)", "consumers")),
        timeseries("Broker memory", "Resident memory of the RabbitMQ node against its "
                   "high-watermark limit.", "bytes",
                   target("sum(rabbitmq_process_resident_memory_bytes)", "resident"),
                   target("sum(rabbitmq_resident_memory_limit_bytes)", "limit")),
        timeseries("Broker alarms", "Memory, disk and file-descriptor alarms (1: publishers "
                   "are blocked).", "short",
                   target("max(rabbitmq_alarms_memory_used_watermark)", "memory"),
                   target("max(rabbitmq_alarms_free_disk_space_watermark)", "disk"),
                   target("max(rabbitmq_alarms_file_descriptor_limit)", "file descriptors")),
    ]
    return dashboard("vyapaar-messaging", "Vyapaar Nexus / Messaging",
                     "RabbitMQ queues and dead-letter queues; publish, consume, redelivery, "
                     "retry and dead-letter rates.", panels)


# --------------------------------------------------------------------------------------
# Business (the analytics read model, in PostgreSQL)
# --------------------------------------------------------------------------------------

POSTGRES = "grafana-postgresql-datasource"
"""The plugin id of Grafana's PostgreSQL data source (``postgres`` is its old alias)."""
ANALYTICS_DATASOURCE_UID = "vyapaar-analytics"
"""The uid of the data source grafana/provisioning/datasources/analytics.yaml provisions."""
ANALYTICS_SCHEMA = "analytics"
"""The analytics service's default schema (``VYAPAAR_DB_SCHEMA``); the ``schema`` variable
lists every schema holding the read model and starts on this one."""
SCHEMA = "${schema:doublequote}"
"""The read model's schema in SQL: the ``schema`` variable as a quoted identifier."""
CURRENCIES = ("INR", "USD", "EUR", "GBP", "JPY")
"""The currencies an Order may use (crds/orders.vyapaar.dev.yaml, spec.currency)."""
ZERO_DECIMAL_CURRENCIES = ("CLP", "ISK", "JPY", "KRW", "VND")
"""Currencies without minor units (the operator's list): 1 minor unit = 1 major unit."""
TERMINAL_PHASES = ("Completed", "Failed", "Cancelled")
"""Phases an order never leaves; the first event in one sets ``orders.finished_at``."""
FINAL_PHASES = (*TERMINAL_PHASES, "CompensationFailed")
"""Where an order stops: a terminal phase, or CompensationFailed (until it is repaired)."""
REJECTIONS = ("StockRejected", "FraudSuspected", "PaymentDeclined", "ShipmentRejected")
"""The refusals among the services' replies (``ok=False`` in vyapaar_messaging.contracts)."""
FORWARD_OUTCOMES = ("FraudCheckPassed", "FraudSuspected", "NotificationSent", "PaymentCaptured",
                    "PaymentDeclined", "ShipmentCreated", "ShipmentRejected", "StockCommitted",
                    "StockRejected", "StockReserved")
"""Replies to a forward (non-compensation) command: how long one took is its step's duration
(the analytics service's definition, vyapaar_services.analytics.readmodel; a test keeps both
equal to the contracts)."""
PHASE_COLORS = {"Completed": "green", "Failed": "orange", "Cancelled": "blue",
                "CompensationFailed": "red", "In progress": "yellow"}


def sql(text: str) -> str:
    """SQL as written below, without its indentation (it is shown in Grafana's editor)."""
    return textwrap.dedent(text).strip()


def sql_list(values: Sequence[str]) -> str:
    """``'a', 'b'``: string literals for ``IN (...)`` (known constants, never user input)."""
    return ", ".join(f"'{value}'" for value in values)


def in_currencies(column: str = "currency") -> str:
    """The ``currency`` variable as a filter; ``ANY (ARRAY[...])`` stays valid SQL when the
    variable has no value at all (an empty read model), where ``IN ()`` would not."""
    return f"{column} = ANY (ARRAY[$currency]::text[])"


def major(amount: str) -> str:
    """An amount of minor units in major units of the row's ``currency`` (numeric, exact)."""
    return (f"{amount}::numeric / CASE WHEN currency IN ({sql_list(ZERO_DECIMAL_CURRENCIES)}) "
            f"THEN 1 ELSE 100 END")


def analytics_source() -> schema.DataSourceRef:
    """The ``${analytics}`` variable, as a panel's or a query's data source."""
    return schema.DataSourceRef(type_val=POSTGRES, uid="${analytics}")


def query(raw_sql: str, format_val: SQLFormat = "table") -> SQLTarget:
    return SQLTarget(sql(raw_sql), format_val, analytics_source())


def analytics_variables() -> list[Builder[schema.VariableModel]]:
    """``analytics`` (the PostgreSQL data source), ``schema`` (of the read model, found in
    the database) and ``currency`` (multi-value, All by default; from the orders)."""
    source = (board.DatasourceVariable("analytics").label("Analytics database").type(POSTGRES)
              .current(schema.VariableOption(text="Vyapaar analytics",
                                             value=ANALYTICS_DATASOURCE_UID, selected=True))
              .hide(schema.VariableHide.DONT_HIDE).multi(False).include_all(False).regex(""))
    schemas = sql("""
        SELECT table_schema FROM information_schema.tables
        WHERE table_name = 'revenue_daily' ORDER BY 1""")
    schema_variable = (
        board.QueryVariable("schema").label("Schema")
        .description("Schema of the analytics read model (the analytics service's "
                     "VYAPAAR_DB_SCHEMA): every schema the data source's role can read a "
                     "revenue_daily table in.")
        .datasource(analytics_source()).query(schemas)
        .current(schema.VariableOption(text=ANALYTICS_SCHEMA, value=ANALYTICS_SCHEMA,
                                       selected=True))
        .refresh(schema.VariableRefresh.ON_DASHBOARD_LOAD).sort(schema.VariableSort.DISABLED)
        .multi(False).include_all(False).regex("").hide(schema.VariableHide.DONT_HIDE))
    currency_variable = (
        board.QueryVariable("currency").label("Currency")
        .description("Orders and money in these currencies (ISO 4217).")
        .datasource(analytics_source())
        .query(f"SELECT DISTINCT currency FROM {SCHEMA}.orders ORDER BY 1")
        .current(schema.VariableOption(text=["All"], value=["$__all"], selected=True))
        .refresh(schema.VariableRefresh.ON_DASHBOARD_LOAD).sort(schema.VariableSort.DISABLED)
        .multi(True).include_all(True).regex("").hide(schema.VariableHide.DONT_HIDE))
    return [source, schema_variable, currency_variable]


def unit_override(unit: str, decimals: int | None = None) -> list[schema.DynamicConfigValue]:
    properties = [schema.DynamicConfigValue(id_val="unit", value=unit)]
    if decimals is not None:
        properties.append(schema.DynamicConfigValue(id_val="decimals", value=decimals))
    return properties


def color_override(color: str) -> list[schema.DynamicConfigValue]:
    return [schema.DynamicConfigValue(id_val="color",
                                      value={"mode": "fixed", "fixedColor": color})]


def business() -> schema.Dashboard:
    source = analytics_source()
    finals = sql_list(FINAL_PHASES)

    net_per_day = timeseries(
        "Net revenue per day", "Money captured minus money refunded per UTC day, by currency, "
        "in major units (exact: summed in minor units by the read model's revenue_daily).",
        "none",
        query(f"""
            SELECT
              $__time(day),
              currency AS metric,
              {major("sum(captured - refunded)")} AS net
            FROM {SCHEMA}.revenue_daily
            WHERE $__timeFilter(day) AND {in_currencies()}
            GROUP BY day, currency
            ORDER BY 1, 2""", "time_series"),
        width=14, points=True, signed=True, source=source)
    for currency in CURRENCIES:
        net_per_day.override_by_name(currency, unit_override(f"currency{currency}"))

    revenue_table = table(
        "Revenue by currency", "Captured, refunded and net in the time range, in major units; "
        "the share of the captured money refunded; net in minor units (paise, cents, yen), "
        "the exact figure to reconcile with the payment ledger.", "locale",
        query(f"""
            SELECT
              currency AS "currency",
              {major("sum(captured)")} AS "captured",
              {major("sum(refunded)")} AS "refunded",
              {major("sum(captured - refunded)")} AS "net",
              sum(refunded)::numeric / NULLIF(sum(captured), 0) AS "refunded share",
              sum(captured - refunded)::bigint AS "net (minor units)"
            FROM {SCHEMA}.revenue_daily
            WHERE $__timeFilter(day) AND {in_currencies()}
            GROUP BY currency
            ORDER BY currency"""),
        width=10, source=source)
    for column in ("captured", "refunded", "net"):
        revenue_table.override_by_name(column, unit_override("locale", 2))
    revenue_table.override_by_name("refunded share", unit_override("percentunit", 1))
    revenue_table.override_by_name("net (minor units)", unit_override("locale", 0))

    phases = stat(
        "Orders by final phase", "Orders that reached a terminal phase in the time range "
        "(finished_at), and orders that stopped in CompensationFailed in it (a compensation "
        "ran out of retries: repair and resume them, docs/saga.md).", "short",
        query(f"""
            SELECT
              count(*) FILTER (WHERE phase = 'Completed') AS "Completed",
              count(*) FILTER (WHERE phase = 'Failed') AS "Failed",
              count(*) FILTER (WHERE phase = 'Cancelled') AS "Cancelled",
              count(*) FILTER (WHERE phase = 'CompensationFailed') AS "CompensationFailed"
            FROM {SCHEMA}.orders
            WHERE coalesce(finished_at, updated_at) BETWEEN $__timeFrom() AND $__timeTo()
              AND phase IN ({finals}) AND {in_currencies()}"""),
        width=12, graph=False, source=source)
    for phase in FINAL_PHASES:
        phases.override_by_name(phase, color_override(PHASE_COLORS[phase]))

    conversion = stat(
        "Conversion rate", "Completed orders over the orders finished (Completed, Failed or "
        "Cancelled) in the time range; red below 50%.", "percentunit",
        query(f"""
            SELECT
              count(*) FILTER (WHERE phase = 'Completed')::float8
                / NULLIF(count(*), 0) AS "conversion"
            FROM {SCHEMA}.orders
            WHERE $__timeFilter(finished_at) AND {in_currencies()}"""),
        graph=False, source=source)
    conversion.thresholds(board.ThresholdsConfig().mode(schema.ThresholdsMode.ABSOLUTE).steps(
        [schema.Threshold(color="red", value=None), schema.Threshold(color="green", value=0.5)]))

    started = stat(
        "Orders started", "Sagas started in the time range (the order's first event).",
        "short",
        query(f"""
            SELECT count(*) AS "started"
            FROM {SCHEMA}.orders
            WHERE $__timeFilter(started_at) AND {in_currencies()}"""),
        graph=False, source=source)

    in_progress = stat(
        "In progress now", "Orders not in a final phase now, whenever they started (the "
        "time range does not apply).", "short",
        query(f"""
            SELECT count(*) AS "in progress"
            FROM {SCHEMA}.orders
            WHERE phase NOT IN ({finals}) AND {in_currencies()}"""),
        graph=False, source=source)

    started_per_hour = timeseries(
        "Orders started per hour", "Orders whose saga started in each hour, by the phase "
        "they are in now (a final phase, or In progress).", "short",
        query(f"""
            SELECT
              $__timeGroupAlias(started_at, '1h'),
              CASE WHEN phase IN ({finals}) THEN phase ELSE 'In progress' END AS metric,
              count(*) AS orders
            FROM {SCHEMA}.orders
            WHERE $__timeFilter(started_at) AND {in_currencies()}
            GROUP BY 1, 2
            ORDER BY 1, 2""", "time_series"),
        width=24, stack=True, bars=True, source=source)
    for phase, color in PHASE_COLORS.items():
        started_per_hour.override_by_name(phase, color_override(color))

    failure_reasons = table(
        "Top failure reasons", "The 10 most frequent reasons of Warning events in the time "
        "range (refusals, retries after no reply, compensations started or given up), by "
        "the orders they hit; the step, when the event names one; the latest message.",
        "short",
        query(f"""
            SELECT
              e.reason AS "reason",
              coalesce(e.step, '') AS "step",
              count(DISTINCT e.uid) AS "orders",
              count(*) AS "events",
              max(e.occurred_at) AS "last seen",
              (array_agg(e.message ORDER BY e.occurred_at DESC))[1] AS "latest message"
            FROM {SCHEMA}.order_events AS e
            JOIN {SCHEMA}.orders AS o ON o.uid = e.uid
            WHERE $__timeFilter(e.occurred_at)
              AND (e.severity = 'Warning' OR e.reason IN ({sql_list(REJECTIONS)}))
              AND {in_currencies("o.currency")}
            GROUP BY e.reason, e.step
            ORDER BY "orders" DESC, "events" DESC, "reason"
            LIMIT 10"""),
        width=14, source=source)

    step_durations = table(
        "Step duration by step", "Time from a step's first command to its reply (success or "
        "refusal; compensations excluded) in the time range: median, 95th percentile "
        "(percentile_cont) and mean, with the replies counted and the refusals among them. "
        "All currencies (step_outcomes has no order).", "s",
        query(f"""
            SELECT
              step AS "step",
              count(*) AS "replies",
              count(*) FILTER (WHERE reason IN ({sql_list(REJECTIONS)})) AS "refused",
              percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds) AS "p50",
              percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds) AS "p95",
              avg(duration_seconds) AS "mean"
            FROM {SCHEMA}.step_outcomes
            WHERE $__timeFilter(occurred_at) AND duration_seconds IS NOT NULL
              AND reason IN ({sql_list(FORWARD_OUTCOMES)})
            GROUP BY step
            ORDER BY step"""),
        width=10, source=source)
    for column in ("replies", "refused"):
        step_durations.override_by_name(column, unit_override("short", 0))

    panels: list[Item] = [
        row("Revenue"),
        net_per_day,
        revenue_table,
        row("Orders"),
        phases,
        conversion,
        started,
        in_progress,
        started_per_hour,
        row("Failures and steps"),
        failure_reasons,
        step_durations,
    ]
    return dashboard("vyapaar-business", "Vyapaar Nexus / Business",
                     "Revenue per day and currency, orders by outcome, conversion, failure "
                     "reasons and step durations, from the analytics read model in "
                     "PostgreSQL (exact money, every order; docs/observability.md).", panels,
                     variables=analytics_variables(), since="now-7d", refresh="1m",
                     timezone="utc")


DASHBOARDS = {
    "saga-overview.json": saga_overview,
    "services.json": services,
    "messaging.json": messaging,
    "business.json": business,
}



def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard (the SDK's encoder, keys sorted)."""
    return {name: json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a file would change (or is extra)")
    parser.add_argument("--dashboards", type=Path, default=DASHBOARDS_DIR,
                        help="directory of the dashboard JSON (default: %(default)s)")
    args = parser.parse_args(argv)
    wanted = render()
    directory: Path = args.dashboards
    if args.check:
        stale = [name for name, text in wanted.items()
                 if not (directory / name).is_file() or (directory / name).read_text() != text]
        extra = sorted(p.name for p in directory.glob("*.json") if p.name not in wanted)
        for name in stale:
            print(f"{directory / name}: out of date; run python grafana/generate.py",
                  file=sys.stderr)
        for name in extra:
            print(f"{directory / name}: not generated by grafana/generate.py", file=sys.stderr)
        return 1 if stale or extra else 0
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        path = directory / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
