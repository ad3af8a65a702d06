"""When each saga next needs a Tick: one timer task for all orders.

A heap of (deadline, order) with lazy invalidation instead of a kopf timer per
Order: thousands of idle sagas cost no tasks, and the next deadline is known
exactly (from `saga.next_deadline`) rather than polled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from vyapaar_messaging.outage import OutageLog

from vyapaar_operator.orders import OrderRef, apiserver_unavailable

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0
"""A tick that failed (the apiserver away) comes again this much later: its deadline was
taken off the heap, and nothing else would bring the saga back."""


class Deadlines:
    def __init__(self) -> None:
        self._due: dict[OrderRef, datetime] = {}
        self._heap: list[tuple[datetime, int, OrderRef]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._failing = OutageLog(log, "deadline ticks (reading and writing Orders)")

    def set(self, ref: OrderRef, when: datetime | None) -> None:
        if when is None:
            self.forget(ref)
            return
        if self._due.get(ref) == when:
            return
        self._due[ref] = when
        heapq.heappush(self._heap, (when, next(self._seq), ref))
        self._changed.set()

    def forget(self, ref: OrderRef) -> None:
        self._due.pop(ref, None)

    def __len__(self) -> int:
        return len(self._due)

    def _pop_due(self, now: datetime) -> list[OrderRef]:
        due: list[OrderRef] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, ref = heapq.heappop(self._heap)
            if self._due.get(ref) == when:  # skip entries superseded by a later set()
                del self._due[ref]
                due.append(ref)
        return due

    def _seconds_to_next(self, now: datetime) -> float | None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(0.0, (self._heap[0][0] - now).total_seconds())

    async def run(self, on_due: Callable[[OrderRef], Awaitable[None]],
                  *, concurrency: int = 16) -> None:
        """Call `on_due(ref)` for each order whose deadline passed, forever."""
        limit = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def fire(ref: OrderRef) -> None:
            async with limit:
                try:
                    await on_due(ref)
                except Exception as exc:
                    if apiserver_unavailable(exc):
                        self._failing.failed(f"{ref}: {type(exc).__name__}: {exc}")
                    else:
                        log.exception("tick for %s failed; retrying in %gs", ref, RETRY_SECONDS)
                    if ref not in self._due:  # unless a newer deadline came meanwhile
                        self.set(ref, datetime.now(UTC) + timedelta(seconds=RETRY_SECONDS))
                else:
                    self._failing.succeeded()

        while True:
            now = datetime.now(UTC)
            for ref in self._pop_due(now):
                task = asyncio.create_task(fire(ref))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            wait = self._seconds_to_next(now)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=wait)
