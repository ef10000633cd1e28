"""A synthetic month (or two) of a facility network, for the agency's books: the claims, reversals,
reimbursements and account requests of both cities, with anomalies planted at chosen facilities.

Deterministic by seed. `outcomes()` settles the inbound messages with replay (the worker's engine)
and dates each outcome at its request's time, as the counter would have settled it, so that a test
can publish a month of outcome events without waiting a month. The planted facilities are:

- `NC-H01` (high average cost): its claims cost about three times its peers';
- `NJ-H04` (self-pay): about half of its amounts are category-C (full self-pay) lines;
- `NC-H06` (examination): most of its amounts are examinations;
- `NJ-H09` (growth): a handful of claims in the previous month, a full month in this one.
"""

from __future__ import annotations

import calendar
import datetime as dt
import io
import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.bench import synthetic
from worker.replay import Replayer

PLANTED = {
    "NC-H01": "avg_cost",
    "NJ-H04": "self_pay_share",
    "NC-H06": "examination_share",
    "NJ-H09": "cost_growth",
}
CATEGORY_MIX = ("drug", "drug", "drug", "drug", "service", "consumable", "examination", "consultation_fee")


@dataclass
class Month:
    """Inbound messages in the order a producer would send them."""

    reference: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)


def _month_days(month: str) -> list[dt.date]:
    year, number = (int(x) for x in month.split("-"))
    return [dt.date(year, number, d) for d in range(1, calendar.monthrange(year, number)[1] + 1)]


def _previous(month: str) -> str:
    first = dt.date.fromisoformat(month + "-01")
    return (first - dt.timedelta(days=1)).strftime("%Y-%m")


def _lines(rng: random.Random, facility: str) -> list[dict[str, Any]]:
    planted = PLANTED.get(facility)
    lines = []
    for number in range(rng.randint(1, 4)):
        category = rng.choice(CATEGORY_MIX)
        coverage = rng.choice("AAAAB")
        amount = rng.randint(2_000, 30_000)
        if planted == "avg_cost":
            amount *= 3
        elif planted == "self_pay_share" and number % 2 == 0:
            coverage = "C"
        elif planted == "examination_share" and number < 3:
            category = "examination"
        entry: dict[str, Any] = {
            "line_id": str(number + 1),
            "item_code": f"X{rng.randrange(10_000):05d}",
            "category": category,
            "coverage": coverage,
            "amount_fen": amount,
        }
        if coverage == "B":
            entry["self_pay_ratio_bp"] = rng.choice((500, 1000))
        lines.append(entry)
    return lines


def generate(
    month: str = "2024-05",
    members: int = 400,
    visits_per_day: int = 4,
    seed: int = 5,
    family_rate: float = 0.002,
) -> Month:
    """`month` and the one before it: every medical facility has `visits_per_day` visits a day (the
    growth facility only a few in the previous month), about 5% reimbursements, 3% reversed."""
    rng = random.Random(seed)
    out = Month()
    facilities = synthetic.facilities()
    out.reference += facilities
    out.reference += synthetic.members(members, seed=seed)
    by_city: dict[str, list[str]] = {}
    for f in facilities:
        if f["kind"] == "medical":
            by_city.setdefault(f["city"], []).append(f["facility_id"])
    previous = _previous(month)
    first_day = dt.date.fromisoformat(previous + "-01")
    out.requests += [
        {**c, "requested_at": f"{first_day}T08:00:00+08:00", "period": previous}
        for c in synthetic.contributions(members)
    ]
    profiles = [m for m in out.reference if m["type"] == "member.profile"]
    retirees = [p["member_id"] for p in profiles if p["retirement_date"]]
    for period in (previous, month):
        out.requests += [
            {
                "type": "account.retiree_credit_due",
                "request_id": f"R-{period}-{member}",
                "member_id": member,
                "requested_at": f"{period}-01T08:30:00+08:00",
                "period": period,
                "pension_fen": 400_000,
            }
            for member in retirees
        ]
    out.requests += [
        {
            "type": "account.incentive_due",
            "request_id": f"I-2023-{index}",
            "member_id": synthetic.member_id(index),
            "requested_at": f"{month}-02T08:00:00+08:00",
            "year": 2023,
        }
        for index in range(1, members, 10)  # Nanjing members: Nanchang has no health incentive
    ]
    for profile in profiles[-4:]:  # no heirs: a closed account's balance goes to the pooling fund
        profile["has_heirs"] = False
    claims = 0
    for day in _month_days(previous) + _month_days(month):
        stamp = f"{day}T10:00:00+08:00"
        for index in range(members):
            if rng.random() < family_rate:  # family use of the account
                out.requests.append(
                    {
                        "type": "account.payment_requested",
                        "request_id": f"P-{day}-{index}",
                        "member_id": synthetic.member_id(index),
                        "requested_at": stamp,
                        "purpose": "critical_illness_premium",
                        "beneficiary_member_id": synthetic.member_id(index),
                        "amount_fen": rng.randint(1_000, 5_000),
                    }
                )
        for city, ids in by_city.items():
            code = synthetic.CITIES[city]
            for facility in ids:
                count = visits_per_day
                if PLANTED.get(facility) == "cost_growth" and day.strftime("%Y-%m") == previous:
                    count = 1 if day.day % 3 == 0 else 0
                for _ in range(count):
                    member = rng.randrange(0 if city == "nanchang" else 1, members, 2)
                    claims += 1
                    claim: dict[str, Any] = {
                        "type": "claim.submitted",
                        "claim_id": f"BK-{code}-{claims:07d}",
                        "member_id": synthetic.member_id(member),
                        "facility_id": facility,
                        "service_date": str(day),
                        "submitted_at": stamp,
                        "lines": _lines(rng, facility),
                    }
                    if rng.random() < 0.05:
                        claim["channel"] = "reimbursement"
                    out.requests.append(claim)
                    if rng.random() < 0.03:
                        out.requests.append(
                            {
                                "type": "claim.reversal_requested",
                                "claim_id": claim["claim_id"],
                                "member_id": claim["member_id"],
                                "facility_id": facility,
                                "requested_at": f"{day}T16:00:00+08:00",
                                "reason": "entered twice",
                            }
                        )
    last_day = _month_days(month)[-1]
    out.requests += [
        {
            "type": "account.closed",
            "request_id": f"X-{profile['member_id']}",
            "member_id": profile["member_id"],
            "requested_at": f"{last_day}T18:00:00+08:00",
            "reason": "death",
        }
        for profile in profiles[-4:]
    ]
    return out


async def outcomes(month: Month, stamped: bool = True) -> list[dict[str, Any]]:
    """The events the worker publishes for `month`, each dated at its request's time (`stamped`: with
    the `member_state` the Kafka worker appends, as on the real topics)."""
    lines = [orjson.dumps(m) for m in month.reference + month.requests]
    buffer = io.BytesIO()
    replayer = Replayer()
    replayer.settler.stamp_state = stamped
    await replayer.replay(lines, buffer)
    times = {}
    for request in month.requests:
        key = request.get("claim_id") or request.get("request_id")
        if request["type"] == "claim.reversal_requested":
            times[("reversal", key)] = request["requested_at"]
        else:
            times[("request", key)] = request.get("submitted_at") or request["requested_at"]
    out = []
    for line in buffer.getvalue().splitlines():
        event = orjson.loads(line)
        kind = event["type"]
        if kind == "claim.settled":
            event["settled_at"] = times[("request", event["claim_id"])]
        elif kind == "claim.reversed":
            event["reversed_at"] = times[("reversal", event["claim_id"])]
        elif kind == "claim.rejected":
            event["rejected_at"] = times.get(("request", event["claim_id"]), event["rejected_at"])
        out.append(event)
    return out
