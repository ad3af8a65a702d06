"""`vyapaar dlq`: list, inspect, redrive and purge dead-lettered messages.

A command line over :mod:`vyapaar_messaging.dlq`; ``QUEUE`` is a consumer queue
(``inventory.commands``) or its dead-letter queue (``inventory.commands.dlq``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import aio_pika
from vyapaar_messaging.dlq import (
    DlqError,
    dlq_depths,
    dlq_of,
    jsonable,
    list_messages,
    purge,
    redrive,
    show_message,
)
from vyapaar_messaging.topology import Topology

from vyapaar_cli.errors import CliError
from vyapaar_cli.settings import Settings

__all__ = ["add_arguments", "run", "run_async"]

EXAMPLES = """examples:
  vyapaar dlq list                                  # depth of every dead-letter queue
  vyapaar dlq list payment.commands --limit 50      # what died there, and why
  vyapaar dlq show payment.commands MESSAGE_ID      # one message: headers and body
  vyapaar dlq redrive payment.commands --all        # back to the queue, attempts reset
  vyapaar dlq purge payment.commands --yes          # delete them for good
"""


def add_arguments(subparsers: Any, settings: Settings | None = None) -> argparse.ArgumentParser:
    """Add the ``dlq`` command to an argparse sub-parsers object."""
    settings = settings or Settings()
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dlq",
        help="list, inspect, redrive and purge dead-lettered messages",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)
    parser.add_argument(
        "--amqp-url",
        default=settings.get("VYAPAAR_AMQP_URL"),
        help="RabbitMQ URL (default: $VYAPAAR_AMQP_URL)",
    )
    parser.add_argument(
        "--prefix",
        default=settings.get("VYAPAAR_AMQP_PREFIX", ""),
        help="queue name prefix (default: $VYAPAAR_AMQP_PREFIX)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    actions = parser.add_subparsers(dest="dlq_action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="count and summarise dead-lettered messages",
                            epilog="example: vyapaar dlq list inventory.commands --limit 5")
    ls.add_argument("queue", nargs="?", help="consumer queue or DLQ (default: every DLQ)")
    ls.add_argument("--limit", type=int, default=20, help="messages to summarise (20)")

    show = actions.add_parser("show", help="one message with its headers and body",
                              epilog="example: vyapaar dlq show payment.commands 0b6f...")
    show.add_argument("queue")
    show.add_argument("message_id")

    rd = actions.add_parser("redrive", help="move messages back to their original queue",
                            epilog="example: vyapaar dlq redrive payment.commands --all")
    rd.add_argument("queue")
    rd.add_argument("message_ids", nargs="*", metavar="MESSAGE_ID")
    rd.add_argument("--all", action="store_true", help="redrive every message")

    pg = actions.add_parser("purge", help="delete every message of a DLQ",
                            epilog="example: vyapaar dlq purge payment.commands --yes")
    pg.add_argument("queue")
    pg.add_argument("--yes", action="store_true", help="confirm the purge")
    return parser


def _print_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(jsonable(data), indent=2, ensure_ascii=False) + "\n")


async def run_async(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    if not args.amqp_url:
        raise CliError("no RabbitMQ to talk to: pass --amqp-url or set VYAPAAR_AMQP_URL", 2)
    prefix = args.prefix or ""

    def qname(queue: str) -> str:
        return queue if not prefix or queue.startswith(prefix) else prefix + queue

    try:
        connection = await aio_pika.connect(args.amqp_url, timeout=10)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise CliError(f"cannot connect to RabbitMQ at {redact(args.amqp_url)}: {exc}") from None
    try:
        action = args.dlq_action
        if action == "list" and not args.queue:
            depths = await dlq_depths(connection, Topology(prefix))
            if args.json:
                _print_json(depths, out)
            else:
                for name, depth in depths.items():
                    out.write(f"{name:<50} {'-' if depth is None else depth}\n")
            return 0
        if action == "list":
            count, messages = await list_messages(connection, qname(args.queue), limit=args.limit)
            if args.json:
                _print_json({"count": count, "messages": [m.summary() for m in messages]}, out)
            else:
                out.write(f"{dlq_of(qname(args.queue))}: {count} message(s)\n")
                for m in messages:
                    error = (m.error or "").replace("\n", " ")[:80]
                    out.write(
                        f"{m.id}  {m.type or '-':<18} {m.reason or '-':<10} "
                        f"attempts={m.attempts or '-'}  {error}\n"
                    )
            return 0
        if action == "show":
            message = await show_message(connection, qname(args.queue), args.message_id)
            if message is None:
                print(f"error: no message {args.message_id} in the DLQ", file=sys.stderr)
                return 1
            if args.json:
                _print_json(message.to_dict(), out)
            else:
                for key, value in message.summary().items():
                    out.write(f"{key}: {value}\n")
                out.write("headers:\n")
                for key, value in message.headers.items():
                    out.write(f"  {key}: {value}\n")
                out.write(f"body:\n{message.body}\n")
            return 0
        if action == "redrive":
            if not args.all and not args.message_ids:
                print("error: give MESSAGE_ID(s) or --all", file=sys.stderr)
                return 2
            ids = None if args.all else set(args.message_ids)
            moved = await redrive(connection, qname(args.queue), ids)
            if args.json:
                _print_json({"redriven": moved}, out)
            else:
                out.write(f"redrove {moved} message(s)\n")
            return 0 if moved or args.all else 1
        if action == "purge":
            if not args.yes:
                print("error: purge deletes messages for good; add --yes", file=sys.stderr)
                return 2
            removed = await purge(connection, qname(args.queue))
            if args.json:
                _print_json({"purged": removed}, out)
            else:
                out.write(f"purged {removed} message(s)\n")
            return 0
        print(f"error: unknown action {action!r}", file=sys.stderr)
        return 2
    except DlqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await connection.close()


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``vyapaar dlq ...`` command; returns the exit code."""
    return asyncio.run(run_async(args))


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
