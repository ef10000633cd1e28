"""PostgreSQL of the records: connecting, and the schema migrations applied at start.

Migrations are the files `migrations/NNN_name.sql`, applied in order, each once, in one transaction
with the version recorded in `schema_migrations`; an advisory lock lets several records services start
at once. Readers (the gateway's statements, the CLIs) only check that the schema is there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from worker.settings import Settings

log = logging.getLogger("worker.records")
Connection: TypeAlias = "asyncpg.Connection | PoolConnectionProxy[Any]"
"""A connection, or one borrowed from a pool."""
MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x3201_3202


class DatabaseError(RuntimeError):
    """The records database is not configured, not reachable or not migrated (one line for an operator)."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, SQL) of every migration file, in order."""
    out = []
    for path in sorted(MIGRATIONS.glob("[0-9][0-9][0-9]_*.sql")):
        out.append((int(path.name[:3]), path.stem, path.read_text(encoding="utf-8")))
    return out


LATEST = migrations()[-1][0]


def dsn(settings: Settings) -> str:
    if settings.database_url is None:
        raise DatabaseError("DATABASE_URL is not set (the records database)")
    return settings.database_url.get_secret_value()


async def connect_pool(settings: Settings, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn(settings), min_size=1, max_size=max_size, command_timeout=60)
    assert pool is not None
    return pool


async def migrate(connection: asyncpg.Connection) -> list[str]:
    """Apply the migrations this database lacks; their names."""
    applied: list[str] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await connection.fetch("SELECT version FROM schema_migrations")}
        if done and max(done) > LATEST:
            raise DatabaseError(
                f"the records database is at schema version {max(done)}, newer than this code ({LATEST})"
            )
        for version, name, sql in migrations():
            if version in done:
                continue
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
            applied.append(name)
    if applied:
        log.info("records database migrated: %s", ", ".join(applied))
    return applied


async def schema_version(connection: Connection) -> int | None:
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return None
    version: int | None = await connection.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def require_schema(connection: Connection) -> None:
    """Readers need the schema the records service creates."""
    version = await schema_version(connection)
    if version is None or version < LATEST:
        raise DatabaseError(
            f"the records database is at schema version {version or 0}, this code reads {LATEST}:"
            " start `python -m worker records` once to migrate it"
        )
