"""The order saga on Temporal: the server (:mod:`.temporal_server`), a Python worker in its
own process running the workflow (:mod:`.temporal_workflow`) and the activities below, and
a client in this process that starts each order and waits for its result.

Why the worker is a subprocess: that is how Temporal is deployed (workers are separate
from whoever starts workflows), and it lets the CPU of the worker be told apart from the
load generator's. Each activity is one asyncpg transaction running the shared SQL of
:mod:`.common` on the schema ``peer_temporal``; activities are at-least-once, and the
idempotency-key checks in that SQL make their effects exact.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from .common import Db, Effects, Order, asyncpg_db
from .temporal_server import NAMESPACE, TemporalServer

if TYPE_CHECKING:
    from temporalio.client import Client

__all__ = ["SCHEMA", "TASK_QUEUE", "TemporalPeer", "build_activities", "main"]

SCHEMA = "peer_temporal"
TASK_QUEUE = "vyapaar-peer-orders"
_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


def _activity(name: str) -> Callable[[_F], _F]:
    """``activity.defn(name=...)``, typed even where temporalio is absent (mypy in CI)."""
    from temporalio import activity

    decorator: Callable[[_F], _F] = activity.defn(name=name)
    return decorator


def build_activities(pool: asyncpg.Pool) -> list[Callable[..., Any]]:
    """The saga's activities, each one transaction on ``pool``."""
    effects = Effects(SCHEMA)

    async def tx(body: Callable[[Db], Awaitable[_T]]) -> _T:
        async with pool.acquire() as conn, conn.transaction():
            return await body(asyncpg_db(conn))

    @_activity("reserve")
    async def reserve(order: Order) -> str | None:
        return await tx(lambda db: effects.reserve(db, order))

    @_activity("release")
    async def release(order: Order) -> None:
        await tx(lambda db: effects.release(db, order))

    @_activity("pay")
    async def pay(order: Order) -> str | None:
        return await tx(lambda db: effects.pay(db, order))

    @_activity("refund")
    async def refund(order: Order) -> None:
        await tx(lambda db: effects.refund(db, order))

    @_activity("ship")
    async def ship(order: Order) -> tuple[str | None, str | None]:
        return await tx(lambda db: effects.ship(db, order))

    @_activity("void")
    async def void(order: Order) -> None:
        await tx(lambda db: effects.void(db, order))

    @_activity("commit")
    async def commit(order: Order) -> None:
        await tx(lambda db: effects.commit(db, order))

    @_activity("notify")
    async def notify(order: Order, template: str, data: dict[str, Any]) -> None:
        await tx(lambda db: effects.notify(db, order, template, data))

    return [reserve, release, pay, refund, ship, void, commit, notify]


async def run_worker(address: str, namespace: str, task_queue: str, database_url: str) -> None:
    """The worker process: poll the task queue until SIGTERM; print ``ready`` once polling."""
    from temporalio.client import Client
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from .temporal_workflow import OrderSagaWorkflow

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=20)
    try:
        client = await Client.connect(address, namespace=namespace)
        # the default sandbox; passed through: the shared, deterministic saga module, and the
        # stack's config module that a parent package imports (it resolves paths at import)
        passthrough = (f"{__package__}.common", "vyapaar_stack.config", "asyncpg")
        runner = SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules(*passthrough))
        worker = Worker(client, task_queue=task_queue, workflows=[OrderSagaWorkflow],
                        activities=build_activities(pool), workflow_runner=runner)
        async with worker:
            print("ready", flush=True)
            await stop.wait()
    finally:
        await pool.close()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


class TemporalPeer:
    """The server, one worker process and a client, started once and reused."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.server = TemporalServer(database_url)
        self.worker: asyncio.subprocess.Process | None = None
        self.client: Client | None = None

    @property
    def variant(self) -> str:
        return self.server.binaries.variant

    async def start(self) -> None:
        from temporalio.client import Client

        if self.client is not None:
            return
        await self.server.start()
        try:
            self.worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, "worker", "--address", self.server.address,
                "--namespace", NAMESPACE, "--task-queue", TASK_QUEUE,
                "--database-url", self.database_url,
                stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True)
            atexit.register(_kill_group, self.worker.pid)  # never outlive this process
            assert self.worker.stdout is not None
            line = await asyncio.wait_for(self.worker.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"the Temporal worker did not start (said {line!r}); "
                                   "its errors are on this process's stderr")
            self.client = await Client.connect(self.server.address, namespace=NAMESPACE)
        except BaseException:
            await self.stop()
            raise

    @property
    def pids(self) -> dict[str, int]:
        """The processes this peer started, by the name the CPU figures use."""
        out: dict[str, int] = {}
        if self.server.pid is not None:
            out["temporal-server"] = self.server.pid
        if self.worker is not None:
            out["temporal-worker"] = self.worker.pid
        return out

    async def run(self, order: Order) -> str:
        """Start the order's workflow (its id is the order uid) and wait for its outcome."""
        from .temporal_workflow import WORKFLOW_NAME

        if self.client is None:
            raise RuntimeError("the Temporal peer is not started")
        handle = await self.client.start_workflow(WORKFLOW_NAME, order, id=order.uid,
                                                  task_queue=TASK_QUEUE, result_type=str)
        outcome: str = await handle.result()
        return outcome

    async def stop(self) -> None:
        self.client = None
        worker, self.worker = self.worker, None
        atexit.unregister(_kill_group)
        if worker is not None and worker.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(worker.wait(), 20)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                await worker.wait()
        await asyncio.to_thread(self.server.stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}",
                                     description="The Temporal peer's worker process.")
    sub = parser.add_subparsers(dest="command", required=True)
    worker = sub.add_parser("worker", help="run the saga's worker until SIGTERM")
    worker.add_argument("--address", required=True)
    worker.add_argument("--namespace", default=NAMESPACE)
    worker.add_argument("--task-queue", default=TASK_QUEUE)
    worker.add_argument("--database-url", required=True)
    args = parser.parse_args(argv)
    asyncio.run(run_worker(args.address, args.namespace, args.task_queue, args.database_url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
