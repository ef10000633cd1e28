"""In-process state store: the whole state in dicts, for offline replay, tests and simulations.

It implements the same port as the Redis store (`worker.ports.StateStore`). Its snapshots are the
stored objects themselves: the engine's effects, applied to a view while a batch is decided, are
already the write, and `save` records the rest (message answers, versions). Nothing here can fail
half-way, so a batch is never retried against a half-written state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from contracts.inbound import MemberProfile
from contracts.wire import Emitted
from worker.domain.state import ClaimRecord, Ledger, MemberView
from worker.intake import Source
from worker.ports import Loaded, Plan, Wants

_NONE: dict[Source, tuple[bytes, list[Emitted]]] = {}  # shared: a Loaded's answers are only read


class MemoryStore:
    def __init__(self, keep_message_answers: bool = True) -> None:
        """`keep_message_answers=False` for replay, where no message is ever delivered twice."""
        self.members: dict[str, MemberView] = {}
        self.claim_owners: dict[str, str] = {}
        self.claims: dict[str, ClaimRecord] = {}
        self.answers: dict[str, Emitted] = {}
        self.answered: dict[Source, tuple[bytes, list[Emitted]]] = {}
        self.keep_message_answers = keep_message_answers
        self._profile_offsets: dict[str, int] = {}

    def view(self, member_id: str) -> MemberView:
        view = self.members.get(member_id)
        if view is None:
            view = MemberView(member_id, None, Ledger(), self.claims, self.claim_owners, self.answers, set())
            self.members[member_id] = view
        return view

    def put_profile(self, profile: MemberProfile) -> None:
        self.view(profile.member_id).profile = profile

    # ---------------------------------------------------------------- the port

    async def load(self, wants: Mapping[str, Wants]) -> dict[str, Loaded]:
        answered = self.answered
        out: dict[str, Loaded] = {}
        for member_id, want in wants.items():
            found = {s: answered[s] for s in want.sources if s in answered} if answered else _NONE
            out[member_id] = Loaded(self.view(member_id), found)
        return out

    async def save(self, plans: Sequence[Plan]) -> set[str]:
        conflicts: set[str] = set()
        for plan in plans:
            view = self.view(plan.member_id)
            taken = [
                c for c in plan.new_claim_ids if self.claim_owners.get(c, plan.member_id) != plan.member_id
            ]
            if view.version != plan.version or taken:
                conflicts.add(plan.member_id)
                continue
            if plan.ledger is not None:
                view.ledger = plan.ledger
            for claim_id, record in plan.claims.items():
                self.claims[claim_id] = record
                self.claim_owners[claim_id] = plan.member_id
            self.answers.update(plan.requests)
            view.periods.update(plan.periods)
            if self.keep_message_answers:
                for source, digest, events in plan.answers:
                    self.answered[source] = (digest, events)
            view.version += 1
        return conflicts

    async def find_claim(self, claim_id: str) -> ClaimRecord | None:
        return self.claims.get(claim_id) if claim_id in self.claim_owners else None

    async def put_profiles(self, profiles: Sequence[tuple[str, int, bytes]]) -> None:
        for member_id, offset, raw in profiles:
            if self._profile_offsets.get(member_id, -1) >= offset:
                continue
            self._profile_offsets[member_id] = offset
            self.view(member_id).profile = MemberProfile.model_validate_json(raw) if raw else None
