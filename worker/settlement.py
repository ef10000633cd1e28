"""Settling a batch of inbound records against the Redis store (the Kafka worker's core loop).

A batch is decoded, grouped by member (keeping each member's order), read, decided by the pure engine
member by member (each decision sees the previous one's effect), and written back per member in one
compare-and-set, together with the answers the state does not keep itself (rejections and dead
letters; see `Decision.kept`). A member whose state moved on meanwhile (another worker during a
rebalance) is read and decided again, so no update is lost or applied twice.

Throughput comes from never leaving this process idle while Redis works: a batch's members are
handled in slices (the next slice's read and the previous slice's write are in flight while a slice
is decided), and the worker settles the next batch while the previous one's last writes land. Two
settlements in flight never read the same member early: a `Hold` marks the members of an unfinished
settlement, and a later settlement reads those members only once it is released. Nothing here talks
to Kafka.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from contracts.inbound import (
    ClaimReversalRequested,
    ClaimSubmitted,
    FacilityRegistered,
    MemberMessage,
    MemberProfile,
)
from contracts.outbound import MEMBER_STATE_FORMAT
from contracts.wire import Emitted, emit
from worker.adapters.redis_store import message_digest
from worker.domain.accounts import period_key
from worker.domain.engine import Context, decide
from worker.domain.policy import PolicyBook
from worker.domain.state import Effect, Ledger, MemberView
from worker.intake import Decoded, Source, dead_letter, decode
from worker.ports import Loaded, Plan, StateStore, Wants

log = logging.getLogger("worker.settlement")
T = TypeVar("T")
Timing = Callable[[str, float], None]
"""Told (step, seconds) for each engine pass ("decide") and store call ("load", "save")."""
MAX_ROUNDS = 8
SLICES = 4
"""Slices per round: enough to keep Redis and this process busy at the same time, few enough that
each Redis script call still covers many members."""
MIN_SLICE = 32


class StoreContention(RuntimeError):
    """A member's state kept moving under us: the batch is retried as a whole."""


@dataclass(slots=True)
class Record:
    """One inbound Kafka record; `correlation` is its `correlation_id` header, if any."""

    source: Source
    key: bytes | None
    value: bytes
    correlation: bytes | None = None


@dataclass(slots=True)
class Outgoing:
    """One outbound event with the Kafka key it is published under, and the `correlation_id` header
    of the record it answers (contracts.md §Delivery semantics)."""

    key: bytes | None
    event: Emitted
    correlation: bytes | None = None


class Hold:
    """The members an unfinished settlement will write. Created by the caller once per batch and kept
    across retries of that batch; released when the batch is settled for good or given up."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.members: set[str] = set()
        self.after: dict[str, Hold] = {}  # member → the earlier settlement holding it when this one began


@dataclass(slots=True)
class _Item:
    index: int
    record: Record
    message: MemberMessage


class Settler:
    """Decides batches of member messages against any `StateStore` (Redis in the worker, memory in
    replay): the one routing of decoded messages to the engine."""

    def __init__(
        self,
        store: StateStore,
        policies: PolicyBook,
        facilities: dict[str, FacilityRegistered],
        stamp_state: bool = False,
        timing: Timing | None = None,
    ) -> None:
        """`stamp_state`: append `member_state` to every event that changes state (the Kafka worker,
        whose outbound topics are what a rebuild reads; replay's output stays the contract's).
        `timing`: told the seconds of each engine pass and store call (the worker's metrics)."""
        self.timing = timing
        self.store = store
        self.policies = policies
        self.facilities = facilities
        self.stamp_state = stamp_state
        self._holds: dict[str, Hold] = {}

    async def settle(self, records: Sequence[Record], now: str, hold: Hold | None = None) -> list[Outgoing]:
        """Answer every record, in record order per member; raises only on store/infrastructure errors.

        With `hold`, the members stay held after this call (until `release(hold)`), so that the
        caller can retry the batch without a later batch overtaking it; without, they are released
        on return.
        """
        return await self.settle_decoded(
            [(record, decode(record.value, record.source, now)) for record in records], now, hold
        )

    async def settle_decoded(
        self, items: Sequence[tuple[Record, Decoded]], now: str, hold: Hold | None = None
    ) -> list[Outgoing]:
        """`settle` for records the caller has decoded already (replay routes reference data itself)."""
        answers: list[list[Outgoing]] = [[] for _ in items]
        groups: dict[str, list[_Item]] = {}
        named: dict[str, str] = {}  # claim id → the first member whose message names it
        crossed = False  # some claim id is named by two members
        for index, (record, decoded) in enumerate(items):
            message = decoded.message
            if message is None:
                answers[index] = [Outgoing(record.key, e, record.correlation) for e in decoded.events]
            elif isinstance(message, MemberProfile | FacilityRegistered):
                error = f"{message.type} belongs on its reference topic, not {record.source.topic}"
                dead = emit(dead_letter(record.value, record.source, error))
                answers[index] = [Outgoing(record.key, dead, record.correlation)]
            else:
                member_id = message.member_id
                groups.setdefault(member_id, []).append(_Item(index, record, message))
                if isinstance(message, (ClaimSubmitted, ClaimReversalRequested)):
                    crossed = crossed or named.setdefault(message.claim_id, member_id) != member_id
        own = hold or Hold()
        self._register(groups, own)  # every member at once, before any await (see `_register`)
        ctx = Context(self.policies, self.facilities, now)
        try:
            later = _after_other_members(groups) if crossed else set()
            if later:  # a claim id another member settles earlier in the batch: decide after it
                await self._settle_groups(
                    {m: g for m, g in groups.items() if m not in later}, own, ctx, answers
                )
                await self._settle_groups({m: groups[m] for m in later}, own, ctx, answers)
            else:
                await self._settle_groups(groups, own, ctx, answers)
        finally:
            if hold is None:
                self.release(own)
        return [out for per_record in answers for out in per_record]

    def release(self, hold: Hold) -> None:
        """The settlement holding these members is final (or given up): later ones may read them."""
        for member_id in hold.members:
            if self._holds.get(member_id) is hold:
                del self._holds[member_id]
        hold.released.set()

    def _register(self, groups: dict[str, list[_Item]], hold: Hold) -> None:
        """Note, for each member of the batch, the unfinished settlement that holds it before this one,
        and hold it. All of the batch's members at once, synchronously: a batch decided in two phases
        (members naming another member's claim go second) that held its second phase's members only
        later could find a newer settlement holding them, which may itself wait for this one — a
        deadlock (found by fuzzing)."""
        for member_id in groups:
            if member_id not in hold.members:  # first attempt: note who holds the member before us
                holder = self._holds.get(member_id)
                if holder is not None and not holder.released.is_set():
                    hold.after[member_id] = holder
                self._holds[member_id] = hold
                hold.members.add(member_id)

    async def _settle_groups(
        self, groups: dict[str, list[_Item]], hold: Hold, ctx: Context, answers: list[list[Outgoing]]
    ) -> None:
        held = {m: items for m, items in groups.items() if _held(hold, m)}
        pending = {m: items for m, items in groups.items() if m not in held}
        rounds = 0
        while pending or held:
            rounds += 1
            if rounds > MAX_ROUNDS:
                raise StoreContention(f"{len(pending)} member(s) still contended after {MAX_ROUNDS} rounds")
            conflicts = await self._round(pending, held, hold, ctx, answers)
            if conflicts:
                log.info("state of %d member(s) moved on while deciding; deciding again", len(conflicts))
            pending, held = {m: groups[m] for m in conflicts}, {}

    async def _round(
        self,
        groups: dict[str, list[_Item]],
        held: dict[str, list[_Item]],
        hold: Hold,
        ctx: Context,
        answers: list[list[Outgoing]],
    ) -> set[str]:
        """Decide and save every member of `groups` and `held` once; returns the members whose save
        conflicted.

        Members are independent of each other, so their slices overlap freely: every slice's read
        is sent at once, and each slice's write goes out as soon as it is decided. The members an
        earlier settlement holds form a last slice, read once that settlement is released. A failure
        may leave some slices written and others not; the batch is then retried as a whole, and the
        written slices' messages get their first answers again (stored, or kept by the state).
        """
        members = list(groups)
        size = max(MIN_SLICE, -(-len(members) // SLICES))
        slices = [
            {m: groups[m] for m in members[start : start + size]} for start in range(0, len(members), size)
        ]
        loads = [asyncio.ensure_future(self._load(part)) for part in slices]
        if held:
            slices.append(held)
            loads.append(asyncio.ensure_future(self._load(held, after=[hold.after[m] for m in held])))
        saves: list[asyncio.Future[set[str]]] = []
        try:
            for part, load in zip(slices, loads, strict=True):
                loaded = await load
                started = time.perf_counter()
                plans = self._decide(part, loaded, ctx, answers)
                if self.timing is not None:
                    self.timing("decide", time.perf_counter() - started)
                saves.append(asyncio.ensure_future(self._timed("save", self.store.save(plans))))
            conflicts: set[str] = set()
            for save in saves:
                conflicts |= await save
            return conflicts
        finally:  # after a failure, let what is still in flight end before the batch is retried
            tasks: list[asyncio.Future[Any]] = [*loads, *saves]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _load(self, part: dict[str, list[_Item]], after: Sequence[Hold] = ()) -> dict[str, Loaded]:
        for earlier in after:
            await earlier.released.wait()
        return await self._timed("load", self.store.load({m: _wants(items) for m, items in part.items()}))

    async def _timed(self, step: str, call: Awaitable[T]) -> T:
        if self.timing is None:
            return await call
        started = time.perf_counter()
        result = await call
        self.timing(step, time.perf_counter() - started)
        return result

    def _decide(
        self,
        groups: dict[str, list[_Item]],
        loaded: dict[str, Loaded],
        ctx: Context,
        answers: list[list[Outgoing]],
    ) -> list[Plan]:
        plans = []
        for member_id, items in groups.items():
            snapshot = loaded[member_id]
            view = snapshot.view
            plan = Plan(member_id, view.version)
            key = member_id.encode()
            for item in items:
                source = item.record.source
                stored = snapshot.answered.get(source)
                digest = None
                if stored is not None:
                    digest = message_digest(item.record.value)
                    if stored[0] == digest:  # redelivered: the first answer stands (contracts.md)
                        answers[item.index] = [Outgoing(key, e, item.record.correlation) for e in stored[1]]
                        continue
                    log.warning(
                        "%s holds another message than the one answered there (topic re-created?)", source
                    )
                events, kept = self._decide_one(item, view, ctx, plan)
                if digest is not None or not kept:  # else the state keeps the answer: no copy per message
                    plan.answers.append((source, digest or message_digest(item.record.value), events))
                answers[item.index] = [Outgoing(key, e, item.record.correlation) for e in events]
            if plan.writes():  # a fully redelivered group writes nothing
                plans.append(plan)
        return plans

    def _decide_one(
        self, item: _Item, view: MemberView, ctx: Context, plan: Plan
    ) -> tuple[list[Emitted], bool]:
        """The message's answer, and whether the state keeps it (see `Decision.kept`)."""
        try:
            decision = decide(item.message, view, ctx)
        except Exception:  # a rules bug must not stop the worker, nor lose the message
            log.exception("engine failed on %s; dead-lettering it", item.record.source)
            error = "internal error while deciding"
            return [emit(dead_letter(item.record.value, item.record.source, error))], False
        events, effect = decision.events, decision.effect
        if effect is not None:
            ledger = effect.ledger.one_change_later() if effect.ledger is not None else None
            if self.stamp_state:
                events, effect = stamp_member_state(events, effect, ledger)
            if effect.claim is not None:
                if effect.claim.claim_id not in view.claim_owners:
                    plan.new_claim_ids.append(effect.claim.claim_id)
                plan.claims[effect.claim.claim_id] = effect.claim
            if effect.answer is not None:
                request_id, answer = effect.answer
                plan.new_request_ids.append(request_id)
                plan.requests[request_id] = answer
            if effect.period is not None:
                plan.periods.append(effect.period)
            view.apply(Effect(ledger, effect.claim, effect.answer, effect.period))
            if ledger is not None:  # an answer alone (an account rejection) leaves the ledger be
                plan.ledger = view.ledger
        return events, decision.kept


def stamp_member_state(
    events: list[Emitted], effect: Effect, ledger: Ledger | None
) -> tuple[list[Emitted], Effect]:
    """The events with the member's state after them appended as `member_state` (contracts.outbound
    `MemberState`), and the effect keeping those very bytes (a repeated request gets them again,
    byte for byte): what `python -m worker rebuild` needs to restore the state from the outbound
    topics alone. Spliced into the serialised JSON (an event object always ends with `}`), so the
    event itself is not serialised again."""
    state: dict[str, Any] = {"format": MEMBER_STATE_FORMAT}
    if ledger is not None:
        state["ledger"] = ledger.to_flat()
    claim = effect.claim
    if claim is not None and claim.reversed is None:
        state["record"] = [
            claim.fingerprint,
            claim.year,
            claim.delta.to_list(),
            claim.account_pay,
            claim.fund_pay,
            claim.cap_fen,
            claim.facility_id,
        ]
    if effect.period is not None:
        state["period"] = effect.period
    suffix = b',"member_state":' + orjson.dumps(state) + b"}"
    stamped = [Emitted(e.type, e.data[:-1] + suffix) for e in events]
    by_original = {id(e): s for e, s in zip(events, stamped, strict=True)}
    if claim is not None:
        if claim.reversed is not None:
            claim = dataclasses.replace(claim, reversed=by_original.get(id(claim.reversed), claim.reversed))
        else:
            claim = dataclasses.replace(claim, settled=by_original.get(id(claim.settled), claim.settled))
    answer = effect.answer
    if answer is not None:
        answer = (answer[0], by_original.get(id(answer[1]), answer[1]))
    return stamped, Effect(effect.ledger, claim, answer, effect.period)


def _held(hold: Hold, member_id: str) -> bool:
    """Whether an earlier, unfinished settlement still holds the member."""
    earlier = hold.after.get(member_id)
    return earlier is not None and not earlier.released.is_set()


def _after_other_members(groups: dict[str, list[_Item]]) -> set[str]:
    """Members with a message about a claim id that another member's claim, earlier in the batch,
    settles: deciding them with the rest would read the claim's owner index before it is written
    (a reversal by the wrong member or facility answered UNKNOWN_CLAIM instead of MEMBER_MISMATCH /
    FACILITY_MISMATCH). They are decided once the rest of the batch is saved, as in batch order."""
    first: dict[str, tuple[int, str]] = {}
    for member_id, items in groups.items():
        for item in items:
            if isinstance(item.message, ClaimSubmitted) and item.message.claim_id not in first:
                first[item.message.claim_id] = (item.index, member_id)
    if not first:
        return set()
    later = set()
    for member_id, items in groups.items():
        for item in items:
            message = item.message
            if isinstance(message, (ClaimSubmitted, ClaimReversalRequested)):
                settled_by = first.get(message.claim_id)
                if settled_by is not None and settled_by[1] != member_id and settled_by[0] < item.index:
                    later.add(member_id)
                    break
    return later


def _wants(items: list[_Item]) -> Wants:
    want = Wants([item.record.source for item in items])
    for item in items:
        add_wants(want, item.message)
    return want


def add_wants(want: Wants, message: MemberMessage) -> None:
    """Add what deciding `message` reads to its member's `want` (the gateway's quotes read the same)."""
    if isinstance(message, (ClaimSubmitted, ClaimReversalRequested)):  # a tuple: faster than a union
        if message.claim_id not in want.claim_ids:
            want.claim_ids.append(message.claim_id)
    else:
        request_id = message.request_id
        if request_id not in want.request_ids:
            want.request_ids.append(request_id)
        key = period_key(message)
        if key is not None and key not in want.period_keys:
            want.period_keys.append(key)
