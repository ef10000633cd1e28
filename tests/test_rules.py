"""One test per rule of rules.md §0–§7, each naming the article it implements."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from contracts.inbound import ClaimSubmitted, MemberProfile
from tests.builders import claim, facility, line, member, raw, reversal
from tests.conftest import Harness
from worker.domain.claims import fingerprint
from worker.domain.money import rhu
from worker.domain.policy import PolicyBook
from worker.domain.treatment import treatment_class


def test_rhu_rounds_half_up_rules_0() -> None:
    assert rhu(49_950, 1000) == 50  # 333 × 15% = 49.95 → 50 (examples NC-C05)
    assert rhu(5, 10) == 1
    assert rhu(4, 10) == 0
    assert rhu(15, 10) == 2


def _profile(**kw: object) -> MemberProfile:
    base = {
        "type": "member.profile",
        "member_id": "M",
        "city": "nanjing",
        "birth_date": "1953-06-20",
        "pre1949_worker": False,
        "benefits_suspended": False,
    }
    return MemberProfile.model_validate_json(orjson.dumps({**base, **kw}))


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        ("2023-05-31", "employed"),  # retired 2023-05-12 → retiree from 2023-06-01 (次月起, Nanjing art. 6)
        ("2023-06-01", "retired"),
        ("2023-06-30", "retired"),  # 70th birthday 2023-06-20 → 70+ from 2023-07-01 (Nanjing art. 18)
        ("2023-07-01", "retired_70plus"),
    ],
)
def test_treatment_class_nanjing_arts_6_18(policies: PolicyBook, day: str, expected: str) -> None:
    profile = _profile(retirement_date="2023-05-12")
    when = dt.date.fromisoformat(day)
    assert treatment_class(profile, when, policies.find("nanjing", when)) == expected  # type: ignore[arg-type]


def test_nanchang_has_no_age_band_rules_2(policies: PolicyBook) -> None:
    profile = _profile(city="nanchang", birth_date="1940-01-01", retirement_date="2000-01-01")
    day = dt.date(2023, 6, 1)
    assert treatment_class(profile, day, policies.find("nanchang", day)) == "retired"  # type: ignore[arg-type]


def test_pre1949_class_rules_2(policies: PolicyBook) -> None:
    profile = _profile(pre1949_worker=True, retirement_date="1990-01-01")
    day = dt.date(2023, 6, 1)
    assert treatment_class(profile, day, policies.find("nanjing", day)) == "pre1949"  # type: ignore[arg-type]


def test_policy_selection_by_member_city_nanjing_art_19(harness: Harness) -> None:
    """A Nanjing member treated in a Nanchang hospital (registered there) is paid by Nanjing rules."""
    harness.send(member("NJ-X", "nanjing", registrations=[{"city": "nanchang", "valid_from": "2023-01-01"}]))
    event = harness.one(claim("C1", "NJ-X", "NC-H3", "2023-04-01", [line("1", 10000)]))
    assert event["policy_version"] == "nanjing-2023"
    assert event["band"] == "non_community"
    assert event["fund_pay_fen"] == 4000


def test_no_policy_in_force_outside_validity_nanjing_art_32(harness: Harness) -> None:
    harness.send(member("NJ-X", "nanjing"))
    event = harness.one(claim("C1", "NJ-X", "NJ-H3", "2028-01-01", [line("1", 1000)]))
    assert event["reasons"][0]["code"] == "NO_POLICY_IN_FORCE"
    unknown_city = harness.send(
        member("SZ-X", "suzhou"), claim("C2", "SZ-X", "NJ-H3", "2023-01-05", [line("1", 1)])
    )
    assert unknown_city[0]["reasons"][0]["code"] == "NO_POLICY_IN_FORCE"


def test_nanchang_bands_by_level_art_17(harness: Harness) -> None:
    harness.send(member("M", "nanchang"), facility("NC-H0", "nanchang", level=0))
    harness.one(claim("C0", "M", "NC-H3", "2023-01-02", [line("1", 60000)]))  # use up the deductible
    ratios = {}
    for i, fid in enumerate(["NC-H0", "NC-H1", "NC-H2", "NC-H3"]):
        ev = harness.one(claim(f"C{i + 1}", "M", fid, "2023-02-01", [line("1", 10000)]))
        ratios[fid] = (ev["band"], ev["fund_pay_fen"])
    assert ratios == {
        "NC-H0": ("level1", 6000),
        "NC-H1": ("level1", 6000),
        "NC-H2": ("level2", 5500),
        "NC-H3": ("level3", 5000),
    }


def test_pharmacy_priced_at_prescriber_nanjing_art_23(harness: Harness) -> None:
    harness.send(
        member("M", "nanjing"),
        facility("NJ-P1", "nanjing", kind="pharmacy", level=0, outpatient_pooling=True),
    )
    ev = harness.one(
        claim("C1", "M", "NJ-P1", "2023-03-01", [line("1", 10000)], prescribing_facility_id="NJ-C1")
    )
    assert (ev["band"], ev["fund_pay_fen"], ev["fund_exclusions"]) == ("community", 5000, [])


def test_line_split_b_pre_self_pay_and_excluded_categories_rules_4(harness: Harness) -> None:
    harness.send(member("M", "nanjing"))
    ev = harness.one(
        claim(
            "C1",
            "M",
            "NJ-H3",
            "2023-03-01",
            [
                line("1", 20000, coverage="B", ratio=1500),  # 3000 pre-self-pay
                line("2", 5000, category="vaccine", coverage="A"),  # fund-excluded category
                line("3", 700, coverage="C"),  # 自费
            ],
        )
    )
    assert ev["total_fen"] == ev["full_self_pay_fen"] + ev["pre_self_pay_fen"] + ev["eligible_fen"] == 25700
    assert (ev["full_self_pay_fen"], ev["pre_self_pay_fen"], ev["eligible_fen"]) == (5700, 3000, 17000)


def test_deductible_then_ratio_and_uncapped_consultation_nanchang_arts_17_23(harness: Harness) -> None:
    harness.send(member("M", "nanchang"))
    harness.one(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 50000)]))
    ev = harness.one(
        claim(
            "C2", "M", "NC-H1", "2023-03-15", [line("1", 40000), line("2", 1000, category="consultation_fee")]
        )
    )
    assert (ev["deductible_fen"], ev["fund_pay_fen"], ev["uncapped_fund_fen"]) == (10000, 18600, 600)
    assert ev["accumulators_after"]["capped_fund_fen"] == 18000


def test_annual_cap_and_cap_reached_nanchang_art_17(harness: Harness) -> None:
    harness.send(member("M", "nanchang"))
    harness.one(claim("C1", "M", "NC-H3", "2023-01-05", [line("1", 60000)]))
    ev = harness.one(claim("C2", "M", "NC-H3", "2023-02-01", [line("1", 500000)]))
    assert ev["fund_pay_fen"] == 180000 and ev["fund_limits"] == ["CAP_REACHED"]
    ev = harness.one(
        claim(
            "C3", "M", "NC-H3", "2023-03-01", [line("1", 1000), line("2", 1000, category="consultation_fee")]
        )
    )
    assert ev["fund_pay_fen"] == 500  # only the uncapped consultation fee is still paid
    assert ev["fund_limits"] == ["CAP_REACHED"]


def test_cap_follows_class_on_service_date_nanchang_art_18(harness: Harness) -> None:
    harness.send(member("M", "nanchang", birth="1963-01-01", retired="2023-05-10"))
    first = harness.one(claim("C1", "M", "NC-H3", "2023-05-20", [line("1", 460000)]))
    assert first["fund_pay_fen"] == 180000 and first["accumulators_after"]["cap_fen"] == 180000
    second = harness.one(claim("C2", "M", "NC-H3", "2023-06-02", [line("1", 100000)]))
    assert second["treatment"] == "retired"
    assert second["fund_pay_fen"] == 20000 and second["fund_limits"] == ["CAP_REACHED"]
    assert second["accumulators_after"]["capped_fund_fen"] == 200000


def test_segments_ceiling_and_uncounted_lines_nanjing_arts_14_15(harness: Harness) -> None:
    harness.send(member("M", "nanjing"))
    ev = harness.one(claim("C1", "M", "NJ-C1", "2023-02-01", [line("1", 1490000)]))
    assert ev["fund_pay_fen"] == 1072500 and len(ev["segments"]) == 3
    ev = harness.one(claim("C2", "M", "NJ-C1", "2023-02-02", [line("1", 30000)]))
    assert ev["fund_pay_fen"] == 7500 and ev["fund_limits"] == ["CEILING_REACHED"]
    ev = harness.one(claim("C3", "M", "NJ-C1", "2023-02-03", [line("1", 1000, category="consultation_fee")]))
    assert (ev["fund_pay_fen"], ev["uncounted_fund_fen"], ev["fund_limits"]) == (750, 750, [])
    assert ev["accumulators_after"]["counted_fen"] == 1520000
    assert ev["accumulators_after"]["incentive_fund_fen"] == 1080000  # uncounted pays move no counter


def test_uncounted_uses_ratio_before_claim_nanjing_art_15(harness: Harness) -> None:
    harness.send(member("M", "nanjing"))
    harness.one(claim("C1", "M", "NJ-C1", "2023-02-01", [line("1", 99000)]))
    ev = harness.one(
        claim(
            "C2", "M", "NJ-C1", "2023-02-02", [line("1", 2000), line("2", 1000, category="nucleic_acid_test")]
        )
    )
    # walk O: 1000 × 50% + 1000 × 70%; uncounted at the segment holding 99000 (50%)
    assert (ev["fund_pay_fen"], ev["uncounted_fund_fen"]) == (1700, 500)


@pytest.mark.parametrize(
    ("profile_extra", "claim_extra", "code"),
    [
        ({"benefits_suspended": True}, {}, "BENEFITS_SUSPENDED"),  # Nanchang art. 25(3)
        ({}, {"inpatient_stay": True}, "INPATIENT_STAY"),  # art. 25(2)
        ({}, {"liability": "third_party"}, "LIABILITY_OTHER_PARTY"),  # art. 12(1)(2)
    ],
)
def test_whole_claim_exclusions_rules_5(
    harness: Harness, profile_extra: dict, claim_extra: dict, code: str
) -> None:
    harness.send(member("M", "nanchang", **profile_extra))
    ev = harness.one(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 80000)], **claim_extra))
    assert ev["type"] == "claim.settled"
    assert ev["fund_exclusions"] == [code]
    assert ev["fund_pay_fen"] == 0 and ev["segments"] == [] and ev["accumulators_after"]["counted_fen"] == 0


def test_out_of_area_needs_registration_nanchang_arts_22_25(harness: Harness) -> None:
    harness.send(
        member(
            "M",
            "nanchang",
            registrations=[{"city": "shanghai", "valid_from": "2023-01-01", "valid_to": "2023-12-31"}],
        ),
        facility("SH-H3", "shanghai"),
    )
    assert harness.one(claim("C1", "M", "SH-H3", "2023-04-01", [line("1", 80000)]))["fund_exclusions"] == []
    out = harness.one(claim("C2", "M", "SH-H3", "2024-04-01", [line("1", 80000)]))
    assert out["fund_exclusions"] == ["OUT_OF_AREA_UNREGISTERED"]


def test_pharmacy_exclusions_listed_in_order_nanchang_arts_21_29(harness: Harness) -> None:
    harness.send(
        member("M", "nanchang"),
        facility("NC-P0", "nanchang", kind="pharmacy", level=0, outpatient_pooling=False),
    )
    ev = harness.one(claim("C1", "M", "NC-P0", "2023-03-01", [line("1", 5000)], inpatient_stay=True))
    assert ev["fund_exclusions"] == ["INPATIENT_STAY", "PHARMACY_NOT_IN_POOLING", "NO_PRESCRIPTION"]
    assert ev["band"] is None


def test_acceptance_order_rules_7(harness: Harness) -> None:
    harness.send(member("M", "nanchang"), facility("NC-X", "nanchang", designated=False))
    cases = [
        (claim("R1", "NOBODY", "NOWHERE", "2023-03-01", [line("1", 1)]), "UNKNOWN_MEMBER"),
        (claim("R2", "M", "NOWHERE", "2023-03-01", [line("1", 1)]), "UNKNOWN_FACILITY"),
        (
            claim("R3", "M", "NC-H3", "2023-03-01", [line("1", 1)], prescribing_facility_id="NOPE"),
            "UNKNOWN_FACILITY",
        ),
        (claim("R4", "M", "NC-X", "2099-03-01", [line("1", 1)]), "FACILITY_NOT_DESIGNATED"),
        (
            claim("R5", "M", "NC-H3", "2023-03-02", [line("1", 1)], submitted_at="2023-03-01T15:30:00Z"),
            "SERVICE_DATE_IN_FUTURE",
        ),
        (claim("R6", "M", "NC-H3", "2022-12-31", [line("1", 1)]), "NO_POLICY_IN_FORCE"),
    ]
    for message, code in cases:
        assert harness.one(message)["reasons"][0]["code"] == code, message["claim_id"]
    # 2023-03-01T16:30Z is 2023-03-02 00:30 in UTC+08:00: not in the future
    ok = claim("R7", "M", "NC-H3", "2023-03-02", [line("1", 1)], submitted_at="2023-03-01T16:30:00Z")
    assert harness.one(ok)["type"] == "claim.settled"


def test_duplicates_and_rejections_not_final_rules_7_2(harness: Harness) -> None:
    first = claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 1000)])
    assert harness.one(first)["reasons"][0]["code"] == "UNKNOWN_MEMBER"
    harness.send(member("M", "nanchang"))
    settled = harness.one(first)  # judged afresh after a rejection
    again = harness.one({**first, "submitted_at": "2023-03-02T10:00:00+08:00", "extra": 1})
    assert again == settled
    conflict = harness.one({**first, "lines": [line("1", 2000)]})
    assert conflict["reasons"][0]["code"] == "DUPLICATE_CONFLICT"
    harness.send(member("OTHER", "nanchang"))
    other = harness.one({**first, "member_id": "OTHER"})
    assert other["reasons"][0]["code"] == "DUPLICATE_CONFLICT"


def test_reversal_restores_accumulators_rules_7(harness: Harness) -> None:
    harness.send(member("M", "nanchang"), member("N", "nanchang"))
    harness.one(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 100000)]))
    harness.one(claim("C2", "M", "NC-H3", "2023-03-02", [line("1", 10000)]))
    assert harness.one(reversal("C9", "M"))["reasons"][0]["code"] == "UNKNOWN_CLAIM"
    assert harness.one(reversal("C1", "N"))["reasons"][0]["code"] == "MEMBER_MISMATCH"
    ev = harness.one(reversal("C1", "M"))
    assert ev["fund_pay_fen"] == 20000
    assert ev["accumulators_after"] == {
        "year": 2023,
        "counted_fen": 10000,
        "capped_fund_fen": 5000,
        "fund_fen": 5000,
        "incentive_fund_fen": 5000,
        "claims": 1,
        "cap_fen": 180000,
    }
    assert harness.one(reversal("C1", "M")) == ev  # asked twice → the same event
    # a reversed claim id stays settled (§7.2): the same content gets the stored event, not a new settlement
    again = harness.one(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 100000)]))
    assert again["event_id"] == "C1:settled" and again["accumulators_after"]["counted_fen"] == 100000


def test_reimbursement_pays_member_nanchang_arts_35_36(harness: Harness) -> None:
    harness.send(member("M", "nanchang"))
    ev = harness.one(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 70000)], channel="reimbursement"))
    assert (ev["fund_payee"], ev["fund_pay_fen"], ev["account_pay_fen"]) == ("member", 5000, 0)


def test_accumulators_reset_each_year_nanchang_art_23(harness: Harness) -> None:
    harness.send(member("M", "nanchang"))
    harness.one(claim("C1", "M", "NC-H3", "2023-12-31", [line("1", 70000)]))
    ev = harness.one(claim("C2", "M", "NC-H3", "2024-01-01", [line("1", 70000)]))
    assert ev["deductible_fen"] == 60000
    assert ev["accumulators_after"]["year"] == 2024 and ev["accumulators_after"]["claims"] == 1


def test_claim_fingerprint_is_stable_across_releases_rules_7_2() -> None:
    """Stored claim records carry this fingerprint: if its bytes changed, a redelivered claim settled
    before an upgrade would be refused as a DUPLICATE_CONFLICT after it."""
    lines = [line("1", 1000), line("2", 500, coverage="B", ratio=1000)]
    sent = claim("C-1", "M-1", "NC-H1", "2023-03-01", lines)
    reordered = {k: sent[k] for k in reversed(sent)} | {"submitted_at": "2023-03-02T08:00:00Z"}
    for message in (sent, reordered):
        assert (
            fingerprint(ClaimSubmitted.model_validate_json(raw(message)))
            == "120a8380f5cc70ba78b78004e808f805"
        )
    changed = claim("C-1", "M-1", "NC-H1", "2023-03-01", [line("1", 1001), lines[1]])
    assert fingerprint(ClaimSubmitted.model_validate_json(raw(changed))) != "120a8380f5cc70ba78b78004e808f805"
