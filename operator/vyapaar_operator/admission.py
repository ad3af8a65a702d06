"""The in-flight limit: at most `limit` sagas run at once; the other Orders wait their turn.

Past saturation, every extra saga in flight only lengthens the queues in front of the
apiserver, RabbitMQ and the services, until replies miss their deadlines, retries add
load and throughput falls.  Holding new Orders in Pending (with a `Queued` condition)
keeps the admitted sagas as fast as at saturation; queued Orders start in creation order
as slots free up.  This is bookkeeping only (no I/O): the engine asks and reports.

The count is of this operator process's view: after a restart it is rebuilt from the
Orders as their watch events arrive, so for the first moments it may admit a few too many.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Mapping
from typing import Any

from vyapaar_operator.orders import OrderRef

QueueKey = tuple[str, int]
"""(creationTimestamp, order of first sight): creation order, ties broken as seen."""


class Admission:
    def __init__(self, limit: int) -> None:
        """`limit` sagas at most may run at once; 0 means no limit."""
        if limit < 0:
            raise ValueError("the in-flight limit must be 0 (none) or positive")
        self.limit = limit
        self._running: set[OrderRef] = set()
        self._queued: dict[OrderRef, QueueKey] = {}
        self._heap: list[tuple[QueueKey, OrderRef]] = []
        self._seen = itertools.count()
        self._slot_free = asyncio.Event()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def is_running(self, ref: OrderRef) -> bool:
        return ref in self._running

    def admit(self, ref: OrderRef, obj: Mapping[str, Any]) -> bool:
        """May this Order's saga start now?  If not, it joins the queue."""
        if not self.limit or ref in self._running:
            self._running.add(ref)
            return True
        if ref not in self._queued:
            key = (str(obj["metadata"].get("creationTimestamp") or ""), next(self._seen))
            self._queued[ref] = key
            heapq.heappush(self._heap, (key, ref))
        if len(self._running) < self.limit and self.head() == ref:
            self._dequeue(ref)
            self._running.add(ref)
            return True
        if self._startable():
            self._slot_free.set()  # an older Order is queued: start that one first
        return False

    def observe_running(self, ref: OrderRef) -> None:
        """A saga seen past Pending (e.g. after a restart) holds a slot."""
        self._dequeue(ref)
        self._running.add(ref)

    def forget(self, ref: OrderRef) -> None:
        """The saga ended, or the Order is gone: free its slot or its place in the queue."""
        self._dequeue(ref)
        self._running.discard(ref)
        if self._startable():
            self._slot_free.set()

    def head(self) -> OrderRef | None:
        """The oldest queued Order."""
        while self._heap:
            key, ref = self._heap[0]
            if self._queued.get(ref) == key:
                return ref
            heapq.heappop(self._heap)  # dequeued since it was pushed
        return None

    async def next_to_start(self) -> OrderRef:
        """Wait until a slot is free and an Order is queued; return the oldest one."""
        while True:
            if self._startable():
                head = self.head()
                assert head is not None
                return head
            self._slot_free.clear()
            await self._slot_free.wait()

    def _startable(self) -> bool:
        return bool(self.limit) and len(self._running) < self.limit and self.head() is not None

    def _dequeue(self, ref: OrderRef) -> None:
        self._queued.pop(ref, None)
