"""Shared pieces of the Kafka integration tests: per-test topics, workers, expected-vs-actual."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from tests.conftest import normalise
from worker.adapters.redis_client import connect
from worker.kafka.publisher import route
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import (
    Received,
    WorkerProcess,
    collect,
    output_topics,
    produce,
    produce_lines,
    topic_and_key,
)
from worker.settings import TOPICS, Settings

TOPIC_FIELDS = TOPICS


class Cluster:
    """One test's world: its own topic names and consumer group on the shared broker and Redis."""

    def __init__(self, bootstrap: str, redis_url: str, prefix: str, tmp: Path, partitions: int = 4) -> None:
        self.prefix = prefix
        self.tmp = tmp
        self.redis_url = redis_url
        self.env = {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "REDIS_URL": redis_url,
            "WORKER_PARTITIONS": str(partitions),
            "WORKER_CONSUMER_GROUP": f"{prefix}-group",
            "WORKER_BATCH_TIMEOUT_MS": "20",
            "WORKER_RETRY_MAX_SECONDS": "1",
            "WORKER_LOG_LEVEL": "INFO",
        }
        topics: dict[str, Any] = {}
        for name in TOPIC_FIELDS:
            default = Settings.model_fields[f"topic_{name}"].default
            topics[f"topic_{name}"] = f"{prefix}.{default}"
            self.env[f"WORKER_TOPIC_{name.upper()}"] = f"{prefix}.{default}"
        self.settings = Settings(
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            REDIS_URL=redis_url,
            partitions=partitions,
            consumer_group=f"{prefix}-group",
            **topics,
        )
        self.workers: list[WorkerProcess] = []

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap_servers

    async def create_topics(self) -> None:
        await ensure_topics(self.settings)

    def refused_start(self, **env: str) -> str:
        """Start a worker that must refuse (exit status 2); its log."""
        refused = self.worker(**env).start(wait_ready=0)
        assert refused.process is not None and refused.process.wait(60) == 2
        return refused.log_text()

    def worker(self, **env: str) -> WorkerProcess:
        process = WorkerProcess({**self.env, **env}, self.tmp / f"worker-{len(self.workers)}.log")
        self.workers.append(process)
        return process

    async def publish(self, lines: list[bytes]) -> int:
        return await produce_lines(self.bootstrap, self.settings, lines)

    async def produce_raw(self, messages: list[tuple[str, bytes | None, bytes]]) -> int:
        """Publish exact (topic, key, value) records, e.g. bad data on a reference topic."""
        return await produce(self.bootstrap, messages)

    async def publish_in_order(self, lines: list[bytes]) -> None:
        """Publish member messages, waiting for the answers whenever the inbound topic or the member
        changes.

        Kafka orders one partition, not the two inbound topics together, nor two members' keys:
        a producer that needs a credit applied before a claim, or one member's claim settled before
        another member names it (a reversal by the wrong member), waits for the answer first.
        Every member message gets exactly one answer.
        """
        done = 0
        for _, run in itertools.groupby(lines, key=lambda x: topic_and_key(x, self.settings)):
            batch = list(run)
            await self.publish(batch)
            done += len(batch)
            got = await self.outputs(done, 60)
            assert len(got) >= done, f"{len(got)} of {done} answers arrived"

    async def outputs(self, count: int, wait_seconds: float = 90.0) -> list[Received]:
        return await collect(self.bootstrap, output_topics(self.settings), count, wait_seconds)

    async def wait_outputs(self, count: int, wait_seconds: float = 90.0) -> list[Received]:
        got = await self.outputs(count, wait_seconds)
        assert len(got) >= count, f"{len(got)} of {count} outputs arrived"
        await asyncio.sleep(0.5)
        return await self.outputs(count, 5.0)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


async def fresh_world(bootstrap: str, redis_url: str, prefix: str, tmp: Path) -> Cluster:
    """An empty Redis and a new set of topics on the shared broker, for one test."""
    client = connect(redis_url, cluster=False)
    await client.flushall()
    await client.aclose()
    cluster = Cluster(bootstrap, redis_url, prefix, tmp)
    await cluster.create_topics()
    return cluster


def reference_lines(lines: list[bytes]) -> list[bytes]:
    return [x for x in lines if b'"member.profile"' in x or b'"facility.registered"' in x]


def split_reference(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    ref = reference_lines(lines)
    return ref, [x for x in lines if x not in ref]


def _normal(event: dict[str, Any]) -> str:
    event = normalise({k: v for k, v in event.items() if k != "member_state"})  # the worker's rebuild aid
    if event.get("type") == "dead_letter":
        for name in ("source_topic", "partition", "offset"):
            event.pop(name, None)
    return json.dumps(event, sort_keys=True)


def streams(events: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], list[str]]:
    """(topic, member or payload) → normalised events in order: what per-member ordering promises."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for topic, event in events:
        who = event.get("member_id") or event.get("payload_sha256") or ""
        out[(topic, str(who))].append(_normal(event))
    return dict(out)


def expected_streams(path: Path, settings: Settings) -> dict[tuple[str, str], list[str]]:
    routes = route(settings)
    events = [orjson.loads(x) for x in path.read_bytes().splitlines() if x]
    return streams([(routes[e["type"]], e) for e in events])


def actual_streams(received: list[Received]) -> dict[tuple[str, str], list[str]]:
    return streams([(r.topic, r.event) for r in received])
