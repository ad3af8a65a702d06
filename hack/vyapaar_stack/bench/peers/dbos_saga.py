"""The order saga on DBOS Transact: one workflow, each step a datasource transaction.

Why this shape: it is DBOS's own idiom for database work. A datasource transaction commits
the step's SQL and the step's checkpoint in the same PostgreSQL transaction, so a step runs
exactly once; the workflow's progress is checkpointed in the system database (schema
``peer_dbos_system`` of the stack's database). The steps run at READ COMMITTED, as our
services' transactions do (DBOS's default, SERIALIZABLE, would only add retries on the hot
stock rows; the conditional update is safe without it).

DBOS is a library: the workflows run in this process, which is also the load generator.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from .common import Db, Effects, Order, order_saga

if TYPE_CHECKING:
    from dbos import AsyncSQLAlchemyDatasource
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["SCHEMA", "SYSTEM_SCHEMA", "DbosPeer"]

SCHEMA = "peer_dbos"
SYSTEM_SCHEMA = "peer_dbos_system"
_PARAM = re.compile(r"\$(\d+)")
_T = TypeVar("_T")


class _SessionDb:
    """:class:`Db` on the SQLAlchemy session of the running datasource transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @staticmethod
    def _bind(sql: str, args: tuple[Any, ...]) -> tuple[Any, dict[str, Any]]:
        from sqlalchemy import text

        return text(_PARAM.sub(r":p\1", sql)), {f"p{i}": a for i, a in enumerate(args, 1)}

    async def execute(self, sql: str, *args: Any) -> int:
        statement, params = self._bind(sql, args)
        result = await self._session.execute(statement, params)
        rowcount: int = getattr(result, "rowcount", 0)
        return rowcount

    async def fetch(self, sql: str, *args: Any) -> list[Mapping[str, Any]]:
        statement, params = self._bind(sql, args)
        result = await self._session.execute(statement, params)
        return [dict(row) for row in result.mappings().all()]


class _Runtime:
    """The launched DBOS state (one per process: DBOS is a singleton)."""

    effects = Effects(SCHEMA)
    datasource: AsyncSQLAlchemyDatasource | None = None


async def _tx(name: str, body: Callable[[Db], Awaitable[_T]]) -> _T:
    """Run ``body`` as one DBOS datasource transaction step of the current workflow."""
    ds = _Runtime.datasource
    if ds is None:
        raise RuntimeError("the DBOS peer is not started")

    async def step() -> _T:
        return await body(_SessionDb(ds.sql_session()))

    result: _T = await ds.run_tx_step_async(
        {"name": name, "isolation_level": "READ COMMITTED"}, step)
    return result


class _Steps:
    """The saga's steps, each a checkpointed transaction."""

    def __init__(self) -> None:
        self.e = _Runtime.effects

    async def reserve(self, order: Order) -> str | None:
        return await _tx("reserve", lambda db: self.e.reserve(db, order))

    async def release(self, order: Order) -> None:
        await _tx("release", lambda db: self.e.release(db, order))

    async def pay(self, order: Order) -> str | None:
        return await _tx("pay", lambda db: self.e.pay(db, order))

    async def refund(self, order: Order) -> None:
        await _tx("refund", lambda db: self.e.refund(db, order))

    async def ship(self, order: Order) -> tuple[str | None, str | None]:
        return await _tx("ship", lambda db: self.e.ship(db, order))

    async def void(self, order: Order) -> None:
        await _tx("void", lambda db: self.e.void(db, order))

    async def commit(self, order: Order) -> None:
        await _tx("commit", lambda db: self.e.commit(db, order))

    async def notify(self, order: Order, template: str, data: dict[str, Any]) -> None:
        await _tx(f"notify-{template}", lambda db: self.e.notify(db, order, template, data))


_Workflow = Callable[[Order], Coroutine[Any, Any, str]]
_workflow: _Workflow | None = None


def _register() -> _Workflow:
    """Register the workflow with DBOS once (imported lazily: ``dbos`` is optional)."""
    global _workflow
    if _workflow is None:
        from dbos import DBOS

        @DBOS.workflow(name="vyapaar_peer_order_saga")  # type: ignore[untyped-decorator, unused-ignore]
        async def order_workflow(order: Order) -> str:
            return await order_saga(order, _Steps())

        _workflow = order_workflow
    return _workflow


class DbosPeer:
    """Launches DBOS on the stack's PostgreSQL once, then runs orders as workflows."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.started = False

    async def start(self) -> None:
        from dbos import DBOS, AsyncSQLAlchemyDatasource, DBOSConfig

        if self.started:
            return
        _register()
        config: DBOSConfig = {
            "name": "vyapaar-peer-dbos",
            "system_database_url": self.database_url,
            "dbos_system_schema": SYSTEM_SCHEMA,
            "log_level": "WARNING",
            "sys_db_pool_size": 50,
            # past saturation orders wait for a connection as they would in our system,
            # rather than fail after SQLAlchemy's default 30 s
            "db_engine_kwargs": {"pool_timeout": 3600},
        }
        DBOS(config=config)
        _Runtime.datasource = await AsyncSQLAlchemyDatasource.create(
            self.database_url, schema=SCHEMA,
            engine_kwargs={"pool_size": 50, "max_overflow": 0, "pool_timeout": 3600})
        DBOS.launch()
        self.started = True

    async def run(self, order: Order) -> str:
        """Start the order's workflow (its id is the order uid) and wait for its outcome."""
        from dbos import DBOS, SetWorkflowID

        workflow = _register()
        with SetWorkflowID(order.uid):
            handle = await DBOS.start_workflow_async(workflow, order)
        outcome: str = await handle.get_result()
        return outcome

    async def stop(self) -> None:
        from dbos import DBOS

        if not self.started:
            return
        ds = _Runtime.datasource
        _Runtime.datasource = None
        DBOS.destroy(destroy_registry=False)
        # DBOS made its executor the loop's default and has just shut it down: give the loop
        # a working one back, or every later run_in_executor (aiohttp's, say) fails.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor())
        if ds is not None and ds.created_engine:
            await ds.engine.dispose()
        self.started = False
