"""Personal-account rules (rules.md §8), one test per rule with its article."""

from __future__ import annotations

from tests.builders import account, claim, line, member, reversal
from tests.conftest import Harness


def _credit(h: Harness, rid: str, mid: str, period: str, base: int = 800000, kind: str = "regular") -> dict:
    return h.one(account("contribution_posted", rid, mid, period=period, base_fen=base, kind=kind))


def test_contribution_two_percent_and_duplicate_period_nanchang_art_7(harness: Harness) -> None:
    harness.send(member("M", "nanchang"))
    first = _credit(harness, "A1", "M", "2023-01")
    assert (first["cause"], first["amount_fen"], first["balance_after_fen"]) == ("contribution", 16000, 16000)
    assert _credit(harness, "A1", "M", "2023-01", base=1) == first  # same request_id → stored answer (§8.7)
    assert _credit(harness, "A2", "M", "2023-01")["reasons"][0]["code"] == "DUPLICATE_PERIOD"
    backpay = _credit(
        harness, "A3", "M", "2023-01", kind="backpay"
    )  # back-pay is never period-checked (art. 10)
    assert (backpay["cause"], backpay["balance_after_fen"]) == ("backpay", 32000)


def test_rhu_on_contribution_rules_8_2(harness: Harness) -> None:
    harness.send(member("M", "nanjing"))
    assert _credit(harness, "A1", "M", "2023-01", base=12345)["amount_fen"] == 247  # 246.9 → 247


def test_regular_contribution_of_retiree_not_eligible_rules_8_2(harness: Harness) -> None:
    harness.send(member("R", "nanchang", birth="1950-01-01", retired="2010-01-01"))
    assert _credit(harness, "A1", "R", "2023-01")["reasons"][0]["code"] == "NOT_ELIGIBLE"


def test_nanchang_retiree_fixed_credit_art_8(harness: Harness) -> None:
    harness.send(member("R", "nanchang", birth="1950-01-01", retired="2010-01-01"), member("E", "nanchang"))
    ok = harness.one(account("retiree_credit_due", "A1", "R", period="2023-02", pension_fen=300000))
    assert (ok["cause"], ok["amount_fen"], ok["period"]) == ("retiree", 7000, "2023-02")
    dup = harness.one(account("retiree_credit_due", "A2", "R", period="2023-02", pension_fen=300000))
    assert dup["reasons"][0]["code"] == "DUPLICATE_PERIOD"
    employed = harness.one(account("retiree_credit_due", "A3", "E", period="2023-02", pension_fen=300000))
    assert employed["reasons"][0]["code"] == "NOT_ELIGIBLE"


def test_nanjing_retiree_credits_art_5(harness: Harness) -> None:
    harness.send(
        member("OLD", "nanjing", birth="1950-01-01", retired="2010-01-01", retiree_base_credit_fen=9800),
        member("NEW", "nanjing", birth="1963-02-02", retired="2023-03-15", retirement_pension_fen=450000),
        member(
            "P49",
            "nanjing",
            birth="1930-01-01",
            retired="1990-01-01",
            pre1949_worker=True,
            retiree_base_credit_fen=12000,
        ),
        member("NOFIG", "nanjing", birth="1950-01-01", retired="2010-01-01"),
    )

    def credit(rid: str, mid: str, period: str) -> dict:
        return harness.one(account("retiree_credit_due", rid, mid, period=period, pension_fen=400000))

    assert credit("A1", "OLD", "2023-01")["amount_fen"] == 9800  # December-2022 amount
    assert credit("A2", "OLD", "2024-01")["amount_fen"] == 10000  # 2.5% of the request's pension
    assert credit("A3", "NEW", "2023-03")["reasons"][0]["code"] == "NOT_ELIGIBLE"  # still employed in March
    assert credit("A4", "NEW", "2023-04")["amount_fen"] == 24300  # 5.4% of 450000
    assert credit("A5", "P49", "2024-05")["amount_fen"] == 12000
    assert credit("A6", "NOFIG", "2023-05")["reasons"][0]["code"] == "NOT_ELIGIBLE"  # missing profile figure


def test_claim_paid_from_account_and_given_back_rules_8_1(harness: Harness) -> None:
    harness.send(member("M", "nanchang"))
    _credit(harness, "A1", "M", "2023-01")
    _credit(harness, "A2", "M", "2023-02")
    settled = harness.one(
        claim(
            "C1",
            "M",
            "NC-H3",
            "2023-03-01",
            [line("1", 30000), line("2", 15000, category="health_checkup", coverage="C")],
        )
    )
    assert (settled["account_pay_fen"], settled["cash_pay_fen"], settled["account_balance_after_fen"]) == (
        30000,
        15000,
        2000,
    )
    no_account = harness.one(claim("C2", "M", "NC-H3", "2023-03-02", [line("1", 1000)], use_account=False))
    assert (no_account["account_pay_fen"], no_account["account_balance_after_fen"]) == (0, 2000)
    liability = harness.one(
        claim("C3", "M", "NC-H3", "2023-03-03", [line("1", 1000)], liability="work_injury")
    )
    assert liability["account_pay_fen"] == 0  # Nanchang art. 12(1)(2)
    reimbursed = harness.one(
        claim("C4", "M", "NC-H3", "2023-03-04", [line("1", 1000)], channel="reimbursement")
    )
    assert reimbursed["account_pay_fen"] == 0
    back = harness.one(reversal("C1", "M"))
    assert (back["account_pay_fen"], back["account_balance_after_fen"]) == (30000, 32000)


def test_nanjing_account_pays_checkups_art_8(harness: Harness) -> None:
    harness.send(member("M", "nanjing"))
    _credit(harness, "A1", "M", "2023-01", base=1000000)
    ev = harness.one(claim("C1", "M", "NJ-H3", "2023-03-01", [line("1", 5000, category="health_checkup")]))
    assert ev["account_pay_fen"] == 5000
    ev = harness.one(claim("C2", "M", "NJ-H3", "2023-03-01", [line("1", 5000, category="wellness")]))
    assert ev["account_pay_fen"] == 0  # art. 10


def test_incentive_streak_nanjing_art_7(harness: Harness) -> None:
    harness.send(member("M", "nanjing"), member("NC", "nanchang"))

    def due(rid: str, year: int, mid: str = "M") -> dict:
        return harness.one(
            account("incentive_due", rid, mid, year=year, at=f"{year + 1}-01-02T09:00:00+08:00")
        )

    harness.one(claim("C1", "M", "NJ-C1", "2023-05-01", [line("1", 2000, category="consultation_fee")]))
    assert due("I0", 2022)["reasons"][0]["code"] == "NOT_APPLICABLE"  # before incentive_first_year
    assert due("I1", 2023)["amount_fen"] == 20000  # only an uncounted fee was paid: still qualifies
    assert due("I2", 2024)["amount_fen"] == 30000
    assert due("I3", 2025)["amount_fen"] == 40000
    assert due("I4", 2026)["amount_fen"] == 50000  # 500 yuan, the most
    assert due("I5", 2027)["reasons"][0]["code"] == "NO_POLICY_IN_FORCE"  # 2028-01-01: after art. 32's end
    assert due("I6", 2026)["reasons"][0]["code"] == "DUPLICATE_PERIOD"
    assert due("I7", 2023, "NC")["reasons"][0]["code"] == "NOT_APPLICABLE"


def test_incentive_counts_fund_payments_the_worker_did_not_settle_rules_8_4(harness: Harness) -> None:
    """`other_fund_fen` (inpatient care, settlement elsewhere) breaks a qualifying year like a claim."""
    harness.send(member("M", "nanjing"))

    def due(rid: str, year: int, **more: int) -> dict:
        msg = account("incentive_due", rid, "M", year=year, at=f"{year + 1}-01-02T09:00:00+08:00", **more)
        return harness.one(msg)

    assert due("I1", 2023, other_fund_fen=0)["amount_fen"] == 20000
    assert due("I2", 2024, other_fund_fen=1)["amount_fen"] == 0
    assert due("I3", 2025)["amount_fen"] == 20000  # the streak starts again
    bad = due("I4", 2026, other_fund_fen=100_000_001)
    assert bad["reasons"][0] == {
        "code": "INVALID_PAYLOAD",
        "message": bad["reasons"][0]["message"],
        "field": "other_fund_fen",
    }


def test_incentive_streak_broken_by_fund_payment_nanjing_art_7(harness: Harness) -> None:
    harness.send(member("M", "nanjing"))
    harness.one(claim("C1", "M", "NJ-C1", "2024-05-01", [line("1", 2000)]))
    first = harness.one(account("incentive_due", "I1", "M", year=2023, at="2024-01-02T09:00:00+08:00"))
    zero = harness.one(account("incentive_due", "I2", "M", year=2024, at="2025-01-02T09:00:00+08:00"))
    restart = harness.one(account("incentive_due", "I3", "M", year=2026, at="2027-01-02T09:00:00+08:00"))
    assert (first["amount_fen"], zero["amount_fen"], restart["amount_fen"]) == (20000, 0, 20000)


def test_payments_per_city_and_beneficiary_rules_8_5(harness: Harness) -> None:
    harness.send(
        member("NC", "nanchang", family=[{"member_id": "KID", "relation": "child"}]),
        member("NJ", "nanjing", family=[{"member_id": "SP", "relation": "spouse"}]),
    )
    _credit(harness, "A1", "NC", "2023-01")
    _credit(harness, "A2", "NJ", "2023-01")

    def pay(rid: str, mid: str, purpose: str, who: str, amount: int = 1000) -> dict:
        return harness.one(
            account(
                "payment_requested", rid, mid, purpose=purpose, beneficiary_member_id=who, amount_fen=amount
            )
        )

    assert pay("P1", "NC", "family_medical_expense", "KID")["balance_after_fen"] == 15000
    assert pay("P2", "NC", "commercial_health_insurance", "NC")["reasons"][0]["code"] == "NOT_ALLOWED"
    assert pay("P3", "NC", "family_medical_expense", "STRANGER")["reasons"][0]["code"] == "NOT_FAMILY"
    assert pay("P4", "NC", "critical_illness_premium", "KID")["reasons"][0]["code"] == "NOT_FAMILY"
    assert (
        pay("P5", "NC", "critical_illness_premium", "NC", 15001)["reasons"][0]["code"]
        == "INSUFFICIENT_BALANCE"
    )
    assert pay("P6", "NJ", "critical_illness_premium", "NJ")["reasons"][0]["code"] == "NOT_ALLOWED"
    assert pay("P7", "NJ", "commercial_health_insurance", "SP")["type"] == "account.debited"
    assert pay("P8", "NJ", "ltc_contribution", "NJ")["balance_after_fen"] == 14000


def test_closing_dispositions_nanchang_arts_13_14_nanjing_art_11(harness: Harness) -> None:
    harness.send(
        member("HEIRS", "nanchang"),
        member("NOHEIRS", "nanchang", has_heirs=False),
        member("NJ", "nanjing"),
    )
    for mid in ("HEIRS", "NOHEIRS", "NJ"):
        _credit(harness, f"C-{mid}", mid, "2023-01")

    def close(rid: str, mid: str, reason: str) -> dict:
        return harness.one(account("closed", rid, mid, reason=reason))

    assert close("X1", "HEIRS", "emigration")["reasons"][0]["code"] == "NOT_ALLOWED"
    assert close("X2", "HEIRS", "death")["disposition"] == "inherited"
    assert close("X3", "NOHEIRS", "death")["disposition"] == "to_pooling_fund"
    closed = close("X4", "NJ", "other_scheme")
    assert (closed["disposition"], closed["amount_fen"], closed["balance_after_fen"]) == (
        "withdrawn",
        16000,
        0,
    )
    assert close("X5", "NJ", "death")["reasons"][0]["code"] == "ACCOUNT_CLOSED"
    assert _credit(harness, "X6", "NJ", "2023-02")["reasons"][0]["code"] == "ACCOUNT_CLOSED"
    ev = harness.one(claim("C1", "NJ", "NJ-H3", "2023-03-01", [line("1", 1000)]))
    assert (ev["account_pay_fen"], ev["account_balance_after_fen"]) == (0, 0)


def test_check_order_unknown_member_first_rules_8_0(harness: Harness) -> None:
    assert _credit(harness, "A1", "GHOST", "2023-01")["reasons"][0]["code"] == "UNKNOWN_MEMBER"
    harness.send(member("GHOST", "nanchang"))
    # the stored answer wins over a now-valid request with the same request_id (§8.7)
    assert _credit(harness, "A1", "GHOST", "2023-01")["reasons"][0]["code"] == "UNKNOWN_MEMBER"
    harness.send(member("SZ", "suzhou"))
    assert _credit(harness, "A2", "SZ", "2023-01")["reasons"][0]["code"] == "NO_POLICY_IN_FORCE"


def test_request_id_of_another_member_gets_stored_answer_contracts_delivery(harness: Harness) -> None:
    harness.send(member("M", "nanchang"), member("N", "nanchang"))
    first = _credit(harness, "A1", "M", "2023-01")
    assert _credit(harness, "A1", "N", "2023-01") == first
    assert harness.one(account("transfer_in", "T1", "N", amount_fen=5))["balance_after_fen"] == 5
