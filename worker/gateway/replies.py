"""How a gateway replica receives the worker's answers to its own requests.

Every replica follows the outcome topics (`claims.settled`, `claims.rejected`, `claims.dlq`) with
its own consumer — no consumer group, every partition, from the end offsets it found at start — and
reads only each record's `correlation_id` header: a record whose header names a request this replica
is waiting for completes that request; everything else is dropped unparsed. The worker copies the
header onto every record that answers a request (contracts.md §Delivery semantics), also when it
answers from stored state, so concurrent requests for one claim id never take each other's answers.

Why this and not a reply topic: the worker stays unaware of the gateway (no second publish per
answer, no reply-topic partition to own per replica), a replica needs no state to start or stop,
and a request published by one replica is answered on any — the answer is also in Redis, where
`GET /v1/claims/{id}` finds it from every replica. The cost: each replica fetches every outcome
record (≈ 1 KiB), so broker egress grows as replicas × outcome traffic (4 replicas at 2,000
claims/s ≈ 8 MB/s) while each replica's CPU grows with total traffic, not its own share. Past a
handful of replicas, a reply topic keyed by replica (the worker publishing a copy where a `reply_to`
header asks) would make both grow with the replica's own traffic only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.kafka import clients
from worker.kafka.publisher import CORRELATION_HEADER
from worker.settings import Settings

log = logging.getLogger("worker.gateway.replies")


@dataclass(frozen=True, slots=True)
class Reply:
    """One record answering a request: its topic and its value, byte for byte as published."""

    topic: str
    value: bytes


def new_correlation_id() -> bytes:
    return uuid.uuid4().hex.encode()


class ReplyRouter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = (settings.topic_settled, settings.topic_rejected, settings.topic_dlq)
        self._waiting: dict[bytes, asyncio.Future[Reply]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = False

    async def start(self) -> None:
        """Follow every partition of the outcome topics from their current end."""
        consumer = clients.consumer(
            self.settings,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            client_id="claims-gateway-replies",
        )
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p)
                for topic in self.topics
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if len(partitions) < len(self.topics):
                raise RuntimeError(f"outcome topics missing: {', '.join(self.topics)}")
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:  # resolve every position now: nothing published after start is missed
                await consumer.position(tp)
        except Exception:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(), name="gateway-replies")
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
        for future in self._waiting.values():
            future.cancel()

    def expect(self, correlation_id: bytes) -> asyncio.Future[Reply]:
        """Register before publishing: the answer may arrive before the publish is acknowledged."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        return future

    def forget(self, correlation_id: bytes) -> None:
        future = self._waiting.pop(correlation_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def published(self, topic: str) -> dict[int, int]:
        """Partition → offset after the last record published on an outcome topic: the high watermark
        of this replica's last fetch (it follows every partition), else the broker's end offset."""
        if self._consumer is None:
            raise RuntimeError("not following the outcome topics")
        consumer = self._consumer
        out: dict[int, int] = {}
        unknown = []
        for tp in consumer.assignment():
            if tp.topic != topic:
                continue
            high = consumer.highwater(tp)
            if high is None:
                unknown.append(tp)
            else:
                out[tp.partition] = high
        if unknown:
            for tp, end in (await consumer.end_offsets(unknown)).items():
                out[tp.partition] = end
        return out

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _follow(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        waiting = self._waiting
        delay = 0.5
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following; aiokafka reconnects by itself
                log.warning(
                    "reading outcome topics failed (%s); retrying in %.1f s", type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                continue
            if not waiting:
                continue
            for records in batches.values():
                for record in records:
                    for name, value in record.headers or ():
                        if name == CORRELATION_HEADER:
                            future = waiting.pop(bytes(value), None)
                            if future is not None and not future.done():
                                future.set_result(Reply(record.topic, record.value or b""))
                            break
