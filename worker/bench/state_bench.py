"""Benchmarks of the state's lifecycle (issue #10): `python -m worker.bench.state_bench rebuild|ready`.

`rebuild [--claims N]`: the outbound events of N claims (and a credit per member) are produced the
way the worker makes them (replay's Settler with `member_state` stamped), published to
`claims.settled` and `accounts.ledger`, and `python -m worker rebuild`'s code restores an empty Redis
from them; reports events read per second (target >= 20,000).

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

from worker.adapters.redis_client import connect
from worker.bench import synthetic
from worker.bench.kafka_bench import _settings
from worker.kafka.publisher import route
from worker.kafka.rebuild import rebuild
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, produce, produce_lines
from worker.local.services import start_broker, start_redis
from worker.replay import Replayer


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
        progress = await rebuild(settings)
        elapsed = time.monotonic() - started
        rate = progress.read / elapsed
        print(f"rebuild: {progress.read:,} events in {elapsed:.1f} s = {rate:,.0f} events/s (whole command)")
        return {
            "benchmark": "rebuild",
            "events": progress.read,
            "seconds": round(elapsed, 2),
            "events_per_s": round(rate),
        }
    finally:
        redis.close()
        broker.close()
        shutil.rmtree(workdir, ignore_errors=True)


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
    two = sub.add_parser("ready")
    two.add_argument("--profiles", type=int, default=1_000_000)
    two.add_argument("--limit", type=float, default=900)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = asyncio.run(bench_rebuild(args) if args.which == "rebuild" else bench_ready(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
