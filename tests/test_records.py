"""The settlement-records service (issue #12 §1): outcome events into PostgreSQL exactly once, through
a real broker, a real PostgreSQL and `python -m worker records` processes (killed with SIGKILL)."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import pytest_asyncio

from tests.kafka_support import fresh_world
from tests.records_support import EVENT_TABLES, Books, books_world, end_offsets, open_books, synthetic_month
from worker.bench import books
from worker.local.services import Broker, PostgresService, RedisService, start_postgres
from worker.records.database import LATEST, DatabaseError, migrate, require_schema
from worker.records.rows import Rows, add
from worker.records.writer import Fenced, RecordsWriter

pytestmark = pytest.mark.integration
_counter = itertools.count()


async def _month() -> tuple[books.Month, list[dict[str, Any]]]:
    return await synthetic_month()


@pytest_asyncio.fixture
async def world(
    broker: Broker, redis_service: RedisService, postgres: PostgresService, tmp_path: Path
) -> AsyncIterator[Books]:
    async with open_books(broker, redis_service, postgres, tmp_path, f"rec{next(_counter)}") as world:
        yield world


async def _wait_rows(world: Books, count: int, seconds: float = 90) -> int:
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        total = sum([await world.count(t) for t in EVENT_TABLES])
        if total >= count:
            return total
        await asyncio.sleep(0.2)
    return total


async def _check_books_equal_events(world: Books, events: list[dict[str, Any]]) -> None:
    """Every event is one row; the sums of the rows are the sums of the events."""
    by_type = Counter(e["type"] for e in events)
    connection = await world.connect()
    try:
        assert await connection.fetchval("SELECT count(*) FROM settlements") == by_type["claim.settled"]
        assert await connection.fetchval("SELECT count(*) FROM reversals") == by_type["claim.reversed"]
        assert await connection.fetchval("SELECT count(*) FROM rejections") == by_type["claim.rejected"]
        ledger = sum(n for t, n in by_type.items() if t.startswith("account."))
        assert await connection.fetchval("SELECT count(*) FROM ledger_events") == ledger
        settled = [e for e in events if e["type"] == "claim.settled"]
        for column in ("total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen", "full_self_pay_fen"):
            got = await connection.fetchval(f"SELECT sum({column}) FROM settlements")
            assert got == sum(e[column] for e in settled), column
        assert await connection.fetchval("SELECT sum(examination_fen) FROM settlements") == sum(
            e["category_totals_fen"].get("examination", 0) for e in settled
        )
        credits = sum(e["amount_fen"] for e in events if e["type"] == "account.credited")
        assert (
            await connection.fetchval(
                "SELECT sum(amount_fen) FROM ledger_events WHERE type = 'account.credited'"
            )
            == credits
        )
        assert await connection.fetchval("SELECT count(*) FROM unreadable_events") == 0
        one = settled[len(settled) // 2]
        row = await connection.fetchrow("SELECT * FROM settlements WHERE event_id = $1", one["event_id"])
        assert row is not None
        for field in ("claim_id", "member_id", "city", "facility_id", "channel", "fund_payee", "treatment"):
            assert row[field] == one[field], field
        assert row["settled_at"].isoformat() == time_in_utc(one["settled_at"])
        assert orjson.loads(row["category_totals"]) == one["category_totals_fen"]
    finally:
        await connection.close()


def time_in_utc(text: str) -> str:
    import datetime as dt

    return dt.datetime.fromisoformat(text).astimezone(dt.UTC).isoformat()


async def _offsets_at_end(world: Books) -> None:
    """The stored offsets are the topics' end offsets: nothing left behind, nothing beyond."""
    connection = await world.connect()
    try:
        rows = await connection.fetch(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1",
            world.settings.records_group,
        )
    finally:
        await connection.close()
    stored = {(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    ends = await end_offsets(world)
    wrong = {tp: (stored.get(tp), end) for tp, end in ends.items() if end and stored.get(tp) != end}
    assert not wrong


async def test_every_outcome_event_becomes_one_row_with_its_facts(world: Books) -> None:
    month, events = await _month()
    await world.publish_reference(month.reference)
    await world.publish_outcomes(events)
    service = world.records().start()
    assert await _wait_rows(world, len(events)) == len(events)
    await asyncio.sleep(0.5)
    assert service.terminate() == 0
    await _check_books_equal_events(world, events)
    await _offsets_at_end(world)
    assert await world.count("facilities") == len(
        [m for m in month.reference if m["type"] == "facility.registered"]
    )
    assert await world.count("members") == len([m for m in month.reference if m["type"] == "member.profile"])
    # started again, it reads nothing twice
    again = world.records().start()
    await asyncio.sleep(2)
    assert again.terminate() == 0
    await _check_books_equal_events(world, events)
    logs = service.log_text() + again.log_text()  # nothing personal in the logs
    assert not {e["member_id"] for e in events if e.get("member_id") and e["member_id"] in logs}
    assert not [e["claim_id"] for e in events if "claim_id" in e and e["claim_id"] in logs]


async def test_sigkill_at_any_point_neither_loses_nor_doubles_a_row(world: Books) -> None:
    """Killed with SIGKILL at random moments while events keep arriving: the books end equal to the events."""
    month, events = await _month()
    await world.publish_reference(month.reference)
    rng = random.Random(3)
    size = len(events) // 5 + 1
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    kills = 0
    service = world.records(WORKER_RECORDS_BATCH_SIZE="300").start()
    for chunk in chunks:
        await world.publish_outcomes(chunk)
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        assert service.process is not None
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(30)
        kills += 1
        service = world.records(WORKER_RECORDS_BATCH_SIZE="300").start()
    assert kills == len(chunks) == 5
    assert await _wait_rows(world, len(events)) == len(events)
    await asyncio.sleep(1)
    assert service.terminate() == 0
    await _check_books_equal_events(world, events)
    await _offsets_at_end(world)


async def test_a_crash_inside_the_transaction_leaves_nothing_and_the_restart_writes_it_once(
    world: Books,
) -> None:
    _, events = await _month()
    await world.publish_outcomes(events[:2000])
    crashing = world.records(WORKER_FAULT_CRASH_BEFORE_COMMIT="true").start()
    assert crashing.process is not None and crashing.process.wait(60) == -signal.SIGKILL
    assert "SIGKILL before the database commit" in crashing.log_text()
    for table in (*EVENT_TABLES, "consumer_offsets"):
        assert await world.count(table) == 0, table  # rows were copied, then rolled back with the process
    service = world.records().start()
    assert await _wait_rows(world, 2000) == 2000
    await asyncio.sleep(0.5)
    assert service.terminate() == 0
    await _check_books_equal_events(world, events[:2000])


async def test_unreadable_records_are_kept_aside_and_do_not_stop_the_service(world: Books) -> None:
    _, events = await _month()
    good = events[:50]
    settled = next(e for e in events if e["type"] == "claim.settled")
    missing = {k: v for k, v in settled.items() if k != "fund_pay_fen"} | {"event_id": "bad-1"}
    wrong = settled | {"event_id": "bad-2", "total_fen": "12.5"}
    stranger = {"type": "claim.settled", "event_id": 7}
    topic = world.settings.topic_settled
    await world.cluster.produce_raw(
        [
            (topic, b"m", b"not json"),
            (topic, b"m", b"[1, 2]"),
            (topic, b"m", orjson.dumps(missing)),
            (topic, b"m", orjson.dumps(wrong)),
            (
                topic,
                b"m",
                orjson.dumps(settled).replace(b'"total_fen":', b'"total_fen":1' + b"0" * 25 + b',"x":', 1),
            ),
            (topic, b"m", orjson.dumps(stranger)),
            (world.settings.topic_ledger, b"m", orjson.dumps({"type": "claim.settled"})),
        ]
    )
    await world.publish_outcomes(good)
    service = world.records().start()
    assert await _wait_rows(world, len(good)) == len(good)
    deadline = time.monotonic() + 30
    while await world.count("unreadable_events") < 7 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    assert await world.count("unreadable_events") == 7
    assert service.process is not None and service.process.poll() is None
    assert service.terminate() == 0
    assert "could not be read" in service.log_text()
    connection = await world.connect()
    try:
        errors = [
            r["error"]
            for r in await connection.fetch('SELECT error FROM unreadable_events ORDER BY "offset"')
        ]
    finally:
        await connection.close()
    assert any("not a JSON object" in e for e in errors)
    assert any("KeyError" in e for e in errors)
    assert any("amount is not an integer" in e for e in errors)


async def test_a_writer_that_lost_its_partition_is_fenced_and_writes_nothing(
    postgres: PostgresService,
) -> None:
    url = await postgres.create_database(f"fence{next(_counter)}")
    first, second = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        await migrate(first)
        _, events = await _month()
        rows = Rows()
        for offset, event in enumerate(events[:10]):
            add(
                rows,
                "settled" if event["type"].startswith("claim.") else "ledger",
                "t",
                0,
                offset,
                0,
                orjson.dumps(event),
            )
        stale, owner = RecordsWriter(first, "g"), RecordsWriter(second, "g")
        await stale.stored([("t", 0)])
        await owner.stored([("t", 0)])
        await owner.write(Rows(), {("t", 0): 5})  # the new owner moved the partition on
        with pytest.raises(Fenced):
            await stale.write(rows, {("t", 0): 10})
        assert await first.fetchval("SELECT count(*) FROM settlements") == 0
        assert await first.fetchval("SELECT next_offset FROM consumer_offsets") == 5
        await stale.stored([("t", 0)])  # seeks again, then writes
        await stale.write(rows, {("t", 0): 10})
        assert await first.fetchval("SELECT next_offset FROM consumer_offsets") == 10
    finally:
        await first.close()
        await second.close()


async def test_migrations_apply_once_and_refuse_a_newer_database(postgres: PostgresService) -> None:
    url = await postgres.create_database(f"mig{next(_counter)}")
    connection = await asyncpg.connect(url)
    try:
        with pytest.raises(DatabaseError, match="start `python -m worker records`"):
            await require_schema(connection)
        assert await migrate(connection) == ["001_records"]
        assert await migrate(connection) == []
        await require_schema(connection)
        await connection.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'future')", LATEST + 1
        )
        with pytest.raises(DatabaseError, match="newer than this code"):
            await migrate(connection)
    finally:
        await connection.close()


async def test_the_service_refuses_to_start_without_a_database(world: Books) -> None:
    service = world.records(DATABASE_URL="")
    service.env.pop("DATABASE_URL")
    service.start(wait_ready=0)
    assert service.process is not None and service.process.wait(60) == 2
    assert "DATABASE_URL is not set" in service.log_text()


async def test_a_database_outage_pauses_the_service_and_loses_nothing(
    broker: Broker, redis_service: RedisService, tmp_path: Path
) -> None:
    """PostgreSQL stopped under a running service, events arriving meanwhile, then started again."""
    own = start_postgres(use_env=False)  # a server of its own: the others' stays up
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, "recdown", tmp_path)
    world = await books_world(cluster, own, "down")
    try:
        _, events = await _month()
        await world.publish_outcomes(events[:3000])
        service = world.records().start()
        assert await _wait_rows(world, 3000) == 3000
        own.stop_server()
        await world.publish_outcomes(events[3000:])
        await asyncio.sleep(4)
        assert service.process is not None and service.process.poll() is None  # waiting, not dead
        own.start_server()
        assert await _wait_rows(world, len(events)) == len(events)
        await asyncio.sleep(0.5)
        assert service.terminate() == 0
        assert "records database failed" in service.log_text()
        await _check_books_equal_events(world, events)
        await _offsets_at_end(world)
    finally:
        world.close()
        cluster.close()
        own.close()
