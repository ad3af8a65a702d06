"""`vyapaar order`: place, inspect, follow and cancel orders through the gateway's public API.

    vyapaar order create -f order.yaml --watch    # place it and follow its saga to the end
    vyapaar order get NAME                        # phase, reason, total and the steps
    vyapaar order list --phase Failed --all       # the tenant's orders, every page
    vyapaar order watch NAME                      # each transition as it happens
    vyapaar order cancel NAME                     # ask the saga to roll back
    vyapaar order trace NAME                      # its spans in every service, as a tree

The gateway: ``--gateway URL``, else ``$VYAPAAR_GATEWAY_URL``; the tenant's bearer token:
``--token TOKEN``, else ``$VYAPAAR_GATEWAY_TOKEN`` (prefer the variable: a flag shows in
``ps``). With the development install both default to the local stack's gateway and its
demo tenant (:mod:`vyapaar_cli.plugins`). Nothing here needs Kubernetes credentials: a
token reaches only its tenant's namespace.

``create`` sends an ``Idempotency-Key`` every time -- a fresh UUID unless
``--idempotency-key`` names one -- and prints it: if the answer is lost (a timeout, a
dropped connection) the order may exist or not, and running the command again with that
key returns the order it created instead of placing a second one.

``trace`` reads the order's trace from the trace backend (``--traces-url``, else
``$VYAPAAR_TRACES_URL``, else ``http://127.0.0.1:26686``: Jaeger's query API): see
:mod:`vyapaar_cli.trace`.

``watch`` reads the order's server-sent events; when the connection drops it reconnects
with ``Last-Event-ID`` (so no transition is printed twice or skipped) for up to
``--reconnect-timeout`` seconds. Its exit code is the order's outcome (see EXIT CODES).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from vyapaar_cli import trace as trace_cli
from vyapaar_cli.errors import CliError
from vyapaar_cli.gateway import (
    GATEWAY_TOKEN_ENV,
    GATEWAY_URL_ENV,
    EventParser,
    GatewayClient,
    GatewayProblem,
    GatewayUnreachable,
    Outcome,
    follow,
)
from vyapaar_cli.settings import Settings, require
from vyapaar_cli.trace import DEFAULT_TRACES_URL, TRACES_URL_ENV

__all__ = ["EXIT_CODES", "EventParser", "add_arguments", "exit_code", "load_spec", "run"]


PHASES: Final = ("Pending", "Reserving", "CheckingFraud", "Paying", "Shipping", "Completing",
                 "Completed",
                 "Compensating", "Failed", "Cancelled", "CompensationFailed")

EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
#: how `watch` (and `create --watch`) end: the order's outcome
EXIT_CODES: Final = {"Completed": 0, "Failed": 3, "Cancelled": 4, "CompensationFailed": 5}
EXIT_DELETED: Final = 6


def exit_code(outcome: Outcome) -> int:
    """The order's outcome as `watch`'s exit code."""
    if outcome.event == "deleted":
        return EXIT_DELETED
    return EXIT_CODES.get(outcome.phase or "", EXIT_ERROR)

#: the longest Retry-After that `list --all` waits for by itself, and how often
MAX_RATE_LIMIT_WAIT: Final = 10
RATE_LIMIT_RETRIES: Final = 5

STEPS: Final = ("reserve", "fraud-check", "pay", "ship", "commit", "notify", "notify-failed",
                "notify-cancelled")
_STEP_IDS: Final = (("reservationId", "reservation"), ("chargeId", "charge"),
                    ("refundId", "refund"), ("trackingId", "tracking"),
                    ("notificationId", "notification"))
#: ISO 4217 currencies whose minor unit is not the hundredth
_ZERO_DECIMAL: Final = frozenset({"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG",
                                   "RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"})
_THREE_DECIMAL: Final = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})


# -- reading an order file ---------------------------------------------------------------------


def load_spec(path: str, stdin: TextIO | None = None) -> tuple[dict[str, Any], str | None]:
    """The Order spec in ``path`` (``-``: standard input): a manifest's ``.spec`` or a bare
    spec, in YAML or JSON; and the manifest's ``metadata.name``, if any."""
    where = "standard input" if path == "-" else path
    try:
        text = (stdin or sys.stdin).read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {where}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"{where} is not text (UTF-8)", EXIT_USAGE) from None
    try:
        documents = [json.loads(text)]
    except ValueError:
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or exc
            raise CliError(f"{where} is neither JSON nor YAML{at}: {problem}",
                           EXIT_USAGE) from None
    if len(documents) != 1:
        raise CliError(f"{where} holds {len(documents)} documents: give one order per file",
                       EXIT_USAGE)
    document = documents[0]
    if not isinstance(document, dict):
        raise CliError(f"{where} is not an Order manifest nor an Order spec (a mapping)",
                       EXIT_USAGE)
    if not any(k in document for k in ("apiVersion", "kind", "spec")):
        return document, None  # a bare spec
    if document.get("kind", "Order") != "Order":
        raise CliError(f"{where} is a {document.get('kind')}, not an Order", EXIT_USAGE)
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise CliError(f"{where} is an Order manifest without a spec", EXIT_USAGE)
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return spec, str(name) if name else None


# -- output ----------------------------------------------------------------------------------


def money(minor: Any, currency: str) -> str:
    """An amount in minor units as the currency writes it: 349900 INR -> ``3499.00 INR``."""
    if not isinstance(minor, int):
        return "-"
    digits = 0 if currency in _ZERO_DECIMAL else 3 if currency in _THREE_DECIMAL else 2
    if digits == 0:
        return f"{minor} {currency}".strip()
    whole, fraction = divmod(abs(minor), 10 ** digits)
    return f"{'-' if minor < 0 else ''}{whole}.{fraction:0{digits}d} {currency}".strip()


def _total(order: Mapping[str, Any]) -> Any:
    """The status' total, else (before the saga starts) the sum of the items."""
    status, spec = order.get("status") or {}, order.get("spec") or {}
    if isinstance(status.get("total"), int):
        return status["total"]
    try:
        return sum(int(i["quantity"]) * int(i["unitPrice"]) for i in spec.get("items") or ())
    except (KeyError, TypeError, ValueError):
        return None


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def age(created: Any, now: datetime | None = None) -> str:
    """kubectl-like: ``45s``, ``12m``, ``5h``, ``3d``."""
    start = _parse_time(created)
    if start is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - start).total_seconds()))
    for unit, size, up_to in (("s", 1, 120), ("m", 60, 120), ("h", 3600, 48)):
        if seconds < size * up_to:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"


def _duration(started: Any, finished: Any) -> str:
    begin, end = _parse_time(started), _parse_time(finished)
    if begin is None or end is None:
        return "-"
    seconds = (end - begin).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.1f}s"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart."""
    rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in rows)


ORDER_COLUMNS: Final = ("NAME", "PHASE", "REASON", "TOTAL", "AGE")


def order_row(order: Mapping[str, Any], now: datetime | None = None) -> list[str]:
    status, spec = order.get("status") or {}, order.get("spec") or {}
    currency = str(status.get("currency") or spec.get("currency") or "")
    return [str(order.get("name")), str(status.get("phase") or "Pending"),
            str(status.get("reason") or "-"), money(_total(order), currency),
            age(order.get("createdAt"), now)]


def describe(order: Mapping[str, Any], now: datetime | None = None) -> str:
    """`get`'s table: the order's row, its message, and one row per step."""
    status = order.get("status") or {}
    text = table(ORDER_COLUMNS, [order_row(order, now)])
    if status.get("message"):
        text += f"MESSAGE: {status['message']}\n"
    steps = status.get("steps") or {}
    names = [s for s in STEPS if s in steps] + sorted(s for s in steps if s not in STEPS)
    if names:
        rows = []
        for name in names:
            step = steps[name] or {}
            attempts = str(step.get("attempts", "-"))
            if step.get("compensationAttempts"):
                attempts += f" (undo {step['compensationAttempts']})"
            detail = step.get("lastError") or ", ".join(
                f"{label} {step[key]}" for key, label in _STEP_IDS if step.get(key))
            rows.append([name, str(step.get("state") or "-"), attempts,
                         _duration(step.get("startedAt"), step.get("finishedAt")),
                         str(detail or "")])
        text += "\n" + table(("STEP", "STATE", "ATTEMPTS", "DURATION", "DETAIL"), rows)
    return text


def transition_line(transition: Mapping[str, Any]) -> str:
    """``seq  time  phase  reason  message`` of one transition."""
    line = (f"{transition.get('seq', '?')!s:>3}  {transition.get('time', '')!s:<24}  "
            f"{transition.get('phase', '')!s:<18}  {transition.get('reason', '')!s:<21}")
    message = transition.get("message")
    return f"{line}  {message}" if message else line.rstrip()


def _dump(data: Any, output: str) -> str:
    if output == "yaml":
        return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# -- the command line --------------------------------------------------------------------------

EXAMPLES = f"""examples:
  vyapaar order create -f manifests/samples/order-completed.yaml --watch
  vyapaar order create -f - -o name < spec.json       # a bare spec; print only the name
  vyapaar order create -f order.yaml --idempotency-key 6f1c...   # retry: no second order
  vyapaar order get order-6m257 -o yaml
  vyapaar order list --phase Failed --all
  vyapaar order watch order-6m257 && echo delivered
  vyapaar order cancel order-6m257
  vyapaar order trace order-6m257 --wait 10

settings: --gateway or ${GATEWAY_URL_ENV}; --token or ${GATEWAY_TOKEN_ENV} (the tenant's
bearer token); trace: --traces-url or ${TRACES_URL_ENV} (Jaeger's query API).

exit codes: 0 done (watch: the order Completed); 1 the gateway refused the request (the
problem's detail is printed) or could not be reached, or cancel was refused; 2 a bad flag,
setting or order file; watch and create --watch: 3 the order Failed, 4 Cancelled,
5 CompensationFailed (a person must repair it), 6 deleted before it finished; 130 Ctrl-C.
"""


def add_arguments(subparsers: Any, settings: Settings | None = None) -> argparse.ArgumentParser:
    """Add the ``order`` command to an argparse sub-parsers object."""
    settings = settings or Settings()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "order",
        help="place, inspect, follow and cancel orders through the gateway",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    gateway_help = f"the gateway's URL (default: ${GATEWAY_URL_ENV})"
    token_help = (f"the tenant's bearer token (default: ${GATEWAY_TOKEN_ENV}); "
                  "--token=TOKEN if it starts with '-'")
    # on `order` (with the defaults) and on each action (without), so either place works
    parser.add_argument("--gateway", metavar="URL", default=settings.get(GATEWAY_URL_ENV),
                        help=gateway_help)
    parser.add_argument("--token", metavar="TOKEN", default=settings.get(GATEWAY_TOKEN_ENV),
                        help=token_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gateway", metavar="URL", default=argparse.SUPPRESS, help=gateway_help)
    common.add_argument("--token", metavar="TOKEN", default=argparse.SUPPRESS, help=token_help)
    following = argparse.ArgumentParser(add_help=False)
    following.add_argument("--reconnect-timeout", type=float, default=60.0, metavar="SECONDS",
                           help="keep reconnecting a dropped event stream this long "
                                "(default: %(default)g)")
    actions = parser.add_subparsers(dest="order_action", required=True, metavar="ACTION")

    def action(name: str, help_: str, epilog: str, *extra: argparse.ArgumentParser
               ) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=help_, description=help_[:1].upper() + help_[1:],
                                  epilog=epilog, parents=[common, *extra],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)

    create = action("create", "place an order from a manifest or a spec", (
        "examples:\n"
        "  vyapaar order create -f manifests/samples/order-completed.yaml\n"
        "  vyapaar order create -f order.json --idempotency-key 6f1c... --watch\n\n"
        "The file is an Order manifest (its .spec is sent; the gateway names the order) or a\n"
        "bare spec, YAML or JSON. Without --idempotency-key a fresh UUID is the key; it is\n"
        "printed, so that a retry after a lost answer can reuse it.\n"
        "exit codes: 0 created; 1 refused or no answer; 2 a bad file; with --watch, as watch."),
        following)
    create.add_argument("-f", "--filename", required=True, metavar="FILE",
                        help="the order: a manifest or a bare spec, YAML or JSON; - for stdin")
    create.add_argument("--idempotency-key", metavar="KEY",
                        help="the same key and file return the same order (default: a new UUID)")
    create.add_argument("--watch", action="store_true",
                        help="then follow the order to its end, as `vyapaar order watch`")
    create.add_argument("-o", "--output", choices=("text", "name", "json", "yaml"),
                        default="text", help="what to print (default: %(default)s)")

    get = action("get", "show one order: phase, reason, total and its steps",
                 "examples:\n  vyapaar order get order-6m257\n"
                 "  vyapaar order get order-6m257 -o json | jq .status.steps")
    get.add_argument("name", metavar="NAME")
    get.add_argument("-o", "--output", choices=("table", "json", "yaml", "name"),
                     default="table", help="format (default: %(default)s)")

    ls = action("list", "the tenant's orders, as kubectl get lists them",
                "examples:\n  vyapaar order list\n  vyapaar order list --phase Failed --all\n"
                "  vyapaar order list --limit 10 --continue TOKEN")
    ls.add_argument("--phase", choices=PHASES, help="only the orders in this phase")
    ls.add_argument("--limit", type=int, default=50, metavar="N",
                    help="orders per page, 1 to 500 (default: %(default)s)")
    ls.add_argument("--all", action="store_true", help="every page (follow the continue tokens)")
    ls.add_argument("--continue", dest="continue_token", metavar="TOKEN",
                    help="the page after an earlier one (its continue token)")
    ls.add_argument("-o", "--output", choices=("table", "json", "yaml", "name"),
                    default="table", help="format (default: %(default)s)")

    watch = action("watch", "print each transition of an order until it ends", (
        "examples:\n  vyapaar order watch order-6m257\n"
        "  vyapaar order watch order-6m257 -o json     # one JSON object per transition\n\n"
        "Prints the order's history so far, then each transition as it happens, as\n"
        "`seq  time  phase  reason  message`; a dropped stream is resumed after the last\n"
        "transition shown (Last-Event-ID), so none is repeated or skipped.\n"
        "exit codes: 0 Completed; 3 Failed; 4 Cancelled; 5 CompensationFailed; 6 deleted;\n"
        "1 the gateway refused or stayed unreachable; 130 Ctrl-C."), following)
    watch.add_argument("name", metavar="NAME")
    watch.add_argument("-o", "--output", choices=("text", "json"), default="text",
                       help="format of each transition (default: %(default)s)")

    cancel = action("cancel", "ask the saga to cancel an order (before the shipment exists)",
                    "example: vyapaar order cancel order-6m257\n"
                    "exit codes: 0 cancellation requested; 1 refused (past the pivot, already\n"
                    "finished) or not found: the reason is printed.")
    cancel.add_argument("name", metavar="NAME")

    trace = action("trace", "show an order's trace: its spans in every service, as a tree", (
        "examples:\n  vyapaar order trace order-6m257\n"
        "  vyapaar order trace order-6m257 --wait 10     # a saga that just ended\n"
        "  vyapaar order trace order-6m257 -o json | jq '.spans[] | select(.status.error)'\n\n"
        "One line per span: its offset from the trace's start, its duration, the service\n"
        "and the span's name indented under its parent, then the saga step, the attempt and\n"
        "any error. The trace id is the order's traceId (the trace its creator started),\n"
        "else its UID without dashes. -o json: the spans in that order, with their\n"
        "attributes; -o otlp: the backend's answer as it came (OTLP JSON).\n"
        "exit codes: 0 shown; 1 no such order, no such trace (yet), or the gateway or the\n"
        "trace backend could not be reached."))
    trace.add_argument("name", metavar="NAME")
    trace.add_argument("-o", "--output", choices=("tree", "json", "otlp"), default="tree",
                       help="format (default: %(default)s)")
    trace.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                       help="wait up to SECONDS for the trace to appear and stop growing "
                            "(default: %(default)g: ask once)")
    trace.add_argument("--traces-url", metavar="URL",
                       default=settings.get(TRACES_URL_ENV, DEFAULT_TRACES_URL),
                       help=f"the trace backend's query API (default: ${TRACES_URL_ENV}, "
                            "else %(default)s)")
    return parser


def client_of(args: argparse.Namespace) -> GatewayClient:
    url = require(args.gateway, what="no gateway to talk to", flag="--gateway",
                  variable=GATEWAY_URL_ENV)
    token = require(args.token, what="no gateway token", flag="--token",
                    variable=GATEWAY_TOKEN_ENV)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CliError(f"the gateway URL must be http:// or https://, not {url!r}", EXIT_USAGE)
    return GatewayClient(url, token)


def run(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Run a parsed ``vyapaar order ...`` command; returns the exit code."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    client = client_of(args)
    action = args.order_action
    if action == "create":
        return _create(client, args, stdout, stderr, sleep)
    if action == "get":
        order = client.get(args.name)
        if args.output == "table":
            stdout.write(describe(order))
        elif args.output == "name":
            stdout.write(f"{order['name']}\n")
        else:
            stdout.write(_dump(order, args.output))
        return 0
    if action == "list":
        return _list(client, args, stdout, stderr, sleep)
    if action == "watch":
        return _watch(client, args.name, args, stdout, sleep)
    if action == "cancel":
        try:
            order = client.cancel(args.name)
        except GatewayProblem as exc:
            if exc.status != 409:
                raise
            raise CliError(f"cannot cancel {args.name}: {exc.detail}") from None
        phase = (order.get("status") or {}).get("phase") or "Pending"
        stdout.write(f"{order['name']}: cancellation requested (phase {phase}); "
                     f"`vyapaar order watch {order['name']}` follows the rollback\n")
        return 0
    if action == "trace":
        if urllib.parse.urlsplit(args.traces_url).scheme not in ("http", "https"):
            raise CliError(f"the traces URL must be http:// or https://, not {args.traces_url!r}",
                           EXIT_USAGE)
        return trace_cli.show(client.get(args.name), url=args.traces_url, output=args.output,
                              wait=args.wait, out=stdout, err=stderr, sleep=sleep)
    raise CliError(f"unknown action {action!r}", EXIT_USAGE)


def _create(client: GatewayClient, args: argparse.Namespace, out: TextIO, err: TextIO,
            sleep: Callable[[float], None]) -> int:
    spec, manifest_name = load_spec(args.filename)
    key = args.idempotency_key or str(uuid.uuid4())
    again = (f"the order may have been created: run the command again with "
             f"--idempotency-key {key} to get it without placing a second one")
    try:
        order, replayed = client.create(spec, key)
    except GatewayUnreachable as exc:
        if not exc.delivered:
            raise
        raise CliError(f"{exc}; {again}") from None
    except KeyboardInterrupt:
        raise CliError(f"interrupted; {again}", 130) from None
    if manifest_name and args.output == "text":
        err.write(f"note: the gateway names orders itself; the manifest's name "
                  f"{manifest_name!r} is not used\n")
    name = str(order["name"])
    phase = (order.get("status") or {}).get("phase") or "Pending"
    if args.output == "name":
        out.write(f"{name}\n")
    elif args.output in ("json", "yaml"):
        out.write(_dump(order, args.output))
    elif replayed:
        out.write(f"{name} already created with idempotency key {key} (phase {phase})\n")
    else:
        out.write(f"{name} created (phase {phase}; idempotency key {key})\n")
    out.flush()
    if not args.watch:
        return 0
    return _watch(client, name, args, out if args.output == "text" else err, sleep)


def _list(client: GatewayClient, args: argparse.Namespace, out: TextIO, err: TextIO,
          sleep: Callable[[float], None]) -> int:
    items: list[dict[str, Any]] = []
    token: str | None = args.continue_token
    retries = 0
    while True:
        try:
            page, token = client.page(phase=args.phase, limit=args.limit, continue_token=token)
        except GatewayProblem as exc:  # --all may outrun the rate limit: pace, then go on
            if not (args.all and items and exc.status == 429 and retries < RATE_LIMIT_RETRIES
                    and (exc.retry_after or 1) <= MAX_RATE_LIMIT_WAIT):
                raise
            retries += 1
            sleep(exc.retry_after or 1)
            continue
        items += page
        if not args.all or not token:
            break
    if args.output in ("json", "yaml"):
        out.write(_dump({"items": items, "continue": token}, args.output))
    elif args.output == "name":
        out.write("".join(f"{o['name']}\n" for o in items))
    elif items:
        now = datetime.now(UTC)
        out.write(table(ORDER_COLUMNS, [order_row(o, now) for o in items]))
    else:
        err.write("no orders" + (f" in phase {args.phase}" if args.phase else "") + "\n")
    if token and args.output in ("table", "name"):
        err.write(f"more orders: add --all, or --continue {token}\n")
    return 0


def _watch(client: GatewayClient, name: str, args: argparse.Namespace, out: TextIO,
           sleep: Callable[[float], None]) -> int:
    as_json = getattr(args, "output", "text") == "json" and args.order_action == "watch"

    def show(transition: dict[str, Any]) -> None:
        out.write((json.dumps(transition) if as_json else transition_line(transition)) + "\n")
        out.flush()

    outcome = follow(client, name, show, reconnect_timeout=args.reconnect_timeout, sleep=sleep)
    if outcome.event == "deleted":
        out.write(f"{name} was deleted before it finished (phase {outcome.phase or '-'})\n")
    elif exit_code(outcome) == EXIT_ERROR:
        out.write(f"{name} ended in an unexpected phase {outcome.phase!r}\n")
    out.flush()
    return exit_code(outcome)
