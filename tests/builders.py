"""Message builders shared by the tests: plain dicts in the wire format, turned into bytes."""

from __future__ import annotations

import json
from typing import Any


def raw(message: dict[str, Any]) -> bytes:
    """Wire bytes; the standard library so that tests can send integers beyond 64 bits."""
    return json.dumps(message).encode()


def facility(
    facility_id: str, city: str, kind: str = "medical", level: int = 3, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "facility.registered",
        "facility_id": facility_id,
        "city": city,
        "kind": kind,
        "level": level,
        "community": extra.pop("community", False),
        "designated": extra.pop("designated", True),
        "outpatient_pooling": extra.pop("outpatient_pooling", kind == "pharmacy"),
        **extra,
    }


def member(
    member_id: str, city: str, birth: str = "1980-01-01", retired: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "member.profile",
        "member_id": member_id,
        "city": city,
        "birth_date": birth,
        "retirement_date": retired,
        "pre1949_worker": extra.pop("pre1949_worker", False),
        "benefits_suspended": extra.pop("benefits_suspended", False),
        **extra,
    }


def line(
    line_id: str, amount: int, category: str = "drug", coverage: str = "A", ratio: int | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "line_id": line_id,
        "item_code": f"ITEM-{line_id}",
        "category": category,
        "coverage": coverage,
        "amount_fen": amount,
    }
    if ratio is not None:
        out["self_pay_ratio_bp"] = ratio
    return out


def claim(
    claim_id: str, member_id: str, facility_id: str, day: str, lines: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "type": "claim.submitted",
        "claim_id": claim_id,
        "member_id": member_id,
        "facility_id": facility_id,
        "service_date": day,
        "submitted_at": extra.pop("submitted_at", f"{day}T10:00:00+08:00"),
        "lines": lines,
        **extra,
    }


def reversal(claim_id: str, member_id: str, at: str = "2023-12-01T10:00:00+08:00") -> dict[str, Any]:
    return {
        "type": "claim.reversal_requested",
        "claim_id": claim_id,
        "member_id": member_id,
        "requested_at": at,
        "reason": "test",
    }


def account(
    suffix: str, request_id: str, member_id: str, at: str = "2023-06-01T09:00:00+08:00", **fields: Any
) -> dict[str, Any]:
    return {
        "type": f"account.{suffix}",
        "request_id": request_id,
        "member_id": member_id,
        "requested_at": at,
        **fields,
    }


NANCHANG_FACILITIES = [
    facility("NC-H3", "nanchang", level=3),
    facility("NC-H2", "nanchang", level=2),
    facility("NC-H1", "nanchang", level=1, community=True),
    facility("NC-P1", "nanchang", kind="pharmacy", level=0, outpatient_pooling=True),
]
NANJING_FACILITIES = [
    facility("NJ-H3", "nanjing", level=3),
    facility("NJ-C1", "nanjing", level=1, community=True),
]
