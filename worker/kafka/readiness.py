"""What the worker's `/readyz` checks (worker.ops.health serves it): start-up finished, Redis and
Kafka answering, reference data loaded, partitions assigned. Each check returns what is missing."""

from __future__ import annotations

import asyncio

from worker.adapters.redis_store import RedisStore
from worker.kafka.handler import BatchHandler
from worker.kafka.publisher import Publisher
from worker.kafka.reference import ReferenceFeed
from worker.ops.health import CHECK_TIMEOUT_SECONDS, Check


class Startup:
    """Where start-up is, for `/readyz` and for the message of a start that timed out."""

    def __init__(self) -> None:
        self.step = "starting"
        self.done = False


def readiness_checks(
    startup: Startup, store: RedisStore, publisher: Publisher, feed: ReferenceFeed, handler: BatchHandler
) -> list[Check]:
    async def redis_reachable() -> str | None:
        try:
            await asyncio.wait_for(store.redis.ping(), CHECK_TIMEOUT_SECONDS)
        except Exception:
            return "Redis is not reachable"
        return None

    async def kafka_reachable() -> str | None:
        if not startup.done:
            return None  # the start-up step says what it waits for
        try:
            await asyncio.wait_for(publisher.producer.client.fetch_all_metadata(), CHECK_TIMEOUT_SECONDS)
        except Exception:
            return "Kafka is not reachable"
        return None

    async def started() -> str | None:
        return None if startup.done else f"start-up: {startup.step}"

    async def reference_loaded() -> str | None:
        return None if feed.bootstrapped else "reference data not loaded"

    async def partitions_assigned() -> str | None:
        if handler.assigned is None:
            return "no partitions assigned yet"
        return None if handler.assigned else "no partitions assigned (more workers than partitions?)"

    return [started, redis_reachable, kafka_reachable, reference_loaded, partitions_assigned]
