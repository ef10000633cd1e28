"""`python -m worker records`: the settlement-records service.

Consumes `claims.settled`, `claims.rejected` and `accounts.ledger` (and the member and facility
registries the statistics group by) into PostgreSQL, one row per event. Exactly once: the rows and the
partitions' next offsets are committed in one database transaction (`RecordsWriter`); on every
assignment the consumer seeks to the offsets stored there, so a SIGKILL at any point neither loses
nor doubles a row. Kafka's committed offsets are written after the database's, for lag dashboards
only. Serves `/livez`, `/readyz` and `/metrics` on `WORKER_HEALTH_PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

import asyncpg
import uvloop
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from prometheus_client import CollectorRegistry

from worker.kafka import clients
from worker.ops.health import missing
from worker.ops.metrics import RecordsMetrics
from worker.ops.serving import bound_port, not_ready, start_server, stop_on_signals, wait_started
from worker.records import rows as records
from worker.records.database import DatabaseError, dsn, migrate
from worker.records.writer import Fenced, RecordsWriter
from worker.settings import Settings, load_settings

log = logging.getLogger("worker.records")


def roles(settings: Settings) -> dict[str, str]:
    """Topic → what its records are (see `worker.records.rows.add`)."""
    return {
        settings.topic_settled: "settled",
        settings.topic_rejected: "rejected",
        settings.topic_ledger: "ledger",
        settings.topic_profiles: "profiles",
        settings.topic_facilities: "facilities",
    }


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    """On every assignment, continue from the offsets stored with the rows, not Kafka's. The listener
    only raises a flag: the service's one task, which owns the database connection, seeks before it
    writes anything more (and drops a batch fetched before the seek)."""

    def __init__(self, service: RecordsService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.service.reseek = True

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.service.reseek = True


class RecordsService:
    def __init__(self, settings: Settings, metrics: RecordsMetrics | None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.roles = roles(settings)
        self.connection: asyncpg.Connection | None = None
        self.writer: RecordsWriter | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()
        self.reseek = True
        """Seek to the stored offsets before the next write (set on every assignment and after a
        database failure)."""
        self.written = 0
        if metrics is not None:
            metrics.lag(self._lag)

    async def connect(self) -> None:
        """Database (migrated) and Kafka, retrying until both answer."""
        delay = 0.5
        while True:
            try:
                if self.connection is None:
                    await self._open(migrate_first=True)
                if self.consumer is None:
                    consumer = clients.consumer(
                        self.settings,
                        group_id=self.settings.records_group,
                        client_id="claims-records",
                        enable_auto_commit=False,
                        auto_offset_reset="earliest",
                        fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
                        max_partition_fetch_bytes=self.settings.fetch_max_partition_bytes,
                    )
                    try:
                        await consumer.start()
                    except Exception:
                        await consumer.stop()
                        raise
                    consumer.subscribe(list(self.roles), listener=_SeekToStored(self))
                    self.consumer = consumer
                return
            except (asyncio.CancelledError, DatabaseError):
                raise
            except Exception as exc:
                log.warning("records not ready (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)

    async def seek(self, partitions: list[TopicPartition]) -> None:
        assert self.writer is not None and self.consumer is not None
        stored = await self.writer.stored((tp.topic, tp.partition) for tp in partitions)
        for tp in partitions:
            offset = stored[(tp.topic, tp.partition)]
            if offset is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        if partitions:
            log.info(
                "assigned %d partitions; continuing from the offsets stored with the rows", len(partitions)
            )
            if not self.ready.is_set():
                self.ready.set()
                log.info("ready: %d partitions assigned", len(partitions))

    async def run(self, stop: asyncio.Event) -> None:
        """Write batches until `stop` is set (the batch in hand is finished first). A database that
        fails is reconnected with back-off; the partitions then continue from the stored offsets."""
        assert self.consumer is not None
        delay = 0.5
        while not stop.is_set():
            try:
                if self.reseek:
                    self.reseek = False
                    await self.seek(list(self.consumer.assignment()))
                batch = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.settings.records_batch_size
                )
                if batch and not self.reseek:  # a batch fetched across a rebalance is fetched again
                    await self._write(batch)
                delay = 0.5
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("records database failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                self.reseek = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)
                await self._reconnect()

    async def _reconnect(self) -> None:
        """A fresh connection and writer (what the old writer expected is read again by the seek)."""
        if self.connection is not None and not self.connection.is_closed():
            return
        with contextlib.suppress(Exception):
            if self.connection is not None:
                self.connection.terminate()
        try:
            await self._open(migrate_first=False)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("records database not reachable (%s)", type(exc).__name__)

    async def _open(self, migrate_first: bool) -> None:
        """Connect (migrating at start) and put a writer on the connection."""
        connection = await asyncpg.connect(dsn(self.settings), command_timeout=120)
        if migrate_first:
            await migrate(connection)
        self.connection = connection
        self.writer = RecordsWriter(connection, self.settings.records_group)

    async def _write(self, batch: dict[TopicPartition, list[Any]]) -> None:
        assert self.consumer is not None and self.writer is not None
        started = time.perf_counter()
        out = records.Rows()
        next_offsets: dict[tuple[str, int], int] = {}
        for tp, messages in batch.items():
            role = self.roles[tp.topic]
            for message in messages:
                if message.value is None and role in ("profiles", "facilities"):
                    continue  # a tombstone on a compacted registry: nothing to record
                records.add(
                    out, role, tp.topic, tp.partition, message.offset, message.timestamp, message.value
                )
            next_offsets[(tp.topic, tp.partition)] = messages[-1].offset + 1
        crash = self._crash_before_commit if self.settings.fault_crash_before_commit else None
        try:
            await self.writer.write(out, next_offsets, before_commit=crash)
        except Fenced as exc:
            log.warning("batch not written: %s; seeking to the stored offsets", exc)
            if self.metrics is not None:
                self.metrics.fenced.inc()
            self.reseek = True
            return
        self.written += len(out)
        if out.unreadable:
            log.warning("%d records could not be read; kept in unreadable_events", len(out.unreadable))
        if self.metrics is not None:
            for table, table_rows in out.tables.items():
                if table_rows:
                    self.metrics.rows.labels(table).inc(len(table_rows))
            self.metrics.unreadable.inc(len(out.unreadable))
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_records.observe(len(out))
        log.debug("wrote %d rows", len(out))
        with contextlib.suppress(Exception):  # advisory only: the database holds the offsets
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in next_offsets.items()})

    @staticmethod
    def _crash_before_commit() -> None:
        """Fault injection (WORKER_FAULT_CRASH_BEFORE_COMMIT): die with the rows copied, uncommitted."""
        log.warning("fault injection: SIGKILL before the database commit")
        os.kill(os.getpid(), signal.SIGKILL)

    def _lag(self) -> list[tuple[str, int, int]]:
        if self.consumer is None or self.writer is None:
            return []
        out = []
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            stored = self.writer.expected.get((tp.topic, tp.partition)) or 0
            if end is not None:
                out.append((tp.topic, tp.partition, max(end - stored, 0)))
        return out

    async def database_connected(self) -> str | None:
        if self.connection is None or self.connection.is_closed():
            return "the records database is not connected"
        return None

    async def partitions_assigned(self) -> str | None:
        if self.consumer is None:
            return "Kafka is not connected"
        return None if self.consumer.assignment() else "no partitions assigned"

    async def missing(self) -> list[str]:
        return await missing([self.database_connected, self.partitions_assigned])

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.connection is not None:
            await self.connection.close()


def run_records(settings: Settings | None = None) -> int:
    """Exit status: 0 after SIGTERM/SIGINT, 1 when not ready within WORKER_STARTUP_TIMEOUT_SECONDS,
    2 when DATABASE_URL is unset or the health port is unavailable."""
    settings = settings or load_settings()
    if settings.database_url is None:
        log.critical("not starting: DATABASE_URL is not set (the records database)")
        return 2
    log.info("records starting: %s; group %s", settings.endpoints(), settings.records_group)
    return int(uvloop.run(_serve(settings)))


async def _serve(settings: Settings) -> int:
    from worker.ops.health import health_app

    stop = stop_on_signals()
    registry = CollectorRegistry() if settings.metrics_enabled else None
    service = RecordsService(settings, RecordsMetrics(registry) if registry is not None else None)
    server, serving = await start_server(
        health_app([service.database_connected, service.partitions_assigned], registry),
        settings.health_host,
        settings.health_port,
    )
    if serving.done():
        log.critical("not starting: port %s:%d unavailable", settings.health_host, settings.health_port)
        return 2
    log.info("health on %s:%d", settings.health_host, bound_port(server))
    code = 0
    running: asyncio.Task[None] | None = None
    try:
        started = await wait_started(service.connect(), stop, settings.startup_timeout_seconds)
        if started:
            running = asyncio.create_task(service.run(stop), name="records")
            await asyncio.wait(
                {running, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            stop.set()
            await running
        elif started is None:
            code = not_ready(log, settings.startup_timeout_seconds, "; ".join(await service.missing()))
    except DatabaseError as exc:
        log.critical("not starting: %s", exc)
        code = 2
    finally:
        await service.close()
        server.should_exit = True
        await serving
    log.info("records stopped after writing %d rows", service.written)
    return code
