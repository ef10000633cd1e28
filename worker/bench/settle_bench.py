"""Settlement against Redis, without Kafka: `python -m worker.bench.settle_bench [--claims N] ...`.

The worker's own cost per claim — decode, read, decide, write — measured apart from the broker.
End-to-end runs on a shared 2-core VM vary by ±20%, too much to tell a 5% change from noise; this
loop runs the same `Settler` and Redis store as the worker (batches of 500, two in flight, as the
handler keeps them) and reports the process's CPU per claim, which moves far less. Use it to compare
two versions of the code, run alternately. Redis is `REDIS_URL` (flushed first: give it a database
of its own) or a private `redis-server`. Prints a summary and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from typing import Any

import orjson
import uvloop

from contracts.inbound import INBOUND, FacilityRegistered, MemberProfile
from worker.adapters.redis_client import connect
from worker.adapters.redis_store import RedisStore
from worker.bench import synthetic
from worker.domain.policy import load_policies
from worker.intake import Source
from worker.local.services import start_redis
from worker.runtime import GC_THRESHOLDS
from worker.settlement import Hold, Record, Settler

NOW = "2024-01-01T09:00:00+08:00"
IN_FLIGHT = 2


async def _registry(store: RedisStore, members: int) -> dict[str, FacilityRegistered]:
    """Facilities for the process, profiles into Redis, as the reference feed leaves them."""
    facilities: dict[str, FacilityRegistered] = {}
    profiles: list[tuple[str, int, bytes]] = []
    for offset, raw in enumerate(synthetic.encode([*synthetic.facilities(), *synthetic.members(members)])):
        message = INBOUND.validate_json(raw)
        if isinstance(message, FacilityRegistered):
            facilities[message.facility_id] = message
        elif isinstance(message, MemberProfile):
            profiles.append((message.member_id, offset, raw))
            store.remember_profile(raw, message)
    for start in range(0, len(profiles), 1000):
        await store.put_profiles(profiles[start : start + 1000])
    return facilities


def _records(lines: list[bytes], topic: str) -> list[Record]:
    return [
        Record(Source(topic, 0, offset), orjson.loads(line)["member_id"].encode(), line)
        for offset, line in enumerate(lines)
    ]


async def _settle_all(settler: Settler, records: list[Record], batch: int) -> int:
    """Batches in order, at most IN_FLIGHT at once, each batch's members held until it is settled;
    returns the number of answers."""

    async def settle(part: list[Record], hold: Hold) -> int:
        try:
            return len(await settler.settle(part, NOW, hold))
        finally:
            settler.release(hold)

    answers = 0
    pending: list[asyncio.Task[int]] = []
    for start in range(0, len(records), batch):
        pending.append(asyncio.create_task(settle(records[start : start + batch], Hold())))
        if len(pending) >= IN_FLIGHT:
            answers += await pending.pop(0)
    return answers + sum(await asyncio.gather(*pending))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    redis = start_redis()
    client = connect(redis.url, cluster=False)
    try:
        await client.flushdb()
        store = RedisStore(client, answer_ttl_seconds=86_400)
        await store.load_scripts()
        settler = Settler(store, load_policies(), await _registry(store, args.members))
        credits = _records(synthetic.encode(synthetic.contributions(args.members)), "accounts.inbound")
        await _settle_all(settler, credits, args.batch)
        claims = _records(synthetic.encode(synthetic.claims(args.claims, args.members)), "claims.inbound")
        gc.collect()
        gc.freeze()  # as the worker does once its reference data is loaded
        gc.set_threshold(*GC_THRESHOLDS)
        started, cpu_started = time.perf_counter(), time.process_time()
        answers = await _settle_all(settler, claims, args.batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        await client.aclose()
        redis.close()
    print(
        f"{len(claims)} claims settled in {elapsed:.2f} s = {len(claims) / elapsed:,.0f} claims/s; "
        f"this process's CPU {1e6 * cpu / len(claims):.1f} µs a claim"
    )
    return {
        "benchmark": "settle",
        "claims": len(claims),
        "answers": answers,
        "members": args.members,
        "claims_per_s": round(len(claims) / elapsed),
        "cpu_us_per_claim": round(1e6 * cpu / len(claims), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(uvloop.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
