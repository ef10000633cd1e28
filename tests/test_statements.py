"""Facility statements and reconciliation over HTTP (issue #12 §2, gateway.md 3201 / 3202): the
gateway reads the records database that `python -m worker records` fills from the outcome topics."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from contracts.gateway import Reconciliation, Statement
from tests.books_support import china_day as _day
from tests.books_support import expected_statement
from tests.gateway_support import GatewayProcess, auth
from tests.records_support import Books, open_books, synthetic_month
from worker.bench import books
from worker.local.services import Broker, PostgresService, RedisService

pytestmark = pytest.mark.integration
_counter = itertools.count()
FACILITY = "NC-H02"


async def _month() -> tuple[books.Month, list[dict[str, Any]]]:
    return await synthetic_month(9)


@pytest_asyncio.fixture
async def world(
    broker: Broker, redis_service: RedisService, postgres: PostgresService, tmp_path: Path
) -> AsyncIterator[Books]:
    async with open_books(broker, redis_service, postgres, tmp_path, f"st{next(_counter)}") as world:
        month, events = await synthetic_month(9)
        await world.publish_reference(month.reference)
        await world.publish_outcomes(events)
        yield world


def their_records(events: list[dict[str, Any]], facility: str, day: str) -> list[dict[str, Any]]:
    """The facility's own view of the claims it settled on `day` (in agreement with ours)."""
    reversed_ids = {e["claim_id"] for e in events if e["type"] == "claim.reversed"}
    return [
        {
            "claim_id": e["claim_id"],
            "total_fen": e["total_fen"],
            "fund_pay_fen": e["fund_pay_fen"],
            "account_pay_fen": e["account_pay_fen"],
            "cash_pay_fen": e["cash_pay_fen"],
            "reversed": e["claim_id"] in reversed_ids,
        }
        for e in events
        if e["type"] == "claim.settled" and e["facility_id"] == facility and _day(e["settled_at"]) == day
    ]


async def _caught_up(http: httpx.AsyncClient, facility: str, day: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await http.get("/v1/statements", params={"from": day, "to": day}, headers=auth(facility))
        if response.status_code == 200:
            body = response.json()
            if body["lag"] == 0:
                return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"the records never caught up: {body}")


def _statements_gateway(world: Books) -> GatewayProcess:
    """A gateway reading the books' database, ready to answer."""
    gateway = GatewayProcess(
        world.cluster, DATABASE_URL=world.database_url, WORKER_RECORDS_GROUP=world.settings.records_group
    )
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    return gateway


async def test_a_facility_reconciles_a_day_over_http_and_finds_the_planted_mismatches(world: Books) -> None:
    _, events = await _month()
    world.records().start()
    gateway = _statements_gateway(world)
    day = "2024-05-14"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        body = await _caught_up(http, FACILITY, day)
        Statement.model_validate(body)
        assert body == {**expected_statement(events, FACILITY, day, day), "lag": 0}
        assert body["settlements"] > 0
        month = await http.get(
            "/v1/statements", params={"from": "2024-04-01", "to": "2024-05-31"}, headers=auth(FACILITY)
        )
        assert month.json() == {**expected_statement(events, FACILITY, "2024-04-01", "2024-05-31"), "lag": 0}
        assert month.json()["reversals"] > 0

        theirs = their_records(events, FACILITY, day)
        clean = await http.post(
            "/v1/statements/reconcile",
            json={"from": day, "to": day, "claims": theirs},
            headers=auth(FACILITY),
        )
        assert clean.status_code == 200, clean.text
        assert clean.json() == {"balanced": True, "ours": body, "mismatches": []}

        # Planted: a claim they lost, one they invented, a wrong fund share, a reversal they missed,
        # and a claim of another facility (which must look like a claim we never settled).
        planted = [dict(c) for c in theirs]
        lost = planted.pop(0)
        planted[0]["fund_pay_fen"] += 1
        planted[1]["reversed"] = not planted[1]["reversed"]
        other = next(e for e in events if e["type"] == "claim.settled" and e["facility_id"] != FACILITY)
        invented = {**planted[2], "claim_id": "NOT-OURS-1"}
        foreign = {**planted[2], "claim_id": other["claim_id"]}
        planted += [invented, foreign]
        found = await http.post(
            "/v1/statements/reconcile",
            json={"from": day, "to": day, "claims": planted},
            headers=auth(FACILITY),
        )
        assert found.status_code == 200, found.text
        result = found.json()
        Reconciliation.model_validate(result)
        assert result["balanced"] is False
        want = [
            {
                "claim_id": lost["claim_id"],
                "problem": "missing_there",
                "field": None,
                "ours": None,
                "theirs": None,
            },
            {
                "claim_id": planted[0]["claim_id"],
                "problem": "differs",
                "field": "fund_pay_fen",
                "ours": planted[0]["fund_pay_fen"] - 1,
                "theirs": planted[0]["fund_pay_fen"],
            },
            {
                "claim_id": planted[1]["claim_id"],
                "problem": "differs",
                "field": "reversed",
                "ours": not planted[1]["reversed"],
                "theirs": planted[1]["reversed"],
            },
            {
                "claim_id": "NOT-OURS-1",
                "problem": "missing_here",
                "field": None,
                "ours": None,
                "theirs": None,
            },
            {
                "claim_id": other["claim_id"],
                "problem": "missing_here",
                "field": None,
                "ours": None,
                "theirs": None,
            },
        ]
        assert sorted(result["mismatches"], key=lambda m: (m["claim_id"], m["field"] or "")) == sorted(
            want, key=lambda m: (m["claim_id"], m["field"] or "")
        )

        # Another facility's token sees its own totals only.
        neighbour = other["facility_id"]
        theirs_day = _day(other["settled_at"])
        seen = await http.get(
            "/v1/statements", params={"from": theirs_day, "to": theirs_day}, headers=auth(neighbour)
        )
        assert seen.json() == {**expected_statement(events, neighbour, theirs_day, theirs_day), "lag": 0}
    logs = gateway.log_text()  # nothing personal in the gateway's logs
    assert not [c["claim_id"] for c in planted if c["claim_id"] in logs]
    assert not [e["member_id"] for e in events[:500] if e.get("member_id") and e["member_id"] in logs]


async def test_lag_counts_the_published_events_not_yet_in_the_records(world: Books) -> None:
    _, events = await _month()
    service = world.records().start()
    gateway = _statements_gateway(world)
    day = "2024-05-20"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        before = await _caught_up(http, FACILITY, day)
        assert service.terminate() == 0
        late = [
            {**e, "event_id": "late-" + e["event_id"], "claim_id": "late-" + e["claim_id"]}
            for e in events
            if e["type"] == "claim.settled" and e["facility_id"] == FACILITY and _day(e["settled_at"]) == day
        ]
        await world.publish_outcomes(late)
        deadline = time.monotonic() + 30
        lagging: dict[str, Any] = {}
        while time.monotonic() < deadline:
            lagging = (
                await http.get("/v1/statements", params={"from": day, "to": day}, headers=auth(FACILITY))
            ).json()
            if lagging["lag"] == len(late):
                break
            await asyncio.sleep(0.3)
        assert lagging == {**before, "lag": len(late)}  # published, not yet in the books
        world.records().start()
        after = await _caught_up(http, FACILITY, day)
        assert after["settlements"] == before["settlements"] + len(late)
        assert after["fund_pay_fen"] == before["fund_pay_fen"] + sum(e["fund_pay_fen"] for e in late)


async def test_bad_statement_requests_are_4xx_and_no_database_is_503(world: Books) -> None:
    world.records().start()
    gateway = _statements_gateway(world)
    without = GatewayProcess(world.cluster)
    without.start(wait_ready=0)
    without.wait_ready()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        h = auth(FACILITY)
        for params in (
            {"from": "2024-05-01"},
            {"from": "2024-05-02", "to": "2024-05-01"},
            {"from": "2024-5-1", "to": "2024-05-01"},
            {"from": "2023-01-01", "to": "2024-01-02"},
            {"from": "2024-02-30", "to": "2024-03-01"},
        ):
            response = await http.get("/v1/statements", params=params, headers=h)
            assert response.status_code == 400, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"
        assert (
            await http.get("/v1/statements", params={"from": "2023-01-01", "to": "2023-12-31"}, headers=h)
        ).status_code == 200
        assert (
            await http.get("/v1/statements", params={"from": "2024-05-01", "to": "2024-05-01"})
        ).status_code == 401
        post = "/v1/statements/reconcile"
        assert (await http.post(post, content=b"[1]", headers=h)).status_code == 400
        assert (await http.post(post, content=b"{", headers=h)).status_code == 400
        row = {
            "claim_id": "C1",
            "total_fen": 1,
            "fund_pay_fen": 0,
            "account_pay_fen": 0,
            "cash_pay_fen": 1,
            "reversed": False,
        }
        for body in (
            {"from": "2024-05-01", "to": "2024-05-01"},
            {"from": "2024-05-01", "to": "2024-05-01", "claims": [{**row, "total_fen": "1"}]},
            {"from": "2024-05-01", "to": "2024-05-01", "claims": [{**row, "total_fen": -1}]},
            {"from": "2024-05-01", "to": "2024-05-01", "claims": [{**row, "claim_id": "a b"}]},
            {"from": "2024-05-01", "to": "2024-05-01", "claims": [{**row, "reversed": 0}]},
            {"from": "2024-05-01", "to": "2024-05-01", "claims": [row, row]},
            {"from": "2024-05-02", "to": "2024-05-01", "claims": [row]},
        ):
            response = await http.post(post, json=body, headers=h)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["status"] == 422
    async with httpx.AsyncClient(base_url=without.url, timeout=30) as http:
        response = await http.get(
            "/v1/statements", params={"from": "2024-05-01", "to": "2024-05-01"}, headers=auth(FACILITY)
        )
        assert response.status_code == 503 and "DATABASE_URL" in response.json()["detail"]
        assert "Retry-After" in response.headers
