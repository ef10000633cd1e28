"""Property tests over random claim streams (issue #2 §6, issue #4 §6)."""

from __future__ import annotations

import io
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.inbound import FacilityRegistered, MemberProfile
from tests.builders import (
    NANCHANG_FACILITIES,
    NANJING_FACILITIES,
    account,
    claim,
    line,
    member,
    raw,
    reversal,
)
from worker.domain.engine import Context, decide
from worker.domain.policy import load_policies
from worker.intake import Source, decode
from worker.replay import Replayer

POLICIES = load_policies()
CATEGORIES = [
    "drug",
    "drug",
    "service",
    "consultation_fee",
    "general_consultation_fee",
    "nucleic_acid_test",
    "health_checkup",
    "wellness",
]
MEMBERS = [
    member("NC-E", "nanchang"),
    member("NC-R", "nanchang", birth="1950-01-01", retired="2010-01-01"),
    member("NJ-E", "nanjing"),
    member("NJ-R", "nanjing", birth="1953-06-20", retired="2013-07-01"),
    member("NJ-P", "nanjing", birth="1930-01-01", retired="1990-01-01", pre1949_worker=True),
]
FACILITIES = {"nanchang": ["NC-H1", "NC-H2", "NC-H3"], "nanjing": ["NJ-H3", "NJ-C1"]}

lines_st = st.lists(
    st.builds(
        lambda cat, cov, ratio, amount: (cat, cov, ratio, amount),
        st.sampled_from(CATEGORIES),
        st.sampled_from("AABC"),
        st.integers(0, 10000),
        st.integers(1, 400_000),
    ),
    min_size=1,
    max_size=4,
)
claim_st = st.tuples(
    st.integers(0, len(MEMBERS) - 1), st.integers(0, 1), st.integers(1, 12), lines_st, st.booleans()
)


def _claim(index: int, spec: tuple[Any, ...]) -> dict[str, Any]:
    member_index, fac, month, lines, use_account = spec
    profile = MEMBERS[member_index]
    facility_id = FACILITIES[profile["city"]][fac % len(FACILITIES[profile["city"]])]
    built = [
        line(str(n), amount, cat, cov, ratio if cov == "B" else None)
        for n, (cat, cov, ratio, amount) in enumerate(lines)
    ]
    return claim(
        f"P-{index}",
        profile["member_id"],
        facility_id,
        f"2023-{month:02d}-15",
        built,
        use_account=use_account,
    )


def _run(
    messages: list[dict[str, Any] | bytes], replayer: Replayer | None = None
) -> tuple[list[dict[str, Any]], Replayer]:
    replayer = replayer or Replayer(POLICIES)
    out = io.BytesIO()
    replayer.run([m if isinstance(m, bytes) else raw(m) for m in messages], out)
    return [orjson.loads(x) for x in out.getvalue().splitlines()], replayer


def _setup() -> list[dict[str, Any]]:
    credits = [
        account(
            "contribution_posted",
            f"K-{m['member_id']}",
            m["member_id"],
            period="2023-01",
            base_fen=2_000_000,
            kind="backpay",
        )
        for m in MEMBERS
    ]
    return [*NANCHANG_FACILITIES, *NANJING_FACILITIES, *MEMBERS, *credits]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(claim_st, min_size=1, max_size=25))
def test_settlement_invariants(specs: list[tuple[Any, ...]]) -> None:
    messages = [_claim(i, s) for i, s in enumerate(specs)]
    events, replayer = _run([*_setup(), *messages])
    settled = [e for e in events if e["type"] == "claim.settled"]
    assert len(settled) == len(messages)
    last_counted: dict[str, int] = {}
    balances = {e["member_id"]: e["balance_after_fen"] for e in events if e["type"] == "account.credited"}
    for ev in settled:
        assert ev["total_fen"] == ev["full_self_pay_fen"] + ev["pre_self_pay_fen"] + ev["eligible_fen"]
        assert 0 <= ev["fund_pay_fen"] <= ev["eligible_fen"]
        assert ev["fund_pay_fen"] + ev["member_share_fen"] == ev["total_fen"]
        assert ev["account_pay_fen"] + ev["cash_pay_fen"] == ev["member_share_fen"]
        acc = ev["accumulators_after"]
        if acc["cap_fen"] is not None:
            assert acc["capped_fund_fen"] <= acc["cap_fen"]
        assert acc["counted_fen"] >= last_counted.get(
            ev["member_id"], 0
        )  # never decreases without a reversal
        last_counted[ev["member_id"]] = acc["counted_fen"]
        # balance: previous balance minus this claim's account payment, never negative
        assert ev["account_balance_after_fen"] == balances[ev["member_id"]] - ev["account_pay_fen"] >= 0
        balances[ev["member_id"]] = ev["account_balance_after_fen"]

    # reversing every settled claim returns every accumulator to zero and every balance to its credits
    reversals = [reversal(m["claim_id"], m["member_id"]) for m in reversed(messages)]
    _run(reversals, replayer)
    for view in replayer.store.members.values():
        for acc in view.ledger.years.values():
            assert acc.to_list() == [0, 0, 0, 0, 0]
        if view.profile is not None:
            assert view.ledger.balance == 40000


@settings(max_examples=30, deadline=None)
@given(st.lists(claim_st, min_size=1, max_size=15))
def test_replay_is_deterministic_and_duplicates_change_nothing(specs: list[tuple[Any, ...]]) -> None:
    messages = [_claim(i, s) for i, s in enumerate(specs)]
    first, replayer = _run([*_setup(), *messages])
    second, _ = _run([*_setup(), *messages])
    strip = lambda evs: [{k: v for k, v in e.items() if not k.endswith("_at")} for e in evs]  # noqa: E731
    assert strip(first) == strip(second)
    before = {m: (v.ledger.to_dict(), dict(v.claims)) for m, v in replayer.store.members.items()}
    again, _ = _run(messages, replayer)  # every claim sent a second time
    assert again == [e for e in first if e["type"] == "claim.settled"]
    after = {m: (v.ledger.to_dict(), dict(v.claims)) for m, v in replayer.store.members.items()}
    assert before == after


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("credit"), st.integers(1, 3_000_000)),
            st.tuples(st.just("pay"), st.integers(1, 100_000)),
            st.tuples(st.just("claim"), st.integers(1, 100_000)),
            st.tuples(st.just("reverse"), st.integers(0, 30)),
            st.tuples(st.just("replay"), st.integers(0, 30)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_ledger_sums_to_balance_and_never_negative(ops: list[tuple[str, int]]) -> None:
    replayer = Replayer(POLICIES)
    _run(
        [*NANCHANG_FACILITIES, member("M", "nanchang", family=[{"member_id": "K", "relation": "child"}])],
        replayer,
    )
    sent: list[dict[str, Any]] = []
    seen_events: set[str] = set()
    ledger_sum = 0
    for n, (op, value) in enumerate(ops):
        if op == "credit":
            msg = account(
                "contribution_posted", f"R{n}", "M", period="2023-01", base_fen=value, kind="backpay"
            )
        elif op == "pay":
            msg = account(
                "payment_requested",
                f"R{n}",
                "M",
                purpose="family_medical_expense",
                beneficiary_member_id="K",
                amount_fen=value,
            )
        elif op == "claim":
            msg = claim(f"C{n}", "M", "NC-H2", "2023-05-01", [line("1", value)])
        elif op == "reverse":
            msg = reversal(f"C{value}", "M")
        else:
            if not sent:
                continue
            msg = sent[value % len(sent)]
        sent.append(msg)
        for ev in _run([msg], replayer)[0]:
            delta = {
                "account.credited": lambda e: e["amount_fen"],
                "account.debited": lambda e: -e["amount_fen"],
                "claim.settled": lambda e: -e["account_pay_fen"],
                "claim.reversed": lambda e: e["account_pay_fen"],
            }.get(ev["type"])
            balance = ev.get("balance_after_fen", ev.get("account_balance_after_fen"))
            if delta is None or balance is None:
                continue
            # an answer republished (same event_id: a duplicate or a repeated request) moves no money;
            # a re-sent reversal that was first UNKNOWN_CLAIM but now finds the claim is a new event
            if ev["event_id"] not in seen_events:
                seen_events.add(ev["event_id"])
                ledger_sum += delta(ev)
            assert balance >= 0
            assert replayer.store.members["M"].ledger.balance == ledger_sum


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["claim", "changed", "reverse", "credit", "pay", "unknown_member"]),
            st.integers(0, 6),
            st.integers(1, 200_000),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_kept_answers_come_back_from_the_state(ops: list[tuple[str, int, int]]) -> None:
    """The Redis store keeps no per-message copy of an answer the engine calls `kept`: deciding the
    same message again on the state the decision left must give the same bytes and change nothing.
    Answers not kept (rejections) are the ones a later state could change."""
    replayer = Replayer(POLICIES)
    _run(
        [*NANCHANG_FACILITIES, member("M", "nanchang", family=[{"member_id": "K", "relation": "child"}])],
        replayer,
    )
    ctx = Context(POLICIES, replayer.facilities, "2023-06-01T10:00:00+08:00")
    for op, ident, amount in ops:
        if op in ("claim", "changed", "unknown_member"):
            msg = claim(
                f"C{ident}",
                "X" if op == "unknown_member" else "M",
                "NC-H2",
                "2023-05-01",
                [line("1", amount + (op == "changed"))],
            )
        elif op == "reverse":
            msg = reversal(f"C{ident}", "M")
        elif op == "credit":
            msg = account(
                "contribution_posted", f"R{ident}", "M", period="2023-01", base_fen=amount, kind="backpay"
            )
        else:
            msg = account(
                "payment_requested",
                f"R{ident}",
                "M",
                purpose="family_medical_expense",
                beneficiary_member_id="K",
                amount_fen=amount,
            )
        message = decode(raw(msg), Source("test", 0, 0), ctx.now).message
        assert message is not None and not isinstance(message, MemberProfile | FacilityRegistered)
        view = replayer.store.view(message.member_id)
        decision = decide(message, view, ctx)
        if decision.effect is not None:
            view.apply(decision.effect)
        if decision.kept:
            state = (view.ledger.to_dict(), dict(view.claims), dict(view.answers))
            assert all(e.type != "claim.rejected" for e in decision.events)  # a later state may change those
            again = decide(message, view, ctx)
            assert again.events == decision.events
            assert again.effect is None and again.kept
            assert state == (view.ledger.to_dict(), dict(view.claims), dict(view.answers))
        else:
            assert all(e.type in ("claim.rejected", "dead_letter") for e in decision.events)
