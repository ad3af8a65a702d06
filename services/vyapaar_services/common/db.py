"""PostgreSQL: asyncpg pool per service schema, and SQL migrations applied at start.

Each service owns one schema (``VYAPAAR_DB_SCHEMA``, default = service name); the pool
sets ``search_path`` to it through ``server_settings``, so SQL is written unqualified.

Migrations are ``*.sql`` files in a package (``<service>/migrations/0001_init.sql``, and the
shared ``common/migrations/*.sql`` for inbox/outbox/idempotency). :func:`migrate` creates the
schema, records applied versions (``"<source>/<file stem>"``) in
``<schema>.schema_migrations``, and applies each pending file in its own transaction, under
a PostgreSQL advisory lock so several replicas can start at once. It is idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import asyncpg

__all__ = [
    "COMMON_MIGRATIONS_PACKAGE",
    "Migration",
    "applied_versions",
    "common_migrations",
    "create_pool",
    "load_migrations",
    "migrate",
    "quote_ident",
    "wait_for_pool",
]

log = logging.getLogger(__name__)

COMMON_MIGRATIONS_PACKAGE: Final = "vyapaar_services.common.migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    sql: str


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_migrations(package: str, source: str) -> list[Migration]:
    """All ``*.sql`` files of ``package``, sorted by file name; version ``source/stem``."""
    root = resources.files(package)
    files = sorted(
        (entry for entry in root.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    return [
        Migration(f"{source}/{f.name.removesuffix('.sql')}", f.read_text("utf-8")) for f in files
    ]


def common_migrations() -> list[Migration]:
    """Inbox, idempotency and outbox tables (every service applies these first)."""
    return load_migrations(COMMON_MIGRATIONS_PACKAGE, "common")


async def create_pool(
    database_url: str,
    schema: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    application_name: str = "vyapaar",
    command_timeout: float = 30.0,
) -> asyncpg.Pool:
    """A pool whose connections use ``search_path = <schema>``."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        server_settings={"search_path": schema, "application_name": application_name},
    )
    assert pool is not None
    return pool


async def wait_for_pool(
    database_url: str,
    schema: str,
    *,
    attempts: int | None = None,
    max_delay: float = 15.0,
    **kwargs: Any,
) -> asyncpg.Pool:
    """:func:`create_pool`, retried with exponential backoff until the database answers."""
    delay = 0.5
    attempt = 0
    while True:
        attempt += 1
        try:
            return await create_pool(database_url, schema, **kwargs)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if attempts is not None and attempt >= attempts:
                raise
            log.warning("database not reachable (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


def _lock_id(schema: str) -> int:
    digest = hashlib.sha256(f"vyapaar-migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def applied_versions(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await conn.fetch(
        f"SELECT version FROM {quote_ident(schema)}.schema_migrations ORDER BY version"
    )
    return [r["version"] for r in rows]


async def migrate(pool: asyncpg.Pool, schema: str, migrations: Sequence[Migration]) -> list[str]:
    """Apply pending migrations into ``schema``; return the versions applied now."""
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions: {versions}")
    qschema = quote_ident(schema)
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_id(schema))
        try:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {qschema}")
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {qschema}.schema_migrations (
                        version text PRIMARY KEY,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = set(await applied_versions(conn, schema))
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {qschema}")
                    await conn.execute(migration.sql)
                    await conn.execute(
                        f"INSERT INTO {qschema}.schema_migrations (version) VALUES ($1)",
                        migration.version,
                    )
                applied_now.append(migration.version)
                log.info("applied migration %s to schema %s", migration.version, schema)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_id(schema))
    return applied_now
