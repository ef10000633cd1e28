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
                            message's digest (expires); only for answers the state does not keep
                            (rejections, dead letters): a settlement or reversal is answered again
                            from its claim record, an account request from its request's answer

Claim and request ids are global, so their owner index lives outside any member's slot and is
written with SET NX before the member's state (contracts.md §Delivery semantics).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError

from contracts.inbound import MemberProfile
from contracts.wire import MEMBER_STATE_KEY, Emitted
from worker.adapters.redis_durability import Durability, check
from worker.domain.state import Accumulators, ClaimRecord, Ledger, MemberView
from worker.intake import Source
from worker.marker import MARKER_FORMAT, OWNER_BUCKETS_FIELD, StateLost, StateMarker, parse_marker
from worker.ports import Loaded, Plan, Restored, Wants

RedisClient = Redis | RedisCluster
Call = tuple[str, tuple[Any, ...], dict[str, Any]]
Write = tuple[tuple[Any, ...], dict[str, Any]]
"""A write command as sent (`("EVALSHA", sha, numkeys, ...)`), with its reply-parsing options."""
_PROFILE_CACHE_SIZE = 200_000
MARKER_KEY = "state-marker"


def member_key(member_id: str, *parts: str) -> str:
    return ":".join(("m", "{" + member_id + "}", *parts))


OWNER_BUCKETS_DEFAULT = 4096


def owner_location(kind: str, ident: str, buckets: int) -> tuple[str, str]:
    """Where the owner index keeps a claim id (`kind` "claim") or a request id ("request"): a field
    of one of `buckets` hashes. A hash of ~100 short fields is stored as a listpack, ≈ 35 bytes a
    field, where a key per id costs ≈ 90 (issue #10's memory budget); the hash tag spreads the
    buckets over a cluster's slots."""
    bucket = zlib.crc32(ident.encode()) % buckets
    return f"{kind}-owner:{{{kind[0]}{bucket}}}", ident


def archived_owner(member_id: str, facility_id: str | None, year: int) -> bytes:
    """The owner value that is all an archived claim keeps: `member US facility US year`."""
    return f"{member_id}\x1f{facility_id or ''}\x1f{year}".encode()


def archived_record(claim_id: str, owner: bytes) -> ClaimRecord:
    member_id, facility_id, year = owner.decode().split("\x1f")
    return ClaimRecord(
        claim_id,
        member_id,
        "",
        int(year),
        Accumulators(),
        0,
        0,
        None,
        facility_id or None,
        Emitted("claim.settled", b""),
        archived=True,
    )


def owner_member(value: bytes) -> str:
    """The member of an owner value (a member id, or an archived claim's stub)."""
    return value.split(b"\x1f", 1)[0].decode()


def source_key(prefix: str, source: Source) -> str:
    """The answer key of an inbound message; `prefix` is `member_key(member_id, "")`, as below."""
    return f"{prefix}msg:{source.topic}:{source.partition}:{source.offset}"


def record_key(prefix: str, claim_id: str) -> str:
    return prefix + "claim:" + claim_id


def answer_key(prefix: str, request_id: str) -> str:
    return prefix + "answer:" + request_id


def period_marker_key(prefix: str, period: str) -> str:
    return prefix + "period:" + period


def pack(events: Sequence[Emitted]) -> bytes:
    """Events as `type TAB json` lines (compact JSON never holds a raw newline or tab)."""
    if len(events) == 1:
        return events[0].type.encode() + b"\t" + events[0].data
    return b"\n".join(e.type.encode() + b"\t" + e.data for e in events)


LEDGER_FORMAT = 2
"""Format version of stored ledgers: 2 puts the version first and adds the change count
(`Ledger.changes`). Format 1 (no version: it starts with the balance, then the `closed` boolean) is
still read, with no changes counted."""


def encode_ledger(ledger: Ledger) -> bytes:
    return orjson.dumps([LEDGER_FORMAT, *ledger.to_flat()])


def decode_ledger(raw: bytes) -> Ledger:
    flat = orjson.loads(raw)
    if len(flat) > 1 and isinstance(flat[1], bool):  # format 1: balance, closed, incentive, years
        return Ledger.from_flat([0, *flat])
    if flat[0] != LEDGER_FORMAT:
        raise ValueError(f"a stored ledger has unknown format {flat[0]!r}; upgrade the worker")
    return Ledger.from_flat(flat[1:])


RECORD_FORMAT = 3
"""Format version of stored claim records. 3: the format-2 text (a JSON header line, the settled and
reversed events' bytes) deflated with a preset dictionary (`record_dict_1.txt`, part of the format),
after a 0x03 byte — ~1,300 bytes become ~200. 2: the text as is, the header adds the settling
facility. 1: a header without version (it starts with the member id), read with an unknown facility."""
_RECORD_DICT = resources.files("worker.adapters").joinpath("record_dict_1.txt").read_bytes()
_WBITS = -13  # raw deflate, an 8 KiB window: the dictionary and a record fit in it
_DEFLATE = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 8, zlib.Z_DEFAULT_STRATEGY, zdict=_RECORD_DICT)


def _record_text(record: ClaimRecord, version: int) -> bytes:
    header = orjson.dumps(
        [
            version,
            record.member_id,
            record.fingerprint,
            record.year,
            record.delta.to_list(),
            record.account_pay,
            record.fund_pay,
            record.cap_fen,
            record.facility_id,
        ]
    )
    parts = [header, record.settled.data]
    if record.reversed is not None:
        parts.append(record.reversed.data)
    return b"\n".join(parts)


def encode_record(record: ClaimRecord) -> bytes:
    """A claim record in format 3 (see `RECORD_FORMAT`); the events' bytes are kept as they went
    out (compact JSON holds no raw newline), so a repeated answer is byte for byte the first. When
    the settled event carries the record's facts (`member_state.record`, as the worker publishes
    it), the header line is left out: they are read from there."""
    if _carries_record(record):
        text = b"\n".join([record.settled.data] + ([record.reversed.data] if record.reversed else []))
    else:
        text = _record_text(record, 3)
    deflate = _DEFLATE.copy()  # a copy of the primed compressor: the dictionary is loaded once
    return b"\x03" + deflate.compress(text) + deflate.flush()


def _carries_record(record: ClaimRecord) -> bool:
    at = record.settled.data.rfind(MEMBER_STATE_KEY)
    return at >= 0 and b'"record":[' in record.settled.data[at:]


def encode_record_v2(record: ClaimRecord) -> bytes:
    """Format 2, as earlier workers wrote it (for the upgrade tests)."""
    return _record_text(record, 2)


def decode_record(claim_id: str, raw: bytes) -> ClaimRecord:
    if raw[:1] == b"\x03":
        inflate = zlib.decompressobj(_WBITS, zdict=_RECORD_DICT)
        raw = inflate.decompress(raw[1:]) + inflate.flush()
        expected = 3
    elif raw[:1] == b"[":
        expected = 2
    else:
        raise ValueError(f"claim record {claim_id} has unknown format {raw[:1]!r}; upgrade the worker")
    if expected == 3 and raw[:1] == b"{":  # no header: the facts are in the settled event
        settled, *reversed_ = raw.split(b"\n")
        event = orjson.loads(settled)
        fields = [3, event["member_id"], *event["member_state"]["record"]]
    else:
        header, settled, *reversed_ = raw.split(b"\n")
        fields = orjson.loads(header)
    if isinstance(fields[0], str) and expected == 2:  # format 1
        fields = [1, *fields, None]
    if fields[0] not in ((1, 2) if expected == 2 else (3,)):
        raise ValueError(f"claim record {claim_id} has unknown format {fields[0]!r}; upgrade the worker")
    _, member_id, content, year, delta, account_pay, fund_pay, cap, facility_id = fields
    return ClaimRecord(
        claim_id,
        member_id,
        content,
        year,
        Accumulators.from_list(delta),
        account_pay,
        fund_pay,
        cap,
        facility_id,
        Emitted("claim.settled", settled),
        Emitted("claim.reversed", reversed_[0]) if reversed_ else None,
    )


def _restore_command(op: str, key: str, field: str, value: bytes | str) -> tuple[Any, ...]:
    """A restore write as a plain command (the cluster path of `RedisStore.restore`)."""
    if op == "h":
        return ("HSETNX", key, field, value)
    return ("SET", key, value, "NX") if op == "n" else ("SET", key, value)


def _raw(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def message_digest(raw: bytes) -> bytes:
    """Identifies the message an offset held: a topic deleted and created again reuses offsets, and
    an answer must never be republished for a different message."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest().encode()


ANSWER_FORMAT = b"v2\n"
"""Format marker of stored answers (a request's and a message's): version 2 is the packed events
behind this line. Values without a marker are format 1, the same content (an event type or a hex
digest never starts with `v`)."""


def _strip_format(blob: bytes) -> bytes:
    if blob.startswith(ANSWER_FORMAT):
        return blob[len(ANSWER_FORMAT) :]
    if blob[:1] == b"v":
        raise ValueError(f"a stored answer has unknown format {blob[:8]!r}; upgrade the worker")
    return blob


def stored_answer(events: Sequence[Emitted], digest: bytes | None = None) -> bytes:
    """A request's stored answer, or (with the message's digest) a message's."""
    body = pack(events)
    return ANSWER_FORMAT + (digest + b"\n" + body if digest is not None else body)


def _unpack_answer(blob: bytes) -> tuple[bytes, list[Emitted]]:
    digest, _, events = _strip_format(blob).partition(b"\n")
    return digest, unpack(events)


def unpack_request_answer(blob: bytes) -> Emitted:
    return unpack(_strip_format(blob))[0]


def unpack(blob: bytes) -> list[Emitted]:
    out = []
    for line in blob.split(b"\n"):
        kind, _, data = line.partition(b"\t")
        out.append(Emitted(kind.decode(), data))
    return out


class RedisStore:
    def __init__(
        self,
        client: RedisClient,
        answer_ttl_seconds: int,
        durability: Durability | None = None,
        owner_buckets: int = OWNER_BUCKETS_DEFAULT,
    ) -> None:
        """`owner_buckets`: the owner index's bucket count for a new state; an existing state's is in
        its marker and wins (`adopt_marker`)."""
        self.redis = client
        self.owner_buckets = owner_buckets
        self.cluster = isinstance(client, RedisCluster)
        self.answer_ttl = answer_ttl_seconds
        self.durability = durability or Durability("none")
        folder = resources.files("worker.adapters")
        self._sources = {
            name: folder.joinpath(f"redis_{name}.lua").read_text(encoding="utf-8")
            for name in ("load", "apply", "profile", "mark", "restore")
        }
        self._sha: dict[str, str] = {}
        self._profiles: dict[bytes, MemberProfile] = {}

    def claim_owner(self, claim_id: str) -> tuple[str, str]:
        return owner_location("claim", claim_id, self.owner_buckets)

    def request_owner(self, request_id: str) -> tuple[str, str]:
        return owner_location("request", request_id, self.owner_buckets)

    async def load_scripts(self) -> None:
        """(Re)load the Lua scripts; needed at start and after a Redis restart (NOSCRIPT)."""
        for name, source in self._sources.items():
            self._sha[name] = await self.redis.script_load(source)

    async def check_durability(self) -> None:
        """Ask every primary whether the configured durability can be met (see `redis_durability`);
        raises `DurabilityError` with what to change when it cannot."""
        if self.cluster:
            assert isinstance(self.redis, RedisCluster)
            await self.redis.initialize()
        self.durability = await check(self.durability, self._primaries())

    async def _write(self, commands: Sequence[Write]) -> list[Any]:
        """Send write commands in one round trip per node, followed on the same connection by the
        durability wait (if any), whose answer is checked before this returns: a caller publishes
        only what is durable. Raises on any error; the writes are idempotent and retried whole."""
        if not commands:
            return []
        wait = self.durability.wait_command
        try:
            if not self.cluster:
                pipe = self.redis.pipeline(transaction=False)
                for args, options in commands:
                    pipe.execute_command(*args, **options)
                if wait is not None:
                    pipe.execute_command(*wait)
                results = list(await pipe.execute())
                if wait is not None:
                    self.durability.confirm(results.pop())
                return results
            return await self._write_cluster(commands)
        except NoScriptError:  # Redis restarted and lost its script cache: reload, the caller retries
            await self.load_scripts()
            raise

    async def _write_cluster(self, commands: Sequence[Write]) -> list[Any]:
        """On a cluster: a pipeline per primary (redis-py's cluster pipeline refuses scripts), so that
        the wait runs on the connection that wrote, per shard."""
        assert isinstance(self.redis, RedisCluster)
        by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
        for position, (args, options) in enumerate(commands):
            key = args[3] if args[0] == "EVALSHA" else args[1]
            node = self.redis.get_node_from_key(key)
            assert node is not None
            by_node.setdefault(node.name, (node, []))[1].append(PipelineCommand(position, *args, **options))
        wait = self.durability.wait_command
        if wait is not None:
            for _, pipeline in by_node.values():
                pipeline.append(PipelineCommand(-1, *wait))
        await asyncio.gather(*(node.execute_pipeline(pipeline) for node, pipeline in by_node.values()))
        results: list[Any] = [None] * len(commands)
        for _, pipeline in by_node.values():
            for command in pipeline:
                if isinstance(command.result, (MovedError, AskError)):
                    await self.redis.nodes_manager.initialize()  # slots moved: re-read the map
                if isinstance(command.result, Exception):
                    raise command.result
                if command.position < 0:
                    self.durability.confirm(command.result)
                else:
                    results[command.position] = command.result
        return results

    async def _batch(self, calls: Sequence[Call]) -> list[Any]:
        """Run commands in one round trip: a pipeline on a single Redis; on a cluster, concurrent
        calls (redis-py refuses scripts in cluster pipelines), each routed to its key's node."""
        try:
            if len(calls) == 1:  # e.g. a quote: one call, no pipeline to build
                name, args, kwargs = calls[0]
                return [await getattr(self.redis, name)(*args, **kwargs)]
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
        separate_owners: list[tuple[str, str]] = []
        sizes: list[int] = []  # per group: the length of its members' sections in the reply
        for group in groups:
            keys: list[str] = []
            counts: list[int] = []
            owners: list[tuple[str, str]] = []
            for member_id in group:
                want = wants[member_id]
                prefix = member_key(member_id, "")
                keys.append(prefix + "ledger")
                keys.append(prefix + "profile")
                for source in want.sources:
                    keys.append(source_key(prefix, source))
                for claim_id in want.claim_ids:
                    keys.append(record_key(prefix, claim_id))
                    owners.append(self.claim_owner(claim_id))
                for request_id in want.request_ids:
                    keys.append(answer_key(prefix, request_id))
                    owners.append(self.request_owner(request_id))
                for period in want.period_keys:
                    keys.append(period_marker_key(prefix, period))
                counts.append(
                    len(want.sources) + len(want.claim_ids) + len(want.request_ids) + len(want.period_keys)
                )
            sizes.append(sum(counts) + 3 * len(group))
            if self.cluster:  # other slots: read with plain HGETs below
                separate_owners += owners
                owners = []
            keys += [key for key, _ in owners]
            fields = [field for _, field in owners]
            calls.append(("evalsha", (self._sha["load"], len(keys), *keys, len(group), *counts, *fields), {}))
        calls += [("hget", owner, {}) for owner in separate_owners]
        results = await self._batch(calls)
        loaded: dict[str, Loaded] = {}
        foreign: list[tuple[str, str, str, bool]] = []  # (member, claim or request id, owner, is claim)
        separate = results[len(groups) :]
        at_owner = 0
        for group, size, row in zip(groups, sizes, results, strict=False):
            if not self.cluster:  # the owners follow the members' sections, in order
                separate, at_owner = row, size
            at = 0
            for member_id in group:
                want = wants[member_id]
                loaded[member_id], at, at_owner = self._snapshot(
                    member_id, want, row, at, separate, at_owner, foreign
                )
        if foreign:
            await self._load_foreign(loaded, foreign)
        return loaded

    def _snapshot(
        self,
        member_id: str,
        want: Wants,
        row: Sequence[bytes],
        at: int,
        owners: Sequence[bytes],
        at_owner: int,
        foreign: list[tuple[str, str, str, bool]],
    ) -> tuple[Loaded, int, int]:
        """One member's view from its section of a load script's reply, starting at `at`, and its
        owners' from `owners` at `at_owner`; returns the view and where the next member's begin."""
        version, ledger_raw, profile_raw = row[at], row[at + 1], row[at + 2]
        at += 3
        answered: dict[Source, tuple[bytes, list[Emitted]]] = {}
        for source in want.sources:
            if value := row[at]:
                answered[source] = _unpack_answer(value)
            at += 1
        claims: dict[str, ClaimRecord] = {}
        claim_owners: dict[str, str] = {}
        for claim_id in want.claim_ids:
            if value := row[at]:
                claims[claim_id] = decode_record(claim_id, value)
            if owner := owners[at_owner]:
                claim_owners[claim_id] = owner_id = owner_member(owner)
                if b"\x1f" in owner:  # archived: the owner value is all that is kept
                    claims.setdefault(claim_id, archived_record(claim_id, owner))
                elif owner_id != member_id:
                    foreign.append((member_id, claim_id, owner_id, True))
            at += 1
            at_owner += 1
        answers: dict[str, Emitted] = {}
        for request_id in want.request_ids:
            if value := row[at]:
                answers[request_id] = unpack_request_answer(value)
            owner = owners[at_owner]
            if owner and request_id not in answers and owner.decode() != member_id:
                foreign.append((member_id, request_id, owner.decode(), False))
            at += 1
            at_owner += 1
        periods: set[str] = set()
        for period in want.period_keys:
            if row[at]:
                periods.add(period)
            at += 1
        view = MemberView(
            member_id,
            self._profile(profile_raw) if profile_raw else None,
            decode_ledger(ledger_raw) if ledger_raw else Ledger(),
            claims,
            claim_owners,
            answers,
            periods,
            int(version),
        )
        return Loaded(view, answered), at, at_owner

    async def _load_foreign(
        self, loaded: dict[str, Loaded], foreign: list[tuple[str, str, str, bool]]
    ) -> None:
        """Ids another member owns: a request id gets that member's stored answer (§8.7); a claim id
        its record, whose facility a reversal checks before the member (rules §7)."""
        calls: list[Call] = [
            ("get", ((record_key if is_claim else answer_key)(member_key(owner, ""), ident),), {})
            for _, ident, owner, is_claim in foreign
        ]
        for (member_id, ident, _, is_claim), value in zip(foreign, await self._batch(calls), strict=True):
            if not value:
                continue
            view = loaded[member_id].view
            if is_claim:
                view.claims[ident] = decode_record(ident, value)
            else:
                view.answers[ident] = unpack_request_answer(value)

    def remember_profile(self, raw: bytes, profile: MemberProfile) -> None:
        """Keep a profile the reference feed has just validated, so that a member's first claim
        finds it parsed (the cache is keyed by the exact bytes stored in Redis)."""
        if len(self._profiles) < _PROFILE_CACHE_SIZE:
            self._profiles[raw] = profile

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
        if self.cluster:  # the owner indexes live in other slots: take them first (set if absent, read)
            index = [(p.member_id, self.claim_owner(c)) for p in plans for c in p.new_claim_ids]
            index += [(p.member_id, self.request_owner(r)) for p in plans for r in p.new_request_ids]
            if index:
                sets: list[Write] = []
                for member_id, (key, field) in index:
                    sets += [(("HSETNX", key, field, member_id), {}), (("HGET", key, field), {})]
                owners = (await self._write(sets))[1::2]
                for (member_id, _), owner in zip(index, owners, strict=True):
                    if owner is not None and owner_member(owner) != member_id:
                        conflicts.add(member_id)
        by_member = {p.member_id: p for p in plans if p.member_id not in conflicts}
        groups = self._groups(by_member)
        applies: list[Write] = []
        for group in groups:
            keys: list[str] = []
            args: list[Any] = [self.answer_ttl, len(group)]
            for member_id in group:
                self._apply_section(by_member[member_id], keys, args)
            applies.append((("EVALSHA", self._sha["apply"], len(keys), *keys, *args), {}))
        for group, statuses in zip(groups, await self._write(applies), strict=True):
            for member_id, status in zip(group, statuses, strict=True):
                if int(status) < 0:
                    conflicts.add(member_id)
        return conflicts

    def _apply_section(self, plan: Plan, keys: list[str], args: list[Any]) -> None:
        prefix = member_key(plan.member_id, "")
        keys.append(prefix + "ledger")
        index_fields: list[str] = []
        if not self.cluster:
            owners = [self.claim_owner(c) for c in plan.new_claim_ids]
            owners += [self.request_owner(r) for r in plan.new_request_ids]
            keys += [key for key, _ in owners]
            index_fields = [field for _, field in owners]
        values: list[bytes] = []
        for source, digest, events in plan.answers:
            keys.append(source_key(prefix, source))
            values.append(stored_answer(events, digest))
        for claim_id, record in plan.claims.items():
            keys.append(record_key(prefix, claim_id))
            values.append(encode_record(record))
        for request_id, answer in plan.requests.items():
            keys.append(answer_key(prefix, request_id))
            values.append(stored_answer([answer]))
        for period in plan.periods:
            keys.append(period_marker_key(prefix, period))
            values.append(b"1")
        ledger = encode_ledger(plan.ledger) if plan.ledger is not None else b""
        others = len(plan.claims) + len(plan.requests) + len(plan.periods)
        args += [plan.member_id, plan.version, ledger, len(index_fields), len(plan.answers), others]
        args += index_fields
        args += values

    async def find_claim(self, claim_id: str) -> ClaimRecord | None:
        _, record = await self.claim_state(claim_id)
        return None if record is None or record.archived else record  # archived: nothing kept to show

    # ---------------------------------------------------------------- reference data

    async def put_profiles(self, profiles: Sequence[tuple[str, int, bytes]]) -> None:
        """Store (member_id, source offset, profile JSON or b'' for a deleted profile), newest wins."""
        if not profiles:
            return
        await self._write(
            [
                (("EVALSHA", self._sha["profile"], 1, member_key(m, "profile"), offset, raw), {})
                for m, offset, raw in profiles
            ]
        )

    # ---------------------------------------------------------------- operator reads (worker/ops/inspect.py)

    async def member_state(self, member_id: str) -> tuple[bytes | None, Ledger | None, list[ClaimRecord]]:
        """One member's profile (JSON), ledger and claim records, for `python -m worker inspect`."""
        prefix = member_key(member_id, "")
        profile = _raw(await self.redis.hget(member_key(member_id, "profile"), "d"))
        ledger_raw = _raw(await self.redis.hget(member_key(member_id, "ledger"), "d"))
        node = self.redis.get_node_from_key(prefix) if isinstance(self.redis, RedisCluster) else self.redis
        records = []
        async for keys in self._scan(record_key(prefix, "*"), 1000, [node]):  # one slot: one node
            values = await self._batch([("get", (key,), {}) for key in keys])
            for key, raw in zip(keys, values, strict=True):
                if raw:
                    records.append(decode_record(_text(key)[len(record_key(prefix, "")) :], raw))
        return profile, decode_ledger(ledger_raw) if ledger_raw else None, records

    async def claim_state(self, claim_id: str) -> tuple[str | None, ClaimRecord | None]:
        """The member a claim id belongs to (None if unknown) and its record (archived ones too)."""
        owner = _raw(await self.redis.hget(*self.claim_owner(claim_id)))
        if owner is None:
            return None, None
        member_id = owner_member(owner)
        if b"\x1f" in owner:
            return member_id, archived_record(claim_id, owner)
        raw = _raw(await self.redis.get(record_key(member_key(member_id, ""), claim_id)))
        return member_id, decode_record(claim_id, raw) if raw else None

    # ---------------------------------------------------------------- the state marker (worker/marker.py)

    async def read_marker(self) -> StateMarker | None:
        raw = await self.redis.hgetall(MARKER_KEY)
        if not raw:
            return None
        return parse_marker({_text(k): _text(v) for k, v in raw.items()})

    async def create_marker(self, epoch: str, fields: Mapping[str, int] | None = None) -> StateMarker:
        """Mark the state as of `epoch` unless a marker exists (two workers starting at once agree on
        the first one's); returns the marker in force."""
        await self._write(
            [
                (("HSETNX", MARKER_KEY, "format", MARKER_FORMAT), {}),
                (("HSETNX", MARKER_KEY, "epoch", epoch), {}),
                (("HSETNX", MARKER_KEY, OWNER_BUCKETS_FIELD, self.owner_buckets), {}),
                *((("HSETNX", MARKER_KEY, name, value), {}) for name, value in (fields or {}).items()),
            ]
        )
        marker = await self.adopt_marker()
        assert marker is not None
        return marker

    async def adopt_marker(self) -> StateMarker | None:
        """The marker, if any, with its layout adopted (the owner index's bucket count). Every
        process reads the state through this before using it. Raises ValueError for a marker this
        version cannot read (the message says to rebuild)."""
        marker = await self.read_marker()
        if marker is not None:
            self.owner_buckets = marker.owner_buckets
        return marker

    async def advance_marker(self, epoch: str, fields: Sequence[tuple[str, int, int]]) -> None:
        """Advance (field, floor, next) triples, durably; raises `StateLost` when the marker is gone,
        of another epoch, or below a floor (see redis_mark.lua)."""
        if not fields:
            return
        args = [x for triple in fields for x in triple]
        try:
            await self._write([(("EVALSHA", self._sha["mark"], 1, MARKER_KEY, epoch, *args), {})])
        except ResponseError as exc:
            if "STATE_LOST" in str(exc):
                raise StateLost(str(exc).partition("STATE_LOST ")[2]) from None
            raise

    # ---------------------------------------------------------------- rebuild (worker/kafka/rebuild.py)

    STATE_PATTERNS = ("m:{*", "claim-owner:*", "request-owner:*", "dead-lettered:*")

    async def wipe_state(self) -> int:
        """Delete the marker first (running workers then stop at their next batch), then every key of
        member state, leaving other users' keys (the gateway's request log) alone. Returns how many."""
        await self._write([(("DEL", MARKER_KEY), {})])
        deleted = 0
        for pattern in self.STATE_PATTERNS:
            async for keys in self._scan(pattern, 2000):
                await self._write([(("UNLINK", key), {}) for key in keys])
                deleted += len(keys)
        return deleted

    def _primaries(self) -> list[tuple[str, Any]]:
        """Every node that holds keys, with its address: the primaries of a cluster, or the one Redis."""
        if self.cluster:
            assert isinstance(self.redis, RedisCluster)
            return [(node.name, node) for node in self.redis.get_primaries()]
        assert isinstance(self.redis, Redis)
        kwargs = self.redis.connection_pool.connection_kwargs
        return [(f"{kwargs.get('host')}:{kwargs.get('port')}", self.redis)]

    async def _scan(self, pattern: str, count: int, nodes: Sequence[Any] = ()) -> AsyncIterator[list[bytes]]:
        """The keys matching `pattern`, a SCAN page at a time, node by node (`nodes`, else every
        primary)."""
        for node in nodes or [node for _, node in self._primaries()]:
            cursor: Any = 0
            while True:
                cursor, keys = await node.execute_command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
                if keys:
                    yield keys
                if int(cursor) == 0:
                    break

    async def restore(self, items: Sequence[Restored]) -> None:
        """Write what a batch of outbound events says of their members' state: ledgers, request
        answers and periods through redis_restore.lua; claim records (a reversal read, changed and
        written back: records are compressed) and the owner indexes with plain commands; one round
        trip per node. Batches must be written in order (a reversal may follow its settlement)."""
        reversal_ids = [(i.member_id, i.ident) for i in items if i.kind == "reversed" and i.ident]
        stored: dict[str, ClaimRecord] = {}
        if reversal_ids:
            calls: list[Call] = [("get", (record_key(member_key(m, ""), c),), {}) for m, c in reversal_ids]
            for (_, claim_id), value in zip(reversal_ids, await self._batch(calls), strict=True):
                if value:
                    stored[claim_id] = decode_record(claim_id, value)
        records: dict[str, tuple[ClaimRecord, bool]] = {}  # claim id → (record, overwrite)
        ledgers: dict[str, tuple[int, list[Any]]] = {}  # member → the batch's ledger with most changes
        sets: list[tuple[str, str, str, bytes | str]] = []  # (op, key, hash field or '', value)
        # op: n = set if absent, s = set, h = hash field if absent
        for item in items:
            prefix = member_key(item.member_id, "")
            if item.kind == "settled" and item.ident and item.record is not None:
                if item.ident not in records and item.ident not in stored:
                    records[item.ident] = (item.record, False)
                sets.append(("h", *self.claim_owner(item.ident), item.member_id))
            elif item.kind == "reversed" and item.ident:
                known = records.get(item.ident)
                record = known[0] if known else stored.get(item.ident)
                if record is not None and record.reversed is None:
                    record = dataclasses.replace(record, reversed=item.event)
                    records[item.ident] = (record, known[1] if known else True)
            elif item.kind == "answer" and item.ident is not None:
                sets.append(("n", answer_key(prefix, item.ident), "", stored_answer([item.event])))
                sets.append(("h", *self.request_owner(item.ident), item.member_id))
            if item.period is not None:
                sets.append(("s", period_marker_key(prefix, item.period), "", b"1"))
            if item.ledger is not None:
                best = ledgers.get(item.member_id)
                if best is None or item.changes > best[0]:
                    ledgers[item.member_id] = (item.changes, item.ledger)
        for claim_id, (record, overwrite) in records.items():
            key = record_key(member_key(record.member_id, ""), claim_id)
            sets.append(("s" if overwrite else "n", key, "", encode_record(record)))
        sha = self._sha["restore"]
        if not self.cluster:  # one script call: one reply for the whole batch
            keys = [member_key(m, "ledger") for m in ledgers]
            args: list[Any] = [len(ledgers)]
            for changes, flat in ledgers.values():
                args += (changes, orjson.dumps([LEDGER_FORMAT, *flat]))
            for op, key, field, value in sets:
                keys.append(key)
                args += (op, field, value)
            await self._write([(("EVALSHA", sha, len(keys), *keys, *args), {})])
            return
        writes: list[Write] = [
            (
                (
                    "EVALSHA",
                    sha,
                    1,
                    member_key(m, "ledger"),
                    1,
                    changes,
                    orjson.dumps([LEDGER_FORMAT, *flat]),
                ),
                {},
            )
            for m, (changes, flat) in ledgers.items()
        ]
        writes += [(_restore_command(op, key, field, value), {}) for op, key, field, value in sets]
        await self._write(writes)

    # ---------------------------------------------------------------- retention (python -m worker compact)

    async def archive_claims(self, before_year: int, batch: int = 1000) -> tuple[int, int]:
        """Archive every claim record of a service year before `before_year`: its owner index keeps
        member, facility and year (a resubmission stays `DUPLICATE_CONFLICT`, a reversal is
        `CLAIM_ARCHIVED`), the record itself goes. The owner values are written (and confirmed)
        before any record is deleted, so an interruption never leaves a claim id that looks free.
        Returns (records seen, records archived)."""
        seen = archived = 0
        async for keys in self._scan("m:{*}:claim:*", batch):
            values = await self._batch([("get", (key,), {}) for key in keys])
            stubs: list[Write] = []
            drops: list[Write] = []
            for key, value in zip(keys, values, strict=True):
                if not value:
                    continue
                seen += 1
                claim_id = key.decode().split(":claim:", 1)[1]
                record = decode_record(claim_id, value)
                if record.year < before_year:
                    owner = archived_owner(record.member_id, record.facility_id, record.year)
                    stubs.append((("HSET", *self.claim_owner(claim_id), owner), {}))
                    drops.append((("UNLINK", key), {}))
            if stubs:
                await self._write(stubs)
                await self._write(drops)
                archived += len(stubs)
        return seen, archived
