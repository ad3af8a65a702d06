"""Announced saga transitions as Kubernetes Events: `kubectl describe order` shows what a
person needs to see (failures, compensations, refusals, the outcome)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client

from vyapaar_operator import saga
from vyapaar_operator.orders import GROUP, KIND, VERSION

log = logging.getLogger(__name__)

COMPONENT = "vyapaar-operator"


class KubernetesEventRecorder:
    """Posts one core/v1 Event per announced transition (best effort: not the saga log).

    Posting happens in the background, so a saga step never waits for its Event.
    """

    def __init__(self, api: client.ApiClient, instance: str, *, concurrency: int = 8) -> None:
        self._core = client.CoreV1Api(api)
        self._instance = instance
        self._limit = asyncio.Semaphore(concurrency)
        self._pending: set[asyncio.Task[None]] = set()

    async def record(self, obj: Mapping[str, Any], transition: saga.Transition) -> None:
        task = asyncio.create_task(self._post(dict(obj), transition))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait for the Events still being posted (at shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _post(self, obj: Mapping[str, Any], transition: saga.Transition) -> None:
        meta = obj["metadata"]
        now = datetime.now(UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{meta['name']}.{uuid.uuid4().hex[:16]}", namespace=meta["namespace"]
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=KIND, name=meta["name"],
                namespace=meta["namespace"], uid=meta["uid"],
                resource_version=meta.get("resourceVersion"),
            ),
            reason=transition.reason,
            message=transition.message[:1024],
            type=transition.type,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            reporting_instance=self._instance,
            action="Saga",
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            async with self._limit:
                await self._core.create_namespaced_event(meta["namespace"], event)
        except Exception:
            log.warning("could not record event %s for %s/%s", transition.reason,
                        meta["namespace"], meta["name"], exc_info=True)
