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
