"""Benchmarks of the state (issue #10): `python -m worker.bench.state_bench rebuild|memory|ready`.

`rebuild [--claims N]`: the outbound events of N claims (and a credit per member) are produced the
way the worker makes them (replay's Settler with `member_state` stamped), published to
`claims.settled` and `accounts.ledger`, and `python -m worker rebuild`'s code restores an empty Redis
from them; reports events read per second (target >= 20,000).

`memory [--claims N] [--members M]`: Redis bytes per settled claim and per member, settled the
worker's way (target: <= 400 a claim inside the retention window).

`ready [--profiles N]`: N member profiles on `members.profiles`; a first worker starts (reads them
all), then a second worker joins the running deployment (catches up from the state marker); reports
each one's seconds from process start to `ready` (target for the joining worker: <= 10 s at 1,000,000).

Both start their own broker and Redis (or use KAFKA_BOOTSTRAP_SERVERS / REDIS_URL) and print one JSON
object as their last line.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from contracts.inbound import FacilityRegistered
from worker.adapters.redis_client import connect
from worker.adapters.redis_store import RedisStore
from worker.bench import synthetic
from worker.bench.kafka_bench import _settings
from worker.clock import now_text
from worker.domain.policy import load_policies
from worker.intake import Source
from worker.kafka.publisher import route
from worker.kafka.rebuild import rebuild
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, produce, produce_lines
from worker.local.services import start_broker, start_redis
from worker.replay import Replayer
from worker.settlement import Record, Settler


async def _stamped_events(claims: int, members: int) -> list[bytes]:
    replayer = Replayer()
    replayer.settler.stamp_state = True  # as the Kafka worker publishes them
    lines = synthetic.encode(
        [
            *synthetic.facilities(),
            *synthetic.members(members),
            *synthetic.contributions(members),
            *synthetic.claims(claims, members),
        ]
    )
    sink = io.BytesIO()
    await replayer.replay(lines, sink)
    return [x for x in sink.getvalue().splitlines() if x]


async def bench_rebuild(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="state-bench-"))
    broker = start_broker(str(workdir))
    redis = start_redis()
    try:
        settings, env = _settings(broker.bootstrap_servers, redis.url, f"rb{int(time.time())}", 4)
        await ensure_topics(settings)
        events = await _stamped_events(args.claims, args.claims // 4)
        routes = route(settings)
        outbound = [orjson.loads(e) for e in events]
        stateful = [
            (routes[o["type"]], o["member_id"].encode(), e)
            for o, e in zip(outbound, events, strict=True)
            if routes[o["type"]] in (settings.topic_settled, settings.topic_ledger)
        ]
        await produce(broker.bootstrap_servers, stateful)
        print(f"{len(stateful):,} outbound events published; rebuilding", flush=True)
        client = connect(redis.url, cluster=False)
        await client.flushall()
        await client.aclose()
        os.environ.update(env)
        started = time.monotonic()
        progress = await rebuild(settings, jobs=args.jobs)
        elapsed = time.monotonic() - started
        print(
            f"rebuild: {progress.read:,} events read and restored at {progress.rate:,.0f} events/s; "
            f"the whole command (wipe, restore, archive, marker) {elapsed:.1f} s"
        )
        return {
            "benchmark": "rebuild",
            "events": progress.read,
            "events_per_s": round(progress.rate),
            "command_seconds": round(elapsed, 2),
        }
    finally:
        redis.close()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Redis bytes per claim and per member, settled the worker's way (Settler over RedisStore,
    events stamped with `member_state`), measured as `used_memory` growth."""
    redis = start_redis(use_env=False)
    try:
        client = connect(redis.url, cluster=False)
        # the owner index sized as the settings say: about (claim and request ids kept) / 100
        store = RedisStore(client, 3600, owner_buckets=max(1, (args.claims + args.members) // 100))
        await store.load_scripts()
        facilities: dict[str, FacilityRegistered] = {}
        settler = Settler(store, load_policies(), facilities, stamp_state=True)
        for message in synthetic.facilities():
            facilities[message["facility_id"]] = FacilityRegistered.model_validate(message)
        base = await _used(client)
        profiles = synthetic.encode(synthetic.members(args.members))
        await store.put_profiles([(orjson.loads(p)["member_id"], n, p) for n, p in enumerate(profiles)])
        with_profiles = await _used(client)
        offset = 0

        async def settle(lines: list[bytes]) -> list[dict[str, Any]]:
            nonlocal offset
            out = []
            for start in range(0, len(lines), 1000):
                chunk = lines[start : start + 1000]
                records = [Record(Source("bench", 0, offset + n), None, x) for n, x in enumerate(chunk)]
                offset += len(chunk)
                out += [orjson.loads(o.event.data) for o in await settler.settle(records, now_text())]
            return out

        await settle(synthetic.encode(synthetic.contributions(args.members)))
        with_ledgers = await _used(client)
        answers = await settle(synthetic.encode(synthetic.claims(args.claims, args.members)))
        after = await _used(client)
        settled = sum(1 for a in answers if a["type"] == "claim.settled")
        per_claim = (after - with_ledgers) / settled
        per_member = (with_ledgers - base) / args.members
        print(
            f"{settled:,} claims settled for {args.members:,} members: {per_claim:,.0f} Redis bytes a claim; "
            f"{per_member:,.0f} bytes a member (profile {(with_profiles - base) / args.members:,.0f}, "
            f"ledger and credit answer {(with_ledgers - with_profiles) / args.members:,.0f})"
        )
        _, archived = await store.archive_claims(9999)  # as once the retention window has passed
        compacted = await _used(client)
        per_archived = (compacted - with_ledgers) / settled
        print(f"after the retention window ({archived:,} archived): {per_archived:,.0f} Redis bytes a claim")
        await client.aclose()
        return {
            "benchmark": "memory",
            "claims": settled,
            "members": args.members,
            "bytes_per_claim": round(per_claim),
            "bytes_per_archived_claim": round(per_archived),
            "bytes_per_member": round(per_member),
        }
    finally:
        redis.close()


async def _used(client: Any) -> int:
    return int((await client.info("memory"))["used_memory"])


def _seconds_to_ready(worker: WorkerProcess, limit: float) -> float:
    started = time.monotonic()
    worker.start(wait_ready=0)
    worker.wait_for_log("ready:", limit)
    return time.monotonic() - started


async def bench_ready(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="state-bench-"))
    broker = start_broker(str(workdir))
    redis = start_redis()
    workers: list[WorkerProcess] = []
    try:
        settings, env = _settings(broker.bootstrap_servers, redis.url, f"ready{int(time.time())}", 4)
        await ensure_topics(settings)
        chunk = 100_000
        for start in range(0, args.profiles, chunk):
            profiles = synthetic.members(min(chunk, args.profiles - start), seed=start)
            for n, profile in enumerate(profiles):  # distinct ids across chunks
                profile["member_id"] = synthetic.member_id(start + n)
            await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(profiles))
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(synthetic.facilities()))
        print(f"{args.profiles:,} profiles published", flush=True)
        first = WorkerProcess(env, workdir / "worker-first.log")
        workers.append(first)
        first_seconds = _seconds_to_ready(first, args.limit)
        print(f"first worker (reads every profile): ready in {first_seconds:.1f} s", flush=True)
        joining = WorkerProcess(env, workdir / "worker-joining.log")
        workers.append(joining)
        joining_seconds = _seconds_to_ready(joining, args.limit)
        print(f"joining worker (catches up from the marker): ready in {joining_seconds:.1f} s", flush=True)
        return {
            "benchmark": "ready",
            "profiles": args.profiles,
            "first_worker_ready_s": round(first_seconds, 1),
            "joining_worker_ready_s": round(joining_seconds, 1),
        }
    finally:
        for worker in workers:
            worker.close()
        redis.close()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.state_bench", description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    one = sub.add_parser("rebuild")
    one.add_argument("--claims", type=int, default=200_000)
    one.add_argument(
        "--jobs", type=int, default=2, help="restoring processes (python -m worker rebuild --jobs)"
    )
    three = sub.add_parser("memory")
    three.add_argument("--claims", type=int, default=100_000)
    three.add_argument("--members", type=int, default=10_000)
    two = sub.add_parser("ready")
    two.add_argument("--profiles", type=int, default=1_000_000)
    two.add_argument("--limit", type=float, default=900)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    runs = {"rebuild": bench_rebuild, "ready": bench_ready, "memory": bench_memory}
    result = asyncio.run(runs[args.which](args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
