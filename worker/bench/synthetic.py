"""Deterministic synthetic workload: facilities, members and claims of both cities.

Used by the benchmarks and the demo, so numbers are comparable between runs and machines.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson

from worker.lab.population import facility_registered

CATEGORIES = (
    "drug",
    "drug",
    "drug",
    "service",
    "consumable",
    "consultation_fee",
    "general_consultation_fee",
    "health_checkup",
)
CITIES = {"nanchang": "NC", "nanjing": "NJ"}


def facilities() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for city, prefix in CITIES.items():
        out += [facility_registered(f"{prefix}-H{n:02d}", city, "medical", n % 4) for n in range(12)]
        out += [facility_registered(f"{prefix}-P{n:02d}", city, "pharmacy", 0, n != 3) for n in range(4)]
    return out


def member_id(index: int) -> str:
    return f"{'NC' if index % 2 == 0 else 'NJ'}-M{index:07d}"


def members(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        city = "nanchang" if index % 2 == 0 else "nanjing"
        kind = rng.random()
        birth_year = rng.randint(1950, 2000) if kind > 0.02 else rng.randint(1925, 1935)
        retired = None
        if birth_year < 1964:
            retired = f"{birth_year + 60}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        out.append(
            {
                "type": "member.profile",
                "member_id": member_id(index),
                "city": city,
                "birth_date": f"{birth_year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "retirement_date": retired,
                "pre1949_worker": kind <= 0.02,
                "benefits_suspended": rng.random() < 0.01,
                "retiree_base_credit_fen": 9800,
                "retirement_pension_fen": 400000,
            }
        )
    return out


def claims(count: int, member_count: int, seed: int = 11, prefix: str = "B") -> Iterator[dict[str, Any]]:
    """`count` claims spread over `member_count` members, in service-date order per member."""
    rng = random.Random(seed)
    for n in range(count):
        index = rng.randrange(member_count)
        city = "nanchang" if index % 2 == 0 else "nanjing"
        code = CITIES[city]
        month = 1 + n * 12 // max(count, 1)
        day = f"2023-{month:02d}-{rng.randint(1, 28):02d}"
        lines = []
        for number in range(rng.randint(1, 4)):
            coverage = rng.choice("AAAB")
            entry: dict[str, Any] = {
                "line_id": str(number + 1),
                "item_code": f"X{rng.randrange(10_000):05d}",
                "category": rng.choice(CATEGORIES),
                "coverage": coverage,
                "amount_fen": rng.randint(100, 60_000),
            }
            if coverage == "B":
                entry["self_pay_ratio_bp"] = rng.choice((500, 1000, 1500))
            lines.append(entry)
        message: dict[str, Any] = {
            "type": "claim.submitted",
            "claim_id": f"{prefix}-{code}-C{n:08d}",
            "member_id": member_id(index),
            "facility_id": f"{code}-H{rng.randrange(12):02d}",
            "service_date": day,
            "submitted_at": f"{day}T10:00:00+08:00",
            "lines": lines,
        }
        if rng.random() < 0.1:
            message["facility_id"] = f"{code}-P{rng.randrange(4):02d}"
            message["prescribing_facility_id"] = f"{code}-H{rng.randrange(12):02d}"
        yield message


def contributions(member_count: int) -> Iterator[dict[str, Any]]:
    """One back-pay credit per member, so that accounts pay part of the claims."""
    for index in range(member_count):
        yield {
            "type": "account.contribution_posted",
            "request_id": f"K-{index}",
            "member_id": member_id(index),
            "requested_at": "2023-01-05T09:00:00+08:00",
            "period": "2023-01",
            "base_fen": 500_000,
            "kind": "backpay",
        }


def encode(messages: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(m) for m in messages]
