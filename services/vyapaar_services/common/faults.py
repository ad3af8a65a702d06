"""Fault injection for simulated external processors (payment processor, carrier).

Configured by ``VYAPAAR_FAULT_ERROR_RATE`` (0..1) and ``VYAPAAR_FAULT_LATENCY_MS`` and
changeable at run time with ``PUT /admin/faults {"errorRate": 0.2, "latencyMs": 50,
"lostCommitRate": 0}`` (``GET /admin/faults`` shows the current values). An injected error
raises :class:`InjectedFault`, a TRANSIENT failure: the message goes through the
delayed-retry path, it is not a business decline.

``operations`` limits the faults to some of the processor's operations (``["refund"]``: a
refund outage while charges go through); empty or absent, every operation.

``lostCommitRate`` fails the handling *after* the processor acted and before the service's
own transaction commits -- a crash at the worst moment: the money moved, the ledger does
not know yet, and the retry must not move it again (the payment service; its processor is
idempotent by key).
"""

from __future__ import annotations

import asyncio
import random
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from vyapaar_messaging.consumer import TransientError

from vyapaar_services.common import metrics
from vyapaar_services.common.http import json_response, read_json

__all__ = ["FaultInjector", "InjectedFault", "add_fault_routes"]


class InjectedFault(TransientError):
    """A simulated transient failure of an external processor."""


class FaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    error_rate: Annotated[float, Field(alias="errorRate", ge=0.0, le=1.0)] = 0.0
    latency_ms: Annotated[StrictInt, Field(alias="latencyMs", ge=0, le=60_000)] = 0
    lost_commit_rate: Annotated[float, Field(alias="lostCommitRate", ge=0.0, le=1.0)] = 0.0
    operations: Annotated[list[Annotated[str, Field(max_length=32)]],
                          Field(max_length=8)] = []

    def applies_to(self, operation: str) -> bool:
        return not self.operations or operation in self.operations


class FaultInjector:
    def __init__(
        self,
        service: str,
        error_rate: float = 0.0,
        latency_ms: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.settings = FaultSettings(error_rate=error_rate, latency_ms=latency_ms)
        self.rng = rng or random.Random()

    def configure(self, error_rate: float, latency_ms: int, lost_commit_rate: float = 0.0,
                  operations: list[str] | None = None) -> None:
        self.settings = FaultSettings(error_rate=error_rate, latency_ms=latency_ms,
                                      lost_commit_rate=lost_commit_rate,
                                      operations=operations or [])

    def to_dict(self) -> dict[str, Any]:
        return self.settings.model_dump(by_alias=True)

    async def call(self, operation: str) -> None:
        """Apply the configured latency, then fail with the configured probability."""
        settings = self.settings
        if not settings.applies_to(operation):
            return
        if settings.latency_ms:
            await asyncio.sleep(settings.latency_ms / 1000)
        if settings.error_rate and self.rng.random() < settings.error_rate:
            metrics.PROCESSOR_CALLS.labels(self.service, operation, "injected_error").inc()
            raise InjectedFault(f"injected {operation} failure (errorRate={settings.error_rate})")

    def after_call(self, operation: str) -> None:
        """Between the processor's answer and the commit: fail with ``lostCommitRate``."""
        rate = self.settings.lost_commit_rate
        if rate and self.settings.applies_to(operation) and self.rng.random() < rate:
            metrics.PROCESSOR_CALLS.labels(self.service, operation, "lost_commit").inc()
            raise InjectedFault(f"injected failure after the processor's {operation}, before "
                                f"the commit (lostCommitRate={rate})")


FAULTS_KEY = web.AppKey("vyapaar_faults", FaultInjector)


def add_fault_routes(app: web.Application, injector: FaultInjector) -> None:
    app[FAULTS_KEY] = injector

    async def get_faults(_request: web.Request) -> web.Response:
        return json_response(injector.to_dict())

    async def put_faults(request: web.Request) -> web.Response:
        body = await read_json(request, FaultSettings)
        injector.configure(body.error_rate, body.latency_ms, body.lost_commit_rate,
                           body.operations)
        return json_response(injector.to_dict())

    app.router.add_get("/admin/faults", get_faults)
    app.router.add_put("/admin/faults", put_faults)
