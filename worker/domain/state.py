"""The per-member state the rules read, and the effect a decision asks the store to apply.

A store hands the engine a `MemberView` (a snapshot of one member: profile, ledger, the claim records
and stored answers the message needs) and applies the returned `Effect` atomically and only if the
state is still the one the decision was computed from. The in-memory store (replay) and the Redis
store (Kafka worker) both speak this interface, so they share every line of rules code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts.inbound import MemberProfile
from contracts.wire import Emitted


@dataclass(slots=True)
class Accumulators:
    """A member's pooling accumulators for one calendar year (rules §6.2)."""

    counted: int = 0
    capped_fund: int = 0
    fund: int = 0
    incentive_fund: int = 0
    claims: int = 0

    def plus(self, other: Accumulators, sign: int = 1) -> Accumulators:
        return Accumulators(
            self.counted + sign * other.counted,
            self.capped_fund + sign * other.capped_fund,
            self.fund + sign * other.fund,
            self.incentive_fund + sign * other.incentive_fund,
            self.claims + sign * other.claims,
        )

    def to_list(self) -> list[int]:
        return [self.counted, self.capped_fund, self.fund, self.incentive_fund, self.claims]

    @classmethod
    def from_list(cls, values: list[int]) -> Accumulators:
        return cls(*values)


@dataclass(slots=True)
class Ledger:
    """A member's money state: year accumulators and the personal account (rules §6.2, §8)."""

    years: dict[int, Accumulators] = field(default_factory=dict)
    balance: int = 0
    closed: bool = False
    incentive_year: int | None = None
    incentive_qualified: bool = False
    incentive_streak: int = 0
    changes: int = 0
    """How many decisions have changed this member's state: orders the member's outbound events
    across topics, so that a rebuild from them keeps the newest state (`member_state` in events)."""

    def year(self, year: int) -> Accumulators:
        return self.years.get(year) or Accumulators()

    def with_year(self, year: int, acc: Accumulators, balance: int) -> Ledger:
        years = dict(self.years)
        years[year] = acc
        return Ledger(
            years,
            balance,
            self.closed,
            self.incentive_year,
            self.incentive_qualified,
            self.incentive_streak,
            self.changes,
        )

    def with_balance(self, balance: int, closed: bool | None = None) -> Ledger:
        return Ledger(
            self.years,
            balance,
            self.closed if closed is None else closed,
            self.incentive_year,
            self.incentive_qualified,
            self.incentive_streak,
            self.changes,
        )

    def one_change_later(self) -> Ledger:
        """This ledger as the state after one more decision changed the member (see `changes`)."""
        return Ledger(
            self.years,
            self.balance,
            self.closed,
            self.incentive_year,
            self.incentive_qualified,
            self.incentive_streak,
            self.changes + 1,
        )

    def to_flat(self) -> list[Any]:
        """One flat list: changes, balance, closed, the incentive triple, then six numbers per year
        (year, counted, capped fund, fund, incentive fund, claims). Read for every member of every
        batch, so it is kept small and cheap to parse; also carried in events for rebuilds."""
        flat: list[Any] = [
            self.changes,
            self.balance,
            self.closed,
            self.incentive_year,
            self.incentive_qualified,
            self.incentive_streak,
        ]
        for year, acc in self.years.items():
            flat += (year, acc.counted, acc.capped_fund, acc.fund, acc.incentive_fund, acc.claims)
        return flat

    @classmethod
    def from_flat(cls, flat: list[Any]) -> Ledger:
        years = {flat[i]: Accumulators(*flat[i + 1 : i + 6]) for i in range(6, len(flat), 6)}
        return cls(years, flat[1], flat[2], flat[3], flat[4], flat[5], flat[0])

    def to_dict(self) -> dict[str, Any]:
        """A readable form, for comparing ledgers in tests and tools (stores keep their own)."""
        return {
            "years": {str(y): a.to_list() for y, a in self.years.items()},
            "balance": self.balance,
            "closed": self.closed,
            "incentive": [self.incentive_year, self.incentive_qualified, self.incentive_streak],
            "changes": self.changes,
        }


@dataclass(slots=True)
class ClaimRecord:
    """What a settled claim did, kept for duplicates (§7.2) and reversals (§7).

    Only the facts a reversal needs, plus the answers in wire form: a record stays small, because a
    member's records are kept for years.
    """

    claim_id: str
    member_id: str
    fingerprint: str
    year: int
    delta: Accumulators
    account_pay: int
    fund_pay: int
    cap_fen: int | None
    facility_id: str | None
    """The facility that settled the claim (None only in records kept before it was recorded)."""
    settled: Emitted
    reversed: Emitted | None = None
    archived: bool = False
    """Past the retention window: only the member, facility and year are kept (no events), so the
    claim id can never be settled again and the claim is no longer reversed."""


@dataclass(slots=True)
class Effect:
    """The state change of one decision; the store applies all of it or none of it."""

    ledger: Ledger | None = None
    claim: ClaimRecord | None = None
    answer: tuple[str, Emitted] | None = None  # (request_id, the answer kept for it)
    period: str | None = None


@dataclass(slots=True)
class MemberView:
    """One member's state as far as the messages at hand need it.

    `claim_owners` and `answers` are global indexes (claim id → member, request id → stored answer):
    the in-memory store shares one dict between all members; the Redis store fills them with the ids
    the batch asks about. `claims` holds the records of the claim ids asked about, also of a claim
    another member owns (a reversal names the facility of a foreign claim before its member); the
    engine compares `claim_owners` before taking a record as the member's own.
    """

    member_id: str
    profile: MemberProfile | None
    ledger: Ledger
    claims: dict[str, ClaimRecord]
    claim_owners: dict[str, str]
    answers: dict[str, Emitted]
    periods: set[str]
    version: int = 0

    def apply(self, effect: Effect) -> None:
        """Advance the snapshot by an effect (the next message of the member sees it)."""
        if effect.ledger is not None:
            self.ledger = effect.ledger
        if effect.claim is not None:
            self.claims[effect.claim.claim_id] = effect.claim
            self.claim_owners[effect.claim.claim_id] = self.member_id
        if effect.answer is not None:
            request_id, answer = effect.answer
            self.answers[request_id] = answer
        if effect.period is not None:
            self.periods.add(effect.period)
