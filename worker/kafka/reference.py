"""Reference data: member profiles into Redis, facilities into this process, from compacted topics.

Every worker reads both topics (no consumer group): first up to their end offsets before any claim is
consumed (`bootstrap`), then it keeps following them (`follow`). Facilities are read whole (they
live in this process); profiles from the offsets the state marker says Redis already holds, so a
starting worker catches up in seconds at any registry size. Profiles are written to
Redis newest-offset-wins, so workers replaying the topic never write an older profile over a newer
one. Invalid reference data changes nothing and is dead-lettered once (a Redis marker picks the
worker that publishes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from contracts.inbound import FacilityRegistered, MemberProfile
from contracts.wire import Emitted, emit
from worker.adapters.redis_store import RedisStore
from worker.intake import Source, dead_letter, decode
from worker.kafka import clients
from worker.kafka.marking import Marking
from worker.kafka.publisher import Publisher
from worker.settings import Settings
from worker.settlement import Outgoing

log = logging.getLogger("worker.reference")


class ReferenceFeed:
    """The worker's feed (profiles into `store`, facilities, dead letters through `publisher`), or,
    without a store, the gateway's: facilities only, leaving invalid records to the worker."""

    def __init__(
        self,
        settings: Settings,
        store: RedisStore | None,
        facilities: dict[str, FacilityRegistered],
        publisher: Publisher | None,
        marking: Marking | None = None,
    ) -> None:
        self.settings = settings
        self.marking = marking
        self.store = store
        self.facilities = facilities
        self.publisher = publisher
        self.topics: tuple[str, ...] = (
            (settings.topic_profiles, settings.topic_facilities) if store else (settings.topic_facilities,)
        )
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self.loaded = 0
        self.bootstrapped = False

    async def bootstrap(self, limit_seconds: float = 300.0) -> None:
        """Load both topics up to their end offsets, then until a poll finds nothing more."""
        consumer = clients.consumer(
            self.settings,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="claims-worker-reference",
        )
        self.consumer = consumer  # _poll reads through it
        try:
            await consumer.start()
            await self._load_to_end(consumer, limit_seconds)
            self.bootstrapped = True
        except Exception:
            await consumer.stop()  # the caller retries with a fresh consumer
            raise

    async def _load_to_end(self, consumer: AIOKafkaConsumer, limit_seconds: float) -> None:
        await consumer.topics()  # fetch metadata
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        if self.marking is not None:  # profiles Redis already holds are not read again
            for tp, offset in self.marking.profile_positions(partitions).items():
                consumer.seek(tp, offset)
        ends = await consumer.end_offsets(partitions)
        deadline = asyncio.get_running_loop().time() + limit_seconds
        while True:
            got = await self._poll(1000)
            behind = [tp for tp in partitions if await consumer.position(tp) < ends[tp]]
            if not behind and not got:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"reference data not loaded after {limit_seconds:.0f} s ({len(behind)} partitions behind)"
                )

    def follow(self) -> None:
        self.task = asyncio.create_task(self._follow(), name="reference-feed")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.consumer is not None:
            await self.consumer.stop()

    async def _follow(self) -> None:
        delay = 0.5
        while True:
            try:
                await self._poll(1000)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:  # keep following; a position is only advanced once applied
                log.exception("reference feed failed; retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)

    async def _poll(self, timeout_ms: int) -> int:
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        count = 0
        for tp, records in batches.items():
            try:
                await self._apply(records)
                if self.marking is not None and tp.topic == self.settings.topic_profiles:
                    await self.marking.profiles(tp, records[-1].offset + 1)
            except Exception:
                self.consumer.seek(tp, records[0].offset)  # apply again from the first record
                raise
            count += len(records)
        self.loaded += count
        return count

    async def _apply(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        profiles: list[tuple[str, int, bytes]] = []
        invalid: list[tuple[Source, Outgoing]] = []
        for record in records:
            source = Source(record.topic, record.partition, record.offset)
            if record.value is None:  # a tombstone deletes the entry of its key
                key = (record.key or b"").decode(errors="replace")
                if record.topic == self.settings.topic_profiles:
                    profiles.append((key, record.offset, b""))
                else:
                    self.facilities.pop(key, None)
                continue
            decoded = decode(record.value, source, "")
            message = decoded.message
            if self.store is None:  # the gateway's feed: facilities only
                if isinstance(message, FacilityRegistered):
                    self.facilities[message.facility_id] = message
                continue
            if isinstance(message, MemberProfile) and record.topic == self.settings.topic_profiles:
                profiles.append((message.member_id, record.offset, record.value))
                self.store.remember_profile(record.value, message)
            elif isinstance(message, FacilityRegistered) and record.topic == self.settings.topic_facilities:
                self.facilities[message.facility_id] = message
            else:
                invalid.append((source, self._dead_letter(record, source, decoded.events)))
        if self.store is not None:
            await self.store.put_profiles(profiles)
        if invalid:
            await self._publish_once(invalid)

    def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], source: Source, decode_answer: list[Emitted]
    ) -> Outgoing:
        """The dead letter for a record that is not valid reference data for its topic. `decode_answer`
        is what decoding already answered (empty when the record decoded to a message)."""
        value = record.value or b""
        if not decode_answer:
            event = emit(dead_letter(value, source, f"not reference data for {record.topic}"))
        elif decode_answer[0].type == "dead_letter":
            event = decode_answer[0]
        else:  # a claim-shaped rejection is no answer for reference data
            event = emit(dead_letter(value, source, "invalid reference data"))
        return Outgoing(record.key, event)

    async def _publish_once(self, invalid: list[tuple[Source, Outgoing]]) -> None:
        """Every worker reads the reference topics: the first to mark a record dead-letters it."""
        assert self.store is not None and self.publisher is not None
        ours = []
        for source, outgoing in invalid:
            marker = f"dead-lettered:{source.topic}:{source.partition}:{source.offset}"
            if await self.store.redis.set(marker, b"1", nx=True, ex=self.settings.answer_ttl_seconds):
                ours.append(outgoing)
        await self.publisher.publish(ours)
