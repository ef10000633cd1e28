"""The batch handler behind the FastStream subscriber, and the commit strategy it owns.

FastStream's per-message `ack()` commits without offsets; this worker never uses it (AckPolicy.MANUAL,
auto-commit off). For each batch: settle against Redis (state and answers applied atomically), hand
every answer to the producer, and — in a finisher task, so that the next batch is fetched and decided
meanwhile — wait for the broker's acknowledgements, then commit explicit offsets (last offset + 1 per
partition). A batch's answers go out only after the previous batch's are acknowledged, so a member's
events keep their order. Redis or Kafka failing means no commit: the work is retried with back-off
until it succeeds, the worker stops, or the partitions are revoked — a message is never skipped. On
revocation the listener waits for the in-flight batch and its finisher before the partitions move.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from worker.intake import Source
from worker.kafka.publisher import Publisher
from worker.replay import now_text
from worker.settings import Settings
from worker.settlement import Outgoing, Record, Settler

log = logging.getLogger("worker.handler")


class BatchHandler:
    def __init__(self, settler: Settler, publisher: Publisher, settings: Settings) -> None:
        self.settler = settler
        self.publisher = publisher
        self.settings = settings
        self.idle = asyncio.Event()
        self.idle.set()
        self.finisher: asyncio.Task[None] | None = None
        self.stopping = False
        self.batches = 0
        self.records = 0

    async def handle(self, raw: Sequence[ConsumerRecord[bytes, bytes]], consumer: AIOKafkaConsumer) -> None:
        """Never raises: raising would let FastStream move on past an unsettled batch."""
        if not raw:
            return
        self.idle.clear()
        try:
            await self._handle(raw, consumer)
        finally:
            self.idle.set()

    async def quiesce(self) -> None:
        """No batch in the handler and none waiting for acknowledgements or its commit."""
        await self.idle.wait()
        await self.drain()

    async def _handle(self, raw: Sequence[ConsumerRecord[bytes, bytes]], consumer: AIOKafkaConsumer) -> None:
        batch = [Record(Source(r.topic, r.partition, r.offset), r.key, r.value or b"") for r in raw]
        delay = 0.2
        failing_since: float | None = None
        while True:
            assigned = consumer.assignment()
            live = [r for r in batch if TopicPartition(r.source.topic, r.source.partition) in assigned]
            if not live:
                log.info("partitions of an unfinished batch were revoked; the new owner answers it")
                return
            try:
                outgoing = await self.settler.settle(live, now_text())
                await self.drain()  # the previous batch's answers are acknowledged before ours go out
                acks = await self.publisher.send(outgoing)
            except Exception as exc:  # Redis down, broker unreachable, or a bug: never skip, never commit
                if self.stopping:
                    log.warning(
                        "stopping with an unsettled batch (%s): not committed, it will be redelivered", exc
                    )
                    return
                failing_since = failing_since or time.monotonic()
                log.warning(
                    "batch of %d records not settled (%s: %s) for %.0f s; not committing, retrying in %.1f s",
                    len(live),
                    type(exc).__name__,
                    exc,
                    time.monotonic() - failing_since,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                continue
            if failing_since is not None:
                log.warning(
                    "batch settled after %.0f s of failures; resuming", time.monotonic() - failing_since
                )
            self.finisher = asyncio.create_task(self._finish(consumer, live, outgoing, acks))
            return

    async def drain(self) -> None:
        """Wait until the last batch's answers are acknowledged and its offsets committed."""
        if self.finisher is not None:
            await self.finisher
            self.finisher = None

    async def _finish(
        self,
        consumer: AIOKafkaConsumer,
        records: Sequence[Record],
        outgoing: Sequence[Outgoing],
        acks: list[asyncio.Future[Any]],
    ) -> None:
        """Commit a batch once the broker has acknowledged all of its answers (sending again if needed)."""
        delay = 0.2
        pending: list[asyncio.Future[Any]] | None = acks
        while True:
            try:
                if pending is None:
                    pending = await self.publisher.send(outgoing)
                await asyncio.gather(*pending)
                break
            except Exception as exc:
                if self.stopping:
                    log.warning(
                        "stopping with unacknowledged answers (%s): not committed, redelivered later", exc
                    )
                    return
                log.warning(
                    "answers not acknowledged (%s); not committing, sending again in %.1f s", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                pending = None
        if self.settings.fault_crash_before_commit:
            log.error("fault injection: killed after publishing, before committing")
            os.kill(os.getpid(), signal.SIGKILL)
        await self._commit(consumer, records)
        self.batches += 1
        self.records += len(records)

    async def _commit(self, consumer: AIOKafkaConsumer, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.source.topic, record.source.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.source.offset + 1)
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (KafkaError, AssertionError) as exc:  # e.g. a rebalance: redelivery is answered from Redis
            log.warning(
                "offset commit failed (%s); the batch will be redelivered and re-answered identically", exc
            )


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move, let the in-flight batch finish, publish and commit."""

    def __init__(self, handler: BatchHandler, timeout: float) -> None:
        self.handler = handler
        self.timeout = timeout

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.handler.idle.is_set() and self.handler.finisher is None:
            return
        log.info(
            "partitions %s revoked during a batch: finishing it first", sorted(str(tp) for tp in revoked)
        )
        try:
            await asyncio.wait_for(self.handler.quiesce(), self.timeout)
        except TimeoutError:
            log.warning("in-flight batch not finished in %.0f s; its offsets stay uncommitted", self.timeout)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %d partitions", len(assigned))
