"""Line split (rules §4) and the pooling payment of one claim (rules §6.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from contracts.inbound import CATEGORIES, ClaimLine
from contracts.outbound import FundLimit
from worker.domain.money import BP_SCALE, rhu
from worker.domain.policy import Policy, TableSpec
from worker.domain.state import Accumulators


@dataclass(slots=True)
class LineSplit:
    """Claim totals by kind (rules §4) and the eligible amount by pooling treatment (§6.3)."""

    total: int = 0
    full_self_pay: int = 0
    pre_self_pay: int = 0
    eligible_other: int = 0  # E_o
    eligible_uncapped: int = 0  # E_k
    eligible_uncounted: int = 0  # E_u
    not_account_payable: int = 0  # Σ amount of lines the account may not pay (§8.1)
    category_totals: dict[str, int] = field(default_factory=dict)
    """Σ amount per category present, in the contract's category order (`category_totals_fen`)."""

    @property
    def eligible(self) -> int:
        return self.eligible_other + self.eligible_uncapped + self.eligible_uncounted


_CATEGORY_ORDER = {category: index for index, category in enumerate(CATEGORIES)}


def split_lines(lines: tuple[ClaimLine, ...], policy: Policy) -> LineSplit:
    out = LineSplit()
    totals = out.category_totals
    excluded = policy.fund_excluded_categories
    uncounted = policy.uncounted_categories
    uncapped = policy.uncapped_categories
    account_ok = policy.accounts.allowed_categories
    for line in lines:
        amount = line.amount_fen
        category = line.category
        out.total += amount
        totals[category] = totals.get(category, 0) + amount
        if category not in account_ok:
            out.not_account_payable += amount
        if category in excluded or line.coverage == "C":
            out.full_self_pay += amount  # 全自费
            continue
        if line.coverage == "B":  # 乙类先行自付 (Nanjing art. 13)
            pre = rhu(amount * (line.self_pay_ratio_bp or 0), BP_SCALE)
            out.pre_self_pay += pre
            amount -= pre
        if category in uncounted:
            out.eligible_uncounted += amount
        elif category in uncapped:
            out.eligible_uncapped += amount
        else:
            out.eligible_other += amount
    if len(totals) > 1:
        out.category_totals = {c: totals[c] for c in sorted(totals, key=_CATEGORY_ORDER.__getitem__)}
    return out


@dataclass(slots=True)
class Pooling:
    """Result of §6.3 for one claim without fund exclusions."""

    fund_pay: int = 0
    fund_uncapped: int = 0
    fund_uncounted: int = 0
    deductible: int = 0
    limits: list[FundLimit] = field(default_factory=list)
    segments: list[dict[str, int | bool | None]] = field(default_factory=list)
    delta: Accumulators = field(default_factory=Accumulators)


def _walk(table: TableSpec, band: str, start: int, length: int, pool: Pooling) -> tuple[int, bool]:
    """Walk [start, start+length) over the segments; return (Σ p×r in fen·bp, beyond the last segment)."""
    if length <= 0:
        return 0, False
    end = start + length
    numerator = 0
    for seg in table.segments:
        lower = max(start, seg.lower_fen)
        upper = end if seg.upper_fen is None else min(end, seg.upper_fen)
        if upper <= lower:
            continue
        part = upper - lower
        ratio = seg.ratio(band)
        numerator += part * ratio
        if seg.deductible:
            pool.deductible += part
        pool.segments.append(  # wire form of contracts.outbound.Segment
            {
                "lower_fen": seg.lower_fen,
                "upper_fen": seg.upper_fen,
                "ratio_bp": ratio,
                "deductible": seg.deductible,
                "amount_fen": part,
            }
        )
    last_upper = table.segments[-1].upper_fen
    return numerator, last_upper is not None and end > last_upper


def _ratio_at(table: TableSpec, band: str, position: int) -> int:
    """Ratio of the segment holding `position`; the last segment's when beyond it (§6.3 step 4)."""
    for seg in table.segments:
        if seg.upper_fen is None or position < seg.upper_fen:
            return seg.ratio(band)
    return table.segments[-1].ratio(band)


def pool_claim(split: LineSplit, table: TableSpec, band: str, before: Accumulators) -> Pooling:
    """Rules §6.3 steps 1–6: walks O and K, the annual cap, uncounted lines, the accumulator delta."""
    pool = Pooling()
    start = before.counted
    e_o, e_k = split.eligible_other, split.eligible_uncapped
    num_o, beyond_o = _walk(table, band, start, e_o, pool)
    num_k, beyond_k = _walk(table, band, start + e_o, e_k, pool)
    fund_o_raw = rhu(num_o, BP_SCALE)
    fund_k = rhu(num_k, BP_SCALE)
    fund_o = fund_o_raw
    if table.cap_fen is not None:
        fund_o = min(fund_o_raw, max(0, table.cap_fen - before.capped_fund))
    fund_u = rhu(split.eligible_uncounted * _ratio_at(table, band, start), BP_SCALE)
    if beyond_o or beyond_k:
        pool.limits.append("CEILING_REACHED")
    if fund_o < fund_o_raw:
        pool.limits.append("CAP_REACHED")
    pool.fund_uncapped = fund_k
    pool.fund_uncounted = fund_u
    pool.fund_pay = fund_o + fund_k + fund_u
    pool.delta = Accumulators(
        counted=e_o + e_k, capped_fund=fund_o, fund=pool.fund_pay, incentive_fund=fund_o + fund_k, claims=1
    )
    return pool
