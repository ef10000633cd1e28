"""Composition root: `create_app()` wires settings, policies, Redis, Kafka, the handler, metrics and
health into one FastStream ASGI application. `python -m worker run` serves its health routes at once
and starts it, until SIGTERM/SIGINT (`serve`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import uvloop
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.middlewares import AckPolicy
from prometheus_client import CollectorRegistry
from redis.exceptions import RedisError

from contracts.inbound import FacilityRegistered
from worker.adapters.redis_client import state_store
from worker.adapters.redis_durability import DurabilityError
from worker.kafka import clients
from worker.kafka.asyncapi import specification
from worker.kafka.handler import BatchHandler, CommitOnRevoke
from worker.kafka.marking import Marking, StateRefused, committed_offsets
from worker.kafka.publisher import Publisher
from worker.kafka.readiness import Startup, readiness_checks
from worker.kafka.reference import ReferenceFeed
from worker.kafka.topics import ensure_topics
from worker.ops.health import health_routes
from worker.ops.metrics import WorkerMetrics
from worker.ops.serving import bound_port, not_ready, start_server, stop_on_signals, wait_started
from worker.runtime import settle_gc
from worker.settings import Settings, load_settings
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


async def _until_done(
    what: str, action: Callable[[], Awaitable[None]], settings: Settings, startup: Startup
) -> None:
    """Start-up steps wait for Redis and Kafka to answer, rather than failing the process (up to
    WORKER_STARTUP_TIMEOUT_SECONDS, see `serve`)."""
    startup.step = what
    delay = 0.5
    while True:
        try:
            await action()
            return
        except (RedisError, KafkaError, OSError) as exc:
            log.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_seconds)


def create_app(settings: Settings | None = None) -> AsgiFastStream:
    settings = settings or Settings()
    registry = CollectorRegistry() if settings.metrics_enabled else None
    metrics = WorkerMetrics(registry) if registry is not None else None
    startup = Startup()
    policies = settings.policies()
    facilities: dict[str, FacilityRegistered] = {}
    store = state_store(settings, durable=True)
    publisher = Publisher(settings)
    marking = Marking(store)
    timing = None
    if metrics is not None:
        decide, redis = metrics.decide_seconds, metrics.redis_seconds

        def timing(step: str, seconds: float) -> None:
            (decide if step == "decide" else redis.labels(step)).observe(seconds)

    settler = Settler(store, policies, facilities, stamp_state=True, timing=timing)
    handler = BatchHandler(settler, publisher, settings, marking, metrics)
    feed = ReferenceFeed(settings, store, facilities, publisher, marking)

    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        graceful_timeout=settings.graceful_timeout_seconds,
        logger=logging.getLogger("worker.faststream"),
        log_level=logging.DEBUG,  # FastStream's per-batch "Received/Processed" lines
        client_id="claims-worker",
        security=clients.security(settings),
        middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name="claims-worker")]
        if registry is not None
        else [],
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
        include_in_schema=False,  # its typed twin is in worker.kafka.asyncapi
    )

    @subscriber
    async def settle_batch(message: KafkaMessage) -> None:  # the decoder's output, not injected
        await handler.handle(message.raw_message, message.consumer)

    checks = readiness_checks(startup, store, publisher, feed, handler)
    if metrics is not None:
        metrics.not_committing.set_function(handler.not_committing_seconds)
        metrics.lag(handler.lag)
    app = AsgiFastStream(
        broker,
        asgi_routes=health_routes(checks, registry),
        logger=logging.getLogger("worker.app"),
        specification=specification(settings),  # contracts/asyncapi.json; not served
    )

    async def redis_ready() -> None:
        await store.redis.ping()
        await store.load_scripts()
        await store.check_durability()

    async def topics_ready() -> None:
        if settings.create_topics:
            await ensure_topics(settings)

    @app.on_startup
    async def prepare() -> None:
        await _until_done("connecting to Redis", redis_ready, settings, startup)  # DurabilityError: refused
        if store.durability.level == "none":
            log.warning(
                "WORKER_REDIS_DURABILITY=none: answers are published before Redis has the state on disk; "
                "a Redis crash can lose settled claims (use local or replicas:N in production)"
            )
        await _until_done("preparing topics", topics_ready, settings, startup)
        committed: dict[tuple[str, int], tuple[int, str]] = {}

        async def read_committed() -> None:
            committed.update(await committed_offsets(settings))

        await _until_done("reading the consumer group's committed offsets", read_committed, settings, startup)
        await marking.establish(committed)  # never consume on lost state: StateRefused (worker/marker.py)
        await _until_done("starting the producer", publisher.start, settings, startup)
        # reference data first: no claim is judged against a partial registry
        await _until_done("loading reference data", feed.bootstrap, settings, startup)
        feed.follow()
        settle_gc()
        startup.step = "joining the consumer group"

    @app.after_startup
    async def ready() -> None:
        startup.done = True
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
        log.info(
            "stopped after %d batches, %d records",
            handler.batches,
            handler.records,
            extra={"batches": handler.batches, "records": handler.records},
        )

    app.context.set_global("handler", handler)
    app.context.set_global("startup", startup)
    return app


async def serve(app: AsgiFastStream, settings: Settings) -> int:
    """Serve `/livez`, `/readyz` and `/metrics` from the first moment, start the worker, and run it
    until SIGTERM/SIGINT; then land the batches in the air and stop. Exit status: 0 after a
    signal, 2 for a refused start (one line says why), 1 when not started within
    WORKER_STARTUP_TIMEOUT_SECONDS (Redis or Kafka never answered)."""
    stop = stop_on_signals()
    server, serving = await start_server(app, settings.health_host, settings.health_port, lifespan="off")
    if serving.done():  # e.g. the port is taken
        log.critical(
            "not starting: health port %s:%d unavailable", settings.health_host, settings.health_port
        )
        return 2
    port = bound_port(server)
    log.info(
        "health on %s:%d (/livez /readyz /metrics); %s", settings.health_host, port, settings.endpoints()
    )
    code = 0
    try:
        started = await wait_started(app.start(), stop, settings.startup_timeout_seconds)
        if started:
            await stop.wait()
        elif started is None:
            code = not_ready(log, settings.startup_timeout_seconds, f"still {app_startup_step(app)}")
    except (DurabilityError, StateRefused) as exc:  # the message says why and what to change
        log.critical("not starting: %s", exc)
        code = 2
    finally:
        await app.stop()
        server.should_exit = True
        await serving
    return code


def app_startup_step(app: AsgiFastStream) -> str:
    startup = app.context.get("startup")
    return startup.step if isinstance(startup, Startup) else "starting"


def run_worker() -> int:
    """Run on uvloop (libuv's event loop; the worker is I/O- and loop-bound) until SIGTERM/SIGINT."""
    settings = load_settings(policies=True)
    return uvloop.run(serve(create_app(settings), settings))
