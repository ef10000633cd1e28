"""Settling a batch of inbound records against the Redis store (the Kafka worker's core loop).

A batch is decoded, grouped by member (keeping each member's order), read in one round trip,
decided by the pure engine member by member (each decision sees the previous one's effect), and
written back per member in one compare-and-set together with every message's answer. A member whose
state moved on meanwhile (another worker during a rebalance) is read and decided again, so no update
is lost or applied twice. Nothing here talks to Kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.inbound import (
    ClaimReversalRequested,
    ClaimSubmitted,
    FacilityRegistered,
    MemberMessage,
    MemberProfile,
)
from contracts.wire import Emitted, emit
from worker.adapters.redis_store import Plan, RedisStore, Wants, message_digest
from worker.domain.accounts import period_key
from worker.domain.engine import Context, decide
from worker.domain.policy import PolicyBook
from worker.domain.state import MemberView
from worker.intake import Source, dead_letter, decode

log = logging.getLogger("worker.settlement")
MAX_ROUNDS = 8


class StoreContention(RuntimeError):
    """A member's state kept moving under us: the batch is retried as a whole."""


@dataclass(slots=True)
class Record:
    """One inbound Kafka record."""

    source: Source
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Outgoing:
    """One outbound event with the Kafka key it is published under."""

    key: bytes | None
    event: Emitted


@dataclass(slots=True)
class _Item:
    index: int
    record: Record
    message: MemberMessage


class Settler:
    def __init__(
        self, store: RedisStore, policies: PolicyBook, facilities: dict[str, FacilityRegistered]
    ) -> None:
        self.store = store
        self.policies = policies
        self.facilities = facilities

    async def settle(self, records: Sequence[Record], now: str) -> list[Outgoing]:
        """Answer every record, in record order per member; raises only on store/infrastructure errors."""
        answers: list[list[Outgoing]] = [[] for _ in records]
        groups: dict[str, list[_Item]] = {}
        for index, record in enumerate(records):
            decoded = decode(record.value, record.source, now)
            message = decoded.message
            if message is None:
                answers[index] = [Outgoing(record.key, e) for e in decoded.events]
            elif isinstance(message, MemberProfile | FacilityRegistered):
                error = f"{message.type} belongs on its reference topic, not {record.source.topic}"
                answers[index] = [Outgoing(record.key, emit(dead_letter(record.value, record.source, error)))]
            else:
                groups.setdefault(message.member_id, []).append(_Item(index, record, message))
        pending = groups
        ctx = Context(self.policies, self.facilities, now)
        for _ in range(MAX_ROUNDS):
            if not pending:
                break
            plans = await self._decide(pending, ctx, answers)
            conflicts = await self.store.save(plans)
            if conflicts:
                log.info("state of %d member(s) moved on while deciding; deciding again", len(conflicts))
            pending = {m: groups[m] for m in conflicts}
        else:
            raise StoreContention(f"{len(pending)} member(s) still contended after {MAX_ROUNDS} rounds")
        return [out for per_record in answers for out in per_record]

    async def _decide(
        self, groups: dict[str, list[_Item]], ctx: Context, answers: list[list[Outgoing]]
    ) -> list[Plan]:
        loaded = await self.store.load({m: _wants(items) for m, items in groups.items()})
        plans = []
        for member_id, items in groups.items():
            snapshot = loaded[member_id]
            view = snapshot.view
            plan = Plan(member_id, view.version)
            key = member_id.encode()
            for item in items:
                source = item.record.source
                digest = message_digest(item.record.value)
                stored = snapshot.answered.get(source)
                if stored is not None:
                    if stored[0] == digest:  # redelivered: the first answer stands (contracts.md)
                        answers[item.index] = [Outgoing(key, e) for e in stored[1]]
                        continue
                    log.warning(
                        "%s holds another message than the one answered there (topic re-created?)", source
                    )
                events = self._decide_one(item, view, ctx, plan)
                plan.answers.append((source, digest, events))
                answers[item.index] = [Outgoing(key, e) for e in events]
            if plan.answers:  # a fully redelivered group writes nothing
                plans.append(plan)
        return plans

    def _decide_one(self, item: _Item, view: MemberView, ctx: Context, plan: Plan) -> list[Emitted]:
        try:
            decision = decide(item.message, view, ctx)
        except Exception:  # a rules bug must not stop the worker, nor lose the message
            log.exception("engine failed on %s; dead-lettering it", item.record.source)
            return [emit(dead_letter(item.record.value, item.record.source, "internal error while deciding"))]
        effect = decision.effect
        if effect is not None:
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
            view.apply(effect)
            if effect.ledger is not None:
                plan.ledger = view.ledger
        return decision.events


def _wants(items: list[_Item]) -> Wants:
    sources: list[Source] = []
    claim_ids: dict[str, None] = {}  # ordered sets
    request_ids: dict[str, None] = {}
    period_keys: dict[str, None] = {}
    for item in items:
        sources.append(item.record.source)
        message = item.message
        if isinstance(message, ClaimSubmitted | ClaimReversalRequested):
            claim_ids[message.claim_id] = None
        else:
            request_ids[message.request_id] = None
            key = period_key(message)
            if key is not None:
                period_keys[key] = None
    return Wants(sources, list(claim_ids), list(request_ids), list(period_keys))
