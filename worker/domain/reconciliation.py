"""Claim-by-claim reconciliation of a facility's records with ours (gateway.md, 3202 对明细账).

Pure: two mappings claim id → figures in, the mismatches out, ordered by claim id then field, so the
same inputs always give the same answer. A claim only one side has is one mismatch with no field; a
claim both have gives one mismatch per differing field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FIELDS = ("total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen", "reversed")


@dataclass(frozen=True, slots=True)
class ClaimFigures:
    total_fen: int
    fund_pay_fen: int
    account_pay_fen: int
    cash_pay_fen: int
    reversed: bool


Problem = Literal["missing_here", "missing_there", "differs"]


def mismatch(
    claim_id: str, problem: Problem, field: str | None = None, ours: Any = None, theirs: Any = None
) -> dict[str, Any]:
    return {"claim_id": claim_id, "problem": problem, "field": field, "ours": ours, "theirs": theirs}


def reconcile(ours: dict[str, ClaimFigures], theirs: dict[str, ClaimFigures]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for claim_id in sorted(ours.keys() | theirs.keys()):
        mine, their = ours.get(claim_id), theirs.get(claim_id)
        if mine is None:
            out.append(mismatch(claim_id, "missing_here"))
        elif their is None:
            out.append(mismatch(claim_id, "missing_there"))
        else:
            for name in FIELDS:
                a, b = getattr(mine, name), getattr(their, name)
                if a != b:
                    out.append(mismatch(claim_id, "differs", name, a, b))
    return out
