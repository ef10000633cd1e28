"""Publishes answers to their topics and waits until the broker has acknowledged every one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2

from worker.kafka import clients
from worker.settings import Settings
from worker.settlement import Outgoing

_HASH_CACHE_SIZE = 500_000
CORRELATION_HEADER = "correlation_id"
"""The header a requester (the point-of-sale gateway) sets to match answers to its own request."""


def route(settings: Settings) -> dict[str, str]:
    """Event type → output topic (contracts.md §Topics)."""
    return {
        "claim.settled": settings.topic_settled,
        "claim.reversed": settings.topic_settled,
        "claim.rejected": settings.topic_rejected,
        "account.credited": settings.topic_ledger,
        "account.debited": settings.topic_ledger,
        "account.closed": settings.topic_ledger,
        "account.request_rejected": settings.topic_ledger,
        "dead_letter": settings.topic_dlq,
    }


class Publisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.routes = route(settings)
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._partition_cache: dict[str, tuple[float, list[int]]] = {}
        self._hashes: dict[bytes, int] = {}

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("publisher not started")
        return self._producer

    async def start(self) -> None:
        """Create and connect the producer (aiokafka clients belong to the running event loop)."""
        self._producer = clients.producer(
            self.settings,
            acks="all",
            linger_ms=self.settings.producer_linger_ms,
            enable_idempotence=self.settings.producer_idempotence,
            max_batch_size=256 * 1024,
            client_id="claims-worker",
        )
        try:
            await self._producer.start()
        except Exception:
            await self._producer.stop()  # release what the failed start opened; the caller retries
            self._producer = None
            raise

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, outgoing: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
        """Hand a batch's answers to the producer; returns the acknowledgement futures.

        Answers are appended to one record batch per topic-partition (the key chooses the partition
        with murmur2, as the Java client and aiokafka's default partitioner do), in order, so one
        member's events keep their order per topic. One future per record batch instead of one per
        message: per-message futures were a visible share of the worker's CPU.
        """
        producer = self.producer
        builders: dict[tuple[str, int], list[Any]] = {}
        partitions_of: dict[str, list[int]] = {}
        for item in outgoing:
            topic = self.routes[item.event.type]
            partitions = partitions_of.get(topic)
            if partitions is None:
                partitions = partitions_of[topic] = await self._partitions(topic)
            partition = self._partition(item.key, partitions)
            chain = builders.get((topic, partition))
            if chain is None:  # not setdefault: that would make a record batch for every answer
                chain = builders[(topic, partition)] = [producer.create_batch()]
            headers = [(CORRELATION_HEADER, item.correlation)] if item.correlation is not None else []
            data = item.event.data
            if chain[-1].append(key=item.key, value=data, timestamp=None, headers=headers) is None:
                chain.append(producer.create_batch())  # the batch is full: start the next one
                if chain[-1].append(key=item.key, value=data, timestamp=None, headers=headers) is None:
                    raise ValueError(f"an answer of {len(data)} bytes exceeds the batch size")
        futures = []
        for (topic, partition), chain in builders.items():
            for batch in chain:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def _partition(self, key: bytes | None, partitions: list[int]) -> int:
        """aiokafka's default partitioner (murmur2 of the key, as the Java client), with each key's
        hash remembered: a member's key comes back with every answer, and hashing in pure Python
        showed in profiles."""
        if key is None:
            return int(self._partitioner(key, partitions, partitions))
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return partitions[hashed % len(partitions)]

    async def _partitions(self, topic: str) -> list[int]:
        """Partition ids of a topic, from the producer's metadata, refreshed every minute."""
        now = time.monotonic()
        cached = self._partition_cache.get(topic)
        if cached is None or now - cached[0] > 60:
            ids = sorted(await self.producer.partitions_for(topic))
            cached = self._partition_cache[topic] = (now, ids)
        return cached[1]

    async def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Send and wait for every acknowledgement; any failure raises (the caller sends again)."""
        pending = await self.send(outgoing)
        if pending:
            await asyncio.gather(*pending)
