"""`python -m worker simulate --claims FILE --draft DIR [--baseline DIR]`: the fund impact of a draft
policy set, computed with the engine that settles claims.

The same inbound stream (registry, account requests and claims, replay's JSONL) is settled twice —
under the baseline set (WORKER_POLICY_DIR or the packaged one) and under the draft — by replay's code
(`worker.replay.Replayer`: the worker's decode, `Settler` and engine over the in-memory store), so the
figures are exactly what replaying the file under each set gives. Members are split over `--jobs`
processes by a hash of their id (a member's messages stay in order in one process; reference data
goes to all); each process settles its members under one set at a time.

Compared per claim settled under both sets and not reversed: the pooling fund's spending (total, by
month of service, city, treatment class and band), members reaching the cap or the ceiling, the
change of each member's share over the year (average and distribution) and the members and
facilities most affected.
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import time
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from worker.clock import now_text
from worker.domain.policy import load_policies
from worker.replay import Replayer, decode_lines
from worker.runtime import without_cyclic_gc

# (claim_id, member_id, city, month, treatment, band, facility_id, total, fund, cap reached, ceiling reached)
Settled = tuple[str, str, str, str, str, str, str, int, int, bool, bool]
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


def _member(line: bytes) -> str | None:
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(message, dict) or message.get("type") in ("member.profile", "facility.registered"):
        return None
    member = message.get("member_id")
    return member if isinstance(member, str) else None


def _shard(path: Path, shard: int, shards: int) -> tuple[list[bytes], int]:
    """The file's lines for members of this shard, and every reference line (and unattributable line
    to shard 0, so that each line is settled once); and how many reference lines there are."""
    out = []
    reference = 0
    with path.open("rb") as handle:
        for raw in handle:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            member = _member(line)
            if member is None:
                shared = b'"member.profile"' in line or b'"facility.registered"' in line
                reference += shared
                if shards == 1 or shard == 0 or shared:
                    out.append(line)
            elif zlib.crc32(member.encode()) % shards == shard:
                out.append(line)
    return out, reference


def _settle(
    path: str, shard: int, shards: int, dirs: list[str | None]
) -> tuple[list[tuple[list[Settled], list[str]]], int]:
    """One process's members under each set: settled claims and reversed claim ids per set, and the
    lines it read that no other process reads. The lines are decoded once and settled once per set."""
    with without_cyclic_gc():
        return _settle_shard(path, shard, shards, dirs)


def _settle_shard(
    path: str, shard: int, shards: int, dirs: list[str | None]
) -> tuple[list[tuple[list[Settled], list[str]]], int]:
    lines, reference = _shard(Path(path), shard, shards)
    decoded = list(decode_lines(lines, now_text()))
    out = []
    for directory in dirs:
        policies = load_policies(Path(directory) if directory else None)
        buffer = io.BytesIO()
        asyncio.run(Replayer(policies).replay_decoded(decoded, buffer))
        out.append(_outcomes(buffer.getvalue()))
    return out, len(lines) - (reference if shard else 0)


def _outcomes(data: bytes) -> tuple[list[Settled], list[str]]:
    settled: list[Settled] = []
    reversed_ids: list[str] = []
    for line in data.splitlines():
        if b'"type":"claim.settled"' not in line and b'"type":"claim.reversed"' not in line:
            continue
        event = orjson.loads(line)
        if event["type"] == "claim.settled":
            limits = event["fund_limits"]
            settled.append(
                (event["claim_id"], event["member_id"], event["city"], event["service_date"][:7],
                 event["treatment"], event["band"] or "none", event["facility_id"], event["total_fen"],
                 event["fund_pay_fen"], "CAP_REACHED" in limits, "CEILING_REACHED" in limits)
            )  # fmt: skip
        elif event["type"] == "claim.reversed":
            reversed_ids.append(event["claim_id"])
    return settled, reversed_ids


@dataclass
class SetResult:
    claims: dict[str, Settled]
    """Settled and not reversed, by claim id."""


def _run(path: Path, dirs: list[str | None], jobs: int) -> tuple[list[SetResult], int, float]:
    started = time.perf_counter()
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        shards = [
            f.result() for f in [pool.submit(_settle, str(path), shard, jobs, dirs) for shard in range(jobs)]
        ]
    results = []
    for index in range(len(dirs)):
        claims: dict[str, Settled] = {}
        reversed_ids: set[str] = set()
        for per_set, _ in shards:
            settled, reversed_part = per_set[index]
            claims.update((c[0], c) for c in settled)
            reversed_ids.update(reversed_part)
        for claim_id in reversed_ids:
            claims.pop(claim_id, None)
        results.append(SetResult(claims))
    messages = sum(own for _, own in shards)
    return results, messages, time.perf_counter() - started


def _by(claims: list[tuple[Settled, Settled]], key: int) -> list[dict[str, Any]]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for base, draft in claims:
        row = sums[str(base[key])]
        row[0] += 1
        row[1] += base[8]
        row[2] += draft[8]
    return [
        {"key": k, "claims": v[0], "baseline_fen": v[1], "draft_fen": v[2], "change_fen": v[2] - v[1]}
        for k, v in sorted(sums.items())
    ]


def _bucket(change: int) -> str:
    for low, high, name in SHARE_BUCKETS:
        if (low is None or low <= change) and (high is None or change < high):
            return name
    raise AssertionError(change)


def compare(baseline: SetResult, draft: SetResult, top: int = 10) -> dict[str, Any]:
    both = [(c, draft.claims[i]) for i, c in baseline.claims.items() if i in draft.claims]
    only_baseline = len(baseline.claims.keys() - draft.claims.keys())
    only_draft = len(draft.claims.keys() - baseline.claims.keys())
    fund_base = sum(b[8] for b, _ in both)
    fund_draft = sum(d[8] for _, d in both)
    share_change: dict[str, int] = defaultdict(int)
    facility_change: dict[str, int] = defaultdict(int)
    for b, d in both:
        share_change[b[1]] += (d[7] - d[8]) - (b[7] - b[8])
        facility_change[b[6]] += d[8] - b[8]
    members = {b[1] for b, _ in both}
    distribution = Counter(_bucket(share_change[m]) for m in members)

    def reached(result: SetResult, flag: int) -> int:
        return len({c[1] for c in result.claims.values() if c[flag]})

    return {
        "claims_compared": len(both),
        "claims_settled_only_under_baseline": only_baseline,
        "claims_settled_only_under_draft": only_draft,
        "members": len(members),
        "fund": {
            "baseline_fen": fund_base,
            "draft_fen": fund_draft,
            "change_fen": fund_draft - fund_base,
            "change_bp": (fund_draft - fund_base) * 10_000 // fund_base if fund_base else None,
        },
        "by_month": _by(both, 3),
        "by_city": _by(both, 2),
        "by_treatment": _by(both, 4),
        "by_band": _by(both, 5),
        "members_reaching_cap": {"baseline": reached(baseline, 9), "draft": reached(draft, 9)},
        "members_reaching_ceiling": {"baseline": reached(baseline, 10), "draft": reached(draft, 10)},
        "member_share": {
            "average_change_fen": sum(share_change.values()) // len(members) if members else 0,
            "distribution": [
                {"change": name, "members": distribution.get(name, 0)} for *_, name in SHARE_BUCKETS
            ],
        },
        "most_affected_members": [
            {"member_id": m, "share_change_fen": v}
            for m, v in sorted(share_change.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:top]
        ],
        "most_affected_facilities": [
            {"facility_id": f, "fund_change_fen": v}
            for f, v in sorted(facility_change.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:top]
        ],
    }


def simulate(path: Path, draft: Path, baseline: Path | None, jobs: int) -> dict[str, Any]:
    """Settle `path` under both sets; the comparison, with the sets' ids and the run's speed."""
    base_book, draft_book = load_policies(baseline), load_policies(draft)  # refuse bad sets before any work
    with without_cyclic_gc():
        (base, new), messages, seconds = _run(path, [str(baseline) if baseline else None, str(draft)], jobs)
        report = compare(base, new)
    claims = max(len(base.claims), len(new.claims))
    report["policies"] = {"baseline": sorted(base_book.ids), "draft": sorted(draft_book.ids)}
    report["run"] = {
        "messages": messages,
        "jobs": jobs,
        "seconds": round(seconds, 2),
        "claims_per_second_per_set": round(claims * 2 / seconds) if seconds else None,
    }
    return report
