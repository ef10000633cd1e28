"""The engine's single entry point: one member-scoped message and its member's view → a decision."""

from __future__ import annotations

from contracts.inbound import ClaimReversalRequested, ClaimSubmitted, MemberMessage
from worker.domain.accounts import decide_account
from worker.domain.claims import Context, Decision, reverse, settle
from worker.domain.state import MemberView

__all__ = ["Context", "Decision", "decide"]


def decide(message: MemberMessage, view: MemberView, ctx: Context) -> Decision:
    """Adjudicate a claim, a reversal or an account request. Pure: reads `view`, returns the effect."""
    if isinstance(message, ClaimSubmitted):
        return settle(message, view, ctx)
    if isinstance(message, ClaimReversalRequested):
        return reverse(message, view, ctx)
    return decide_account(message, view, ctx)
