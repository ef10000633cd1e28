"""End-to-end benchmark of the Kafka worker: `python -m worker bench [--claims N] [--workers K] ...`.

1. Starts (or reuses, via KAFKA_BOOTSTRAP_SERVERS / REDIS_URL) a broker and Redis and creates a fresh
   set of topics.
2. Publishes the registry (facilities, N/4 members) and, unless --no-credits, one account credit
   per member; starts K worker processes in one consumer group and waits for the credits' answers.
3. Latency: offers --rate claims/s for --seconds; latency = answer timestamp - claim timestamp,
   the answers read from the two claim outcome topics only.
4. Saturation: stops the workers (SIGTERM), preloads N claims, starts the workers again and lets
   them run flat out through the backlog; throughput = claims answered / (last answer's broker
   timestamp - first answer's), i.e. first claim consumed to last outcome out. Preloading first
   keeps the load generator off the two cores while the workers are measured, as it would be in
   production, where point-of-sale systems publish from their own machines.
Prints a summary and, as its last line, one JSON object with the figures.

Partitions default to 4, room for up to four worker processes: the local test broker's cost grows
with every partition it serves, and more partitions than consumers only measure that broker.
`--partitions 12` matches the worker's default for topics it creates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition

from worker.bench import synthetic
from worker.kafka import clients
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, produce, produce_lines, settings_for
from worker.local.services import start_broker, start_redis
from worker.settings import TOPICS, Settings


def _settings(
    bootstrap: str, redis_url: str, prefix: str, partitions: int
) -> tuple[Settings, dict[str, str]]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "WORKER_PARTITIONS": str(partitions),
        "WORKER_CONSUMER_GROUP": f"{prefix}-group",
        "WORKER_LOG_LEVEL": "INFO",
    }
    topics = {}
    for name in TOPICS:
        value = f"{prefix}.{Settings.model_fields[f'topic_{name}'].default}"
        topics[f"topic_{name}"] = value
        env[f"WORKER_TOPIC_{name.upper()}"] = value
    settings = Settings.model_validate(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "REDIS_URL": redis_url,
            "partitions": partitions,
            "consumer_group": f"{prefix}-group",
            **topics,
        }
    )
    return settings, env


class Outcomes:
    """Follows the output topics, keeping (timestamp, topic, value) of every answer.

    Values are parsed only where an id is needed (the latency phase): the collector shares the two
    cores with the system under test, and should take as little of them as it can.
    """

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.consumer = clients.consumer(
            settings_for(bootstrap), *topics, group_id=None, auto_offset_reset="earliest"
        )
        self.seen: list[tuple[int, str, bytes]] = []

    async def start(self) -> None:
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()

    async def wait_for(self, count: int, limit_seconds: float) -> None:
        deadline = time.monotonic() + limit_seconds
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.seen)} of {count} answers after {limit_seconds:.0f} s")
            batches = await self.consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batches.values():
                self.seen += [(r.timestamp, r.topic, r.value or b"") for r in records]


def _answered_id(value: bytes) -> str:
    event = orjson.loads(value)
    return str(event.get("claim_id") or event.get("request_id") or "")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _offer(bootstrap: str, topic: str, claims: list[dict[str, Any]], rate: int) -> dict[str, int]:
    """Publish at `rate` claims/s; returns claim id → send time (ms), the start of each latency.

    The producer lingers 5 ms, as Apache Kafka's own client does by default since 4.0 (KIP-1030):
    point-of-sale traffic reaches the broker through ordinary producers, and one request per claim
    would make the local test broker's per-request cost, not the worker, the subject of the test.
    The linger is inside the measured latency."""
    producer = clients.producer(settings_for(bootstrap), linger_ms=5, acks="all")
    await producer.start()
    sent: dict[str, int] = {}
    try:
        started = time.monotonic()
        futures = []
        for index, claim in enumerate(claims):
            due = started + index / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            now_ms = int(time.time() * 1000)
            futures.append(
                await producer.send(
                    topic, orjson.dumps(claim), key=claim["member_id"].encode(), timestamp_ms=now_ms
                )
            )
            sent[claim["claim_id"]] = now_ms
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def _wait_committed(settings: Settings, records: int, limit_seconds: float) -> None:
    """Until the worker group has committed `records` offsets on the claims topic: every claim is
    then answered, since the worker commits only acknowledged answers."""
    consumer = clients.consumer(
        settings,
        group_id=settings.consumer_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(settings.topic_claims, p) for p in range(settings.partitions)]
        deadline = time.monotonic() + limit_seconds
        while sum([await consumer.committed(tp) or 0 for tp in partitions]) < records:
            if time.monotonic() > deadline:
                raise TimeoutError(f"claims not all committed after {limit_seconds:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await consumer.stop()


def process_cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far (Linux /proc); 0 for no process."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(workers: list[WorkerProcess]) -> float:
    """CPU time the worker processes have used so far."""
    return sum(process_cpu_seconds(worker.pid) for worker in workers)


def _peak_rss_mib(worker: WorkerProcess) -> float:
    """The worker process's peak resident memory (Linux /proc)."""
    assert worker.process is not None
    for line in Path(f"/proc/{worker.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start_workers(
    args: argparse.Namespace, env: dict[str, str], workdir: Path, phase: str
) -> list[WorkerProcess]:
    workers = [
        WorkerProcess({**env, "WORKER_BATCH_SIZE": str(args.batch)}, workdir / f"worker-{n}-{phase}.log")
        for n in range(args.workers)
    ]
    for worker in workers:
        worker.start(wait_ready=0)
    for worker in workers:
        worker.wait_for_log("ready:", 300)
    return workers


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="claims-bench-"))
    broker = start_broker(str(workdir))
    durable = args.durability == "local"
    # Redis 7.0 has no WAITAOF: `local` then needs appendfsync always (worker.adapters.redis_durability)
    redis = start_redis(use_env=not durable, persistent=durable, fsync="always")
    workers: list[WorkerProcess] = []
    try:
        prefix = f"bench{int(time.time())}"
        settings, env = _settings(broker.bootstrap_servers, redis.url, prefix, args.partitions)
        env["WORKER_REDIS_DURABILITY"] = args.durability
        env["WORKER_METRICS_ENABLED"] = "true" if args.metrics == "on" else "false"
        members = args.claims // 4 if args.members is None else args.members
        print(f"broker: {broker.kind} at {broker.bootstrap_servers}; redis: {redis.url}; topics: {prefix}.*")
        await ensure_topics(settings)
        registry = synthetic.encode([*synthetic.facilities(), *synthetic.members(members)])
        await produce_lines(broker.bootstrap_servers, settings, registry)
        output_topics = [
            settings.topic_settled,
            settings.topic_rejected,
            settings.topic_ledger,
            settings.topic_dlq,
        ]
        outcomes = Outcomes(broker.bootstrap_servers, output_topics)
        await outcomes.start()
        workers = _start_workers(args, env, workdir, "warm")
        expected = 0
        if args.credits:
            credits = synthetic.encode(synthetic.contributions(members))
            await produce_lines(broker.bootstrap_servers, settings, credits)
            expected += len(credits)
            await outcomes.wait_for(expected, 600)
            print(f"{len(credits)} account credits answered")
        else:
            await asyncio.sleep(8)  # let the group settle before the clock starts
        # Latency first, on the warm registry: the local test broker keeps every message in memory
        # and slows as its topics grow, which would charge the saturation phase's data to latency.
        offered = list(synthetic.claims(args.rate * args.seconds, members, seed=99, prefix="L"))
        before_latency = len(outcomes.seen)  # the credits' answers
        await outcomes.stop()  # from here on, read only while nothing is being measured...
        # ...except the latency phase's answers, from the two topics they go to: every partition a
        # collector follows costs the local test broker CPU, which the latency would pay for
        watch = Outcomes(broker.bootstrap_servers, [settings.topic_settled, settings.topic_rejected])
        await watch.start()
        sent = await _offer(broker.bootstrap_servers, settings.topic_claims, offered, args.rate)
        await watch.wait_for(len(offered), 120)
        await watch.stop()
        answered = [(ts, _answered_id(value)) for ts, _, value in watch.seen]
        latencies = [ts - sent[ident] for ts, ident in answered if ident in sent]
        p50, p95, p99 = (_percentile(latencies, q) for q in (0.50, 0.95, 0.99))
        print(
            f"latency at {args.rate} claims/s offered for {args.seconds} s ({len(latencies)} claims): "
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {max(latencies):.0f} ms"
        )

        for worker in workers:  # a clean stop: everything answered so far is committed
            worker.terminate()
        claims = synthetic.encode(synthetic.claims(args.claims, members))
        published = await produce(
            broker.bootstrap_servers,
            ((settings.topic_claims, orjson.loads(c)["member_id"].encode(), c) for c in claims),
        )
        base = before_latency + len(offered)  # answers before the saturation phase: one a message
        measured = _start_workers(args, env, workdir, "saturation")
        workers += measured
        cpu_before = _cpu_seconds(measured)
        await _wait_committed(settings, len(offered) + published, args.limit)
        cpu_used = _cpu_seconds(measured) - cpu_before
        peak_mib = max(_peak_rss_mib(w) for w in measured)
        outcomes = Outcomes(broker.bootstrap_servers, output_topics)
        await outcomes.start()  # the answers' timestamps were set when they were published
        await outcomes.wait_for(published + base, args.limit)
        claim_topics = {settings.topic_settled, settings.topic_rejected}
        stamps = [  # the saturation claims' answers (the latency phase's claim ids start with L-)
            ts
            for ts, topic, value in outcomes.seen
            if topic in claim_topics and not _answered_id(value).startswith("L-")
        ]
        elapsed = (max(stamps) - min(stamps)) / 1000
        throughput = len(stamps) / elapsed if elapsed > 0 else float("inf")
        print(
            f"saturation: {len(stamps)} claims answered in {elapsed:.2f} s = {throughput:,.0f} claims/s "
            f"with {args.workers} worker process(es); worker CPU {1e6 * cpu_used / len(stamps):.0f} µs a "
            f"claim, peak memory {peak_mib:.0f} MiB a process"
        )
        await outcomes.stop()
        return {
            "benchmark": "kafka",
            "broker": broker.kind,
            "workers": args.workers,
            "partitions": args.partitions,
            "claims": len(stamps),
            "members": members,
            "account_credits": args.credits,
            "durability": args.durability,
            "metrics": args.metrics,
            "saturation_claims_per_s": round(throughput),
            "worker_cpu_us_per_claim": round(1e6 * cpu_used / len(stamps)),
            "worker_peak_rss_mib": round(peak_mib),
            "offered_rate": args.rate,
            "latency_ms": {"p50": p50, "p95": p95, "p99": p99, "max": max(latencies)},
        }
    finally:
        for worker in workers:
            worker.close()
        redis.close()
        broker.close()
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=None, help="default: claims / 4 (50,000 for 200,000)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rate", type=int, default=2000, help="offered claims/s for the latency phase")
    parser.add_argument("--seconds", type=int, default=15, help="duration of the latency phase")
    parser.add_argument(
        "--no-credits", dest="credits", action="store_false", help="no account credits (balances stay 0)"
    )
    parser.add_argument("--limit", type=float, default=900, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep worker and broker logs")
    parser.add_argument(
        "--metrics",
        choices=("on", "off"),
        default="on",
        help="the worker's Prometheus metrics (WORKER_METRICS_ENABLED); compare both in one session",
    )
    parser.add_argument(
        "--durability",
        choices=("none", "local"),
        default="none",
        help="WORKER_REDIS_DURABILITY; local starts Redis with its append-only file fsynced",
    )
    args = parser.parse_args(argv)
    if args.partitions < args.workers:
        parser.error("--partitions must be at least --workers: a worker without a partition idles")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return 0
