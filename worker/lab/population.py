"""A synthetic city year: facilities, members, account credits and outpatient claims, deterministic
by seed, in the inbound format (`python -m worker population --city nanchang --members 100000`).

Assumptions (documented in the README, "A synthetic city year"; change them here, not in callers):

- **Facilities**: per city 40 level-1 / community clinics, 12 level-2 and 6 level-3 hospitals, and
  20 designated pharmacies (15 in outpatient pooling). Nanjing's community flag is level ≤ 1.
- **Members**: ages of the insured workforce 22–60 (uniform), retirees 28% (of them 35% aged 70+),
  pre-1949 workers 0.1%, benefits suspended 0.5%.
- **Visits a year**: employed mean 5, retired under 70 mean 12, 70+ mean 16 (geometric: many members
  with few visits, a long tail); 8% of members have no visit.
- **Where**: employed 45% level 1, 30% level 2, 25% level 3; retired 55% / 25% / 20%; then 10% of
  visits are a pharmacy filling a prescription of the visit's facility.
- **Cost a visit** (yuan, log-normal, median × e^(0.8·N(0,1))): level 1 90, level 2 180, level 3 300,
  pharmacy 120; 1–5 lines; categories drug 60%, examination 14%, service 10%, consumable 6%,
  consultation fee 6%, health check-up 2%, vaccine 2%; coverage A 75%, B 20% (self-pay 5–15%), C 5%.
- **Accounts**: each quarter a contribution (base: log-normal, median 6 000 yuan a month, the
  quarter's credit posted as one regular contribution); retirees a retiree credit each month.
- **Other**: 2% of visits reimbursed (零星报销), 1% reversed the same day.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import random
from collections.abc import Iterator
from typing import Any

CITY_CODES = {"nanchang": "NC", "nanjing": "NJ"}
LEVELS = {1: 40, 2: 12, 3: 6}
PHARMACIES = 20
CATEGORIES = (
    ("drug", 60),
    ("examination", 14),
    ("service", 10),
    ("consumable", 6),
    ("consultation_fee", 6),
    ("health_checkup", 2),
    ("vaccine", 2),
)
MEDIAN_FEN = {1: 9_000, 2: 18_000, 3: 30_000, 0: 12_000}


def facility_registered(
    facility_id: str, city: str, kind: str, level: int, pooling: bool = False
) -> dict[str, Any]:
    """A designated facility's `facility.registered` message, as the synthetic registries have them:
    medical facilities of levels 0–1 are community facilities; `pooling` is a pharmacy's
    `outpatient_pooling`."""
    return {
        "type": "facility.registered",
        "facility_id": facility_id,
        "city": city,
        "kind": kind,
        "level": level,
        "community": kind == "medical" and level <= 1,
        "designated": True,
        "outpatient_pooling": pooling,
    }


def facilities(city: str) -> list[dict[str, Any]]:
    code = CITY_CODES.get(city, city[:2].upper())
    out = [
        facility_registered(f"{code}-L{level}-{n:03d}", city, "medical", level)
        for level, count in LEVELS.items()
        for n in range(count)
    ]
    out += [facility_registered(f"{code}-P-{n:03d}", city, "pharmacy", 0, n < 15) for n in range(PHARMACIES)]
    return out


def _visits(rng: random.Random, mean: float) -> int:
    """Geometric with the given mean (many members with few visits, a long tail)."""
    if rng.random() < 0.08:
        return 0
    p = 1 / (1 + mean)
    return int(math.log(1 - rng.random()) / math.log(1 - p))


def _choice(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    total = sum(w for _, w in weighted)
    pick = rng.randrange(total)
    for value, weight in weighted:
        pick -= weight
        if pick < 0:
            return value
    return weighted[-1][0]


def generate(
    city: str = "nanchang", members: int = 10_000, year: int = 2024, seed: int = 1
) -> Iterator[dict[str, Any]]:
    """The year's inbound messages, in an order a producer could send them: the registry, then each
    month's account credits and claims (each member's in date order)."""
    rng = random.Random(f"{city}:{members}:{year}:{seed}")
    code = CITY_CODES.get(city, city[:2].upper())
    registry = facilities(city)
    yield from registry
    by_level = {
        lv: [f["facility_id"] for f in registry if f["kind"] == "medical" and f["level"] == lv]
        for lv in LEVELS
    }
    pharmacies = [f["facility_id"] for f in registry if f["kind"] == "pharmacy"]
    people = []
    for index in range(members):
        member_id = f"{code}-Y{index:07d}"
        retired = rng.random() < 0.28
        if retired:
            age = rng.randint(70, 90) if rng.random() < 0.35 else rng.randint(60, 69)
        else:
            age = rng.randint(22, 59)
        birth = dt.date(year - age, rng.randint(1, 12), rng.randint(1, 28))
        retirement = dt.date(birth.year + 60, birth.month, birth.day) if retired else None
        profile = {
            "type": "member.profile",
            "member_id": member_id,
            "city": city,
            "birth_date": birth.isoformat(),
            "retirement_date": retirement.isoformat() if retirement else None,
            "pre1949_worker": (retired and age >= 90 and rng.random() < 0.5) or rng.random() < 0.001,
            "benefits_suspended": rng.random() < 0.005,
            "retiree_base_credit_fen": 9_800 if retired else None,
            "retirement_pension_fen": rng.randint(300_000, 600_000) if retired else None,
        }
        yield profile
        mean = (16 if age >= 70 else 12) if retired else 5
        base = int(600_000 * math.exp(0.5 * rng.gauss(0, 1)))
        people.append((member_id, retired, _visits(rng, mean), base))
    claim_number = 0
    for month in range(1, 13):
        days = calendar.monthrange(year, month)[1]
        period = f"{year}-{month:02d}"
        for member_id, retired, _, base in people:
            if retired:
                yield {
                    "type": "account.retiree_credit_due",
                    "request_id": f"R-{member_id}-{period}",
                    "member_id": member_id,
                    "requested_at": f"{period}-01T08:00:00+08:00",
                    "period": period,
                    "pension_fen": 400_000,
                }
            elif month % 3 == 1:
                yield {
                    "type": "account.contribution_posted",
                    "request_id": f"K-{member_id}-{period}",
                    "member_id": member_id,
                    "requested_at": f"{period}-01T08:00:00+08:00",
                    "period": period,
                    "base_fen": min(base * 3, 100_000_000),
                    "kind": "regular",
                }
        for member_id, retired, visits, _ in people:
            # this month's share of the member's visits: spread the year's visits over the months
            share = visits // 12 + (1 if rng.random() < (visits % 12) / 12 else 0)
            dates = sorted(rng.randint(1, days) for _ in range(share))
            for day in dates:
                claim_number += 1
                service = f"{period}-{day:02d}"
                level = int(
                    _choice(
                        rng,
                        (("1", 55), ("2", 25), ("3", 20)) if retired else (("1", 45), ("2", 30), ("3", 25)),
                    )
                )
                facility = rng.choice(by_level[level])
                prescriber = None
                if rng.random() < 0.10:
                    prescriber, facility, level = facility, rng.choice(pharmacies), 0
                lines = []
                for number in range(rng.randint(1, 5)):
                    amount = max(100, int(MEDIAN_FEN[level] / 2 * math.exp(0.8 * rng.gauss(0, 1))))
                    coverage = _choice(rng, (("A", 75), ("B", 20), ("C", 5)))
                    entry: dict[str, Any] = {
                        "line_id": str(number + 1),
                        "item_code": f"X{rng.randrange(100_000):05d}",
                        "category": _choice(rng, CATEGORIES),
                        "coverage": coverage,
                        "amount_fen": min(amount, 100_000_000),
                    }
                    if coverage == "B":
                        entry["self_pay_ratio_bp"] = rng.choice((500, 1000, 1500))
                    lines.append(entry)
                claim: dict[str, Any] = {
                    "type": "claim.submitted",
                    "claim_id": f"{code}-{year}-{claim_number:09d}",
                    "member_id": member_id,
                    "facility_id": facility,
                    "service_date": service,
                    "submitted_at": f"{service}T10:00:00+08:00",
                    "lines": lines,
                }
                if prescriber:
                    claim["prescribing_facility_id"] = prescriber
                if rng.random() < 0.02:
                    claim["channel"] = "reimbursement"
                yield claim
                if rng.random() < 0.01:
                    yield {
                        "type": "claim.reversal_requested",
                        "claim_id": claim["claim_id"],
                        "member_id": member_id,
                        "facility_id": facility,
                        "requested_at": f"{service}T17:00:00+08:00",
                        "reason": "returned",
                    }
