"""Load and correctness of the books (issue #12 §6): a few thousand synthetic claims of both cities,
with reversals, reimbursements and account requests, settled by the Kafka worker; the records
service writes what it published; every statement, statistic and indicator equals the sums computed
here directly from the published events."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.books_support import (
    china_day,
    expected_fund_spending,
    expected_indicators,
    expected_ledger_flows,
    expected_monthly_statement,
    expected_statement,
    fund_spending_rows,
)
from tests.kafka_support import fresh_world
from tests.records_support import EVENT_TABLES, books_world
from worker.bench import books
from worker.local.services import Broker, PostgresService, RedisService
from worker.records import queries
from worker.records.alerts import indicators

pytestmark = pytest.mark.integration


def _previous(month: str) -> str:
    return (dt.date.fromisoformat(month + "-01") - dt.timedelta(days=1)).strftime("%Y-%m")


async def test_the_books_of_a_worker_run_equal_the_sums_of_its_published_events(
    broker: Broker, redis_service: RedisService, postgres: PostgresService, tmp_path: Path
) -> None:
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, "load", tmp_path)
    world = await books_world(cluster, postgres, "load")
    try:
        month = books.generate(members=300, visits_per_day=2, seed=21, family_rate=0.01)
        kinds = Counter(m["type"] for m in month.requests)
        assert kinds["claim.submitted"] >= 2500 and kinds["claim.reversal_requested"] > 50
        assert sum(1 for m in month.requests if m.get("channel") == "reimbursement") > 50
        await cluster.publish([orjson.dumps(m) for m in month.reference])
        cluster.worker().start()
        world.records().start()
        started = time.monotonic()
        await cluster.publish([orjson.dumps(m) for m in month.requests])
        received = await cluster.wait_outputs(len(month.requests), 300)
        settle_seconds = time.monotonic() - started
        events = [r.event for r in received]
        assert len(events) == len(month.requests)
        assert not [e for e in events if e["type"] == "dead_letter"]
        by_type = Counter(e["type"] for e in events)
        assert by_type["claim.settled"] > 2000 and by_type["claim.reversed"] > 50
        assert by_type["account.credited"] > 300 and by_type["account.debited"] > 0

        deadline = time.monotonic() + 120
        rows = 0
        while time.monotonic() < deadline:
            connection = await world.connect()
            try:
                rows = sum(
                    [int(await connection.fetchval(f"SELECT count(*) FROM {t}")) for t in EVENT_TABLES]
                )
            finally:
                await connection.close()
            if rows >= len(events):
                break
            await asyncio.sleep(0.3)
        assert rows == len(events)
        print(f"\n{len(events)} events settled in {settle_seconds:.1f} s and in the records")

        facility_kinds = {
            m["facility_id"]: m["kind"] for m in month.reference if m["type"] == "facility.registered"
        }
        cities = {m["member_id"]: m["city"] for m in month.reference if m["type"] == "member.profile"}
        days = sorted({china_day(e["settled_at"]) for e in events if e["type"] == "claim.settled"})
        months = sorted({d[:7] for d in days})
        env = {**os.environ, "DATABASE_URL": world.database_url}

        connection = await asyncpg.connect(world.database_url)
        try:
            # 3201 for every facility over the whole run, and for each day of it
            for facility in facility_kinds:
                got = await queries.statement(
                    connection, facility, dt.date.fromisoformat(days[0]), dt.date.fromisoformat(days[-1])
                )
                want = expected_statement(events, facility, days[0], days[-1])
                assert got == {k: v for k, v in want.items() if k not in ("facility_id", "from", "to")}, (
                    facility
                )
                for day in days:
                    one = dt.date.fromisoformat(day)
                    assert await queries.statement(connection, facility, one, one) == {
                        k: v
                        for k, v in expected_statement(events, facility, day, day).items()
                        if k not in ("facility_id", "from", "to")
                    }
            for month_text in months:
                want_rows = expected_indicators(events, month_text, facility_kinds, _previous(month_text))
                got_rows = {r["facility_id"]: r for r in await indicators(connection, month_text)}
                assert set(got_rows) == set(want_rows)
                for facility, want_row in want_rows.items():
                    assert {k: got_rows[facility][k] for k in want_row} == want_row, facility
        finally:
            await connection.close()

        for month_text in months:
            out = await asyncio.to_thread(_cli, env, "statement", "--month", month_text, "--format", "json")
            statement = {r["facility_id"]: r for r in out["facilities"]}
            want_statement = expected_monthly_statement(events, month_text)
            assert set(statement) == set(want_statement)
            for facility, want_row in want_statement.items():
                assert {k: statement[facility][k] for k in want_row} == want_row, facility
            stats = await asyncio.to_thread(_cli, env, "stats", "--month", month_text, "--format", "json")
            spending = fund_spending_rows(stats)
            assert spending == expected_fund_spending(events, month_text, facility_kinds)
            if len(months) == 1:  # ledger events are booked on the day the worker published them
                ledger = {
                    (r["city"], r["flow"], r["reason"]): [r["events"], r["amount_fen"]]
                    for r in stats["account_flows"]
                    if r["flow"] != "claim_payment"
                }
                assert ledger == expected_ledger_flows(events, cities)
                claim_payments = sum(
                    r["amount_fen"] for r in stats["account_flows"] if r["flow"] == "claim_payment"
                )
                assert claim_payments == sum(e["account_pay_fen"] for e in _net(events))
    finally:
        world.close()
        cluster.close()


def _net(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Settlements, and reversals with the settlement's account payment negated."""
    settled = {e["claim_id"]: e for e in events if e["type"] == "claim.settled"}
    out = []
    for e in events:
        if e["type"] == "claim.settled":
            out.append(e)
        elif e["type"] == "claim.reversed":
            out.append({"account_pay_fen": -settled[e["claim_id"]]["account_pay_fen"]})
    return out


def _cli(env: dict[str, str], *args: str) -> Any:
    """`python -m worker ARGS` with JSON output, parsed."""
    done = subprocess.run([sys.executable, "-m", "worker", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
