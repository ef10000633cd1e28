"""Shared pieces of the records tests: a world of topics + a database, and outcome events published."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from pydantic import SecretStr

from tests.kafka_support import Cluster, fresh_world
from worker.bench import books
from worker.kafka.publisher import route
from worker.local.kafka_io import WorkerProcess, produce, topic_and_key
from worker.local.services import Broker, PostgresService, RedisService
from worker.records.database import migrate

EVENT_TABLES = ("settlements", "reversals", "rejections", "ledger_events")


class Books:
    """One test's topics (on the shared broker) and its own database."""

    def __init__(self, cluster: Cluster, database_url: str) -> None:
        self.cluster = cluster
        self.database_url = database_url
        self.env = {
            **cluster.env,
            "DATABASE_URL": database_url,
            "WORKER_RECORDS_GROUP": f"{cluster.prefix}-records",
        }
        self.settings = cluster.settings.model_copy(
            update={"database_url": SecretStr(database_url), "records_group": f"{cluster.prefix}-records"}
        )
        self.processes: list[WorkerProcess] = []

    def records(self, **env: str) -> WorkerProcess:
        process = WorkerProcess(
            {**self.env, **env}, self.cluster.tmp / f"records-{len(self.processes)}.log", "records"
        )
        self.processes.append(process)
        return process

    async def publish_outcomes(self, events: Iterable[dict[str, Any]]) -> int:
        """Publish outcome events on their topics, keyed by member (as the worker does)."""
        topics = route(self.settings)
        messages = []
        for event in events:
            member = event.get("member_id")
            messages.append((topics[event["type"]], member.encode() if member else None, orjson.dumps(event)))
        return await produce(self.cluster.bootstrap, messages)

    async def publish_reference(self, messages: Iterable[dict[str, Any]]) -> int:
        lines = [orjson.dumps(m) for m in messages]
        return await produce(self.cluster.bootstrap, ((*topic_and_key(x, self.settings), x) for x in lines))

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url)

    async def count(self, table: str) -> int:
        connection = await self.connect()
        try:
            return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
        finally:
            await connection.close()

    def close(self) -> None:
        for process in self.processes:
            process.close()


_MONTHS: dict[int, tuple[books.Month, list[dict[str, Any]]]] = {}


async def synthetic_month(seed: int = 5) -> tuple[books.Month, list[dict[str, Any]]]:
    """A synthetic two months and its outcome events (≈ 6 400), made once per seed for the session."""
    if seed not in _MONTHS:
        month = books.generate(seed=seed)
        _MONTHS[seed] = (month, await books.outcomes(month))
    return _MONTHS[seed]


@contextlib.asynccontextmanager
async def open_books(
    broker: Broker, redis: RedisService, postgres: PostgresService, tmp: Path, name: str
) -> AsyncIterator[Books]:
    """A test's own topics on the shared broker and its own database; processes stopped after."""
    cluster = await fresh_world(broker.bootstrap_servers, redis.url, name, tmp)
    world = await books_world(cluster, postgres, name)
    try:
        yield world
    finally:
        world.close()
        cluster.close()


async def books_world(
    cluster: Cluster, postgres: PostgresService, name: str, migrated: bool = False
) -> Books:
    url = await postgres.create_database(name)
    if migrated:
        connection = await asyncpg.connect(url)
        try:
            await migrate(connection)
        finally:
            await connection.close()
    return Books(cluster, url)


def tmp_path_of(books: Books) -> Path:
    return books.cluster.tmp


async def end_offsets(books: Books) -> dict[tuple[str, int], int]:
    """Last offset + 1 of every partition with records, of the topics the records service reads (read
    from the records themselves: the local Tansu broker answers ListOffsets with the last batch's base
    offset)."""
    from worker.local.kafka_io import collect
    from worker.records.service import roles

    out: dict[tuple[str, int], int] = {}
    for received in await collect(books.cluster.bootstrap, list(roles(books.settings)), 10**9, 5.0):
        key = (received.topic, received.partition)
        out[key] = max(out.get(key, 0), received.offset + 1)
    return out
