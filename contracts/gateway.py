"""HTTP bodies of the point-of-sale gateway (../shared/spec/gateway.md) that are not Kafka messages.

A claim body is `contracts.inbound.ClaimSubmitted` (its `type` may be omitted); answers are the
outbound events themselves. The OpenAPI document (`contracts/openapi.json`) is generated from the
gateway app, which declares its bodies with these models and the inbound / outbound ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.outbound import ClaimRejected, ClaimReversed, ClaimSettled, Part
from contracts.types import Timestamp


class ReversalBody(BaseModel):
    """`POST /v1/claims/{claim_id}/reversal`: the claim id is the path's, the facility the token's."""

    model_config = ConfigDict(extra="ignore")

    member_id: str
    reason: str
    requested_at: Timestamp | None = None
    """Default: now."""


class ClaimPresettled(ClaimSettled):
    """A quote: every field of the `claim.settled` the worker would publish if no other message of the
    member came first, but no `event_id` and no `settled_at`; `quoted_at` instead."""

    type: Literal["claim.presettled"] = "claim.presettled"  # type: ignore[assignment]
    event_id: None = Field(default=None, exclude=True)  # type: ignore[assignment]
    settled_at: None = Field(default=None, exclude=True)  # type: ignore[assignment]
    quoted_at: str


class Pending(Part):
    """202: published, not answered yet; learn the outcome at `Location`."""

    claim_id: str
    status: Literal["pending"] = "pending"


class ClaimStatus(Part):
    """`GET /v1/claims/{claim_id}` (gateway.md): settled / reversed from the state, else this
    facility's pending or rejected requests of the last 24 hours."""

    claim_id: str
    status: Literal["settled", "reversed", "pending", "rejected"]
    settlement: ClaimSettled | None
    reversal: ClaimReversed | None
    rejection: ClaimRejected | None


class Problem(Part):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class Statement(Part):
    """`GET /v1/statements` (3201): the facility's totals over settlement dates `from`..`to`
    (UTC+08:00): counts of settlements and reversals, each amount = Σ settlements − Σ reversals, and
    `lag`, the outcome events already published that these totals do not include yet."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    facility_id: str
    from_: str = Field(alias="from")
    to: str
    settlements: int = Field(ge=0)
    reversals: int = Field(ge=0)
    total_fen: int
    fund_pay_fen: int
    account_pay_fen: int
    cash_pay_fen: int
    lag: int = Field(ge=0)


class TheirClaim(BaseModel):
    """One claim of the facility's own records, as it believes we settled it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    claim_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    total_fen: int = Field(ge=0)
    fund_pay_fen: int = Field(ge=0)
    account_pay_fen: int = Field(ge=0)
    cash_pay_fen: int = Field(ge=0)
    reversed: bool


class ReconcileBody(BaseModel):
    """`POST /v1/statements/reconcile` (3202): every claim the facility settled in the period."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    from_: str = Field(alias="from", pattern=r"^\d{4}-\d{2}-\d{2}$")
    to: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    claims: list[TheirClaim] = Field(max_length=100_000)


class Mismatch(Part):
    claim_id: str
    problem: Literal["missing_here", "missing_there", "differs"]
    """`missing_here`: they have it, we don't; `missing_there`: we have it, they don't; `differs`: one
    row per differing field."""
    field: str | None
    ours: int | bool | None
    theirs: int | bool | None


class Reconciliation(Part):
    balanced: bool
    """True exactly when `mismatches` is empty."""
    ours: Statement
    mismatches: list[Mismatch]
