"""The worker's side of the state marker (`worker.marker`): checked before consuming, advanced after
every batch's state is durable, and carried as metadata on every offset commit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from aiokafka import TopicPartition

from worker.adapters.redis_store import RedisStore
from worker.kafka import clients
from worker.marker import Partition, StateMarker, consumed_field, profile_field, verdict
from worker.settings import Settings

log = logging.getLogger("worker.marker")


class StateRefused(RuntimeError):
    """The state in Redis cannot be trusted; the message says why and what to run."""


async def committed_offsets(settings: Settings) -> dict[Partition, tuple[int, str]]:
    """The consumer group's committed (offset, metadata) on the inbound topics' partitions (named
    explicitly: the request for "all partitions" is not understood by every broker)."""
    admin = clients.admin(settings, client_id="claims-worker-marker")
    await admin.start()
    try:
        described = await admin.describe_topics([settings.topic_claims, settings.topic_accounts])
        partitions = [
            TopicPartition(topic["topic"], part["partition"])
            for topic in described
            if not topic.get("error_code")
            for part in topic["partitions"]
        ]
        found = (
            await admin.list_consumer_group_offsets(settings.consumer_group, partitions=partitions)
            if partitions
            else {}
        )
    finally:
        await admin.close()
    return {
        (tp.topic, tp.partition): (meta.offset, meta.metadata or "")
        for tp, meta in found.items()
        if meta.offset >= 0
    }


class Marking:
    """Holds the epoch this process works under and the marker offsets it last wrote itself."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.marker: StateMarker | None = None
        self._floors: dict[str, int] = {}

    @property
    def epoch(self) -> str:
        assert self.marker is not None, "establish() first"
        return self.marker.epoch

    async def establish(self, committed: dict[Partition, tuple[int, str]]) -> StateMarker:
        """Check the marker against the committed offsets; create one for a new deployment. Raises
        `StateRefused` when the state was lost or belongs to something else."""
        try:
            marker = await self.store.adopt_marker()
        except ValueError as exc:  # a marker this version cannot read
            raise StateRefused(str(exc)) from None
        refusal = verdict(marker, committed)
        if refusal is not None:
            raise StateRefused(refusal)
        if marker is None:
            marker = await self.store.create_marker(uuid.uuid4().hex)
            log.info("new state: epoch %s", marker.epoch)
        self.marker = marker
        return marker

    async def consumed(self, offsets: dict[TopicPartition, int]) -> None:
        """After a batch's state is durable: the inbound partitions' next offsets (raises `StateLost`)."""
        await self._advance({consumed_field(tp.topic, tp.partition): n for tp, n in offsets.items()})

    async def profiles(self, tp: TopicPartition, next_offset: int) -> None:
        await self._advance({profile_field(tp.topic, tp.partition): next_offset})

    def profile_positions(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where each profile partition's catch-up starts (absent: from the beginning)."""
        assert self.marker is not None
        known = self.marker.profiles
        return {tp: known[(tp.topic, tp.partition)] for tp in partitions if (tp.topic, tp.partition) in known}

    async def _advance(self, fields: dict[str, int]) -> None:
        """Every field this process has written is checked, not only the batch's: a Redis that came
        back from an older file may have lost another partition's progress."""
        triples = [(name, self._floors.get(name, -1), next_offset) for name, next_offset in fields.items()]
        triples += [(name, floor, floor) for name, floor in self._floors.items() if name not in fields]
        await self.store.advance_marker(self.epoch, triples)
        for name, next_offset in fields.items():
            self._floors[name] = max(self._floors.get(name, -1), next_offset)
