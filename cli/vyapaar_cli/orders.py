"""`vyapaar orders pause|resume|retry`: one command over many Orders, for on-call work.

Orders are chosen by namespace (or all), label selector, phase and name, as kubectl would
choose them. ``pause`` sets ``spec.paused`` (the saga holds where it is); ``resume`` clears
it, and asks a saga stopped in CompensationFailed to try its compensation again (the
``vyapaar.dev/resume`` annotation) -- whichever each Order needs; ``retry`` resumes them
too, then moves the dead-lettered messages of exactly those Orders back to their queues
(``vyapaar dlq redrive``, limited to them: a command that died in an outage is done now,
idempotently). ``--dry-run`` lists what would change and changes nothing. Changes go at
``--rate`` per second (the apiserver serves others too), with a progress bar, and end with
a summary; the exit code is 1 if any change failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import ConfigException
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from vyapaar_messaging.dlq import DlqError, dlq_depths, dlq_of, list_messages, redrive
from vyapaar_messaging.topology import Topology

from vyapaar_cli.errors import CliError
from vyapaar_cli.settings import Settings, require

__all__ = ["Change", "add_arguments", "plan"]

GROUP, VERSION, PLURAL = "vyapaar.dev", "v1alpha1", "orders"
MERGE_PATCH = "application/merge-patch+json"
RESUME_ANNOTATION = "vyapaar.dev/resume"
FINISHED = frozenset({"Completed", "Failed", "Cancelled"})

EXAMPLES = """examples:
  vyapaar orders pause -n shop -l campaign=diwali --dry-run   # what would be paused
  vyapaar orders pause -n shop -l campaign=diwali             # hold those sagas where they are
  vyapaar orders pause -A --phase Paying                      # every saga waiting on payment
  vyapaar orders resume -n shop                               # carry on every paused one
  vyapaar orders resume -A --phase CompensationFailed         # after repairing a service
  vyapaar orders retry -A --phase CompensationFailed          # redrive their dead letters too

exit code: 0 every change made (or nothing to change); 1 a change failed; 2 usage
"""


@dataclass(frozen=True)
class Change:
    """What the command does to one Order (``action`` None: nothing, for ``why``)."""

    namespace: str
    name: str
    uid: str
    phase: str
    action: str | None
    why: str = ""

    @property
    def patch(self) -> dict[str, Any]:
        """The merge patch that makes the change."""
        patch: dict[str, Any] = {}
        if self.action == "pause":
            patch["spec"] = {"paused": True}
        if self.action in ("unpause", "unpause+repair"):
            patch["spec"] = {"paused": False}
        if self.action in ("repair", "unpause+repair"):
            patch["metadata"] = {"annotations": {RESUME_ANNOTATION: "vyapaar orders"}}
        return patch


def plan(command: str, orders: Iterable[dict[str, Any]]) -> list[Change]:
    """The change ``command`` (pause, resume or retry) makes to each Order (pure)."""
    changes = []
    for obj in orders:
        meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
        phase = status.get("phase") or "Pending"
        paused = bool(spec.get("paused"))
        action: str | None
        if command == "pause":
            action, why = (None, "finished") if phase in FINISHED else (
                (None, "already paused") if paused else ("pause", ""))
        else:
            repair = phase == "CompensationFailed"
            action = {(True, True): "unpause+repair", (True, False): "unpause",
                      (False, True): "repair"}.get((paused, repair))
            why = "" if action else ("finished" if phase in FINISHED else "not paused")
        changes.append(Change(meta["namespace"], meta["name"], meta["uid"], phase, action, why))
    return changes


def add_arguments(subparsers: Any, settings: Settings | None = None) -> argparse.ArgumentParser:
    settings = settings or Settings()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "orders", help="pause, resume or retry many Orders at once (selector, phase)",
        description=__doc__.split("\n\n")[0] if __doc__ else None, epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, what in (("pause", "hold the chosen sagas where they are (spec.paused)"),
                         ("resume", "carry on paused sagas; retry failed compensations"),
                         ("retry", "resume, and redrive their dead-lettered messages")):
        one = actions.add_parser(action, help=what, epilog=EXAMPLES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        one.set_defaults(func=run)
        where = one.add_mutually_exclusive_group()
        where.add_argument("-n", "--namespace", help="the Orders of this namespace")
        where.add_argument("-A", "--all-namespaces", action="store_true",
                           help="the Orders of every namespace")
        one.add_argument("-l", "--selector", help="label selector, as kubectl's -l")
        one.add_argument("--phase", action="append", default=[], metavar="PHASE",
                         help="only Orders in this phase (repeat for several)")
        one.add_argument("--name", action="append", default=[], metavar="NAME",
                         help="only the Order of this name (repeat for several)")
        one.add_argument("--dry-run", action="store_true",
                         help="list what would change; change nothing")
        one.add_argument("--rate", type=float, default=20.0,
                         help="changes per second at most (default 20)")
        one.add_argument("--kubeconfig", default=settings.get("KUBECONFIG"),
                         help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
        if action == "retry":
            one.add_argument("--amqp-url", default=settings.get("VYAPAAR_AMQP_URL"),
                             help="RabbitMQ URL (default: $VYAPAAR_AMQP_URL)")
            one.add_argument("--prefix", default=settings.get("VYAPAAR_AMQP_PREFIX", ""),
                             help="queue name prefix of the release (default: "
                                  "$VYAPAAR_AMQP_PREFIX)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise CliError("--rate must be positive", 2)
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    try:
        api = await kube_config.new_client_from_config(config_file=args.kubeconfig)
    except (ConfigException, OSError) as exc:
        raise CliError(f"no usable kubeconfig ({exc}); pass --kubeconfig or set KUBECONFIG",
                       2) from None
    async with api:
        objects = client.CustomObjectsApi(api)
        orders = await _select(objects, args)
        changes = plan(args.action, orders)
        todo = [c for c in changes if c.action]
        if args.dry_run:
            _print_table(changes)
            print(f"dry run: {len(todo)} of {len(changes)} Orders would change; nothing changed")
            return 0
        failed = await _apply(objects, todo, args.rate, console)
        if args.action == "retry" and todo:
            moved = await _redrive(args, {c.uid for c in todo})
            console.print(f"redrove {moved} dead-lettered message(s) of these Orders")
    done = Counter(c.action for c in todo if c not in failed)
    skipped = Counter(c.why for c in changes if not c.action)
    summary = ", ".join(f"{n} {what}" for what, n in sorted(done.items())) or "nothing changed"
    if skipped:
        summary += "; left alone: " + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    print(f"{len(changes)} Orders matched: {summary}"
          + (f"; {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0


async def _select(objects: client.CustomObjectsApi, args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    """The Orders the flags choose, read in pages; one phase is filtered by the server."""
    query: dict[str, Any] = {"limit": 500}
    if args.selector:
        query["label_selector"] = args.selector
    if len(args.phase) == 1:
        query["field_selector"] = f"status.phase={args.phase[0]}"
    found: list[dict[str, Any]] = []
    try:
        while True:
            if args.all_namespaces:
                page = await objects.list_cluster_custom_object(GROUP, VERSION, PLURAL, **query)
            else:
                namespace = args.namespace or _context_namespace(args.kubeconfig)
                page = await objects.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                   PLURAL, **query)
            found.extend(page["items"])
            query["_continue"] = page["metadata"].get("continue")
            if not query["_continue"]:
                break
    except ApiException as exc:
        raise CliError(f"cannot list Orders: {exc.status} {exc.reason}") from None
    phases, names = set(args.phase), set(args.name)
    return [o for o in found
            if (not phases or ((o.get("status") or {}).get("phase") or "Pending") in phases)
            and (not names or o["metadata"]["name"] in names)]


def _context_namespace(kubeconfig: str | None) -> str:
    """The current context's namespace, as kubectl takes it when not told."""
    try:
        _, active = kube_config.list_kube_config_contexts(config_file=kubeconfig)
    except (ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


async def _apply(objects: client.CustomObjectsApi, todo: Sequence[Change], rate: float,
                 console: Console) -> list[Change]:
    """Patch each Order at ``rate`` per second; the changes that failed."""
    failed = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("changing", total=len(todo))
        for change in todo:
            started = asyncio.get_running_loop().time()
            try:
                await objects.patch_namespaced_custom_object(
                    GROUP, VERSION, change.namespace, PLURAL, change.name, change.patch,
                    _content_type=MERGE_PATCH)  # type: ignore[call-arg]  # via **kwargs
            except ApiException as exc:
                failed.append(change)
                progress.console.print(f"{change.namespace}/{change.name}: {exc.status} "
                                       f"{exc.reason}")
            progress.advance(task)
            pause = 1.0 / rate - (asyncio.get_running_loop().time() - started)
            if pause > 0:
                await asyncio.sleep(pause)
    return failed


async def _redrive(args: argparse.Namespace, uids: set[str]) -> int:
    """Move the dead-lettered messages of exactly these Orders back to their queues (the
    command queues', and the operator's replies'); only non-empty DLQs are read."""
    url = require(args.amqp_url, what="RabbitMQ URL", flag="--amqp-url",
                  variable="VYAPAAR_AMQP_URL")
    topology = Topology(prefix=args.prefix)
    moved = 0
    try:
        connection = await aio_pika.connect(url)
    except (aio_pika.exceptions.AMQPError, OSError) as exc:
        raise CliError(f"cannot reach RabbitMQ at {url}: {exc}") from None
    async with connection:
        depths = await dlq_depths(connection, topology)
        for queue in topology.consumer_queues():
            if not depths.get(dlq_of(queue)):
                continue
            try:
                _, messages = await list_messages(connection, queue, limit=10_000)
                ids = [m.id for m in messages if m.correlation_id in uids]
                if ids:
                    moved += await redrive(connection, queue, ids)
            except DlqError as exc:
                raise CliError(str(exc)) from None
    return moved


def _print_table(changes: Sequence[Change]) -> None:
    rows = [("NAMESPACE", "NAME", "PHASE", "CHANGE")] + [
        (c.namespace, c.name, c.phase, c.action or f"- ({c.why})") for c in changes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
              + "  " + row[3])
    sys.stdout.flush()
