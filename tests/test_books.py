"""The agency's books (issue #12 §2–§5) on a synthetic two months with planted anomalies: the monthly
statement, the fund statistics, the early-warning indicators and alerts (published once), and the
HTML report opened in headless Chromium. Expected figures are computed here from the events."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from contracts.outbound import MonitoringAlert
from tests.books_support import (
    expected_fund_spending,
    expected_indicators,
    expected_ledger_flows,
    expected_monthly_statement,
    fill,
    fund_spending_rows,
)
from tests.kafka_support import fresh_world
from worker.__main__ import STATS_VIEWS
from worker.bench import books
from worker.domain.warning import ThresholdsError, breaches, load_thresholds
from worker.local.kafka_io import collect
from worker.local.services import Broker, PostgresService, RedisService
from worker.records import queries
from worker.records.alerts import indicators

pytestmark = pytest.mark.integration
MONTH, PREVIOUS = "2024-05", "2024-04"
_counter = itertools.count()


class Filled:
    def __init__(self, url: str, month: books.Month, events: list[dict[str, Any]]) -> None:
        self.url = url
        self.month = month
        self.events = events
        self.kinds = {
            m["facility_id"]: m["kind"] for m in month.reference if m["type"] == "facility.registered"
        }
        self.cities = {m["member_id"]: m["city"] for m in month.reference if m["type"] == "member.profile"}

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", *args],
            env={**os.environ, "DATABASE_URL": self.url, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )


_FILLED: dict[str, Filled] = {}


@pytest_asyncio.fixture
async def filled(postgres: PostgresService) -> Filled:
    """One database with the synthetic month for the whole module (the tests only read it, but alerts)."""
    if "db" not in _FILLED:
        url = await postgres.create_database("books")
        month = books.generate()
        events = await books.outcomes(month)
        await fill(url, month, events)
        _FILLED["db"] = Filled(url, month, events)
    return _FILLED["db"]


async def _fetch(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await connection.fetch(sql, *args)]
    finally:
        await connection.close()


async def test_the_indicators_are_those_of_the_events(filled: Filled) -> None:
    want = expected_indicators(filled.events, MONTH, filled.kinds, PREVIOUS)
    connection = await asyncpg.connect(filled.url)
    try:
        rows = await indicators(connection, MONTH)
    finally:
        await connection.close()
    assert {r["facility_id"] for r in rows} == set(want) and len(rows) == 24
    for row in rows:
        expected = want[row["facility_id"]]
        got = {k: row[k] for k in expected}
        assert got == expected, row["facility_id"]


async def test_the_planted_facilities_alert_and_no_other(filled: Filled) -> None:
    connection = await asyncpg.connect(filled.url)
    try:
        rows = await indicators(connection, MONTH)
    finally:
        await connection.close()
    found = {(b.facility_id, b.indicator) for b in breaches(rows, load_thresholds())}
    assert found == set(books.PLANTED.items())


async def test_alerts_are_published_once_and_listed(
    filled: Filled, broker: Broker, redis_service: RedisService, tmp_path: Path
) -> None:
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, f"al{next(_counter)}", tmp_path)
    env = {**cluster.env}
    first = filled.cli("alerts", "--month", MONTH, "--format", "json", **env)
    assert first.returncode == 0, first.stderr
    listed = json.loads(first.stdout)
    assert listed["published_now"] == len(books.PLANTED)
    assert {(a["facility_id"], a["indicator"]) for a in listed["alerts"]} == set(books.PLANTED.items())
    assert all(a["published"] for a in listed["alerts"])
    again = filled.cli("alerts", "--month", MONTH, **env)
    assert again.returncode == 0, again.stderr
    assert f"{len(books.PLANTED)} alerts for {MONTH}; 0 published now" in again.stderr
    for facility in books.PLANTED:
        assert facility in again.stdout
    received = await collect(cluster.bootstrap, [cluster.settings.topic_alerts], 100, 5.0)
    assert len(received) == len(books.PLANTED)  # once, though run twice
    for message in received:
        alert = MonitoringAlert.model_validate(message.event)
        assert alert.event_id == f"alert:{alert.facility_id}:{MONTH}:{alert.indicator}"
        assert message.key == alert.facility_id.encode()
        assert alert.value_bp > alert.threshold_bp
    dry = filled.cli("alerts", "--month", PREVIOUS, "--dry-run", "--format", "json", **env)
    assert dry.returncode == 0 and json.loads(dry.stdout)["published_now"] == 0
    cluster.close()


def test_a_bad_thresholds_file_is_refused_naming_file_and_field(tmp_path: Path) -> None:
    good = Path("worker/domain/warning/thresholds.toml").read_text()
    cases = {
        "negative.toml": (good.replace("min_visits = 20", "min_visits = -1"), "default.min_visits"),
        "unknown.toml": (
            good.replace("min_peers = 3", "min_peers = 3\nmax_visits = 9"),
            "default.max_visits",
        ),
        "city.toml": (good + "\n[cities.nanchang]\nmax_self_pay_share_bp = 20000\n", "cities.nanchang"),
        "text.toml": (good.replace("min_visits = 20", 'min_visits = "20"'), "default.min_visits"),
        "broken.toml": ("id = ", "broken.toml"),
    }
    for name, (text, field) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ThresholdsError, match=name) as caught:
            load_thresholds(path)
        assert field in str(caught.value), caught.value
        checked = subprocess.run(
            [sys.executable, "-m", "worker", "alerts", "--check", "--thresholds", str(path)],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 1 and name in checked.stderr and field in checked.stderr
    assert (
        subprocess.run([sys.executable, "-m", "worker", "alerts", "--check"], capture_output=True).returncode
        == 0
    )


async def test_the_monthly_statement_per_facility(filled: Filled) -> None:
    want = expected_monthly_statement(filled.events, MONTH)
    out = filled.cli("statement", "--month", MONTH)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["facility_id"] for r in rows} == set(want)
    for row in rows:
        for name, value in want[row["facility_id"]].items():
            assert int(row[name]) == value, (row["facility_id"], name)
        assert row["month"] == MONTH and row["facility_kind"] == "medical"
    assert (
        sum(w["reversals"] for w in want.values()) > 0 and sum(w["reimbursements"] for w in want.values()) > 0
    )
    one = filled.cli("statement", "--month", MONTH, "--facility", "NC-H03", "--format", "json")
    document = json.loads(one.stdout)
    assert [f["facility_id"] for f in document["facilities"]] == ["NC-H03"]
    paid = [r for r in document["reimbursements"]]
    assert sum(r["fund_pay_fen"] for r in paid) == want["NC-H03"]["reimbursed_to_members_fen"]
    assert all(r["facility_id"] == "NC-H03" for r in paid)
    listed = filled.cli("statement", "--month", MONTH, "--reimbursements")
    assert len(list(csv.DictReader(io.StringIO(listed.stdout)))) == sum(
        w["reimbursements"] + w["reimbursements_reversed"] for w in want.values()
    )
    bad = filled.cli("statement", "--month", "2024-13")
    assert bad.returncode == 2 and "not a month" in bad.stderr
    unset = subprocess.run(  # noqa: ASYNC221 (a short CLI run)
        [sys.executable, "-m", "worker", "statement", "--month", MONTH],
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        capture_output=True,
        text=True,
    )
    assert unset.returncode == 2 and "DATABASE_URL is not set" in unset.stderr


async def test_fund_statistics_views_and_cli(filled: Filled) -> None:
    assert set(STATS_VIEWS) == set(queries.VIEWS)
    want = expected_fund_spending(filled.events, MONTH, filled.kinds)
    out = filled.cli("stats", "--month", MONTH, "--format", "json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    got = fund_spending_rows(stats)
    assert got == want
    assert {k[3] for k in got} == {"pos", "reimbursement"} and len({k[1] for k in got}) >= 3
    flows = expected_ledger_flows(filled.events, filled.cities)
    ledger = {
        (r["city"], r["flow"], r["reason"]): [r["events"], r["amount_fen"]]
        for r in stats["account_flows"]
        if r["flow"] != "claim_payment"
    }
    assert ledger == flows and any(k[1] == "debit" for k in ledger)
    claim_payments = sum(r["amount_fen"] for r in stats["account_flows"] if r["flow"] == "claim_payment")
    assert claim_payments == sum(v[4] for v in want.values())
    by_category = sum(r["account_pay_fen"] for r in stats["account_claim_payments"])
    assert by_category == claim_payments
    assert {r["category"] for r in stats["account_claim_payments"]} >= {"mixed", "drug"}
    text = filled.cli("stats", "--month", MONTH, "--city", "nanjing", "--view", "fund_spending")
    assert text.returncode == 0 and "nanjing" in text.stdout and "nanchang" not in text.stdout
    # an analyst queries the views directly
    rows = await _fetch(
        filled.url,
        "SELECT sum(fund_pay_fen) AS f FROM fund_spending_monthly WHERE month = $1",
        __import__("datetime").date(2024, 5, 1),
    )
    assert rows[0]["f"] == sum(v[3] for v in want.values())


async def test_the_report_opens_in_headless_chromium_with_every_chart(filled: Filled, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    page_file = tmp_path / "report.html"
    alerts = filled.cli("alerts", "--month", MONTH, "--dry-run")
    assert alerts.returncode == 0, alerts.stderr
    out = filled.cli("report", "--month", MONTH, "--out", str(page_file))
    assert out.returncode == 0, out.stderr
    text = page_file.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text  # self-contained
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium")
        )
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request",
                lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith("file:") else None,
            )
            await page.goto(page_file.as_uri())
            charts = await page.eval_on_selector_all(
                "svg.chart",
                "els => els.map(e => ({name: e.dataset.chart, w: e.getBoundingClientRect().width,"
                " h: e.getBoundingClientRect().height, bars: [...e.querySelectorAll('rect.bar')]"
                ".filter(r => r.getBoundingClientRect().width > 0"
                " && r.getBoundingClientRect().height > 0).length}))",
            )
            await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            await browser.close()
    assert not errors, errors
    names = {c["name"]: c for c in charts}
    assert set(names) == {"fund-by-day", "fund-by-class", "fund-by-band", "account-flows", "top-facilities"}
    for chart in charts:
        assert chart["w"] > 100 and chart["h"] > 50 and chart["bars"] > 0, chart
    assert names["fund-by-day"]["bars"] == 31
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert "NC-H01" in text and "Alerts of the month" in text


def test_month_keywords_for_scheduled_jobs() -> None:
    import argparse
    import datetime as dt

    from worker.__main__ import month_arg
    from worker.clock import china_today

    today = china_today()
    assert month_arg("current") == today.strftime("%Y-%m")
    assert month_arg("previous") == (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    assert month_arg("2024-02") == "2024-02"
    for bad in ("2024-2", "2024-13", "last", "2024-02-01"):
        with pytest.raises(argparse.ArgumentTypeError):
            month_arg(bad)
