"""The state-store port: what replay, the Kafka worker and the gateway need from member state.

One interface, two implementations (`worker.adapters.memory.MemoryStore` for replay and tests,
`worker.adapters.redis_store.RedisStore` for the worker and the gateway). A caller says what a
member's messages need (`Wants`), gets a consistent snapshot back (`Loaded`), decides with the pure
engine, and — unless it only quotes — hands the result back as one `Plan` per member, applied
atomically and only if the member is still at the version it read (compare-and-set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts.wire import Emitted
from worker.domain.state import ClaimRecord, Ledger, MemberView
from worker.intake import Source


@dataclass(slots=True)
class Wants:
    """What one member's messages need read."""

    sources: list[Source] = field(default_factory=list)
    claim_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    period_keys: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Loaded:
    """A member's snapshot, and the stored answers of messages already processed once, each with the
    digest of the message it answered ("message answers": only those the state does not keep)."""

    view: MemberView
    answered: dict[Source, tuple[bytes, list[Emitted]]]


@dataclass(slots=True)
class Plan:
    """Everything one member's batch decided, to be written in one compare-and-set."""

    member_id: str
    version: int
    ledger: Ledger | None = None
    new_claim_ids: list[str] = field(default_factory=list)
    new_request_ids: list[str] = field(default_factory=list)
    answers: list[tuple[Source, bytes, list[Emitted]]] = field(
        default_factory=list
    )  # message answers: (source, digest of the message, events)
    claims: dict[str, ClaimRecord] = field(default_factory=dict)
    requests: dict[str, Emitted] = field(default_factory=dict)  # request answers, by request id
    periods: list[str] = field(default_factory=list)

    def writes(self) -> bool:
        """Whether the plan changes anything (a group whose every message was answered before does not)."""
        return self.ledger is not None or bool(self.answers or self.claims or self.requests or self.periods)


@dataclass(slots=True)
class Restored:
    """One outbound event's contribution to a member's state, for a rebuild (`member_state`)."""

    member_id: str
    kind: str  # "settled" (a claim record), "reversed", "answer" (a request's stored answer) or "none"
    ident: str | None  # the claim id or request id
    changes: int  # -1 when the event left the ledger as it was
    ledger: list[Any] | None  # the ledger after the event (`Ledger.to_flat`), if it changed it
    record: ClaimRecord | None
    period: str | None
    event: Emitted


class StateStore(Protocol):
    """Member state behind the engine. Reads never write; `save` is atomic per member."""

    async def load(self, wants: Mapping[str, Wants]) -> dict[str, Loaded]:
        """One consistent snapshot per member of what `wants` names, with the global claim and request
        owner indexes of the ids named (and the records / answers those owners keep)."""
        ...

    async def save(self, plans: Sequence[Plan]) -> set[str]:
        """Apply each plan atomically; returns the members whose state had moved on since their
        snapshot, or whose new ids another member holds (their messages are decided again)."""
        ...

    async def find_claim(self, claim_id: str) -> ClaimRecord | None:
        """The record of a settled claim, whichever member owns it (status queries know only the id)."""
        ...

    async def put_profiles(self, profiles: Sequence[tuple[str, int, bytes]]) -> None:
        """Store (member_id, source offset, profile JSON or b'' for a deleted one), newest offset wins."""
        ...
