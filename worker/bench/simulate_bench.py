"""Benchmark of `simulate` (issue #13): `python -m worker.bench.simulate_bench [--members N]`.

Generates a synthetic Nanchang year (`worker.lab.population`, N members), a draft set that raises the
retirees' cap from 2 000 to 2 400 yuan, and runs `simulate` with 1 and with 2 processes, alternately,
twice each; prints one JSON object: claims settled per second for one policy set (claims × 2 sets /
wall time, decoding and comparing included; target: >= 50,000 with both cores) and the peak memory of
the largest process.

`--breakdown` instead settles the year once under the baseline in this process and says where the
time goes, per message: decoding (the worker's validation, shared by the two sets), the engine's
passes (`decide` with its per-message bookkeeping, timed by the `Settler`), the store calls, and the
rest (grouping, answers, output). From the first two it derives the ceiling no routing work can
lift: claims a second for one set with both cores if everything but decoding and deciding were free.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from contracts.inbound import FacilityRegistered, MemberProfile
from worker.clock import now_text
from worker.domain.policy import POLICY_DIR, load_policies
from worker.lab.population import generate
from worker.lab.simulate import simulate
from worker.replay import Replayer, decode_lines
from worker.runtime import without_cyclic_gc

CORES = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.simulate_bench", description=__doc__)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--breakdown", action="store_true", help="where one set's time goes, per message")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="simulate-bench-"))
    try:
        year = folder / "year.jsonl"
        with year.open("wb") as out:
            for message in generate("nanchang", args.members, seed=1):
                out.write(orjson.dumps(message) + b"\n")
        if args.breakdown:
            print(json.dumps({"members": args.members, **breakdown(year)}))
            return 0
        draft = folder / "draft"
        draft.mkdir()
        for path in POLICY_DIR.glob("*.toml"):
            text = path.read_text(encoding="utf-8")
            if path.name.startswith("nanchang"):
                text = text.replace("cap_fen = 200000", "cap_fen = 240000")
            (draft / path.name).write_text(text, encoding="utf-8")
        runs: dict[str, list[int]] = {"1": [], "2": []}
        claims = 0
        for _ in range(args.rounds):
            for jobs in (1, 2):
                started = time.perf_counter()
                result = simulate(year, draft, None, jobs)
                seconds = time.perf_counter() - started
                claims = result["claims_compared"]
                runs[str(jobs)].append(round(claims * 2 / seconds))
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss >> 10  # KiB → MiB, the largest process
        print(
            json.dumps(
                {
                    "members": args.members,
                    "claims": claims,
                    "claims_per_second_per_set": runs,
                    "peak_rss_mib_a_process": peak,
                }
            )
        )
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def breakdown(year: Path) -> dict[str, Any]:
    """Decode the year, settle it once under the packaged set; microseconds per message by step."""
    lines = [line for line in year.read_bytes().splitlines() if line]
    steps: dict[str, float] = defaultdict(float)

    def timing(step: str, seconds: float) -> None:
        steps[step] += seconds

    out = io.BytesIO()
    with without_cyclic_gc():
        started = time.perf_counter()
        decoded = list(decode_lines(lines, now_text()))
        decoding = time.perf_counter() - started
        started = time.perf_counter()
        asyncio.run(Replayer(load_policies(), timing).replay_decoded(decoded, out))
        settling = time.perf_counter() - started
    reference = (MemberProfile, FacilityRegistered)
    member_messages = sum(
        1 for *_, d in decoded if d.message is not None and not isinstance(d.message, reference)
    )
    claims = out.getvalue().count(b'"type":"claim.settled"')
    rest = settling - steps["decide"] - steps["load"] - steps["save"]

    def per(seconds: float, count: int) -> float:
        return round(seconds / count * 1e6, 2)

    return {
        "messages": len(lines),
        "member_messages": member_messages,
        "claims": claims,
        "us_per_message": {"decode": per(decoding, len(lines))},
        "us_per_member_message_and_set": {
            "decide": per(steps["decide"], member_messages),
            "store": per(steps["load"] + steps["save"], member_messages),
            "rest": per(rest, member_messages),
            "settle": per(settling, member_messages),
        },
        # both sets on both cores: decoding once, deciding twice, nothing else
        "ceiling_claims_per_second_per_set": round(CORES * claims * 2 / (decoding + 2 * steps["decide"])),
    }


if __name__ == "__main__":
    raise SystemExit(main())
