"""`python -m worker simulate --claims FILE --draft DIR [--baseline DIR]`: the fund impact of a draft
policy set, computed with the engine that settles claims.

The same inbound stream (registry, account requests and claims, replay's JSONL) is settled twice —
under the baseline set (WORKER_POLICY_DIR or the packaged one) and under the draft — by replay's code
(`worker.replay.Replayer`: the worker's decode, `Settler` and engine over the in-memory store), so the
figures are exactly what replaying the file under each set gives.

Memory stays bounded whatever the year's size. The file is first split into shards by a hash of the
member id (a member's messages, profile included, stay in order in one shard; facilities go to every
shard), at most `SHARD_BYTES` of input each. `--jobs` processes take the shards one after the other:
each decodes its shard in chunks, settles every chunk under both sets, and returns the shard's
comparison, which is all the answer needs (every figure either adds up over shards or, like a
member's share change, lives in one shard). A process holds one shard's state at a time.

Compared per claim settled under both sets and not reversed: the pooling fund's spending (total, by
month of service, city, treatment class and band), members reaching the cap or the ceiling, the
change of each member's share over the year (average and distribution) and the members and
facilities most affected. A claim id named by two members (the worker answers the second one
`DUPLICATE_CONFLICT` or `MEMBER_MISMATCH`) is judged within each member's shard.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice, repeat
from pathlib import Path
from typing import IO, Any

import orjson

from worker.clock import now_text
from worker.domain.policy import PolicyBook, load_policies
from worker.replay import Replayer, decode_lines
from worker.runtime import without_cyclic_gc

SHARD_BYTES = 8 << 20
"""Input a shard holds at most: ≈ 1 800 members of a synthetic year, ≈ 200 MB for a process
settling them under two sets. Smaller shards are also faster (the state a process works on stays in
the CPU's caches): `--jobs 2` on 20 000 members, 64 MiB shards ≈ 23 000 claims/s a set, 2–8 MiB
≈ 26 000; below that the registry, copied into every shard, costs more than it saves."""
CHUNK = 16_384
"""Lines decoded at a time, then settled under each set."""
TOP = 10

# (member_id, month, city, treatment, band, facility_id, total, fund, cap reached, ceiling reached)
Settled = tuple[str, str, str, str, str, str, int, int, bool, bool]
SHARE_BUCKETS: tuple[tuple[int | None, int | None, str], ...] = (
    (None, -20_000, "less by 200 yuan or more"),
    (-20_000, -5_000, "less by 50–200 yuan"),
    (-5_000, -1_000, "less by 10–50 yuan"),
    (-1_000, 0, "less by up to 10 yuan"),
    (0, 1, "no change"),
    (1, 1_001, "more by up to 10 yuan"),
    (1_001, 5_001, "more by 10–50 yuan"),
    (5_001, 20_001, "more by 50–200 yuan"),
    (20_001, None, "more by over 200 yuan"),
)
"""The distribution of the change of a member's share over the year: [low, high) in fen, a name."""
_SETTLED = b'"type":"claim.settled"'
_REVERSED = b'"type":"claim.reversed"'


class Outcomes:
    """Replay's output sink for one set: the claims settled and the claim ids reversed (nothing else
    of the output is kept)."""

    def __init__(self) -> None:
        self.settled: dict[str, Settled] = {}
        self.reversed: set[str] = set()

    def write(self, line: bytes, /) -> None:
        if _SETTLED in line:
            event = orjson.loads(line)
            if event["type"] == "claim.settled":
                limits = event["fund_limits"]
                self.settled[event["claim_id"]] = (
                    event["member_id"], event["service_date"][:7], event["city"], event["treatment"],
                    event["band"] or "none", event["facility_id"], event["total_fen"], event["fund_pay_fen"],
                    "CAP_REACHED" in limits, "CEILING_REACHED" in limits,
                )  # fmt: skip
        elif _REVERSED in line:
            event = orjson.loads(line)
            if event["type"] == "claim.reversed":
                self.reversed.add(event["claim_id"])

    def standing(self) -> dict[str, Settled]:
        """Claims settled and not reversed, by claim id."""
        return {c: s for c, s in self.settled.items() if c not in self.reversed}


@dataclass
class Comparison:
    """The comparison of a set of members (a shard, or all of them once shards are merged)."""

    compared: int = 0
    only_baseline: int = 0
    only_draft: int = 0
    members: int = 0
    fund: list[int] = field(default_factory=lambda: [0, 0])
    """the pooling fund's spending on the compared claims, [baseline, draft] in fen"""
    by: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """by dimension (month, city, treatment, band) → key → [claims, baseline fen, draft fen]"""
    reaching: dict[str, list[int]] = field(default_factory=lambda: {"cap": [0, 0], "ceiling": [0, 0]})
    """members reaching the cap / the ceiling under [baseline, draft] (a member is in one shard)"""
    share_total: int = 0
    """the sum of the members' share changes over the year, in fen"""
    distribution: Counter[str] = field(default_factory=Counter)
    """members by `SHARE_BUCKETS` name"""
    top_members: list[tuple[str, int]] = field(default_factory=list)
    """the `TOP` members whose share changed most, (member id, change in fen)"""
    facilities: dict[str, int] = field(default_factory=dict)
    """facility id → change of the fund's spending there, in fen"""

    def add(self, other: Comparison) -> None:
        """Fold another shard's comparison in: sums add up, a member's figures live in one shard."""
        self.compared += other.compared
        self.only_baseline += other.only_baseline
        self.only_draft += other.only_draft
        self.members += other.members
        self.fund = [a + b for a, b in zip(self.fund, other.fund, strict=True)]
        for dimension, rows in other.by.items():
            mine = self.by.setdefault(dimension, {})
            for key, row in rows.items():
                sums = mine.setdefault(key, [0, 0, 0])
                for i, value in enumerate(row):
                    sums[i] += value
        for limit, counts in other.reaching.items():
            self.reaching[limit] = [a + b for a, b in zip(self.reaching[limit], counts, strict=True)]
        self.share_total += other.share_total
        self.distribution.update(other.distribution)
        self.top_members = _top([*self.top_members, *other.top_members])
        for facility, change in other.facilities.items():
            self.facilities[facility] = self.facilities.get(facility, 0) + change


def _top(changes: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(changes, key=lambda kv: (-abs(kv[1]), kv[0]))[:TOP]


def _bucket(change: int) -> str:
    for low, high, name in SHARE_BUCKETS:
        if (low is None or low <= change) and (high is None or change < high):
            return name
    raise AssertionError(change)


def compare(baseline: dict[str, Settled], draft: dict[str, Settled]) -> Comparison:
    """Compare the standing claims of the same members under the two sets."""
    both = [(b, draft[i]) for i, b in baseline.items() if i in draft]
    comparison = Comparison(
        compared=len(both),
        only_baseline=len(baseline.keys() - draft.keys()),
        only_draft=len(draft.keys() - baseline.keys()),
    )
    share_change: dict[str, int] = defaultdict(int)
    facilities: dict[str, int] = defaultdict(int)
    dimensions = {"month": 1, "city": 2, "treatment": 3, "band": 4}
    by: dict[str, dict[str, list[int]]] = {name: {} for name in dimensions}
    for b, d in both:
        comparison.fund[0] += b[7]
        comparison.fund[1] += d[7]
        share_change[b[0]] += (d[6] - d[7]) - (b[6] - b[7])
        facilities[b[5]] += d[7] - b[7]
        for name, index in dimensions.items():
            row = by[name].setdefault(str(b[index]), [0, 0, 0])
            row[0] += 1
            row[1] += b[7]
            row[2] += d[7]
    comparison.by = by
    comparison.members = len(share_change)
    comparison.share_total = sum(share_change.values())
    comparison.distribution = Counter(_bucket(change) for change in share_change.values())
    comparison.top_members = _top(list(share_change.items()))
    comparison.facilities = dict(facilities)
    for limit, flag in (("cap", 8), ("ceiling", 9)):
        comparison.reaching[limit] = [
            len({c[0] for c in claims.values() if c[flag]}) for claims in (baseline, draft)
        ]
    return comparison


def figures(comparison: Comparison) -> dict[str, Any]:
    """The comparison as `simulate` answers it (JSON-ready)."""
    base, new = comparison.fund

    def rows(dimension: str) -> list[dict[str, Any]]:
        return [
            {"key": k, "claims": v[0], "baseline_fen": v[1], "draft_fen": v[2], "change_fen": v[2] - v[1]}
            for k, v in sorted(comparison.by.get(dimension, {}).items())
        ]

    return {
        "claims_compared": comparison.compared,
        "claims_settled_only_under_baseline": comparison.only_baseline,
        "claims_settled_only_under_draft": comparison.only_draft,
        "members": comparison.members,
        "fund": {
            "baseline_fen": base,
            "draft_fen": new,
            "change_fen": new - base,
            "change_bp": (new - base) * 10_000 // base if base else None,
        },
        "by_month": rows("month"),
        "by_city": rows("city"),
        "by_treatment": rows("treatment"),
        "by_band": rows("band"),
        "members_reaching_cap": dict(zip(("baseline", "draft"), comparison.reaching["cap"], strict=True)),
        "members_reaching_ceiling": dict(
            zip(("baseline", "draft"), comparison.reaching["ceiling"], strict=True)
        ),
        "member_share": {
            "average_change_fen": comparison.share_total // comparison.members if comparison.members else 0,
            "distribution": [
                {"change": name, "members": comparison.distribution.get(name, 0)}
                for *_, name in SHARE_BUCKETS
            ],
        },
        "most_affected_members": [{"member_id": m, "share_change_fen": v} for m, v in comparison.top_members],
        "most_affected_facilities": [
            {"facility_id": f, "fund_change_fen": v} for f, v in _top(list(comparison.facilities.items()))
        ],
    }


def _member(line: bytes) -> str | None:
    """The member a line belongs to; None for a facility (every shard needs the registry) and for a
    line that names no member (not JSON, no `member_id`: answered in the first shard)."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("type") == "facility.registered":
        return None
    member = message.get("member_id")
    return member if isinstance(member, str) else None


def split(path: Path, folder: Path, shards: int) -> tuple[list[Path], int]:
    """Write the file's lines into `shards` files by member; returns them and the lines read."""
    files = [folder / f"shard-{n:04d}.jsonl" for n in range(shards)]
    handles: list[IO[bytes]] = [f.open("wb") for f in files]
    lines = 0
    try:
        with path.open("rb") as source:
            for raw in source:
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                lines += 1
                member = _member(line)
                if member is not None:
                    handles[zlib.crc32(member.encode()) % shards].write(line + b"\n")
                elif b'"facility.registered"' in line:
                    for handle in handles:
                        handle.write(line + b"\n")
                else:
                    handles[0].write(line + b"\n")
    finally:
        for handle in handles:
            handle.close()
    return files, lines


def _chunks(handle: IO[bytes]) -> Iterator[list[bytes]]:
    while chunk := list(islice(handle, CHUNK)):
        yield chunk


def settle_shard(shard: Path, books: list[PolicyBook]) -> Comparison:
    """Settle one shard under the baseline and the draft set, a chunk at a time; its comparison. The
    sets come as loaded (and checked) once by `simulate`, not read again for each shard."""
    with without_cyclic_gc():
        return asyncio.run(_settle_shard(shard, books))


async def _settle_shard(shard: Path, books: list[PolicyBook]) -> Comparison:
    replayers = [Replayer(book) for book in books]
    outcomes = [Outcomes() for _ in books]
    offset = 0
    with shard.open("rb") as handle:
        for chunk in _chunks(handle):
            decoded = list(decode_lines(chunk, now_text(), offset))  # once for both sets
            offset += len(chunk)
            for replayer, sink in zip(replayers, outcomes, strict=True):
                await replayer.replay_decoded(decoded, sink)
    baseline, draft = (sink.standing() for sink in outcomes)
    return compare(baseline, draft)


def simulate(
    path: Path, draft: Path, baseline: Path | None, jobs: int, shard_bytes: int = SHARD_BYTES
) -> dict[str, Any]:
    """Settle `path` under both sets; the comparison, with the sets' ids and the run's speed."""
    base_book, draft_book = load_policies(baseline), load_policies(draft)  # refuse bad sets before any work
    started = time.perf_counter()
    shards = max(jobs, -(-path.stat().st_size // shard_bytes))
    with tempfile.TemporaryDirectory(prefix="simulate-") as folder, without_cyclic_gc():
        files, messages = split(path, Path(folder), shards)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            total = Comparison()
            for shard in pool.map(settle_shard, files, repeat([base_book, draft_book])):
                total.add(shard)
    seconds = time.perf_counter() - started
    result = figures(total)
    claims = total.compared + max(total.only_baseline, total.only_draft)
    result["policies"] = {"baseline": sorted(base_book.ids), "draft": sorted(draft_book.ids)}
    result["run"] = {
        "messages": messages,
        "jobs": jobs,
        "shards": shards,
        "seconds": round(seconds, 2),
        "claims_per_second_per_set": round(claims * 2 / seconds) if seconds else None,
    }
    return result
