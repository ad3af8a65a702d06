"""SQL migrations: create the schema, record versions, idempotent, safe in parallel."""

from __future__ import annotations

import asyncio

import asyncpg
from vyapaar_services.common import db


async def test_migrations_create_the_schema_and_record_applied_versions(
    database_url: str, schema: str
) -> None:
    pool = await db.create_pool(database_url, schema, max_size=2)
    try:
        migrations = [
            *db.common_migrations(),
            *db.load_migrations("vyapaar_services.inventory.migrations", "inventory"),
        ]
        applied = await db.migrate(pool, schema, migrations)
        assert applied == ["common/0001_messaging", "inventory/0001_init"]
        async with pool.acquire() as conn:
            assert await db.applied_versions(conn, schema) == applied
            tables = {
                r["table_name"]
                for r in await conn.fetch(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                    schema,
                )
            }
        assert {"schema_migrations", "inbox", "idempotency", "outbox", "stock"} <= tables
    finally:
        await pool.close()


async def test_migrating_again_applies_nothing_and_changes_nothing(
    database_url: str, schema: str
) -> None:
    pool = await db.create_pool(database_url, schema, max_size=2)
    try:
        migrations = db.common_migrations()
        await db.migrate(pool, schema, migrations)
        await pool.execute("INSERT INTO inbox (message_id, message_type) VALUES ('m', 'T')")
        assert await db.migrate(pool, schema, migrations) == []
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
    finally:
        await pool.close()


async def test_replicas_starting_together_apply_each_migration_once(
    database_url: str, schema: str
) -> None:
    pools = [await db.create_pool(database_url, schema, max_size=1) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(db.migrate(p, schema, db.common_migrations()) for p in pools)
        )
        assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    finally:
        for p in pools:
            await p.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
    database_url: str, schema: str
) -> None:
    pool = await db.create_pool(database_url, schema, max_size=1)
    broken = db.Migration("test/0001_broken", "CREATE TABLE half (id int); SELECT 1/0;")
    try:
        try:
            await db.migrate(pool, schema, [broken])
        except asyncpg.DataError:
            pass
        else:
            raise AssertionError("expected the migration to fail")
        async with pool.acquire() as conn:
            assert await db.applied_versions(conn, schema) == []
            assert await conn.fetchval("SELECT to_regclass('half')") is None
    finally:
        await pool.close()
