"""Personal-account requests (rules §8): credits, the Nanjing health incentive, payments other than
claims and closing, checked in the order of §8.0 and answered once per `request_id` (§8.7)."""

from __future__ import annotations

import datetime as dt

from contracts.inbound import (
    AccountClosed,
    AccountMessage,
    ContributionPosted,
    IncentiveDue,
    MemberProfile,
    PaymentRequested,
    RetireeCreditDue,
    TransferIn,
)
from contracts.outbound import (
    AccountClosedEvent,
    AccountCredited,
    AccountDebited,
    AccountRequestRejected,
    CreditCause,
    Reason,
)
from contracts.types import china_date, period_start
from contracts.wire import emit
from worker.domain.claims import Context, Decision
from worker.domain.errors import Code, Rejection
from worker.domain.money import BP_SCALE, rhu
from worker.domain.policy import Policy, RetireeCreditRule
from worker.domain.state import Effect, Ledger, MemberView
from worker.domain.treatment import retiree_from, treatment_class

AccountAnswer = AccountCredited | AccountDebited | AccountClosedEvent | AccountRequestRejected


def period_key(request: AccountMessage) -> str | None:
    """The credited-period marker a request checks (§8.2): regular contributions and retiree
    credits are tracked apart; back-pay and other requests have none."""
    if isinstance(request, ContributionPosted) and request.kind == "regular":
        return f"contribution:{request.period}"
    if isinstance(request, RetireeCreditDue):
        return f"retiree:{request.period}"
    return None


def _policy_day(request: AccountMessage) -> dt.date:
    """The date that selects the policy version of an account request (contracts.md §Accounts)."""
    if isinstance(request, ContributionPosted | RetireeCreditDue):
        return period_start(request.period)
    if isinstance(request, IncentiveDue):
        return dt.date(request.year + 1, 1, 1)
    return china_date(request.requested_at)


def _credited(
    request: AccountMessage, cause: CreditCause, amount: int, ledger: Ledger, period: str | None
) -> AccountCredited:
    return AccountCredited.build(
        schema_version=1,
        type="account.credited",
        event_id=f"{request.request_id}:credited",
        request_id=request.request_id,
        member_id=request.member_id,
        cause=cause,
        period=period,
        amount_fen=amount,
        balance_after_fen=ledger.balance,
    )


def _contribution(
    request: ContributionPosted, profile: MemberProfile, policy: Policy, view: MemberView
) -> tuple[AccountAnswer, Ledger, str | None]:
    """Regular and back-pay contributions: 2% of the base (Nanchang arts. 7, 10; Nanjing art. 5)."""
    cause: CreditCause
    key: str | None
    if request.kind == "regular":
        if treatment_class(profile, period_start(request.period), policy) != "employed":
            raise Rejection(Code.NOT_ELIGIBLE, "member is not employed on the period's first day", "period")
        key = period_key(request)
        if key in view.periods:
            raise Rejection(Code.DUPLICATE_PERIOD, "period already credited", "period")
        rate, cause = policy.accounts.contribution_rate, "contribution"
    else:  # back-pay (一次性补缴) is never period-checked
        key, rate, cause = None, policy.accounts.backpay_rate, "backpay"
    amount = rhu(request.base_fen * rate, BP_SCALE)
    ledger = view.ledger.with_balance(view.ledger.balance + amount)
    return _credited(request, cause, amount, ledger, request.period), ledger, key


def _rule_matches(rule: RetireeCreditRule, profile: MemberProfile, period: str) -> bool:
    if rule.pre1949 is not None and rule.pre1949 != profile.pre1949_worker:
        return False
    if rule.period_from is not None and period < rule.period_from:
        return False
    if rule.period_to is not None and period > rule.period_to:
        return False
    retired = profile.retirement_date
    if rule.retired_before is not None and (retired is None or retired >= rule.retired_before):
        return False
    return not (rule.retired_from is not None and (retired is None or retired < rule.retired_from))


def _retiree_amount(rule: RetireeCreditRule, profile: MemberProfile, request: RetireeCreditDue) -> int:
    if rule.amount == "fixed":
        return rule.fixed_fen or 0
    if rule.amount == "request_pension":
        return rhu(request.pension_fen * (rule.rate or 0), BP_SCALE)
    figure = (
        profile.retiree_base_credit_fen
        if rule.amount == "profile_base_credit"
        else profile.retirement_pension_fen
    )
    if figure is None:
        name = "retiree_base_credit_fen" if rule.amount == "profile_base_credit" else "retirement_pension_fen"
        raise Rejection(Code.NOT_ELIGIBLE, f"the member profile has no {name}", "member_id")
    return figure if rule.amount == "profile_base_credit" else rhu(figure * (rule.rate or 0), BP_SCALE)


def _retiree_credit(
    request: RetireeCreditDue, profile: MemberProfile, policy: Policy, view: MemberView
) -> tuple[AccountAnswer, Ledger, str | None]:
    """Monthly retiree credit (Nanchang art. 8; Nanjing art. 5, rules §8.3)."""
    since = retiree_from(profile)
    if not profile.pre1949_worker and (since is None or period_start(request.period) < since):
        raise Rejection(Code.NOT_ELIGIBLE, "member is not retired on the period's first day", "period")
    key = period_key(request)
    if key in view.periods:
        raise Rejection(Code.DUPLICATE_PERIOD, "period already credited", "period")
    rule = next(
        (r for r in policy.accounts.retiree_credits if _rule_matches(r, profile, request.period)), None
    )
    if rule is None:
        raise Rejection(
            Code.NOT_ELIGIBLE, "no retiree credit rule applies to this member and period", "period"
        )
    amount = _retiree_amount(rule, profile, request)
    ledger = view.ledger.with_balance(view.ledger.balance + amount)
    return _credited(request, "retiree", amount, ledger, request.period), ledger, key


def _incentive(
    request: IncentiveDue, profile: MemberProfile, policy: Policy, view: MemberView
) -> tuple[AccountAnswer, Ledger, str | None]:
    """Nanjing health incentive (art. 7, rules §8.4)."""
    spec = policy.accounts.incentive
    if spec is None:
        raise Rejection(Code.NOT_APPLICABLE, "no health incentive in this city", None)
    if request.year < spec.first_year:
        raise Rejection(
            Code.NOT_APPLICABLE, f"no health incentive is evaluated before {spec.first_year}", "year"
        )
    ledger = view.ledger
    last = ledger.incentive_year
    if last is not None and request.year <= last:
        raise Rejection(
            Code.DUPLICATE_PERIOD, f"year {request.year} is not after the last evaluated year", "year"
        )
    qualifying = ledger.year(request.year).incentive_fund + request.other_fund_fen == 0
    if not qualifying:
        streak = 0
    elif last == request.year - 1 and ledger.incentive_qualified:
        streak = ledger.incentive_streak + 1
    else:
        streak = 1
    amount = min(spec.first_fen + spec.step_fen * (streak - 1), spec.max_fen) if streak >= 1 else 0
    updated = Ledger(
        ledger.years, ledger.balance + amount, ledger.closed, request.year, qualifying, streak, ledger.changes
    )
    return _credited(request, "incentive", amount, updated, None), updated, None


def _transfer_in(
    request: TransferIn, profile: MemberProfile, policy: Policy, view: MemberView
) -> tuple[AccountAnswer, Ledger, str | None]:
    """关系转入 (Nanchang art. 13): the amount as given."""
    ledger = view.ledger.with_balance(view.ledger.balance + request.amount_fen)
    return _credited(request, "transfer_in", request.amount_fen, ledger, None), ledger, None


def _payment(
    request: PaymentRequested, profile: MemberProfile, policy: Policy, view: MemberView
) -> tuple[AccountAnswer, Ledger, str | None]:
    """Payments other than claims (Nanchang art. 11; Nanjing art. 8), all or nothing."""
    scope = policy.accounts.payments.get(request.purpose)
    if scope is None:
        raise Rejection(Code.NOT_ALLOWED, f"purpose not allowed in {policy.city}", "purpose")
    is_self = request.beneficiary_member_id == request.member_id
    is_family = any(f.member_id == request.beneficiary_member_id for f in profile.family)
    allowed = {"self": is_self, "family": is_family and not is_self, "self_or_family": is_self or is_family}
    if not allowed[scope]:
        raise Rejection(
            Code.NOT_FAMILY,
            f"beneficiary must be {scope.replace('_', ' ')} for {request.purpose}",
            "beneficiary_member_id",
        )
    if request.amount_fen > view.ledger.balance:
        raise Rejection(Code.INSUFFICIENT_BALANCE, "balance is insufficient", "amount_fen")
    ledger = view.ledger.with_balance(view.ledger.balance - request.amount_fen)
    event = AccountDebited.build(
        schema_version=1,
        type="account.debited",
        event_id=f"{request.request_id}:debited",
        request_id=request.request_id,
        member_id=request.member_id,
        purpose=request.purpose,
        beneficiary_member_id=request.beneficiary_member_id,
        amount_fen=request.amount_fen,
        balance_after_fen=ledger.balance,
    )
    return event, ledger, None


def _close(
    request: AccountClosed, profile: MemberProfile, policy: Policy, view: MemberView
) -> tuple[AccountAnswer, Ledger, str | None]:
    """Closing (Nanchang arts. 13–14; Nanjing art. 11): the balance goes out, the account stays closed."""
    spec = policy.accounts.closing.get(request.reason)
    if spec is None:
        raise Rejection(Code.NOT_ALLOWED, f"reason not allowed in {policy.city}", "reason")
    disposition = spec.disposition
    if spec.without_heirs is not None and not profile.has_heirs:
        disposition = spec.without_heirs
    amount = view.ledger.balance
    ledger = view.ledger.with_balance(0, closed=True)
    event = AccountClosedEvent.build(
        schema_version=1,
        type="account.closed",
        event_id=f"{request.request_id}:closed",
        request_id=request.request_id,
        member_id=request.member_id,
        disposition=disposition,
        amount_fen=amount,
        balance_after_fen=0,
    )
    return event, ledger, None


_HANDLERS = {
    "account.contribution_posted": _contribution,
    "account.retiree_credit_due": _retiree_credit,
    "account.incentive_due": _incentive,
    "account.transfer_in": _transfer_in,
    "account.payment_requested": _payment,
    "account.closed": _close,
}


def account_rejection(
    request_id: str, member_id: str | None, request_type: str, error: Rejection, event_id: str
) -> AccountRequestRejected:
    return AccountRequestRejected.build(
        schema_version=1,
        type="account.request_rejected",
        event_id=event_id,
        request_id=request_id,
        member_id=member_id,
        request_type=request_type,
        reasons=[Reason.build(code=str(error.code), message=error.message, field=error.field)],
    )


def decide_account(request: AccountMessage, view: MemberView, ctx: Context) -> Decision:
    """Answer an account request; every answer but INVALID_PAYLOAD is stored under its request_id."""
    stored = view.answers.get(request.request_id)
    if stored is not None:  # §8.7: the same request_id gets the same answer, whatever its content
        return Decision([stored], repeated=True)
    try:
        profile = view.profile
        if profile is None:
            raise Rejection(
                Code.UNKNOWN_MEMBER, f"member {request.member_id} is not in the registry", "member_id"
            )
        day = _policy_day(request)
        policy = ctx.policies.find(profile.city, day)
        if policy is None:
            raise Rejection(
                Code.NO_POLICY_IN_FORCE, f"no policy of {profile.city} is in force on {day}", None
            )
        if view.ledger.closed:
            raise Rejection(Code.ACCOUNT_CLOSED, f"the account of {request.member_id} is closed", "member_id")
        event, ledger, period = _HANDLERS[request.type](request, profile, policy, view)  # type: ignore[operator]
    except Rejection as error:
        rejected = account_rejection(
            request.request_id,
            request.member_id,
            request.type,
            error,
            f"{request.request_id}:request_rejected",
        )
        answer = emit(rejected)
        return Decision([answer], Effect(answer=(request.request_id, answer)))
    answer = emit(event)
    return Decision([answer], Effect(ledger=ledger, answer=(request.request_id, answer), period=period))
