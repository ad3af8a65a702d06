"""The order saga as a Temporal workflow: each step an activity (one SQL transaction).

Why its own small module: Temporal's sandbox re-imports a workflow's module for every
workflow run, so this one imports nothing but temporalio and, passed through, the shared
saga plan in :mod:`.common` (which is deterministic: no clock, no randomness).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from .common import Order, order_saga

__all__ = ["WORKFLOW_NAME", "OrderSagaWorkflow"]

WORKFLOW_NAME = "VyapaarPeerOrderSaga"
#: a step is one short transaction; failures (not rejections) are retried quickly, for ever,
#: as our saga retries its commands
_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(initial_interval=timedelta(milliseconds=200),
                                maximum_interval=timedelta(seconds=5)),
}


class _ActivitySteps:
    """The saga's steps, each an activity of the same name."""

    async def reserve(self, order: Order) -> str | None:
        result: str | None = await workflow.execute_activity("reserve", order, **_OPTIONS)
        return result

    async def release(self, order: Order) -> None:
        await workflow.execute_activity("release", order, **_OPTIONS)

    async def pay(self, order: Order) -> str | None:
        result: str | None = await workflow.execute_activity("pay", order, **_OPTIONS)
        return result

    async def refund(self, order: Order) -> None:
        await workflow.execute_activity("refund", order, **_OPTIONS)

    async def ship(self, order: Order) -> tuple[str | None, str | None]:
        tracking_id, reason = await workflow.execute_activity("ship", order, **_OPTIONS)
        return tracking_id, reason

    async def void(self, order: Order) -> None:
        await workflow.execute_activity("void", order, **_OPTIONS)

    async def commit(self, order: Order) -> None:
        await workflow.execute_activity("commit", order, **_OPTIONS)

    async def notify(self, order: Order, template: str, data: dict[str, Any]) -> None:
        await workflow.execute_activity("notify", args=[order, template, data], **_OPTIONS)


@workflow.defn(name=WORKFLOW_NAME)
class OrderSagaWorkflow:
    """One order: reserve, pay, ship, then commit and notify; compensate on a rejection."""

    @workflow.run  # type: ignore[untyped-decorator, unused-ignore]  # (untyped sans temporalio)
    async def run(self, order: Order) -> str:
        return await order_saga(order, _ActivitySteps())
