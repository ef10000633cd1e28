"""Inbound messages (contracts.md): reference data, claims and account requests.

Every model is strict (JSON types only) and ignores unknown fields. `InboundMessage` is the union
discriminated by `type`; `INBOUND` validates raw bytes straight from the wire.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from contracts.types import ID_PATTERN, Amount, Bp, Id, Period, ProfileMoney, SchemaVersion, Timestamp, Year

Category = Literal[
    "drug",
    "consumable",
    "device",
    "service",
    "examination",
    "consultation_fee",
    "general_consultation_fee",
    "nucleic_acid_test",
    "health_checkup",
    "vaccine",
    "family_doctor_fee",
    "wellness",
    "public_health",
]
CATEGORIES: tuple[str, ...] = Category.__args__  # type: ignore[attr-defined]


class Inbound(BaseModel):
    """Base of every inbound message: strict JSON types, unknown fields ignored, immutable."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    schema_version: SchemaVersion = 1


# ---------------------------------------------------------------- reference data


class Registration(Inbound):
    """An out-of-area registration (异地备案) of a member for another city."""

    city: str = Field(min_length=1)
    valid_from: dt.date
    valid_to: dt.date | None = None


class FamilyMember(Inbound):
    member_id: Id
    relation: Literal["spouse", "parent", "child"]


class MemberProfile(Inbound):
    type: Literal["member.profile"]
    member_id: Id
    city: str = Field(min_length=1)
    birth_date: dt.date
    retirement_date: dt.date | None = None
    pre1949_worker: bool
    """Required: a missing flag would silently change a member's benefits (contracts.md lists no default)."""
    benefits_suspended: bool
    registrations: tuple[Registration, ...] = ()
    family: tuple[FamilyMember, ...] = ()
    retiree_base_credit_fen: ProfileMoney | None = None
    retirement_pension_fen: ProfileMoney | None = None
    has_heirs: bool = True


class FacilityRegistered(Inbound):
    type: Literal["facility.registered"]
    facility_id: Id
    city: str = Field(min_length=1)
    kind: Literal["medical", "pharmacy"]
    level: int = Field(ge=0, le=3)
    community: bool = False
    designated: bool
    outpatient_pooling: bool = False


# ---------------------------------------------------------------- claims


class ClaimLine(Inbound):
    line_id: Id
    item_code: str
    category: Category
    coverage: Literal["A", "B", "C"]
    self_pay_ratio_bp: Bp | None = None
    amount_fen: Amount


class ClaimSubmitted(Inbound):
    type: Literal["claim.submitted"]
    claim_id: Id
    member_id: Id
    facility_id: Id
    prescribing_facility_id: Id | None = None
    service_date: dt.date
    submitted_at: Timestamp
    channel: Literal["pos", "reimbursement"] = "pos"
    inpatient_stay: bool = False
    liability: Literal["work_injury", "third_party"] | None = None
    use_account: bool = True
    lines: tuple[ClaimLine, ...] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _lines_consistent(self) -> ClaimSubmitted:
        """Cross-field line rules, in one pass per claim (cheaper than a validator per line)."""
        seen: set[str] = set()
        for index, line in enumerate(self.lines):
            ratio = line.self_pay_ratio_bp
            if line.coverage == "B":
                if ratio is None:
                    raise ValueError(f"lines[{index}].self_pay_ratio_bp: required field is missing")
            elif ratio:
                raise ValueError(
                    f"lines[{index}].self_pay_ratio_bp: must be absent or 0 unless coverage is B"
                )
            if line.line_id in seen:
                raise ValueError(f"lines[{index}].line_id: must be unique in the claim")
            seen.add(line.line_id)
        return self


class ClaimReversalRequested(Inbound):
    type: Literal["claim.reversal_requested"]
    claim_id: Id
    member_id: Id
    requested_at: Timestamp
    reason: str
    """Required, may be empty (contracts.md §Validation)."""
    facility_id: Annotated[Id | None, WithJsonSchema({"type": "string", "pattern": ID_PATTERN})] = None
    """Optional, not nullable: when present, only the facility that settled the claim may reverse it
    (rules §7 `FACILITY_MISMATCH`). The point-of-sale gateway always sets it."""

    @field_validator("facility_id", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:  # only an omitted facility_id means "any facility"
            raise ValueError("must be an id, not null")
        return value


# ---------------------------------------------------------------- accounts


class AccountRequest(Inbound):
    request_id: Id
    member_id: Id
    requested_at: Timestamp


class ContributionPosted(AccountRequest):
    type: Literal["account.contribution_posted"]
    period: Period
    base_fen: Amount
    kind: Literal["regular", "backpay"]


class RetireeCreditDue(AccountRequest):
    type: Literal["account.retiree_credit_due"]
    period: Period
    pension_fen: Amount


class IncentiveDue(AccountRequest):
    type: Literal["account.incentive_due"]
    year: Year
    other_fund_fen: ProfileMoney = 0
    """Pooling-fund payments of the year this worker did not settle (inpatient care, special diseases,
    settlement elsewhere), as the requesting system knows them (rules §8.4)."""


class TransferIn(AccountRequest):
    type: Literal["account.transfer_in"]
    amount_fen: Amount


PaymentPurpose = Literal[
    "critical_illness_premium",
    "ltc_contribution",
    "resident_insurance_contribution",
    "family_medical_expense",
    "commercial_health_insurance",
]


class PaymentRequested(AccountRequest):
    type: Literal["account.payment_requested"]
    purpose: PaymentPurpose
    beneficiary_member_id: Id
    amount_fen: Amount


CloseReason = Literal["death", "emigration", "other_scheme", "transfer_out"]


class AccountClosed(AccountRequest):
    type: Literal["account.closed"]
    reason: CloseReason


AccountMessage = (
    ContributionPosted | RetireeCreditDue | IncentiveDue | TransferIn | PaymentRequested | AccountClosed
)
ClaimMessage = ClaimSubmitted | ClaimReversalRequested
ReferenceMessage = MemberProfile | FacilityRegistered
MemberMessage = ClaimMessage | AccountMessage

InboundMessage = Annotated[
    MemberProfile
    | FacilityRegistered
    | ClaimSubmitted
    | ClaimReversalRequested
    | ContributionPosted
    | RetireeCreditDue
    | IncentiveDue
    | TransferIn
    | PaymentRequested
    | AccountClosed,
    Field(discriminator="type"),
]

INBOUND: TypeAdapter[InboundMessage] = TypeAdapter(InboundMessage)

CLAIM_TYPES = frozenset({"claim.submitted", "claim.reversal_requested"})
ACCOUNT_TYPES = frozenset(
    {
        "account.contribution_posted",
        "account.retiree_credit_due",
        "account.incentive_due",
        "account.transfer_in",
        "account.payment_requested",
        "account.closed",
    }
)
REFERENCE_TYPES = frozenset({"member.profile", "facility.registered"})
INBOUND_TYPES = CLAIM_TYPES | ACCOUNT_TYPES | REFERENCE_TYPES
