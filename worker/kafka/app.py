"""Composition root: `create_app()` wires settings, policies, Redis, Kafka and the handler into one
FastStream application. `python -m worker run` runs it until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import uvloop
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from redis.exceptions import RedisError

from contracts.inbound import FacilityRegistered
from worker.adapters.redis_client import connect
from worker.adapters.redis_durability import Durability, DurabilityError
from worker.adapters.redis_store import RedisStore
from worker.domain.policy import load_policies
from worker.kafka.handler import BatchHandler, CommitOnRevoke
from worker.kafka.marking import Marking, StateRefused, committed_offsets
from worker.kafka.publisher import Publisher
from worker.kafka.reference import ReferenceFeed
from worker.kafka.topics import ensure_topics
from worker.runtime import settle_gc
from worker.settings import Settings
from worker.settlement import Settler

log = logging.getLogger("worker")


async def _whole_message(message: KafkaMessage) -> KafkaMessage:
    """The handler's input is the batch message itself: its records (topic, partition, offset,
    key, raw value) and the consumer to commit through. Nothing is json-parsed here, and no
    dependency injection runs per batch (FastStream resolves injected context in a worker thread,
    a thread hop per batch). A coroutine on purpose: a plain-function decoder runs in a thread too."""
    return message


async def _records_only(
    records: tuple[ConsumerRecord[bytes, bytes], ...],
    original: Callable[[tuple[ConsumerRecord[bytes, bytes], ...]], Awaitable[KafkaMessage]],
) -> KafkaMessage:
    """FastStream's batch parser copies every record's headers into a new dict, for a handler that
    reads none of them (it takes the records themselves): let it parse the first record alone, for
    the message's metadata and consumer, and carry the whole batch as the raw message."""
    message = await original(records[:1])
    message.raw_message = records
    return message


async def _until_done(what: str, action: Callable[[], Awaitable[None]], settings: Settings) -> None:
    """Start-up steps wait for Redis and Kafka to answer, rather than failing the process."""
    delay = 0.5
    while True:
        try:
            await action()
            return
        except (RedisError, KafkaError, OSError) as exc:
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_seconds)


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    policies = load_policies()
    facilities: dict[str, FacilityRegistered] = {}
    store = RedisStore(
        connect(settings.redis_url, settings.redis_cluster),
        settings.answer_ttl_seconds,
        Durability.parse(settings.redis_durability, settings.redis_durability_timeout_ms),
    )
    publisher = Publisher(settings)
    marking = Marking(store)
    handler = BatchHandler(
        Settler(store, policies, facilities, stamp_state=True), publisher, settings, marking
    )
    feed = ReferenceFeed(settings, store, facilities, publisher, marking)

    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        graceful_timeout=settings.graceful_timeout_seconds,
        logger=logging.getLogger("worker.faststream"),
        log_level=logging.DEBUG,  # FastStream's per-batch "Received/Processed" lines
        client_id="claims-worker",
        apply_types=False,  # the handler gets the decoder's output as is (see _whole_message)
    )
    subscriber = broker.subscriber(
        settings.topic_claims,
        settings.topic_accounts,
        group_id=settings.consumer_group,
        batch=True,
        max_records=settings.poll_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.fetch_max_partition_bytes,
        ack_policy=AckPolicy.MANUAL,  # no auto-commit, no per-message ack: the handler commits offsets
        listener=CommitOnRevoke(handler, settings.graceful_timeout_seconds),
        parser=_records_only,
        decoder=_whole_message,
    )

    @subscriber
    async def settle_batch(message: KafkaMessage) -> None:  # the decoder's output, not injected
        await handler.handle(message.raw_message, message.consumer)

    app = FastStream(broker, logger=logging.getLogger("worker.app"))

    async def redis_ready() -> None:
        await store.redis.ping()
        await store.load_scripts()
        await store.check_durability()

    async def topics_ready() -> None:
        if settings.create_topics:
            await ensure_topics(settings)

    @app.on_startup
    async def prepare() -> None:
        await _until_done("connecting to Redis", redis_ready, settings)  # DurabilityError: refused
        if store.durability.level == "none":
            log.warning(
                "WORKER_REDIS_DURABILITY=none: answers are published before Redis has the state on disk; "
                "a Redis crash can lose settled claims (use local or replicas:N in production)"
            )
        await _until_done(f"preparing topics at {settings.kafka_bootstrap_servers}", topics_ready, settings)
        committed: dict[tuple[str, int], tuple[int, str]] = {}

        async def read_committed() -> None:
            committed.update(await committed_offsets(settings))

        await _until_done("reading the consumer group's committed offsets", read_committed, settings)
        await marking.establish(committed)  # never consume on lost state: StateRefused (worker/marker.py)
        await _until_done("starting the producer", publisher.start, settings)
        # reference data first: no claim is judged against a partial registry
        await _until_done("loading reference data", feed.bootstrap, settings)
        feed.follow()
        settle_gc()

    @app.after_startup
    async def ready() -> None:
        log.info(
            "ready: group %s consuming %s and %s; %d facilities, %d reference records loaded; policies %s",
            settings.consumer_group,
            settings.topic_claims,
            settings.topic_accounts,
            len(facilities),
            feed.loaded,
            ", ".join(sorted(policies.ids)),
        )

    @app.on_shutdown
    async def land() -> None:
        handler.stopping = True  # no new batch, and a failing one is given up rather than retried
        await handler.quiesce()  # batches in the air publish and commit while the consumer is open

    @app.after_shutdown
    async def close() -> None:
        await handler.quiesce()
        await feed.stop()
        await publisher.stop()
        await store.redis.aclose()
        log.info("stopped after %d batches, %d records", handler.batches, handler.records)

    app.context.set_global("handler", handler)
    return app


def run_worker() -> int:
    """Run until SIGTERM/SIGINT, on uvloop (libuv's event loop; the worker is I/O- and loop-bound).
    A refused start exits with status 2 and one clear line, not a traceback."""
    try:
        uvloop.run(create_app().run())
    except (DurabilityError, StateRefused) as exc:  # the message says why and what to change
        log.critical("not starting: %s", exc)
        return 2
    return 0
