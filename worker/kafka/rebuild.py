"""`python -m worker rebuild`: restore the money state in Redis from the outbound topics.

Every event that changed a member's state carries `member_state` (contracts.outbound.MemberState):
the ledger after it with a change count, the facts of a claim record, a credited period. Reading
`claims.settled` and `accounts.ledger` from the beginning therefore gives back every ledger (the one
with the most changes), claim record (with its reversal), stored request answer, credited period and
global owner index. Profiles are not copied here: the next worker start reads `members.profiles`
whole, as the rebuilt marker names no profile offsets.

Steps: delete the marker (a worker still running stops at its next batch) and every key of member
state; read both topics up to their end offsets at the start, writing as it goes, with progress on
stderr; then write the marker for the consumer group's committed offsets, under the epoch those
offsets were committed with. A rebuild that is interrupted leaves no marker, so workers keep refusing
to start until a rebuild completes: it can simply be run again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from contracts.outbound import MEMBER_STATE_FORMAT
from contracts.wire import Emitted
from worker.adapters.redis_client import state_store
from worker.adapters.redis_store import RedisStore
from worker.clock import china_year
from worker.domain.state import Accumulators, ClaimRecord
from worker.kafka import clients
from worker.kafka.marking import committed_offsets
from worker.marker import consumed_field
from worker.ports import Restored
from worker.settings import Settings, load_settings

log = logging.getLogger("worker.rebuild")
_KINDS = {
    "claim.settled": "settled",
    "claim.reversed": "reversed",
    "account.credited": "answer",
    "account.debited": "answer",
    "account.closed": "answer",
    "account.request_rejected": "answer",
}


class RebuildIncomplete(RuntimeError):
    """Some events cannot be restored from: the state would be wrong, so no marker is written."""


@dataclass(slots=True)
class Progress:
    total: int
    read: int = 0
    restored: int = 0
    unstamped: int = 0
    started: float = 0.0
    shown: float = 0.0
    finished: float = 0.0  # when the topics were read and written to the end

    @property
    def rate(self) -> float:
        return self.read / max(self.finished - self.started, 1e-9)

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown < 2.0:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        share = min(100 * self.read / self.total, 100.0) if self.total else 100.0
        print(
            f"rebuild: {self.read:,} of about {max(self.total, self.read):,} events ({share:.0f}%), "
            f"{self.read / elapsed:,.0f} events/s, {elapsed:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def restored(value: bytes) -> Restored | None:
    """What one outbound event says of its member's state; None for an event that changes none.
    Raises ValueError for a state-changing event without a usable `member_state`."""
    event = orjson.loads(value)
    kind = _KINDS.get(event.get("type"))
    if kind is None:
        return None
    state = event.get("member_state")
    if not isinstance(state, dict) or state.get("format") != MEMBER_STATE_FORMAT:
        raise ValueError(f"{event.get('type')} {event.get('event_id')} has no member_state of format 1")
    member_id = event["member_id"]
    ledger = state.get("ledger")  # kept flat: only the member's newest is decoded, by Redis's reader
    record = None
    ident = event.get("claim_id") if kind in ("settled", "reversed") else event.get("request_id")
    published = Emitted(event["type"], value)
    if kind == "settled":
        fingerprint, year, delta, account_pay, fund_pay, cap, facility = state["record"]
        record = ClaimRecord(
            ident,
            member_id,
            fingerprint,
            year,
            Accumulators.from_list(delta),
            account_pay,
            fund_pay,
            cap,
            facility,
            published,
        )
    return Restored(
        member_id,
        kind,
        ident,
        ledger[0] if ledger is not None else -1,
        ledger,
        record,
        state.get("period"),
        published,
    )


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return clients.consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="claims-worker-rebuild",
        max_partition_fetch_bytes=8 << 20,
    )


async def rebuild(settings: Settings, batch: int = 5000, jobs: int = 1) -> Progress:
    """Wipe, restore, archive, mark. `jobs` > 1 restores the outbound partitions in that many
    processes at once: what a batch restores depends only on its own partition (a claim's settlement
    and reversal share the member's partition; ledgers keep the one with most changes, whatever
    the order), so the partitions can be read in parallel."""
    store = state_store(settings, durable=True)
    consumer = _consumer(settings)
    try:
        await store.load_scripts()
        await store.check_durability()
        committed = await committed_offsets(settings)
        deleted = await store.wipe_state()
        print(f"rebuild: marker and {deleted:,} keys of member state deleted", file=sys.stderr, flush=True)
        await consumer.start()
        partitions = await _partitions(consumer, settings)
        if jobs <= 1:
            progress = await _restore_topics(consumer, store, partitions, batch)
        else:
            progress = await _restore_in_processes(settings, partitions, batch, jobs)
        if progress.unstamped:
            raise RebuildIncomplete(
                f"{progress.unstamped} state-changing events carry no member_state (published by a worker "
                "older than format 1): the state cannot be restored from the topics; no marker written"
            )
        before = china_year() - settings.claim_retention_years
        seen, archived = await store.archive_claims(before)
        print(
            f"rebuild: {archived:,} of {seen:,} claims archived (service years before {before})",
            file=sys.stderr,
        )
        epochs = {epoch for _, epoch in committed.values() if epoch}
        epoch = epochs.pop() if len(epochs) == 1 else uuid.uuid4().hex
        fields = {consumed_field(topic, p): offset for (topic, p), (offset, _) in committed.items()}
        await store.create_marker(epoch, fields)
        print(
            f"rebuild: done, {progress.restored:,} events restored; marker written (epoch {epoch}, "
            f"{len(fields)} partitions)",
            file=sys.stderr,
            flush=True,
        )
        return progress
    finally:
        await consumer.stop()
        await store.redis.aclose()


async def _partitions(consumer: AIOKafkaConsumer, settings: Settings) -> list[TopicPartition]:
    await consumer.topics()
    return [
        TopicPartition(topic, p)
        for topic in (settings.topic_settled, settings.topic_ledger)
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


async def _restore_in_processes(
    settings: Settings, partitions: list[TopicPartition], batch: int, jobs: int
) -> Progress:
    groups = [[(tp.topic, tp.partition) for tp in partitions[i::jobs]] for i in range(jobs)]
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        counts = await asyncio.gather(
            *(
                loop.run_in_executor(pool, _restore_job, settings, group, batch, os.getpid())
                for group in groups
                if group
            )
        )
    progress = Progress(sum(c[0] for c in counts), started=started, finished=time.monotonic())
    progress.read, progress.restored, progress.unstamped = (sum(c[i] for c in counts) for i in (1, 2, 3))
    progress.show(final=True)
    return progress


def _restore_job(
    settings: Settings, group: list[tuple[str, int]], batch: int, parent: int
) -> tuple[int, int, int, int]:
    """One process's share of a rebuild: (total, read, restored, unstamped) of its partitions. It
    stops when its parent is gone (a killed rebuild must not keep writing under the next one)."""

    async def run() -> Progress:
        store = state_store(settings, durable=True)
        consumer = _consumer(settings)
        try:
            await store.load_scripts()
            await store.check_durability()
            await consumer.start()
            return await _restore_topics(
                consumer, store, [TopicPartition(t, p) for t, p in group], batch, parent
            )
        finally:
            await consumer.stop()
            await store.redis.aclose()

    progress = asyncio.run(run())
    return progress.total, progress.read, progress.restored, progress.unstamped


async def _restore_topics(
    consumer: AIOKafkaConsumer,
    store: RedisStore,
    partitions: list[TopicPartition],
    batch: int,
    parent: int | None = None,
) -> Progress:
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    starts = await consumer.beginning_offsets(partitions)
    ends = await consumer.end_offsets(partitions)
    progress = Progress(sum(ends[tp] - starts[tp] for tp in partitions), started=time.monotonic())
    writes: asyncio.Task[None] | None = None
    while True:  # to the end offsets, then until a poll finds nothing (the workers are stopped)
        if parent is not None and os.getppid() != parent:
            raise SystemExit("rebuild: the parent process is gone; stopping")
        fetched = await consumer.getmany(timeout_ms=1000, max_records=batch)
        if not any(fetched.values()):
            if all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
                break
            continue
        items: list[Restored] = []
        for records in fetched.values():
            items += _items(records, progress)
        if writes is not None:
            await writes  # one batch is written while the next is read and parsed
        writes = asyncio.create_task(store.restore(items))
        progress.restored += len(items)
        progress.show()
    if writes is not None:
        await writes
    progress.finished = time.monotonic()
    progress.show(final=True)
    return progress


def _items(records: Sequence[ConsumerRecord[bytes, bytes]], progress: Progress) -> list[Restored]:
    out: list[Restored] = []
    for record in records:
        progress.read += 1
        try:
            item = restored(record.value or b"")
        except (ValueError, KeyError, TypeError) as exc:
            progress.unstamped += 1
            if progress.unstamped <= 3:
                log.error(
                    "cannot restore from %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc
                )
            continue
        if item is not None:
            out.append(item)
    return out


def run_rebuild(jobs: int = 1) -> int:
    """CLI entry: exit 0 once the marker is written, 1 if the rebuild is incomplete."""
    settings = load_settings()
    log.info("rebuild: %s", settings.endpoints())
    try:
        asyncio.run(rebuild(settings, jobs=jobs))
    except RebuildIncomplete as exc:
        print(f"rebuild: incomplete: {exc}", file=sys.stderr)
        return 1
    return 0
