"""Redis state store for the Kafka worker (issue #3): the engine's MemberView/Effect over Redis.

Keys of one member share the hash tag `{member_id}`, so they live in one Redis Cluster slot and a
Lua script can read them consistently (`redis_load.lua`) and write them atomically, compare-and-set
on the member's version (`redis_apply.lua`). One script call covers every member of a batch on a
single Redis, and the members of one slot on a cluster:

    m:{M}:ledger            hash  v = version, d = ledger JSON (year accumulators, account)
    m:{M}:profile           hash  o = source offset, d = member.profile JSON
    m:{M}:claim:<claim_id>  claim record JSON
    m:{M}:answer:<req_id>   the stored answer of an account request
    m:{M}:period:<key>      a credited period marker
    m:{M}:msg:<t>:<p>:<o>   the answer to the inbound message at topic/partition/offset, with the
                            message's digest (expires)

Claim and request ids are global, so their owner index lives outside any member's slot and is
written with SET NX before the member's state (contracts.md §Delivery semantics).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from contracts.inbound import MemberProfile
from contracts.wire import Emitted
from worker.domain.state import ClaimRecord, Ledger, MemberView
from worker.intake import Source

RedisClient = Redis | RedisCluster
Call = tuple[str, tuple[Any, ...], dict[str, Any]]
_PROFILE_CACHE_SIZE = 200_000


def member_key(member_id: str, *parts: str) -> str:
    return ":".join(("m", "{" + member_id + "}", *parts))


def claim_owner_key(claim_id: str) -> str:
    return f"claim-owner:{claim_id}"


def request_owner_key(request_id: str) -> str:
    return f"request-owner:{request_id}"


def source_key(member_id: str, source: Source) -> str:
    return member_key(member_id, "msg", source.topic, str(source.partition), str(source.offset))


def pack(events: Iterable[Emitted]) -> bytes:
    """Events as `type TAB json` lines (compact JSON never holds a raw newline or tab)."""
    return b"\n".join(e.type.encode() + b"\t" + e.data for e in events)


def message_digest(raw: bytes) -> bytes:
    """Identifies the message an offset held: a topic deleted and created again reuses offsets, and
    an answer must never be republished for a different message."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest().encode()


def _unpack_answer(blob: bytes) -> tuple[bytes, list[Emitted]]:
    digest, _, events = blob.partition(b"\n")
    return digest, unpack(events)


def unpack(blob: bytes) -> list[Emitted]:
    out = []
    for line in blob.split(b"\n"):
        kind, _, data = line.partition(b"\t")
        out.append(Emitted(kind.decode(), data))
    return out


@dataclass(slots=True)
class Wants:
    """What one member's messages in a batch need read."""

    sources: list[Source] = field(default_factory=list)
    claim_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    period_keys: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Loaded:
    """A member's snapshot, and the stored answers of messages already processed once, each with the
    digest of the message it answered."""

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
    )  # (source, digest, events)
    claims: dict[str, ClaimRecord] = field(default_factory=dict)
    requests: dict[str, Emitted] = field(default_factory=dict)
    periods: list[str] = field(default_factory=list)


class RedisStore:
    def __init__(self, client: RedisClient, answer_ttl_seconds: int) -> None:
        self.redis = client
        self.cluster = isinstance(client, RedisCluster)
        self.answer_ttl = answer_ttl_seconds
        folder = resources.files("worker.adapters")
        self._sources = {
            name: folder.joinpath(f"redis_{name}.lua").read_text(encoding="utf-8")
            for name in ("load", "apply", "profile")
        }
        self._sha: dict[str, str] = {}
        self._profiles: dict[bytes, MemberProfile] = {}

    async def load_scripts(self) -> None:
        """(Re)load the Lua scripts; needed at start and after a Redis restart (NOSCRIPT)."""
        for name, source in self._sources.items():
            self._sha[name] = await self.redis.script_load(source)

    async def _batch(self, calls: Sequence[Call]) -> list[Any]:
        """Run commands in one round trip: a pipeline on a single Redis; on a cluster, concurrent
        calls (redis-py refuses scripts in cluster pipelines), each routed to its key's node."""
        try:
            if self.cluster:
                return list(await asyncio.gather(*(getattr(self.redis, n)(*a, **k) for n, a, k in calls)))
            pipe = self.redis.pipeline(transaction=False)
            for name, args, kwargs in calls:
                getattr(pipe, name)(*args, **kwargs)
            return list(await pipe.execute())
        except NoScriptError:  # Redis restarted and lost its script cache: reload, the caller retries
            await self.load_scripts()
            raise

    # ---------------------------------------------------------------- reads

    def _groups(self, member_ids: Iterable[str]) -> list[list[str]]:
        """Members one script call may cover: all of them on a single Redis; on a cluster, those whose
        keys share a slot (a script may only touch one slot there)."""
        if not self.cluster:
            return [list(member_ids)]
        by_slot: dict[int, list[str]] = {}
        for member_id in member_ids:
            by_slot.setdefault(key_slot(member_key(member_id, "ledger").encode()), []).append(member_id)
        return list(by_slot.values())

    async def load(self, wants: Mapping[str, Wants]) -> dict[str, Loaded]:
        """One consistent read per script call: ledgers, profiles, stored answers, records, periods and
        (on a single Redis, in the same call) the global owner indexes of the ids asked about."""
        groups = self._groups(wants)
        calls: list[Call] = []
        separate_owner_keys: list[str] = []
        for group in groups:
            keys: list[str] = []
            counts: list[int] = []
            owner_keys: list[str] = []
            for member_id in group:
                want = wants[member_id]
                own = [source_key(member_id, s) for s in want.sources]
                own += [member_key(member_id, "claim", c) for c in want.claim_ids]
                own += [member_key(member_id, "answer", r) for r in want.request_ids]
                own += [member_key(member_id, "period", k) for k in want.period_keys]
                keys += [member_key(member_id, "ledger"), member_key(member_id, "profile"), *own]
                counts.append(len(own))
                owner_keys += [claim_owner_key(c) for c in want.claim_ids]
                owner_keys += [request_owner_key(r) for r in want.request_ids]
            if self.cluster:  # other slots: read with plain GETs below
                separate_owner_keys += owner_keys
                owner_keys = []
            all_keys = [*keys, *owner_keys]
            calls.append(("evalsha", (self._sha["load"], len(all_keys), *all_keys, len(group), *counts), {}))
        calls += [("get", (key,), {}) for key in separate_owner_keys]
        results = await self._batch(calls)
        separate = iter(results[len(groups) :])
        loaded: dict[str, Loaded] = {}
        foreign: list[tuple[str, str, str]] = []  # (member, request id, owner)
        for group, row in zip(groups, results, strict=False):
            values = iter(row)
            sections = []
            for member_id in group:
                want = wants[member_id]
                size = (
                    3
                    + len(want.sources)
                    + len(want.claim_ids)
                    + len(want.request_ids)
                    + len(want.period_keys)
                )
                sections.append((member_id, want, [next(values) for _ in range(size)]))
            owners = separate if self.cluster else values  # trailing values are the owners, in order
            for member_id, want, section in sections:
                loaded[member_id] = self._snapshot(member_id, want, section, owners, foreign)
        if foreign:
            await self._load_foreign_answers(loaded, foreign)
        return loaded

    def _snapshot(
        self,
        member_id: str,
        want: Wants,
        row: Sequence[bytes],
        owners: Any,
        foreign: list[tuple[str, str, str]],
    ) -> Loaded:
        version, ledger_json, profile_json, *values = row
        ledger = Ledger.from_dict(orjson.loads(ledger_json)) if ledger_json else Ledger()
        values_iter = iter(values)
        answered = {s: _unpack_answer(v) for s in want.sources if (v := next(values_iter))}
        claims = {
            c: ClaimRecord.from_dict(c, orjson.loads(v)) for c in want.claim_ids if (v := next(values_iter))
        }
        answers = {r: unpack(v)[0] for r in want.request_ids if (v := next(values_iter))}
        periods = {k for k in want.period_keys if next(values_iter)}
        claim_owners = {c: o.decode() for c in want.claim_ids if (o := next(owners))}
        for request_id in want.request_ids:
            owner = next(owners)
            if owner and owner.decode() != member_id and request_id not in answers:
                foreign.append((member_id, request_id, owner.decode()))
        view = MemberView(
            member_id,
            self._profile(profile_json) if profile_json else None,
            ledger,
            claims,
            claim_owners,
            answers,
            periods,
            int(version),
        )
        return Loaded(view, answered)

    async def _load_foreign_answers(
        self, loaded: dict[str, Loaded], foreign: list[tuple[str, str, str]]
    ) -> None:
        """A request id first answered for another member gets that member's stored answer (§8.7)."""
        calls: list[Call] = [("get", (member_key(owner, "answer", r),), {}) for _, r, owner in foreign]
        for (member_id, request_id, _), value in zip(foreign, await self._batch(calls), strict=True):
            if value:
                loaded[member_id].view.answers[request_id] = unpack(value)[0]

    def _profile(self, raw: bytes) -> MemberProfile:
        profile = self._profiles.get(raw)
        if profile is None:
            if len(self._profiles) >= _PROFILE_CACHE_SIZE:
                self._profiles.clear()
            profile = self._profiles[raw] = MemberProfile.model_validate_json(raw)
        return profile

    # ---------------------------------------------------------------- writes

    async def save(self, plans: Sequence[Plan]) -> set[str]:
        """Apply each plan atomically; returns the members whose state had moved on (another writer
        got there first) or whose new ids another member holds: their messages are decided again."""
        conflicts: set[str] = set()
        if self.cluster:  # the owner indexes live in other slots: take them first, with SET NX GET
            index = [(p.member_id, claim_owner_key(c)) for p in plans for c in p.new_claim_ids]
            index += [(p.member_id, request_owner_key(r)) for p in plans for r in p.new_request_ids]
            if index:
                calls: list[Call] = [("set", (key, mid), {"nx": True, "get": True}) for mid, key in index]
                for (member_id, _), previous in zip(index, await self._batch(calls), strict=True):
                    if previous is not None and previous.decode() != member_id:
                        conflicts.add(member_id)
        by_member = {p.member_id: p for p in plans if p.member_id not in conflicts}
        groups = self._groups(by_member)
        applies: list[Call] = []
        for group in groups:
            keys: list[str] = []
            args: list[Any] = [self.answer_ttl, len(group)]
            for member_id in group:
                self._apply_section(by_member[member_id], keys, args)
            applies.append(("evalsha", (self._sha["apply"], len(keys), *keys, *args), {}))
        for group, statuses in zip(groups, await self._batch(applies), strict=True):
            for member_id, status in zip(group, statuses, strict=True):
                if int(status) < 0:
                    conflicts.add(member_id)
        return conflicts

    def _apply_section(self, plan: Plan, keys: list[str], args: list[Any]) -> None:
        mid = plan.member_id
        index_keys: list[str] = []
        if not self.cluster:
            index_keys = [claim_owner_key(c) for c in plan.new_claim_ids]
            index_keys += [request_owner_key(r) for r in plan.new_request_ids]
        answer_keys = [source_key(mid, source) for source, _, _ in plan.answers]
        answer_values = [digest + b"\n" + pack(events) for _, digest, events in plan.answers]
        other_keys: list[str] = []
        other_values: list[bytes] = []
        for claim_id, record in plan.claims.items():
            other_keys.append(member_key(mid, "claim", claim_id))
            other_values.append(orjson.dumps(record.to_dict()))
        for request_id, answer in plan.requests.items():
            other_keys.append(member_key(mid, "answer", request_id))
            other_values.append(pack([answer]))
        for period in plan.periods:
            other_keys.append(member_key(mid, "period", period))
            other_values.append(b"1")
        ledger = orjson.dumps(plan.ledger.to_dict()) if plan.ledger is not None else b""
        keys += [member_key(mid, "ledger"), *index_keys, *answer_keys, *other_keys]
        args += [mid, plan.version, ledger, len(index_keys), len(answer_keys), len(other_keys)]
        args += [*answer_values, *other_values]

    # ---------------------------------------------------------------- reference data

    async def put_profiles(self, profiles: Sequence[tuple[str, int, bytes]]) -> None:
        """Store (member_id, source offset, profile JSON or b'' for a deleted profile), newest wins."""
        if not profiles:
            return
        await self._batch(
            [
                ("evalsha", (self._sha["profile"], 1, member_key(m, "profile"), offset, raw), {})
                for m, offset, raw in profiles
            ]
        )
