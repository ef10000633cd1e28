"""What is read from the records database: one function per question, SQL kept here.

Statements and reconciliation are per facility and settlement date (China dates); the monthly
figures come from the views of `migrations/001_records.sql`, documented in the README for analysts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from worker.domain.reconciliation import ClaimFigures
from worker.records.database import Connection

_STATEMENT = """
WITH s AS (
    SELECT count(*) AS n, coalesce(sum(total_fen), 0) AS total, coalesce(sum(fund_pay_fen), 0) AS fund,
           coalesce(sum(account_pay_fen), 0) AS account, coalesce(sum(cash_pay_fen), 0) AS cash
    FROM settlements WHERE facility_id = $1 AND settled_on BETWEEN $2 AND $3
), r AS (
    SELECT count(*) AS n, coalesce(sum(s.total_fen), 0) AS total, coalesce(sum(r.fund_pay_fen), 0) AS fund,
           coalesce(sum(r.account_pay_fen), 0) AS account, coalesce(sum(s.cash_pay_fen), 0) AS cash
    FROM reversals r JOIN settlements s ON s.claim_id = r.claim_id
    WHERE r.facility_id = $1 AND r.reversed_on BETWEEN $2 AND $3
)
SELECT s.n AS settlements, r.n AS reversals, (s.total - r.total)::bigint AS total_fen,
       (s.fund - r.fund)::bigint AS fund_pay_fen, (s.account - r.account)::bigint AS account_pay_fen,
       (s.cash - r.cash)::bigint AS cash_pay_fen
FROM s, r
"""


async def statement(connection: Connection, facility: str, first: dt.date, last: dt.date) -> dict[str, int]:
    """Counts and amounts of the facility's settlements minus its reversals over the dates."""
    row = await connection.fetchrow(_STATEMENT, facility, first, last)
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def settled_claims(
    connection: Connection, facility: str, first: dt.date, last: dt.date
) -> dict[str, ClaimFigures]:
    """The facility's claims settled over the dates, with whether they are reversed (by now)."""
    rows = await connection.fetch(
        "SELECT s.claim_id, s.total_fen, s.fund_pay_fen, s.account_pay_fen, s.cash_pay_fen,"
        " EXISTS (SELECT 1 FROM reversals r WHERE r.claim_id = s.claim_id) AS reversed"
        " FROM settlements s WHERE s.facility_id = $1 AND s.settled_on BETWEEN $2 AND $3",
        facility,
        first,
        last,
    )
    return {
        r["claim_id"]: ClaimFigures(
            r["total_fen"], r["fund_pay_fen"], r["account_pay_fen"], r["cash_pay_fen"], r["reversed"]
        )
        for r in rows
    }


async def stored_offsets(connection: Connection, group: str, topic: str) -> dict[int, int]:
    rows = await connection.fetch(
        "SELECT partition, next_offset FROM consumer_offsets WHERE consumer_group = $1 AND topic = $2",
        group,
        topic,
    )
    return {r["partition"]: r["next_offset"] for r in rows}


def month_range(month: str) -> tuple[dt.date, dt.date]:
    """First and last day of YYYY-MM (ValueError when it is not a month)."""
    first = dt.date.fromisoformat(month + "-01")
    following = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return first, following - dt.timedelta(days=1)


_MONTHLY_STATEMENT = """
WITH moves AS (
    SELECT m.facility_id, m.fund_payee, m.sign, m.fund_pay_fen, m.claim_id, m.member_id
    FROM claim_movements m WHERE m.booked_on BETWEEN $1 AND $2 AND ($3::text IS NULL OR m.facility_id = $3)
)
SELECT m.facility_id, coalesce(f.city, min(s.city)) AS city, coalesce(f.kind, 'unknown') AS facility_kind,
       count(*) FILTER (WHERE m.fund_payee = 'facility' AND m.sign = 1) AS settlements,
       count(*) FILTER (WHERE m.fund_payee = 'facility' AND m.sign = -1) AS reversals,
       coalesce(sum(m.fund_pay_fen) FILTER (WHERE m.fund_payee = 'facility' AND m.sign = 1), 0)::bigint
           AS fund_settled_fen,
       coalesce(-sum(m.fund_pay_fen) FILTER (WHERE m.fund_payee = 'facility' AND m.sign = -1), 0)::bigint
           AS fund_reversed_fen,
       coalesce(sum(m.fund_pay_fen) FILTER (WHERE m.fund_payee = 'facility'), 0)::bigint AS fund_owed_fen,
       count(*) FILTER (WHERE m.fund_payee = 'member' AND m.sign = 1) AS reimbursements,
       count(*) FILTER (WHERE m.fund_payee = 'member' AND m.sign = -1) AS reimbursements_reversed,
       coalesce(sum(m.fund_pay_fen) FILTER (WHERE m.fund_payee = 'member'), 0)::bigint
           AS reimbursed_to_members_fen
FROM moves m
LEFT JOIN facilities f ON f.facility_id = m.facility_id
LEFT JOIN settlements s ON s.claim_id = m.claim_id
GROUP BY m.facility_id, f.city, f.kind
ORDER BY m.facility_id
"""


async def monthly_statement(
    connection: Connection, month: str, facility: str | None = None
) -> list[dict[str, Any]]:
    """The agency's settlement statement per facility (据实结算): the fund's share owed to the facility
    for claims it was paid for (`fund_payee: facility`), settlements minus reversals of the month, and
    apart from it the reimbursements paid to members (`fund_payee: member`)."""
    first, last = month_range(month)
    rows = await connection.fetch(_MONTHLY_STATEMENT, first, last, facility)
    return [{"month": month, **dict(r)} for r in rows]


async def reimbursements(
    connection: Connection, month: str, facility: str | None = None
) -> list[dict[str, Any]]:
    """The month's reimbursement claims (paid to members), one row each, reversals negative."""
    first, last = month_range(month)
    rows = await connection.fetch(
        "SELECT facility_id, claim_id, member_id, booked_on, movement, fund_pay_fen FROM claim_movements"
        " WHERE fund_payee = 'member' AND booked_on BETWEEN $1 AND $2"
        " AND ($3::text IS NULL OR facility_id = $3)"
        " ORDER BY facility_id, booked_on, claim_id, sign DESC",
        first,
        last,
        facility,
    )
    return [dict(r) for r in rows]


VIEWS = {
    "fund_spending": "fund_spending_monthly",
    "account_claim_payments": "account_claim_payments_monthly",
    "account_flows": "account_flows_monthly",
    "indicators": "facility_month_indicators",
}
"""What `python -m worker stats` prints: name → the view it reads (one month, optionally one city)."""


async def monthly(
    connection: Connection, view: str, month: str, city: str | None = None
) -> list[dict[str, Any]]:
    first, _ = month_range(month)
    rows = await connection.fetch(
        f"SELECT * FROM {VIEWS[view]} WHERE month = $1 AND ($2::text IS NULL OR city = $2)"
        " ORDER BY 1, 2, 3, 4",
        first,
        city,
    )
    return [{**r, "month": month} for r in rows]


async def daily_spending(connection: Connection, month: str, city: str | None = None) -> list[dict[str, Any]]:
    first, last = month_range(month)
    rows = await connection.fetch(
        "SELECT day, sum(fund_pay_fen)::bigint AS fund_pay_fen, sum(total_fen)::bigint AS total_fen,"
        " sum(settlements)::bigint AS settlements FROM fund_spending_daily"
        " WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR city = $3) GROUP BY day ORDER BY day",
        first,
        last,
        city,
    )
    return [dict(r) for r in rows]
