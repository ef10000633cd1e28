"""Pre-settlement (issue #9 §4): on any state, a quote and the settlement that follows it agree to
the fen, and a quote changes nothing. Through the store port and the worker's Settler."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.inbound import ClaimSubmitted
from tests.builders import NANCHANG_FACILITIES, NANJING_FACILITIES, account, claim, line, member, raw
from worker.adapters.memory import MemoryStore
from worker.domain.engine import Context
from worker.domain.policy import PolicyBook, load_policies
from worker.intake import Source, decode
from worker.quoting import quote
from worker.settlement import Record, Settler

POLICIES: PolicyBook = load_policies()
FACILITIES = {f["facility_id"]: f for f in [*NANCHANG_FACILITIES, *NANJING_FACILITIES]}
CATEGORIES = ["drug", "examination", "consultation_fee", "vaccine", "service", "nucleic_acid_test"]

lines_st = st.lists(
    st.tuples(
        st.sampled_from(CATEGORIES),
        st.sampled_from(["A", "B", "C"]),
        st.integers(1, 300_000),
        st.integers(0, 3000),
    ),
    min_size=1,
    max_size=4,
)
claim_st = st.tuples(
    st.sampled_from(sorted(FACILITIES)), st.integers(1, 12), lines_st, st.booleans(), st.booleans()
)


def _claim(n: int, city: str, spec: Any) -> dict[str, Any]:
    facility_id, month, lines, use_account, reimbursement = spec
    body = [
        line(str(i), amount, category, coverage, ratio if coverage == "B" else None)
        for i, (category, coverage, amount, ratio) in enumerate(lines)
    ]
    return claim(
        f"C{n}",
        "M",
        facility_id,
        f"2023-{month:02d}-15",
        body,
        use_account=use_account,
        channel="reimbursement" if reimbursement else "pos",
    )


async def _scenario(city: str, retired: bool, credit: int, history: list[Any], last: Any) -> None:
    store = MemoryStore()
    facilities = {}
    from contracts.inbound import FacilityRegistered

    for f in FACILITIES.values():
        facilities[f["facility_id"]] = FacilityRegistered.model_validate(f)
    settler = Settler(store, POLICIES, facilities)
    profile = member("M", city, birth="1950-01-01", retired="2010-01-01" if retired else None)
    await store.put_profiles([("M", 1, raw(profile))])
    offset = 0

    async def settle(message: dict[str, Any]) -> dict[str, Any]:
        nonlocal offset
        offset += 1
        out = await settler.settle(
            [Record(Source("t", 0, offset), b"M", raw(message))], "2023-12-31T00:00:00+08:00"
        )
        return orjson.loads(out[0].event.data)

    if credit:
        await settle(account("transfer_in", "R1", "M", amount_fen=credit))
    for n, spec in enumerate(history):
        await settle(_claim(n, city, spec))
    message = _claim(999, city, last)
    parsed = decode(raw(message), Source("q", 0, 0), "").message
    assert isinstance(parsed, ClaimSubmitted)
    before = (store.members["M"].ledger.to_dict(), store.members["M"].version, dict(store.claims))
    quoted = await quote(store, parsed, Context(POLICIES, facilities, "2023-12-31T00:00:00+08:00"))
    assert (store.members["M"].ledger.to_dict(), store.members["M"].version, dict(store.claims)) == before
    settled = await settle(message)
    quoted_event = orjson.loads(quoted.events[0].data)
    assert quoted_event == settled  # same clock here: every field, the same


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    city=st.sampled_from(["nanchang", "nanjing"]),
    retired=st.booleans(),
    credit=st.sampled_from([0, 5_000, 500_000]),
    history=st.lists(claim_st, max_size=6),
    last=claim_st,
)
def test_presettle_then_settle_give_the_same_amounts(
    city: str, retired: bool, credit: int, history: list[Any], last: Any
) -> None:
    asyncio.run(_scenario(city, retired, credit, history, last))
