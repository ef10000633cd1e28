"""Pre-settlement (2206): the engine on a member's current state, read through the store port, with
nothing written and nothing published. The gateway quotes with it; the property tests hold it to
the settlement the worker then makes."""

from __future__ import annotations

from contracts.inbound import ClaimSubmitted
from worker.domain.engine import Context, Decision, decide
from worker.ports import StateStore, Wants


async def quote(store: StateStore, claim: ClaimSubmitted, ctx: Context) -> Decision:
    """What settling `claim` now would answer; its effect is left unapplied."""
    loaded = await store.load({claim.member_id: Wants(claim_ids=[claim.claim_id])})
    return decide(claim, loaded[claim.member_id].view, ctx)
