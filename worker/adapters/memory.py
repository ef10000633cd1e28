"""In-process state store: the whole state in dicts, for offline replay and tests.

Views are the stored objects themselves, so applying an effect to a view is the atomic write.
"""

from __future__ import annotations

from contracts.inbound import MemberProfile
from contracts.wire import Emitted
from worker.domain.state import Effect, Ledger, MemberView


class MemoryStore:
    def __init__(self) -> None:
        self.members: dict[str, MemberView] = {}
        self.claim_owners: dict[str, str] = {}
        self.answers: dict[str, Emitted] = {}

    def view(self, member_id: str) -> MemberView:
        view = self.members.get(member_id)
        if view is None:
            view = MemberView(member_id, None, Ledger(), {}, self.claim_owners, self.answers, set())
            self.members[member_id] = view
        return view

    def put_profile(self, profile: MemberProfile) -> None:
        self.view(profile.member_id).profile = profile

    def apply(self, view: MemberView, effect: Effect) -> None:
        view.apply(effect)
