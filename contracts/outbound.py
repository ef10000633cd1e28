"""Outbound events (contracts.md): settlements, reversals, rejections, ledger events, dead letters.

The worker builds these with `Part.build` on its hot path (the engine guarantees the values)
and serialises them with orjson through `contracts.wire.dumps`; tests validate every emitted event
against these same models.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.types import Bp, Fen

Treatment = Literal["employed", "retired", "retired_70plus", "pre1949"]
FundExclusion = Literal[
    "BENEFITS_SUSPENDED",
    "INPATIENT_STAY",
    "LIABILITY_OTHER_PARTY",
    "OUT_OF_AREA_UNREGISTERED",
    "PHARMACY_NOT_IN_POOLING",
    "NO_PRESCRIPTION",
]
FundLimit = Literal["CEILING_REACHED", "CAP_REACHED"]
ClaimRequestType = Literal["claim.submitted", "claim.reversal_requested"]
CreditCause = Literal["contribution", "backpay", "retiree", "incentive", "transfer_in"]


_set_attr = object.__setattr__
_FIELD_NAMES: dict[type, set[str]] = {}


class Part(BaseModel):
    """Base of every outbound model and sub-model: no unknown fields, and a fast trusted builder."""

    model_config = ConfigDict(extra="forbid")

    omit_if_none: ClassVar[frozenset[str]] = frozenset()
    """Optional fields that are left out of the JSON rather than written as null."""

    @classmethod
    def build(cls, **fields: Any) -> Self:
        """Make an event from trusted, complete values without validation.

        `model_construct` costs ~10 µs an event in pydantic's Python code; the worker builds an
        event per message, so it fills the instance directly. Every field must be given, defaults
        included, as wire values: nested parts (segments, accumulators, reasons) may be given as
        their field dicts, since a built event is only ever serialised (`contracts.wire`). The tests
        validate every emitted event against the models.
        """
        event = cls.__new__(cls)
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = set(cls.model_fields)
        _set_attr(event, "__dict__", fields)
        _set_attr(event, "__pydantic_fields_set__", names)  # shared, never mutated
        _set_attr(event, "__pydantic_extra__", None)
        _set_attr(event, "__pydantic_private__", None)
        return event


class Outbound(Part):
    """Base of every outbound event."""

    """Optional fields that are left out of the JSON rather than written as null."""

    schema_version: Literal[1] = 1


class Reason(Part):
    code: str
    message: str
    field: str | None = None


class Segment(Part):
    """One overlap of a walk with a segment (explanation of benefits)."""

    lower_fen: Fen
    upper_fen: Fen | None
    ratio_bp: Bp
    deductible: bool
    amount_fen: Fen


class AccumulatorsAfter(Part):
    year: int
    counted_fen: Fen
    capped_fund_fen: Fen
    fund_fen: Fen
    incentive_fund_fen: Fen
    claims: int = Field(ge=0)
    cap_fen: Fen | None


MEMBER_STATE_FORMAT = 1


class MemberState(Part):
    """The member's stored state after the event, appended by the Kafka worker to every event that
    changes it, for `python -m worker rebuild` (restoring Redis from the outbound topics). Not part
    of the business contract: consumers ignore it, replay leaves it out, its fields may change with
    `format`."""

    format: Literal[1]
    ledger: list[int | bool | None] | None = None
    """The ledger after the event, when the event changed it (`worker.domain.state.Ledger.to_flat`):
    change count, balance, closed, incentive year / qualified / streak, then per year: year, counted,
    capped fund, fund, incentive fund, claims. The event with the highest change count carries the
    member's ledger."""
    record: list[Any] | None = None
    """On `claim.settled`: what the claim record keeps besides the event — content fingerprint,
    year, accumulator delta, account pay, fund pay, cap, facility."""
    period: str | None = None
    """On a credit that marks a period as credited: its key."""


class StateChange(Outbound):
    """An event that may change the member's state (see `MemberState`)."""

    member_state: MemberState | None = None


class ClaimSettled(StateChange):
    type: Literal["claim.settled"] = "claim.settled"
    event_id: str
    claim_id: str
    member_id: str
    city: str
    policy_version: str
    facility_id: str
    prescribing_facility_id: str | None
    service_date: str
    settled_at: str
    channel: Literal["pos", "reimbursement"]
    fund_payee: Literal["facility", "member"]
    treatment: Treatment
    band: str | None
    total_fen: Fen
    full_self_pay_fen: Fen
    pre_self_pay_fen: Fen
    eligible_fen: Fen
    deductible_fen: Fen
    fund_pay_fen: Fen
    uncapped_fund_fen: Fen
    uncounted_fund_fen: Fen
    member_share_fen: Fen
    account_pay_fen: Fen
    cash_pay_fen: Fen
    account_balance_after_fen: Fen | None
    fund_exclusions: list[FundExclusion]
    fund_limits: list[FundLimit]
    segments: list[Segment]
    category_totals_fen: dict[str, Fen]
    """Σ amount of the claim's lines per category present, keys in the contract's category order."""
    accumulators_after: AccumulatorsAfter


class ClaimReversed(StateChange):
    type: Literal["claim.reversed"] = "claim.reversed"
    event_id: str
    claim_id: str
    member_id: str
    facility_id: str | None
    """The settled claim's facility (null only for a claim record kept before facilities were)."""
    reversed_at: str
    fund_pay_fen: Fen
    account_pay_fen: Fen
    account_balance_after_fen: Fen | None
    accumulators_after: AccumulatorsAfter


class ClaimRejected(Outbound):
    type: Literal["claim.rejected"] = "claim.rejected"
    event_id: str
    request_type: ClaimRequestType
    claim_id: str
    member_id: str | None
    rejected_at: str
    reasons: list[Reason]


class AccountCredited(StateChange):
    omit_if_none: ClassVar[frozenset[str]] = frozenset({"period"})

    type: Literal["account.credited"] = "account.credited"
    event_id: str
    request_id: str
    member_id: str
    cause: CreditCause
    period: str | None = None
    amount_fen: Fen
    balance_after_fen: Fen


class AccountDebited(StateChange):
    type: Literal["account.debited"] = "account.debited"
    event_id: str
    request_id: str
    member_id: str
    purpose: str
    beneficiary_member_id: str
    amount_fen: Fen
    balance_after_fen: Fen


class AccountClosedEvent(StateChange):
    type: Literal["account.closed"] = "account.closed"
    event_id: str
    request_id: str
    member_id: str
    disposition: Literal["inherited", "to_pooling_fund", "withdrawn", "transferred"]
    amount_fen: Fen
    balance_after_fen: Fen


class AccountRequestRejected(StateChange):
    type: Literal["account.request_rejected"] = "account.request_rejected"
    event_id: str
    request_id: str
    member_id: str | None
    request_type: str
    reasons: list[Reason]


class DeadLetter(Outbound):
    type: Literal["dead_letter"] = "dead_letter"
    source_topic: str
    partition: int
    offset: int
    error: str
    payload_b64: str
    payload_bytes: int = Field(ge=0)
    payload_sha256: str


OutboundEvent = Annotated[
    ClaimSettled
    | ClaimReversed
    | ClaimRejected
    | AccountCredited
    | AccountDebited
    | AccountClosedEvent
    | AccountRequestRejected
    | DeadLetter,
    Field(discriminator="type"),
]

OUTBOUND: TypeAdapter[OutboundEvent] = TypeAdapter(OutboundEvent)


# ---------------------------------------------------------------- monitoring (the agency's books)

Indicator = Literal["avg_cost", "self_pay_share", "examination_share", "cost_growth"]


class MonitoringAlert(Outbound):
    """An early-warning breach (issue #12 §4) on `monitoring.alerts`, key = facility id: one facility's
    indicator for one month of settlements above its threshold. Published once by
    `python -m worker alerts`; `event_id` is `alert:<facility_id>:<month>:<indicator>`, so a re-run
    publishes nothing new and a consumer can de-duplicate by it."""

    type: Literal["monitoring.alert"] = "monitoring.alert"
    event_id: str
    month: str
    """YYYY-MM, of the claims' settlement dates (UTC+08:00)."""
    city: str
    facility_id: str
    facility_kind: str
    band: str
    indicator: Indicator
    """`avg_cost`: average cost per visit (次均费用) over the peers' median; `self_pay_share`: full
    self-pay over total; `examination_share`: examination over total; `cost_growth`: total cost over
    the previous month's, minus one."""
    value_bp: int
    threshold_bp: int
    visits: int = Field(ge=0)
    total_fen: Fen
    avg_cost_fen: Fen
    peer_median_avg_cost_fen: Fen | None
    peers: int = Field(ge=0)
    previous_total_fen: Fen | None
    thresholds: str
    """Which thresholds file decided it (its `id`)."""
    detected_at: str


MONITORING: TypeAdapter[MonitoringAlert] = TypeAdapter(MonitoringAlert)
