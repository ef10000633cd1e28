"""Claims: acceptance order and duplicates (rules §7), fund exclusions (§5), settlement (§6) with
the account split (§8.1), and reversals (§7)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from contracts.inbound import ClaimReversalRequested, ClaimSubmitted, FacilityRegistered, MemberProfile
from contracts.outbound import (
    ClaimRejected,
    ClaimRequestType,
    ClaimReversed,
    ClaimSettled,
    FundExclusion,
    Reason,
)
from contracts.types import china_date
from contracts.wire import Emitted, emit
from worker.domain.errors import Code, Rejection
from worker.domain.policy import Policy, PolicyBook
from worker.domain.pooling import LineSplit, Pooling, pool_claim, split_lines
from worker.domain.state import Accumulators, ClaimRecord, Effect, MemberView
from worker.domain.treatment import band_of, treatment_class


@dataclass(frozen=True, slots=True)
class Context:
    """What a decision may consult besides the member's state: policies, facilities, the time."""

    policies: PolicyBook
    facilities: Mapping[str, FacilityRegistered]
    now: str  # the *_at timestamp written into new events


@dataclass(slots=True)
class Decision:
    """The events that answer one message, and the state change to apply with them."""

    events: list[Emitted]
    effect: Effect | None = None
    repeated: bool = False
    """The events are an answer the state already keeps (a duplicate claim, a repeated reversal or
    account request)."""

    @property
    def kept(self) -> bool:
        """Whether the state keeps these events, so that deciding the same message again, on the state
        this decision leaves, gives them back byte for byte: a settlement or reversal lives in its
        claim record, an account answer under its request id. Such answers need no copy per message;
        rejections of claims do (a later profile or settlement could change them)."""
        return self.repeated or (
            self.effect is not None and (self.effect.claim is not None or self.effect.answer is not None)
        )


def fingerprint(claim: ClaimSubmitted) -> str:
    """Content identity of a claim for §7.2: every field after defaults except `submitted_at`.

    Field order is the model's, so equal content gives equal bytes whatever the key order on the wire.
    """
    fields = dict(claim.__dict__)
    del fields["submitted_at"]
    fields["lines"] = [line.__dict__ for line in claim.lines]  # plain dicts: orjson needs no hook
    canonical = orjson.dumps(fields)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def rejection_event(
    request_type: ClaimRequestType,
    claim_id: str,
    member_id: str | None,
    error: Rejection,
    digest: str,
    now: str,
) -> ClaimRejected:
    """`event_id` = claim, request kind, code and a digest of the request: stable across redelivery."""
    kind = request_type.removeprefix("claim.")
    return ClaimRejected.build(
        schema_version=1,
        type="claim.rejected",
        event_id=f"{claim_id}:rejected:{kind}:{error.code}:{digest[:12]}",
        request_type=request_type,
        claim_id=claim_id,
        member_id=member_id,
        rejected_at=now,
        reasons=[Reason.build(code=str(error.code), message=error.message, field=error.field)],
    )


def request_digest(message: ClaimSubmitted | ClaimReversalRequested) -> str:
    return hashlib.sha256(message.model_dump_json().encode()).hexdigest()


def _reject(message: ClaimSubmitted | ClaimReversalRequested, error: Rejection, ctx: Context) -> Decision:
    event = rejection_event(
        message.type, message.claim_id, message.member_id, error, request_digest(message), ctx.now
    )
    return Decision([emit(event)])


def _facility(ctx: Context, facility_id: str, field: str) -> FacilityRegistered:
    facility = ctx.facilities.get(facility_id)
    if facility is None:
        raise Rejection(Code.UNKNOWN_FACILITY, f"facility {facility_id} is not in the registry", field)
    return facility


def _accept(claim: ClaimSubmitted, view: MemberView, ctx: Context) -> tuple[MemberProfile, Policy]:
    """Checks 3–7 of rules §7, in order; the first failure rejects the claim."""
    profile = view.profile
    if profile is None:
        raise Rejection(Code.UNKNOWN_MEMBER, f"member {claim.member_id} is not in the registry", "member_id")
    facility = _facility(ctx, claim.facility_id, "facility_id")
    if claim.prescribing_facility_id is not None:
        _facility(ctx, claim.prescribing_facility_id, "prescribing_facility_id")
    if not facility.designated:
        raise Rejection(
            Code.FACILITY_NOT_DESIGNATED, f"facility {claim.facility_id} is not designated", "facility_id"
        )
    if claim.service_date > china_date(claim.submitted_at):
        raise Rejection(
            Code.SERVICE_DATE_IN_FUTURE,
            "service_date is after the submission date (UTC+08:00)",
            "service_date",
        )
    policy = ctx.policies.find(profile.city, claim.service_date)
    if policy is None:
        raise Rejection(
            Code.NO_POLICY_IN_FORCE,
            f"no policy of {profile.city} is in force on {claim.service_date.isoformat()}",
            "service_date",
        )
    return profile, policy


def _pricing(claim: ClaimSubmitted, ctx: Context) -> tuple[FacilityRegistered, FacilityRegistered | None]:
    """The facility and the pricing facility (rules §3); None for a pharmacy without a valid prescriber."""
    facility = ctx.facilities[claim.facility_id]
    if facility.kind == "medical":
        return facility, facility
    prescriber = ctx.facilities.get(claim.prescribing_facility_id) if claim.prescribing_facility_id else None
    if prescriber is None or prescriber.kind != "medical" or not prescriber.designated:
        return facility, None
    return facility, prescriber


def fund_exclusions(
    claim: ClaimSubmitted,
    profile: MemberProfile,
    facility: FacilityRegistered,
    pricing: FacilityRegistered | None,
    policy: Policy,
) -> list[FundExclusion]:
    """Every whole-claim fund exclusion that applies, in the order of rules §5."""
    found: list[FundExclusion] = []
    day = claim.service_date
    checks: tuple[tuple[FundExclusion, bool], ...] = (
        ("BENEFITS_SUSPENDED", profile.benefits_suspended),
        ("INPATIENT_STAY", claim.inpatient_stay),
        ("LIABILITY_OTHER_PARTY", claim.liability is not None),
        (
            "OUT_OF_AREA_UNREGISTERED",
            facility.city != profile.city
            and not any(
                r.city == facility.city and r.valid_from <= day and (r.valid_to is None or day <= r.valid_to)
                for r in profile.registrations
            ),
        ),
        ("PHARMACY_NOT_IN_POOLING", facility.kind == "pharmacy" and not facility.outpatient_pooling),
        ("NO_PRESCRIPTION", facility.kind == "pharmacy" and pricing is None),
    )
    for code, applies in checks:
        if applies and policy.exclusion_on(code):
            found.append(code)
    return found


def _accumulators_after(year: int, acc: Accumulators, cap: int | None) -> dict[str, int | None]:
    """Wire form of contracts.outbound.AccumulatorsAfter."""
    return {
        "year": year,
        "counted_fen": acc.counted,
        "capped_fund_fen": acc.capped_fund,
        "fund_fen": acc.fund,
        "incentive_fund_fen": acc.incentive_fund,
        "claims": acc.claims,
        "cap_fen": cap,
    }


def _account_pay(
    claim: ClaimSubmitted, split: LineSplit, member_share: int, view: MemberView, policy: Policy
) -> int:
    """Rules §8.1: what the personal account pays of the member's share."""
    ledger = view.ledger
    if claim.channel != "pos" or not claim.use_account or ledger.closed or ledger.balance <= 0:
        return 0
    if claim.liability is not None and policy.accounts.liability_blocks_account:
        return 0
    payable = max(0, member_share - split.not_account_payable)
    return min(ledger.balance, payable)


def settle(claim: ClaimSubmitted, view: MemberView, ctx: Context) -> Decision:
    """Decide a `claim.submitted` (rules §7 acceptance, §5, §6, §8.1)."""
    content = fingerprint(claim)
    owner = view.claim_owners.get(claim.claim_id)
    if owner is not None:  # §7.2: settled before (reversed or not)
        record = view.claims.get(claim.claim_id) if owner == claim.member_id else None
        if record is not None and record.archived:
            return _reject(
                claim,
                Rejection(
                    Code.DUPLICATE_CONFLICT,
                    f"claim {claim.claim_id} was settled for {record.year} and is past the retention "
                    "window: it cannot be settled again",
                    "claim_id",
                ),
                ctx,
            )
        if record is not None and record.fingerprint == content:
            return Decision([record.settled], repeated=True)
        if owner != claim.member_id or record is not None:
            return _reject(
                claim,
                Rejection(
                    Code.DUPLICATE_CONFLICT,
                    f"claim {claim.claim_id} was already settled with different content",
                    "claim_id",
                ),
                ctx,
            )
    try:
        profile, policy = _accept(claim, view, ctx)
    except Rejection as error:
        return _reject(claim, error, ctx)

    day = claim.service_date
    year = day.year
    treatment = treatment_class(profile, day, policy)
    table = policy.table(treatment)
    facility, pricing = _pricing(claim, ctx)
    band = band_of(pricing, policy) if pricing is not None else None
    split = split_lines(claim.lines, policy)
    exclusions = fund_exclusions(claim, profile, facility, pricing, policy)
    before = view.ledger.year(year)
    if exclusions or band is None:
        pool = Pooling()
        after = before
    else:
        pool = pool_claim(split, table, band, before)
        after = before.plus(pool.delta)
    member_share = split.total - pool.fund_pay
    account_pay = _account_pay(claim, split, member_share, view, policy)
    balance_after = view.ledger.balance - account_pay
    event = ClaimSettled.build(
        schema_version=1,
        type="claim.settled",
        event_id=f"{claim.claim_id}:settled",
        claim_id=claim.claim_id,
        member_id=claim.member_id,
        city=profile.city,
        policy_version=policy.id,
        facility_id=claim.facility_id,
        prescribing_facility_id=claim.prescribing_facility_id,
        service_date=day.isoformat(),
        settled_at=ctx.now,
        channel=claim.channel,
        fund_payee="member" if claim.channel == "reimbursement" else "facility",
        treatment=treatment,
        band=band,
        total_fen=split.total,
        full_self_pay_fen=split.full_self_pay,
        pre_self_pay_fen=split.pre_self_pay,
        eligible_fen=split.eligible,
        deductible_fen=pool.deductible,
        fund_pay_fen=pool.fund_pay,
        uncapped_fund_fen=pool.fund_uncapped,
        uncounted_fund_fen=pool.fund_uncounted,
        member_share_fen=member_share,
        account_pay_fen=account_pay,
        cash_pay_fen=member_share - account_pay,
        account_balance_after_fen=balance_after,
        fund_exclusions=exclusions,
        fund_limits=pool.limits,
        segments=pool.segments,
        category_totals_fen=split.category_totals,
        accumulators_after=_accumulators_after(year, after, table.cap_fen),
    )
    settled = emit(event)
    record = ClaimRecord(
        claim_id=claim.claim_id,
        member_id=claim.member_id,
        fingerprint=content,
        year=year,
        delta=pool.delta if pool.delta.claims else Accumulators(),
        account_pay=account_pay,
        fund_pay=pool.fund_pay,
        cap_fen=table.cap_fen,
        facility_id=claim.facility_id,
        settled=settled,
    )
    ledger = view.ledger.with_year(year, after, balance_after)
    return Decision([settled], Effect(ledger=ledger, claim=record))


def reverse(request: ClaimReversalRequested, view: MemberView, ctx: Context) -> Decision:
    """Decide a `claim.reversal_requested` (rules §7 Reversal): unknown claim, then another facility's
    claim, then another member's, before the outcome."""
    claim_id = request.claim_id
    owner = view.claim_owners.get(claim_id)
    record = view.claims.get(claim_id) if owner is not None else None
    error: Rejection | None = None
    if owner is None or (record is None and owner == request.member_id):
        error = Rejection(Code.UNKNOWN_CLAIM, f"claim {claim_id} was never settled", "claim_id")
    elif (
        request.facility_id is not None
        and record is not None
        and record.facility_id is not None
        and request.facility_id != record.facility_id
    ):
        error = Rejection(
            Code.FACILITY_MISMATCH, f"claim {claim_id} was not settled by this facility", "facility_id"
        )
    elif owner != request.member_id:
        error = Rejection(
            Code.MEMBER_MISMATCH, f"claim {claim_id} was settled for another member", "member_id"
        )
    elif record is not None and record.archived:
        error = Rejection(
            Code.CLAIM_ARCHIVED,
            f"claim {claim_id} was settled for {record.year} and is past the retention window: "
            "it can no longer be reversed",
            "claim_id",
        )
    if error is not None:
        return _reject(request, error, ctx)
    assert record is not None
    if record.reversed is not None:
        return Decision([record.reversed], repeated=True)
    after = view.ledger.year(record.year).plus(record.delta, -1)
    balance = view.ledger.balance + record.account_pay
    event = ClaimReversed.build(
        schema_version=1,
        type="claim.reversed",
        event_id=f"{request.claim_id}:reversed",
        claim_id=request.claim_id,
        member_id=request.member_id,
        facility_id=record.facility_id,
        reversed_at=ctx.now,
        fund_pay_fen=record.fund_pay,
        account_pay_fen=record.account_pay,
        account_balance_after_fen=balance,
        accumulators_after=_accumulators_after(record.year, after, record.cap_fen),
    )
    reversed_ = emit(event)
    updated = dataclasses.replace(record, reversed=reversed_)
    return Decision(
        [reversed_], Effect(ledger=view.ledger.with_year(record.year, after, balance), claim=updated)
    )
