"""`python -m worker inspect member ID` / `inspect claim ID`: one member's or one claim's state in
plain words (the Redis values are positional arrays). An operator tool: it prints personal data to
the operator's terminal, never to the logs."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from contracts.types import ID_RE
from worker.adapters.redis_client import state_store
from worker.adapters.redis_store import RedisStore
from worker.domain.state import ClaimRecord, Ledger
from worker.settings import Settings

ACCUMULATORS = (
    ("counted", "eligible spending counted this year"),
    ("capped_fund", "pooling fund paid toward the annual cap"),
    ("fund", "pooling fund paid"),
    ("incentive_fund", "paid from health incentives"),
    ("claims", "claims settled"),
)


def yuan(fen: int) -> str:
    return f"{fen / 100:,.2f} yuan ({fen:,} fen)" if fen else "0"


def describe_ledger(ledger: Ledger) -> list[str]:
    lines = [f"personal account: balance {yuan(ledger.balance)}" + (" (closed)" if ledger.closed else "")]
    for year in sorted(ledger.years):
        acc = ledger.years[year]
        lines.append(f"year {year}:")
        for name, words in ACCUMULATORS:
            value = getattr(acc, name)
            lines.append(f"  {words}: {value if name == 'claims' else yuan(value)}")
    lines.append(f"state changes applied: {ledger.changes}")
    return lines


def describe_claim(record: ClaimRecord) -> list[str]:
    if record.archived:
        return [
            f"claim {record.claim_id}: archived (past the retention window), service year {record.year}, "
            f"facility {record.facility_id}, member {record.member_id}; it can never be settled again"
        ]
    status = "reversed" if record.reversed is not None else "settled"
    lines = [
        f"claim {record.claim_id}: {status}",
        f"  member {record.member_id}, facility {record.facility_id}, service year {record.year}",
        f"  pooling fund paid {yuan(record.fund_pay)}, personal account paid {yuan(record.account_pay)}",
    ]
    if record.cap_fen is not None:
        lines.append(f"  annual cap then: {yuan(record.cap_fen)}")
    for name, words in ACCUMULATORS:
        value = getattr(record.delta, name)
        if value:
            lines.append(f"  added to the year: {words} {value if name == 'claims' else yuan(value)}")
    settled: dict[str, Any] = orjson.loads(record.settled.data)
    lines.append(f"  settled at {settled.get('settled_at')}, event {settled.get('event_id')}")
    if record.reversed is not None:
        reversed_: dict[str, Any] = orjson.loads(record.reversed.data)
        lines.append(f"  reversed at {reversed_.get('reversed_at')}, event {reversed_.get('event_id')}")
    return lines


async def _member(store: RedisStore, member_id: str) -> list[str]:
    profile, ledger, records = await store.member_state(member_id)
    if profile is None and ledger is None and not records:
        return [f"no member {member_id} in Redis"]
    lines = [f"member {member_id}"]
    if profile is not None:
        facts = {k: v for k, v in orjson.loads(profile).items() if k not in ("type", "schema_version")}
        lines.append("profile: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    else:
        lines.append("profile: none received")
    lines += describe_ledger(ledger) if ledger is not None else ["no account or accumulators yet"]
    lines.append(f"claims kept: {len(records)}")
    for record in sorted(records, key=lambda r: (r.year, r.claim_id)):
        lines += describe_claim(record)
    return lines


async def _claim(store: RedisStore, claim_id: str) -> list[str]:
    member_id, record = await store.claim_state(claim_id)
    if member_id is None:
        return [f"no claim {claim_id}: never settled (or settled before a rebuild that did not restore it)"]
    if record is None:
        return [f"claim {claim_id} belongs to member {member_id}, but its record is missing"]
    return describe_claim(record)


def run_inspect(settings: Settings, what: str, ident: str) -> int:
    if not ID_RE.fullmatch(ident):
        print(f"{ident!r} is not an id")
        return 2

    async def run() -> list[str]:
        store = state_store(settings)
        try:
            await store.adopt_marker()
            return await (_member(store, ident) if what == "member" else _claim(store, ident))
        finally:
            await store.redis.aclose()

    lines = asyncio.run(run())
    print("\n".join(lines))
    return 1 if lines[0].startswith("no ") else 0
