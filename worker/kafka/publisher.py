"""Publishes answers to their topics and waits until the broker has acknowledged every one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from worker.settings import Settings
from worker.settlement import Outgoing


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

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("publisher not started")
        return self._producer

    async def start(self) -> None:
        """Create and connect the producer (aiokafka clients belong to the running event loop)."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=self.settings.producer_linger_ms,
            enable_idempotence=self.settings.producer_idempotence,
            max_batch_size=256 * 1024,
            client_id="claims-worker",
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(self, outgoing: Sequence[Outgoing]) -> list[asyncio.Future[Any]]:
        """Hand everything to the producer, in order (one member's events keep their order per topic);
        returns the acknowledgement futures."""
        send = self.producer.send
        routes = self.routes
        return [await send(routes[o.event.type], o.event.data, key=o.key) for o in outgoing]

    async def publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Send and wait for every acknowledgement; any failure raises (the caller sends again)."""
        pending = await self.send(outgoing)
        if pending:
            await asyncio.gather(*pending)
