"""A records database filled with a synthetic books month directly through the records writer (no
Kafka): what the statistics, early-warning, statement and report tests read."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from worker.bench import books
from worker.records.database import migrate
from worker.records.rows import Rows, add
from worker.records.writer import RecordsWriter

ROLE = {"claim.settled": "settled", "claim.reversed": "settled", "claim.rejected": "rejected"}
LEDGER_TIME_MS = 1_715_000_000_000  # 2024-05-06 UTC+08:00: the ledger events' booking day


async def fill(url: str, month: books.Month, events: list[dict[str, Any]]) -> None:
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
        rows = Rows()
        for offset, message in enumerate(month.reference):
            role = "profiles" if message["type"] == "member.profile" else "facilities"
            add(rows, role, "reference", 0, offset, LEDGER_TIME_MS, orjson.dumps(message))
        for offset, event in enumerate(events):
            add(
                rows,
                ROLE.get(event["type"], "ledger"),
                "outcomes",
                0,
                offset,
                LEDGER_TIME_MS,
                orjson.dumps(event),
            )
        assert not rows.unreadable
        writer = RecordsWriter(connection, "test")
        await writer.stored([("reference", 0), ("outcomes", 0)])
        await writer.write(rows, {("reference", 0): len(month.reference), ("outcomes", 0): len(events)})
    finally:
        await connection.close()


# ---------------------------------------------------------------- the books, computed from the events

CHINA = __import__("contracts.types", fromlist=["CHINA_TZ"]).CHINA_TZ


def china_day(timestamp: str) -> str:
    import datetime as dt

    return dt.datetime.fromisoformat(timestamp).astimezone(CHINA).date().isoformat()


def trunc_div(a: int, b: int) -> int:
    """Integer division toward zero, as PostgreSQL's bigint `/`."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def movements(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """+1 per settlement on its day, -1 per reversal on its day with the settlement's amounts."""
    settled = {e["claim_id"]: e for e in events if e["type"] == "claim.settled"}
    out = []
    for e in events:
        if e["type"] == "claim.settled":
            out.append({**e, "sign": 1, "day": china_day(e["settled_at"])})
        elif e["type"] == "claim.reversed":
            s = settled[e["claim_id"]]
            negated = {k: -s[k] for k in ("total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen")}
            out.append({**s, **negated, "sign": -1, "day": china_day(e["reversed_at"])})
    return out


def expected_indicators(
    events: list[dict[str, Any]], month: str, kinds: dict[str, str], previous: str
) -> dict[str, dict[str, Any]]:
    """facility → the indicators of `facility_month_indicators` for `month`."""
    reversed_ids = {e["claim_id"] for e in events if e["type"] == "claim.reversed"}
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if e["type"] != "claim.settled" or e["claim_id"] in reversed_ids:
            continue
        key = (e["facility_id"], china_day(e["settled_at"])[:7])
        t = totals.setdefault(
            key, {"city": e["city"], "visits": 0, "total": 0, "self": 0, "exam": 0, "bands": {}}
        )
        t["visits"] += 1
        t["total"] += e["total_fen"]
        t["self"] += e["full_self_pay_fen"]
        t["exam"] += e["category_totals_fen"].get("examination", 0)
        band = e["band"] or "none"
        t["bands"][band] = t["bands"].get(band, 0) + 1
    rows = {}
    for (facility, m), t in totals.items():
        if m != month:
            continue
        top = max(t["bands"].values())
        rows[facility] = {
            "city": t["city"],
            "facility_kind": kinds.get(facility, "unknown"),
            "band": min(b for b, n in t["bands"].items() if n == top),
            "visits": t["visits"],
            "total_fen": t["total"],
            "avg_cost_fen": t["total"] // t["visits"],
            "self_pay_share_bp": trunc_div(t["self"] * 10000, t["total"]) if t["total"] else None,
            "examination_share_bp": trunc_div(t["exam"] * 10000, t["total"]) if t["total"] else None,
        }
    for facility, row in rows.items():
        peers = sorted(
            r["avg_cost_fen"]
            for r in rows.values()
            if (r["city"], r["facility_kind"], r["band"]) == (row["city"], row["facility_kind"], row["band"])
        )
        median = peers[-(-len(peers) // 2) - 1]
        row["peers"] = len(peers)
        row["peer_median_avg_cost_fen"] = median
        row["avg_cost_vs_peers_bp"] = trunc_div(row["avg_cost_fen"] * 10000, median) if median else None
        before = totals.get((facility, previous))
        row["previous_total_fen"] = before["total"] if before else None
        row["cost_growth_bp"] = (
            trunc_div((row["total_fen"] - before["total"]) * 10000, before["total"])
            if before and before["total"]
            else None
        )
    return rows


def expected_monthly_statement(events: list[dict[str, Any]], month: str) -> dict[str, dict[str, int]]:
    """facility → the agency's statement figures for `month`."""
    out: dict[str, dict[str, int]] = {}
    for m in movements(events):
        if m["day"][:7] != month:
            continue
        row = out.setdefault(
            m["facility_id"],
            dict.fromkeys(
                ("settlements", "reversals", "fund_settled_fen", "fund_reversed_fen", "fund_owed_fen",
                 "reimbursements", "reimbursements_reversed", "reimbursed_to_members_fen"),
                0,
            ),
        )  # fmt: skip
        if m["fund_payee"] == "facility":
            row["settlements" if m["sign"] == 1 else "reversals"] += 1
            row["fund_settled_fen" if m["sign"] == 1 else "fund_reversed_fen"] += abs(m["fund_pay_fen"])
            row["fund_owed_fen"] += m["fund_pay_fen"]
        else:
            row["reimbursements" if m["sign"] == 1 else "reimbursements_reversed"] += 1
            row["reimbursed_to_members_fen"] += m["fund_pay_fen"]
    return out


def expected_fund_spending(
    events: list[dict[str, Any]], month: str, kinds: dict[str, str]
) -> dict[tuple[str, ...], list[int]]:
    """(city, treatment, band, channel, kind) → [settlements, reversals, total, fund, account, cash]."""
    out: dict[tuple[str, ...], list[int]] = {}
    for m in movements(events):
        if m["day"][:7] != month:
            continue
        key = (
            m["city"],
            m["treatment"],
            m["band"] or "none",
            m["channel"],
            kinds.get(m["facility_id"], "unknown"),
        )
        row = out.setdefault(key, [0] * 6)
        row[0 if m["sign"] == 1 else 1] += 1
        for index, name in enumerate(
            ("total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen"), start=2
        ):
            row[index] += m[name]
    return out


def expected_ledger_flows(
    events: list[dict[str, Any]], cities: dict[str, str]
) -> dict[tuple[str, str, str], list[int]]:
    """(city, flow, reason) → [events, amount] over every ledger event (all booked in one month)."""
    out: dict[tuple[str, str, str], list[int]] = {}
    flows = {
        "account.credited": ("credit", "cause"),
        "account.debited": ("debit", "purpose"),
        "account.closed": ("closing", "disposition"),
    }
    for e in events:
        if e["type"] not in flows:
            continue
        flow, field = flows[e["type"]]
        row = out.setdefault((cities.get(e["member_id"], "unknown"), flow, e[field]), [0, 0])
        row[0] += 1
        row[1] += e["amount_fen"]
    return out


def expected_statement(events: list[dict[str, Any]], facility: str, first: str, last: str) -> dict[str, Any]:
    """gateway.md 3201, computed from the published events."""
    settled = {e["claim_id"]: e for e in events if e["type"] == "claim.settled"}
    out = {
        "settlements": 0,
        "reversals": 0,
        "total_fen": 0,
        "fund_pay_fen": 0,
        "account_pay_fen": 0,
        "cash_pay_fen": 0,
    }
    amounts = ("total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen")
    for e in events:
        if (
            e["type"] == "claim.settled"
            and e["facility_id"] == facility
            and first <= china_day(e["settled_at"]) <= last
        ):
            out["settlements"] += 1
            for name in amounts:
                out[name] += e[name]
        elif (
            e["type"] == "claim.reversed"
            and e["facility_id"] == facility
            and first <= china_day(e["reversed_at"]) <= last
        ):
            out["reversals"] += 1
            for name in amounts:
                out[name] -= settled[e["claim_id"]][name]
    return {"facility_id": facility, "from": first, "to": last, **out}


def fund_spending_rows(stats: dict[str, Any]) -> dict[tuple[str, ...], list[int]]:
    """`stats --format json`'s fund spending in the shape of `expected_fund_spending`."""
    return {
        (r["city"], r["treatment"], r["band"], r["channel"], r["facility_kind"]): [
            r["settlements"], r["reversals"], r["total_fen"],
            r["fund_pay_fen"], r["account_pay_fen"], r["cash_pay_fen"],
        ]
        for r in stats["fund_spending"]
    }  # fmt: skip
