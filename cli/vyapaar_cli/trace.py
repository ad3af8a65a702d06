"""`vyapaar order trace NAME`: an order's trace -- the spans the gateway, the operator and
the services recorded for it -- as a tree, from the trace backend's query API.

The backend is Jaeger v2 (``GET /api/v3/traces/{trace id}``, OTLP JSON): ``--traces-url``,
else ``$VYAPAAR_TRACES_URL``, else the development stack's when that is installed
(:mod:`vyapaar_cli.plugins`), else ``http://127.0.0.1:26686``. The order is read through
the gateway like every ``vyapaar order`` action; its trace id is the one the gateway shows
(``traceId``: the trace its creator started), else the order's UID without dashes (the trace
the operator starts for an order created without one).

Each line is one span: its start as an offset from the trace's first span, its duration, the
service that recorded it and its name, indented under its parent, then what is worth seeing
at a glance (the saga step, the attempt, an error). A span whose parent is not in the trace
(not exported, or not yet) is listed under a ``(missing parent ...)`` line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.client
import json
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from vyapaar_messaging.envelope import TRACEPARENT_ANNOTATION, TRACEPARENT_RE

from vyapaar_cli.errors import CliError

__all__ = [
    "DEFAULT_TRACES_URL",
    "TRACES_URL_ENV",
    "Span",
    "TraceClient",
    "fetch",
    "render",
    "spans_of",
    "to_json",
    "trace_id_of",
    "tree",
]

TRACES_URL_ENV: Final = "VYAPAAR_TRACES_URL"
#: the local stack's Jaeger query port, used when neither a flag nor the environment names one
DEFAULT_TRACES_URL: Final = "http://127.0.0.1:26686"
REQUEST_TIMEOUT: Final = 10.0
#: with ``--wait``: how often to ask again, and how long without a new span means "complete"
POLL_INTERVAL: Final = 0.5
SETTLE: Final = 2.0
TERMINAL: Final = frozenset({"Completed", "Failed", "Cancelled", "CompensationFailed"})

_TRACE_ID: Final = re.compile(r"^[0-9a-f]{32}$")
_KINDS: Final = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
                 5: "consumer"}
#: attributes shown beside a span's name, as ``label=value`` (in this order)
_NOTABLE: Final = (("vyapaar.step", "step"), ("vyapaar.attempt", "attempt"),
                   ("vyapaar.outcome", "outcome"), ("vyapaar.event.reason", "reason"),
                   ("messaging.rabbitmq.redelivered", "redelivered"),
                   ("http.response.status_code", "status"), ("http.status_code", "status"),
                   ("error.type", "error.type"))


# -- which trace ---------------------------------------------------------------------------------


def trace_id_of(order: Mapping[str, Any]) -> str:
    """The order's trace id: the gateway's ``traceId`` (or the traceparent annotation of a
    raw Order), else its UID without dashes."""
    shown = str(order.get("traceId") or "").strip().lower()
    if _TRACE_ID.match(shown):
        return shown
    annotations = (order.get("metadata") or {}).get("annotations") or {}
    match = TRACEPARENT_RE.match(str(annotations.get(TRACEPARENT_ANNOTATION) or "").strip())
    if match:
        return match.group(1)
    uid = order.get("uid") or (order.get("metadata") or {}).get("uid")
    if not uid:
        raise CliError(f"the gateway showed order {order.get('name')!r} without a uid or a "
                       "traceId: is it the gateway?")
    return str(uid).replace("-", "").lower()


# -- the query API -------------------------------------------------------------------------------


class TraceClient:
    """The trace backend's query API (Jaeger v2's ``/api/v3``)."""

    def __init__(self, url: str, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def get(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as OTLP JSON (``{"resourceSpans": [...]}``); None if it has no span (yet)."""
        path = f"/api/v3/traces/{urllib.parse.quote(trace_id, safe='')}"
        request = urllib.request.Request(f"{self.url}{path}", headers={
            "Accept": "application/json", "User-Agent": "vyapaar-cli"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                body = b""
                with contextlib.suppress(OSError, http.client.HTTPException):
                    body = exc.read()
            if exc.code == 404 and _is_jaeger_error(body):
                return None  # {"error": {"httpCode": 404, "message": "No traces found"}}
            text = " ".join(body.decode("utf-8", "replace").split())[:200]
            hint = " (is it Jaeger's query API?)" if exc.code == 404 else ""
            raise CliError(f"the trace backend at {self.url} answered {path} with {exc.code} "
                           f"{exc.reason}{hint}" + (f": {text}" if text else "")) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach the trace backend at {self.url}: {_reason(exc.reason)}"
                           f" (set --traces-url or ${TRACES_URL_ENV})") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise CliError(f"the trace backend at {self.url} did not answer: "
                           f"{_reason(exc)}") from None
        try:
            document = json.loads(raw)
        except ValueError:
            raise CliError(f"{self.url} answered {path} with something that is not JSON: is it "
                           f"Jaeger's query API? ({raw[:80]!r})") from None
        if not isinstance(document, dict):
            raise CliError(f"{self.url} answered {path} with JSON that is not a trace")
        result = document.get("result", document)
        return result if isinstance(result, dict) else None


def _is_jaeger_error(body: bytes) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and isinstance(document.get("error"), dict)


def _reason(exc: object) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return str(exc)


def fetch(client: TraceClient, trace_id: str, *, wait: float = 0.0,
          sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> dict[str, Any] | None:
    """The trace; with ``wait`` > 0, waits up to that many seconds for it to appear and then
    for it to stop growing (no new span for :data:`SETTLE` seconds). None: no span yet."""
    deadline = clock() + wait
    document: dict[str, Any] | None = None
    count, since = -1, 0.0
    while True:
        current = client.get(trace_id)
        now = clock()
        if current is not None:
            document = current
            spans = sum(1 for _ in _raw_spans(current))
            if spans != count:
                count, since = spans, now
            elif now - since >= SETTLE:
                return document
        if now + POLL_INTERVAL > deadline:
            return document
        sleep(POLL_INTERVAL)


# -- OTLP JSON -----------------------------------------------------------------------------------


@dataclass
class Span:
    """One span as the tree shows it (OTLP JSON, normalised)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    kind: str
    start: int
    """Unix nanoseconds."""
    end: int
    attributes: dict[str, Any] = field(default_factory=dict)
    error: bool = False
    status_message: str = ""
    children: list[Span] = field(default_factory=list)

    @property
    def duration(self) -> int:
        return max(0, self.end - self.start)


def _raw_spans(document: Mapping[str, Any]) -> Iterable[tuple[Mapping[str, Any],
                                                              Mapping[str, Any]]]:
    """(resource, span) of every span in an OTLP JSON document."""
    for resource_spans in document.get("resourceSpans") or ():
        resource = resource_spans.get("resource") or {}
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                yield resource, span


def _value(any_value: Mapping[str, Any]) -> Any:
    """An OTLP ``AnyValue`` as plain JSON (ints come as strings in OTLP JSON)."""
    for key, value in any_value.items():
        if key == "intValue":
            try:
                return int(value)
            except (TypeError, ValueError):
                return value
        if key == "doubleValue":
            return float(value)
        if key == "arrayValue":
            return [_value(v) for v in (value or {}).get("values") or ()]
        if key == "kvlistValue":
            return _attributes((value or {}).get("values") or ())
        if key in ("stringValue", "boolValue", "bytesValue"):
            return value
    return None


def _attributes(pairs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {str(p.get("key")): _value(p.get("value") or {}) for p in pairs}


def _hex_id(value: Any, size: int) -> str:
    """A span or trace id as hex (OTLP JSON writes hex; protobuf's JSON writes base64)."""
    text = str(value or "")
    if re.fullmatch(rf"[0-9a-fA-F]{{{size * 2}}}", text):
        return text.lower()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text
    return raw.hex() if len(raw) == size else text


def _nanos(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _kind(value: Any) -> str:
    if isinstance(value, int):
        return _KINDS.get(value, str(value))
    return str(value or "").removeprefix("SPAN_KIND_").lower() or "unspecified"


def spans_of(document: Mapping[str, Any]) -> list[Span]:
    """Every span of an OTLP JSON trace, with its service (``service.name``)."""
    spans = []
    for resource, raw in _raw_spans(document):
        service = _attributes(resource.get("attributes") or ()).get("service.name") or "?"
        status = raw.get("status") or {}
        code = status.get("code")
        parent = _hex_id(raw.get("parentSpanId"), 8) or None
        spans.append(Span(
            trace_id=_hex_id(raw.get("traceId"), 16), span_id=_hex_id(raw.get("spanId"), 8),
            parent_id=None if parent in (None, "0" * 16) else parent,
            name=str(raw.get("name") or "?"), service=str(service), kind=_kind(raw.get("kind")),
            start=_nanos(raw.get("startTimeUnixNano")), end=_nanos(raw.get("endTimeUnixNano")),
            attributes=_attributes(raw.get("attributes") or ()),
            error=code in (2, "STATUS_CODE_ERROR"), status_message=str(status.get("message") or ""),
        ))
    return spans


@dataclass
class Tree:
    """The spans arranged by parent: the roots, and the spans whose parent is missing (by
    that parent's id), each list by start time."""

    roots: list[Span]
    orphans: dict[str, list[Span]]
    spans: list[Span]

    @property
    def start(self) -> int:
        return min((s.start for s in self.spans), default=0)

    @property
    def end(self) -> int:
        return max((s.end for s in self.spans), default=0)

    @property
    def services(self) -> list[str]:
        return sorted({s.service for s in self.spans})

    def walk(self) -> Iterable[tuple[int, Span | str]]:
        """(depth, span) in display order; a missing parent is its id (a str)."""

        def below(span: Span, depth: int) -> Iterable[tuple[int, Span | str]]:
            yield depth, span
            for child in span.children:
                yield from below(child, depth + 1)

        for root in self.roots:
            yield from below(root, 0)
        for parent, spans in self.orphans.items():
            yield 0, parent
            for span in spans:
                yield from below(span, 1)


def tree(spans: Sequence[Span]) -> Tree:
    by_id = {s.span_id: s for s in spans}
    roots: list[Span] = []
    orphans: dict[str, list[Span]] = {}
    for span in spans:
        span.children = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if span.parent_id is None:
            roots.append(span)
        elif span.parent_id in by_id and by_id[span.parent_id] is not span:
            by_id[span.parent_id].children.append(span)
        else:
            orphans.setdefault(span.parent_id, []).append(span)
    ordered = dict(sorted(orphans.items(), key=lambda item: item[1][0].start))
    return Tree(roots, ordered, list(spans))


# -- output --------------------------------------------------------------------------------------


def _time(nanos: int) -> str:
    ms = nanos / 1e6
    if ms < 10:
        return f"{ms:.2f}ms"
    if ms < 1000:
        return f"{ms:.1f}ms"
    return f"{ms / 1000:.3f}s"


def notes(span: Span) -> str:
    """What is worth seeing beside the span's name: step, attempt, outcome, the phase a
    saga decision moved the order to, an error."""
    shown: list[str] = []
    labels: set[str] = set()
    for key, label in _NOTABLE:
        value = span.attributes.get(key)
        if value is None or value == "" or label in labels:
            continue
        if label == "redelivered" and value is not True:
            continue
        if label == "status" and not (isinstance(value, int) and value >= 400):
            continue
        if label == "outcome" and value == "ok":
            continue
        labels.add(label)
        shown.append(label if value is True else f"{label}={value}")
    before, after = span.attributes.get("vyapaar.phase.before"), span.attributes.get(
        "vyapaar.phase")
    if before and after:
        shown.append(f"{before}->{after}")  # a saga decision that moved the order on
    if span.attributes.get("vyapaar.changed") is False:
        shown.append("unchanged")
    if span.error:
        shown.append(f"ERROR: {span.status_message}" if span.status_message else "ERROR")
    return " ".join(shown)


def render(trace: Tree, trace_id: str, *, title: str = "") -> str:
    """The tree as text: a heading, then one line per span."""
    start = trace.start
    heading = (f"trace {trace_id}" + (f"  {title}" if title else "")
               + f"  {len(trace.spans)} span{'s' if len(trace.spans) != 1 else ''}"
               + f"  {len(trace.services)} service{'s' if len(trace.services) != 1 else ''}"
               + f"  {_time(trace.end - start)}\n")
    rows: list[tuple[str, str, str, str, str]] = []
    for depth, item in trace.walk():
        indent = "  " * depth
        if isinstance(item, str):
            rows.append(("", "", "", f"{indent}(missing parent {item})", ""))
            continue
        rows.append((f"+{_time(item.start - start)}", _time(item.duration), item.service,
                     f"{indent}{item.name}", notes(item)))
    headers = ("OFFSET", "DURATION", "SERVICE", "SPAN", "")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(4)]
    lines = []
    for row in [headers, *rows]:
        offset, duration, service, name, extra = row
        line = (f"{offset:>{widths[0]}}  {duration:>{widths[1]}}  {service:<{widths[2]}}  "
                f"{name:<{widths[3]}}  {extra}")
        lines.append(line.rstrip() + "\n")
    return heading + "".join(lines)


def to_json(trace: Tree, trace_id: str) -> dict[str, Any]:
    """The tree as JSON: the spans in display order, each with its depth and its offset."""
    start = trace.start
    spans = []
    for depth, item in trace.walk():
        if isinstance(item, str):
            continue
        spans.append({
            "spanId": item.span_id, "parentSpanId": item.parent_id, "depth": depth,
            "service": item.service, "name": item.name, "kind": item.kind,
            "offsetMs": round((item.start - start) / 1e6, 3),
            "durationMs": round(item.duration / 1e6, 3),
            "startTimeUnixNano": str(item.start), "endTimeUnixNano": str(item.end),
            "attributes": item.attributes,
            "status": {"error": item.error, "message": item.status_message},
        })
    return {"traceId": trace_id, "services": trace.services,
            "durationMs": round((trace.end - start) / 1e6, 3),
            "missingParents": list(trace.orphans), "spans": spans}


def show(order: Mapping[str, Any], *, url: str, output: str, wait: float, out: TextIO,
         err: TextIO, sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> int:
    """Print the trace of ``order`` (as the gateway showed it); CliError if it has none."""
    trace_id = trace_id_of(order)
    name = str(order.get("name") or "?")
    document = fetch(TraceClient(url), trace_id, wait=wait, sleep=sleep, clock=clock)
    spans = spans_of(document) if document is not None else []
    if not spans:
        hint = ("" if wait else "; spans reach the backend a moment after they end: "
                "--wait SECONDS waits for them")
        raise CliError(f"no trace {trace_id} for order {name} at {url}{hint} (is tracing on? "
                       "the processes export spans only with OTEL_EXPORTER_OTLP_ENDPOINT set)")
    if output == "otlp":
        out.write(json.dumps(document, indent=2) + "\n")
        return 0
    arranged = tree(spans)
    if output == "json":
        out.write(json.dumps(to_json(arranged, trace_id), indent=2) + "\n")
        return 0
    namespace = order.get("namespace")
    phase = (order.get("status") or {}).get("phase") or "Pending"
    out.write(render(arranged, trace_id,
                     title=f"order {namespace}/{name}" if namespace else f"order {name}"))
    if phase not in TERMINAL:
        err.write(f"note: {name} was still running when read (phase {phase}): its trace may "
                  "grow\n")
    return 0
