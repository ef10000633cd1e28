"""The batch handler behind the FastStream subscriber, and the commit strategy it owns.

FastStream's per-message `ack()` commits without offsets; this worker never uses it (AckPolicy.MANUAL,
auto-commit off). Each batch becomes a *flight*: settle against Redis (state and answers applied
atomically); once the previous flight's answers are acknowledged (so a member's events keep their
order), hand every answer to the producer and wait for the broker's acknowledgements; once the
previous flight has committed, commit explicit offsets (last offset + 1 per partition). The handler
returns as soon as the previous flight is settled, so the next batch is decoded and decided while
this one's last Redis writes, its acknowledgements and its commit are on their way; at most four
flights are alive at once.

Redis or Kafka failing means no commit: a flight retries with back-off until it succeeds, the worker
stops, or its partitions are revoked — a message is never skipped, and once a flight gives up, no
later flight publishes or commits. On revocation the listener waits for every flight before the
partitions move; on shutdown the worker takes no new batch and lets the flights in the air land and
commit.
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

from worker.clock import now_text
from worker.intake import Source
from worker.kafka.marking import Marking
from worker.kafka.publisher import CORRELATION_HEADER, Publisher
from worker.marker import StateLost
from worker.ops.metrics import WorkerMetrics
from worker.settings import Settings
from worker.settlement import Hold, Outgoing, Record, Settler

log = logging.getLogger("worker.handler")


def correlation(headers: Sequence[tuple[str, bytes]] | None) -> bytes | None:
    """The record's `correlation_id` header (1–128 bytes), copied onto every answer (contracts.md)."""
    if headers:
        for name, value in headers:
            if name == CORRELATION_HEADER and value and len(value) <= 128:
                return bytes(value)
    return None


def _partitions(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The partitions of a batch, each with its first offset (its records come partition by
    partition, in offset order)."""
    found: dict[TopicPartition, int] = {}
    topic, partition = "", -1
    for record in records:
        source = record.source
        if source.partition != partition or source.topic != topic:
            topic, partition = source.topic, source.partition
            found.setdefault(TopicPartition(topic, partition), source.offset)
    return found


class _Flight:
    """One batch on its way: settling, then publishing, then committing."""

    def __init__(self, records: list[Record], previous: _Flight | None, timestamps: list[int]) -> None:
        self.records = records
        self.timestamps = timestamps  # the records' Kafka timestamps (ms), for publish-to-answer time
        self.previous = previous
        self.hold = Hold()
        self.settled = asyncio.Event()  # its state is in Redis (or it was given up)
        self.answered = asyncio.Event()  # its answers are acknowledged (or it was given up)
        self.done = asyncio.Event()  # committed (or given up)
        self.landed_so_far = False  # its answers and every earlier flight's are acknowledged


def _next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """Per partition, the offset after the batch's last record there."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.source.topic, record.source.partition)
        offsets[tp] = max(offsets.get(tp, 0), record.source.offset + 1)
    return offsets


class BatchHandler:
    def __init__(
        self,
        settler: Settler,
        publisher: Publisher,
        settings: Settings,
        marking: Marking | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settler = settler
        self.metrics = metrics
        self.consumer: AIOKafkaConsumer | None = None  # the subscriber's, once a batch came
        self.assigned: set[TopicPartition] | None = None  # None until the group assigned partitions
        self.committed: dict[TopicPartition, int] = {}
        self.busy_since: float | None = None  # records in flight, nothing committed since then
        self.publisher = publisher
        self.settings = settings
        self.marking = marking
        self.last: _Flight | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.batches = 0
        self.records = 0

    async def handle(self, raw: Sequence[ConsumerRecord[bytes, bytes]], consumer: AIOKafkaConsumer) -> None:
        """Launch a flight per `batch_size` records of the poll; return once the flight before the
        last one is settled. Never raises: raising would let FastStream move on past an unsettled
        batch.

        A poll takes everything the consumer has buffered (`poll_max_records`): aiokafka sends its
        next fetch only once the buffer is empty, so the fetch then overlaps with settling."""
        size = self.settings.batch_size
        self.consumer = consumer
        for start in range(0, len(raw), size):
            if self.stopping:  # uncommitted, so redelivered after the restart
                left = len(raw) - start
                log.info("stopping: %d records left for redelivery", left, extra={"records": left})
                return
            chunk = raw[start : start + size]
            batch = [
                Record(Source(r.topic, r.partition, r.offset), r.key, r.value or b"", correlation(r.headers))
                for r in chunk
            ]
            previous = self.last
            flight = self.last = _Flight(batch, previous, [r.timestamp for r in chunk])
            if self.busy_since is None:
                self.busy_since = time.monotonic()
            if self.metrics is not None:  # until this worker commits there, lag counts from its first record
                for tp, first in _partitions(batch).items():
                    self.committed.setdefault(tp, first)
                self.metrics.batch_records.observe(len(batch))
            task = asyncio.create_task(self._fly(flight, consumer))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            if previous is not None:  # at most four flights alive:
                await previous.settled.wait()  # two settling,
                older = previous.previous
                if older is not None:
                    await older.answered.wait()  # one publishing,
                    oldest = older.previous
                    if oldest is not None:
                        await oldest.done.wait()  # one committing

    async def quiesce(self) -> None:
        """Every flight in the air has landed: committed, or given up."""
        if self.last is not None:
            await self.last.done.wait()

    async def _fly(self, flight: _Flight, consumer: AIOKafkaConsumer) -> None:
        previous = flight.previous
        try:
            try:
                outgoing = await self._settle(flight, consumer)
            finally:
                self.settler.release(flight.hold)
                flight.settled.set()
            if previous is not None:
                await previous.answered.wait()  # a member's events go out in order
            if outgoing is None or (previous is not None and not previous.landed_so_far):
                log.warning("a batch was given up; later batches are neither published nor committed")
                return
            offsets = _next_offsets(flight.records)  # for the marker, then the commit
            if not await self._mark(offsets):
                return
            if not await self._publish(outgoing):
                return
            flight.landed_so_far = True
            flight.answered.set()
            if self.metrics is not None:
                self._answered(flight, outgoing)
            if previous is not None:
                await previous.done.wait()  # offsets are committed in order
            await self._commit(consumer, len(flight.records), offsets)
        except Exception:  # a bug here must not leave the flights after this one waiting forever
            log.exception("batch failed unexpectedly; it is not committed")
            flight.landed_so_far = False
        finally:
            flight.previous = None  # let finished flights be collected
            flight.answered.set()
            flight.done.set()
            if self.last is flight:  # nothing left in the air: idle, not "not committing"
                self.busy_since = None

    async def _settle(self, flight: _Flight, consumer: AIOKafkaConsumer) -> list[Outgoing] | None:
        """Settle the batch's records that are still ours; None if the batch was given up."""
        delay = 0.2
        failing_since: float | None = None
        while True:
            assigned = consumer.assignment()
            if _partitions(flight.records).keys() <= assigned:  # the usual case: nothing was revoked
                live = flight.records
            else:
                live = [
                    r
                    for r in flight.records
                    if TopicPartition(r.source.topic, r.source.partition) in assigned
                ]
            if not live:
                log.info("partitions of an unfinished batch were revoked; the new owner answers it")
                flight.records = []
                return []
            try:
                outgoing = await self.settler.settle(live, now_text(), flight.hold)
            except Exception as exc:  # Redis down, or a bug: never skip, never commit
                if self.stopping:
                    log.warning(
                        "stopping with an unsettled batch (%s): not committed, it will be redelivered", exc
                    )
                    return None
                failing_since = failing_since or time.monotonic()
                self._retried("settle")
                log.warning(
                    "batch of %d records not settled (%s: %s) for %.0f s; not committing, retrying in %.1f s",
                    len(live),
                    type(exc).__name__,
                    exc,
                    time.monotonic() - failing_since,
                    delay,
                    extra={
                        "records": len(live),
                        "partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in _partitions(live)),
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                continue
            if failing_since is not None:
                log.warning(
                    "batch settled after %.0f s of failures; resuming", time.monotonic() - failing_since
                )
            flight.records = live
            return outgoing

    async def _mark(self, offsets: dict[TopicPartition, int]) -> bool:
        """Advance the state marker to the batch's offsets, in flight order, before its answers go out
        (worker/marker.py); False if the state turned out lost (the worker then stops) or it stops."""
        if self.marking is None or not offsets:
            return True
        delay = 0.2
        while True:
            try:
                await self.marking.consumed(offsets)
                return True
            except StateLost as exc:
                log.critical(
                    "Redis lost the state this worker wrote (%s): nothing more is published or committed; "
                    "stopping. Rebuild the state (python -m worker rebuild) before starting again",
                    exc,
                )
                self.stopping = True
                os.kill(os.getpid(), signal.SIGTERM)
                return False
            except Exception as exc:
                if self.stopping:
                    return False
                self._retried("mark")
                log.warning("state marker not advanced (%s); not publishing, retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)

    async def _publish(self, outgoing: Sequence[Outgoing]) -> bool:
        """Send the answers and wait until the broker has acknowledged them all, sending again after
        a failure; False if the worker stops first."""
        delay = 0.2
        while True:
            try:
                await self.publisher.publish(outgoing)
                return True
            except Exception as exc:
                if self.stopping:
                    log.warning(
                        "stopping with unacknowledged answers (%s): not committed, redelivered later", exc
                    )
                    return False
                self._retried("publish")
                log.warning(
                    "answers not acknowledged (%s); not committing, sending again in %.1f s", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)

    async def _commit(
        self, consumer: AIOKafkaConsumer, count: int, next_offsets: dict[TopicPartition, int]
    ) -> None:
        if self.settings.fault_crash_before_commit:
            log.error("fault injection: killed after publishing, before committing")
            os.kill(os.getpid(), signal.SIGKILL)
        self.batches += 1
        self.records += count
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in next_offsets.items() if tp in assigned}
        if not offsets:
            return
        epoch = self.marking.epoch if self.marking is not None else ""
        started = time.monotonic()
        try:  # the metadata names the state these offsets belong to (worker/marker.py)
            await consumer.commit({tp: (offset, epoch) for tp, offset in offsets.items()})
        except (KafkaError, AssertionError) as exc:  # e.g. a rebalance: redelivery is answered from Redis
            if self.metrics is not None:
                self.metrics.commit_failures.inc()
            log.warning(
                "offset commit failed (%s); the batch will be redelivered and re-answered identically",
                exc,
                extra={"offsets": {f"{tp.topic}:{tp.partition}": o for tp, o in offsets.items()}},
            )
            return
        now = time.monotonic()
        self.committed.update(offsets)
        self.busy_since = now  # progress: flights still in the air count from here
        if self.metrics is not None:
            self.metrics.commit_seconds.observe(now - started)

    def _retried(self, step: str) -> None:
        if self.metrics is not None:
            self.metrics.retries.labels(step).inc()

    def _answered(self, flight: _Flight, outgoing: Sequence[Outgoing]) -> None:
        """Count a flight's answers by event type, and each record's publish-to-answer time."""
        metrics = self.metrics
        assert metrics is not None
        metrics.answered(o.event for o in outgoing)
        now_ms = time.time() * 1000
        metrics.answer_seconds.observe_many(
            max(0.0, (now_ms - stamp) / 1000) for stamp in flight.timestamps if stamp > 0
        )

    def not_committing_seconds(self) -> float:
        """Seconds that records have been in flight without a commit (0 when idle or committing)."""
        return 0.0 if self.busy_since is None else time.monotonic() - self.busy_since

    def lag(self) -> list[tuple[str, int, int]]:
        """Per assigned partition: end offset (last fetched high watermark) - committed offset."""
        consumer = self.consumer
        if consumer is None:
            return []
        out = []
        for tp in sorted(consumer.assignment()):
            end = consumer.highwater(tp)
            if end is not None:
                out.append((tp.topic, tp.partition, max(0, end - self.committed.get(tp, end))))
        return out


class CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Before partitions move, let the in-flight batch finish, publish and commit."""

    def __init__(self, handler: BatchHandler, timeout: float) -> None:
        self.handler = handler
        self.timeout = timeout

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self.handler.last is None or self.handler.last.done.is_set():
            return
        log.info(
            "partitions %s revoked during a batch: finishing it first", sorted(str(tp) for tp in revoked)
        )
        try:
            await asyncio.wait_for(self.handler.quiesce(), self.timeout)
        except TimeoutError:
            log.warning("in-flight batch not finished in %.0f s; its offsets stay uncommitted", self.timeout)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.handler.assigned = set(assigned)
        if self.handler.metrics is not None:
            self.handler.metrics.rebalances.inc()
        log.info(
            "assigned %d partitions",
            len(assigned),
            extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)},
        )
