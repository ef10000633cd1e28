"""Treatment class of a member on a date (rules §2) and the facility band (rules §3)."""

from __future__ import annotations

import datetime as dt

from contracts.inbound import FacilityRegistered, MemberProfile
from contracts.outbound import Treatment
from worker.domain.policy import Policy


def first_of_next_month(day: dt.date) -> dt.date:
    """次月起: benefits change from the first day of the month after `day`'s month."""
    return dt.date(day.year + 1, 1, 1) if day.month == 12 else dt.date(day.year, day.month + 1, 1)


def retiree_from(profile: MemberProfile) -> dt.date | None:
    """First day the member is treated as retired (Nanchang arts. 9, 18; Nanjing arts. 6, 18)."""
    if profile.retirement_date is None:
        return None
    return first_of_next_month(profile.retirement_date)


def age70_from(profile: MemberProfile) -> dt.date:
    """First day of the month after the month of the 70th birthday (Nanjing art. 18)."""
    birth = profile.birth_date
    return first_of_next_month(dt.date(birth.year + 70, birth.month, 1))


def treatment_class(profile: MemberProfile, day: dt.date, policy: Policy) -> Treatment:
    """`pre1949`, `retired_70plus`, `retired` or `employed` on `day` (rules §2)."""
    if profile.pre1949_worker:
        return "pre1949"
    since = retiree_from(profile)
    if since is not None and day >= since:
        if policy.distinguishes_age70 and day >= age70_from(profile):
            return "retired_70plus"
        return "retired"
    return "employed"


def band_of(facility: FacilityRegistered, policy: Policy) -> str:
    """Ratio band of the pricing facility (Nanchang art. 17: level; Nanjing art. 14: community)."""
    rule = policy.band
    key = str(facility.level) if rule.by == "level" else ("true" if facility.community else "false")
    return rule.values[key]
