"""``GET /api/v1/orders/{name}/events``: an order's phase transitions as server-sent events.

Each event is one :class:`~.history.Transition` with ``id`` its sequence number::

    id: 3
    event: transition
    data: {"seq": 3, "phase": "Paying", "time": "...", "reason": "...", ...}

The stream starts with the order's whole history so far (or, with ``Last-Event-ID: n``,
with what came after the n-th transition), then follows a Kubernetes watch of the Order
and sends each new transition as the operator writes it. Because the history is read
from the status (see :mod:`.history`), a resumed stream neither skips nor repeats a
transition, even if the apiserver no longer keeps the versions in between (410 Gone: the
gateway reads the object again). When the order reaches a terminal phase the stream
sends ``event: end`` and closes; if the order is deleted, ``event: deleted``. A comment
line every ``VYAPAAR_GATEWAY_HEARTBEAT_SECONDS`` keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from vyapaar_services.common.http import Problem
from vyapaar_services.gateway import metrics
from vyapaar_services.gateway.history import TERMINAL_PHASES, phase_history
from vyapaar_services.gateway.orders import Gone, Orders

__all__ = ["RECONNECT_MS", "parse_last_event_id", "stream_order_events"]

log = logging.getLogger(__name__)

RECONNECT_MS: Final = 2000
_END: Final = object()


def parse_last_event_id(value: str | None) -> int:
    if value is None or value.strip() == "":
        return 0
    if not value.strip().isdigit() or len(value.strip()) > 9:
        raise Problem(400, "Invalid Last-Event-ID",
                      "Last-Event-ID must be the id of an event this stream sent (a number).",
                      type_="invalid-last-event-id")
    return int(value.strip())


def _is_over(obj: Mapping[str, Any]) -> bool:
    return str((obj.get("status") or {}).get("phase")) in TERMINAL_PHASES


class _EventWriter:
    def __init__(self, response: web.StreamResponse, obj: Mapping[str, Any], sent: int) -> None:
        self.response = response
        self.sent = sent
        self.name = obj["metadata"]["name"]
        self.uid = obj["metadata"]["uid"]

    async def write(self, text: str) -> None:
        await self.response.write(text.encode())

    async def transitions(self, obj: Mapping[str, Any]) -> None:
        """Send the transitions of ``obj`` the client has not had yet."""
        for transition in phase_history(obj)[self.sent:]:
            data = {**transition.to_json(), "order": self.name, "uid": self.uid}
            await self.write(f"id: {transition.seq}\nevent: transition\n"
                             f"data: {json.dumps(data)}\n\n")
            self.sent = transition.seq

    async def final(self, event: str, obj: Mapping[str, Any]) -> None:
        phase = (obj.get("status") or {}).get("phase")
        await self.write(f"event: {event}\ndata: {json.dumps({'order': self.name, 'phase': phase})}"
                         "\n\n")


async def stream_order_events(request: web.Request, orders: Orders, namespace: str, name: str,
                              heartbeat: float) -> web.StreamResponse:
    last_seen = parse_last_event_id(request.headers.get("Last-Event-ID"))
    obj = await orders.get(namespace, name)
    if obj is None:
        raise Problem(404, "Not Found", f"Order {name!r} does not exist.",
                      type_="order-not-found")
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no", "X-Correlation-Id": obj["metadata"]["uid"],
    })
    await response.prepare(request)
    writer = _EventWriter(response, obj, last_seen)
    metrics.STREAMS_OPEN.inc()
    try:
        await writer.write(f"retry: {RECONNECT_MS}\n\n")
        await _follow(writer, orders, obj, heartbeat)
    except ConnectionResetError:
        pass  # the client went away
    finally:
        metrics.STREAMS_OPEN.dec()
    return response


async def _follow(writer: _EventWriter, orders: Orders, obj: dict[str, Any],
                  heartbeat: float) -> None:
    await writer.transitions(obj)
    if _is_over(obj):
        await writer.final("end", obj)
        return
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    queue: asyncio.Queue[tuple[str, dict[str, Any]] | object] = asyncio.Queue()
    version = [obj["metadata"]["resourceVersion"]]

    async def watch_forever() -> None:
        while True:
            try:
                async for kind, changed in orders.watch(namespace, name, version[0]):
                    version[0] = changed["metadata"].get("resourceVersion") or version[0]
                    if kind != "BOOKMARK":
                        await queue.put((kind, changed))
            except Gone:
                current = await orders.get(namespace, name)
                if current is None:
                    await queue.put(("DELETED", obj))
                    return
                version[0] = current["metadata"]["resourceVersion"]
                await queue.put(("MODIFIED", current))

    watcher = asyncio.create_task(watch_forever())
    watcher.add_done_callback(lambda task: queue.put_nowait(_END))
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat)
            except TimeoutError:
                await writer.write(": heartbeat\n\n")
                continue
            if item is _END:
                if not watcher.cancelled() and watcher.exception() is not None:
                    log.warning("watch of %s/%s failed: %s", namespace, name,
                                watcher.exception())
                return  # the client reconnects with Last-Event-ID
            assert isinstance(item, tuple)
            kind, changed = item
            if kind == "DELETED":
                await writer.transitions(changed)
                await writer.final("deleted", changed)
                return
            await writer.transitions(changed)
            if _is_over(changed):
                await writer.final("end", changed)
                return
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
