"""contracts.md §Validation: strict inbound models, dead letters, and the checked-in JSON Schema."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from contracts import export
from contracts.outbound import OUTBOUND
from contracts.types import china_date
from tests.builders import claim, line, member, raw, reversal
from tests.conftest import Harness

GOOD = claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 1000)])


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def _line(**changes: Any) -> dict[str, Any]:
    return _with(lines=[{**line("1", 1000), **changes}])


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (_line(amount_fen="1000"), "lines[0].amount_fen"),
        (_line(amount_fen=1000.0), "lines[0].amount_fen"),
        (_line(amount_fen=True), "lines[0].amount_fen"),
        (_line(amount_fen=0), "lines[0].amount_fen"),
        (_line(amount_fen=100_000_001), "lines[0].amount_fen"),
        (_line(amount_fen=10**30), "lines[0].amount_fen"),
        (_line(coverage="B"), "lines[0].self_pay_ratio_bp"),
        (_line(coverage="A", self_pay_ratio_bp=500), "lines[0].self_pay_ratio_bp"),
        (_line(coverage="B", self_pay_ratio_bp=10001), "lines[0].self_pay_ratio_bp"),
        (_line(category="elixir"), "lines[0].category"),
        (_line(coverage="a"), "lines[0].coverage"),
        (_line(line_id="bad id"), "lines[0].line_id"),
        (_with(lines=[]), "lines"),
        (_with(lines=[line(str(i), 1) for i in range(201)]), "lines"),
        (_with(lines=[line("1", 1), line("1", 2)]), "lines[1].line_id"),
        (_with(service_date="2023-02-30"), "service_date"),
        (_with(service_date="2023-3-1"), "service_date"),
        (_with(submitted_at="2023-03-01T10:00:00"), "submitted_at"),
        (_with(submitted_at="2023-03-01 10:00:00+08:00"), "submitted_at"),
        (_with(submitted_at="2023-02-30T10:00:00+08:00"), "submitted_at"),
        (_with(use_account="yes"), "use_account"),
        (_with(inpatient_stay=None), "inpatient_stay"),
        (_with(channel="POS"), "channel"),
        (_with(liability="self"), "liability"),
        (_with(schema_version=2), "schema_version"),
        (_with(schema_version=True), "schema_version"),
        (_with(member_id="x" * 65), "member_id"),
        (_with(facility_id=""), "facility_id"),
        (_with(prescribing_facility_id=7), "prescribing_facility_id"),
    ],
)
def test_invalid_claims_are_rejected_with_field(
    harness: Harness, message: dict[str, Any], field: str
) -> None:
    event = harness.one(message)
    assert event["type"] == "claim.rejected"
    assert event["reasons"][0]["code"] == "INVALID_PAYLOAD"
    assert event["reasons"][0]["field"] == field
    assert event["claim_id"] == "C1"
    OUTBOUND.validate_python(event)


def test_rejection_repeats_member_id_only_when_a_string(harness: Harness) -> None:
    assert harness.one(_with(member_id=12, lines=[]))["member_id"] is None
    assert harness.one(_with(lines=[]))["member_id"] == "M"


def test_unknown_fields_ignored_and_defaults_applied(harness: Harness) -> None:
    event = harness.one(_with(surprise={"nested": True}, member_id="NOBODY"))
    assert event["reasons"][0]["code"] == "UNKNOWN_MEMBER"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"", "not valid JSON"),
        (b"{broken", "not valid JSON"),
        (b'{"a": NaN}', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"claim_id": "C1"}', "missing or unusable type"),
        (b'{"type": "claim.exploded", "claim_id": "C1"}', "missing or unusable type"),
        (b'{"type": 7}', "missing or unusable type"),
        (b'{"type": "claim.submitted", "member_id": "M"}', "missing or invalid claim_id"),
        (b'{"type": "claim.submitted", "claim_id": "bad id!"}', "missing or invalid claim_id"),
        (b'{"type": "account.transfer_in", "member_id": "M"}', "missing or invalid request_id"),
        (b'{"type": "member.profile", "member_id": "M"}', "invalid member.profile"),
        (b'{"type": "claim.submitted", "claim_id": "C1\\n"}', "missing or invalid claim_id"),
        (b'{"type": "account.transfer_in", "request_id": "R1\\n"}', "missing or invalid request_id"),
        (raw(_with(surprise=[1, {"deep": float("inf")}])), "not valid JSON"),
        (raw(_with(surprise=float("-inf"))), "not valid JSON"),
        (raw(_with(surprise=float("nan"))), "not valid JSON"),
        (raw(_with(lines=[{**line("1", 1000), "amount_fen": float("nan")}])), "not valid JSON"),
        (b'{"type": "facility.registered", "facility_id": "F", "level": 9}', "invalid facility.registered"),
    ],
)
def test_dead_letters(harness: Harness, payload: bytes, error: str) -> None:
    event = harness.one(payload)
    assert event["type"] == "dead_letter"
    assert event["error"].startswith(error)
    assert (event["source_topic"], event["partition"]) == ("replay", 0)
    assert base64.b64decode(event["payload_b64"]) == payload
    assert event["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    OUTBOUND.validate_python(event)


@pytest.mark.parametrize("flag", ["pre1949_worker", "benefits_suspended"])
def test_a_profile_without_a_benefit_flag_is_dead_lettered(harness: Harness, flag: str) -> None:
    """contracts.md gives the two flags no default: a missing pre-1949 flag would silently change a
    member's benefits, so the profile is invalid reference data and changes nothing."""
    harness.send(raw(member("M", "nanchang")))
    incomplete = {k: v for k, v in member("M", "nanchang", pre1949_worker=True).items() if k != flag}
    event = harness.one(incomplete)
    assert event["type"] == "dead_letter" and flag in event["error"]


def test_a_reversal_needs_a_reason_which_may_be_empty(harness: Harness) -> None:
    harness.send(raw(member("M", "nanchang")))
    without = {k: v for k, v in reversal("C1", "M").items() if k != "reason"}
    event = harness.one(without)
    assert event["type"] == "claim.rejected"
    assert event["reasons"][0] == {
        "code": "INVALID_PAYLOAD",
        "message": "reason: required field is missing",
        "field": "reason",
    }
    assert harness.one({**reversal("C1", "M"), "reason": ""})["reasons"][0]["code"] == "UNKNOWN_CLAIM"


def test_oversize_message_dead_letter_keeps_first_64_kib(harness: Harness) -> None:
    payload = raw(_with(padding="x" * (1 << 20)))
    event = harness.one(payload)
    assert event["type"] == "dead_letter" and event["error"] == "message larger than 1 MiB"
    assert len(base64.b64decode(event["payload_b64"])) == 64 * 1024
    assert event["payload_bytes"] == len(payload)


def test_invalid_reference_data_changes_nothing(harness: Harness) -> None:
    harness.send(raw(member("M", "nanchang")))
    broken = {**member("M", "nanchang"), "birth_date": "1980-02-31", "benefits_suspended": True}
    assert harness.one(broken)["type"] == "dead_letter"
    assert harness.one(GOOD)["type"] == "claim.settled"  # the valid profile is still in force


def test_every_emitted_event_validates_against_outbound_models(harness: Harness) -> None:
    from tests.conftest import EXAMPLES

    for path in EXAMPLES.glob("*.jsonl"):
        if path.stem.endswith("expected"):
            continue
        for event in Harness(harness.replayer.policies).send(*path.read_bytes().splitlines()):
            OUTBOUND.validate_json(orjson.dumps(event))


def test_json_schema_files_are_current() -> None:
    assert export.main(["--check"]) == 0, "run `python -m contracts.export`"


@pytest.mark.parametrize(
    ("timestamp", "day"),
    [
        ("2023-03-01T23:59:59+08:00", "2023-03-01"),
        ("2023-03-01T16:00:00Z", "2023-03-02"),
        ("2023-03-01T15:59:59.999Z", "2023-03-01"),
        ("2023-02-28T11:00:00-05:00", "2023-03-01"),
        ("2024-02-29T00:00:00+09:00", "2024-02-28"),
    ],
)
def test_china_date_is_the_calendar_date_in_utc_plus_8(timestamp: str, day: str) -> None:
    assert china_date(timestamp).isoformat() == day
