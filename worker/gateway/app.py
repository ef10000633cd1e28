"""Composition root of the gateway: `create_gateway()` wires settings, policies, Redis, Kafka and the
counter into one FastAPI app; the routes below only translate HTTP to `Counter` calls and back.
`python -m worker gateway` serves it with uvicorn on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import uvloop
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.routing import Route

from contracts import openapi
from contracts.inbound import FacilityRegistered
from contracts.types import ID_RE
from worker.adapters.redis_client import state_store
from worker.adapters.request_log import RequestLog
from worker.clock import now_text
from worker.gateway.auth import TokenVerifier, Unauthorized
from worker.gateway.counter import Answer, Counter, problem
from worker.gateway.replies import ReplyRouter
from worker.gateway.statements import Statements
from worker.kafka import clients
from worker.kafka.reference import ReferenceFeed
from worker.ops.health import CHECK_TIMEOUT_SECONDS, missing
from worker.ops.metrics import GatewayMetrics, HttpMetricsMiddleware
from worker.ops.serving import not_ready, start_server, stop_on_signals, wait_started
from worker.runtime import settle_gc
from worker.settings import Settings, load_settings

log = logging.getLogger("worker.gateway")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*([^,;\s]*)", re.IGNORECASE)
MAX_WAIT_SECONDS = 30


def wait_seconds(prefer: str | None, default: float) -> float:
    """`Prefer: wait=N` (RFC 7240): N clamped to 0…30; not an integer → the default."""
    if prefer:
        match = _PREFER_WAIT.search(prefer)
        if match and re.fullmatch(r"[+-]?\d{1,9}", match.group(1)):
            return float(min(max(int(match.group(1)), 0), MAX_WAIT_SECONDS))
    return default


def _respond(answer: Answer) -> Response:
    return Response(answer.body, answer.status, answer.headers, media_type=answer.media_type)


class Gateway:
    """The running parts, created in the lifespan (aiokafka clients belong to the running loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(
            settings.gateway_jwt_secret.get_secret_value() if settings.gateway_jwt_secret else None,
            settings.gateway_jwt_public_key,
        )
        self.policies = settings.policies()
        self.facilities: dict[str, FacilityRegistered] = {}
        self.store = state_store(settings)
        self.replies = ReplyRouter(settings)
        self.feed = ReferenceFeed(settings, None, self.facilities, None)
        self.requests = RequestLog(
            self.store.redis, settings.gateway_request_log_hours, settings.redis_cluster
        )
        self.statements = Statements(settings, self.replies.published)
        self.producer: AIOKafkaProducer | None = None
        self.counter: Counter | None = None
        self._starting: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once connected (the start-up timeout waits for it)

    async def start(self) -> None:
        """Connect in the background, retrying, so that the process serves `/livez` and an honest
        `/readyz` while Kafka or Redis are still coming up."""
        self._starting = asyncio.create_task(self._connect(), name="gateway-start")

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                await self.store.redis.ping()
                await self.store.load_scripts()
                await self.store.adopt_marker()  # the state's owner-index layout
                if self.producer is None:
                    producer = clients.producer(
                        self.settings,
                        acks="all",
                        linger_ms=self.settings.gateway_linger_ms,
                        enable_idempotence=self.settings.producer_idempotence,
                        client_id="claims-gateway",
                    )
                    try:
                        await producer.start()
                    except Exception:
                        await producer.stop()
                        raise
                    self.producer = producer
                if not self.replies.ready:
                    await self.replies.start()
                if not self.feed.bootstrapped:
                    await self.feed.bootstrap()
                    self.feed.follow()
                self.requests.start()
                settle_gc()
                self.counter = Counter(
                    self.settings,
                    self.store,
                    self.policies,
                    self.facilities,
                    self.producer,
                    self.replies,
                    self.requests,
                )
                self.ready.set()
                log.info(
                    "ready: %d facilities; policies %s",
                    len(self.facilities),
                    ", ".join(sorted(self.policies.ids)),
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("gateway not ready (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_seconds)

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        await self.feed.stop()
        await self.requests.stop()
        await self.replies.stop()
        await self.statements.close()
        if self.producer is not None:
            await self.producer.stop()
        await self.store.redis.aclose()

    async def missing(self) -> list[str]:
        """What `/readyz` lacks: nothing once Kafka and Redis answer and the registry is read."""
        return await missing([self._redis_reachable, self._kafka_reachable, self._registry_read])

    async def _redis_reachable(self) -> str | None:
        try:
            await asyncio.wait_for(self.store.redis.ping(), CHECK_TIMEOUT_SECONDS)
        except Exception:
            return "Redis is not reachable"
        return None

    async def _kafka_reachable(self) -> str | None:
        if self.producer is None or not self.replies.ready:
            return "Kafka is not connected"
        try:
            await asyncio.wait_for(self.producer.client.fetch_all_metadata(), CHECK_TIMEOUT_SECONDS)
        except Exception:
            return "Kafka is not reachable"
        return None

    async def _registry_read(self) -> str | None:
        return (
            None
            if self.feed.bootstrapped
            else f"{self.settings.topic_facilities} not read to its end offsets"
        )


def create_gateway(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    gateway = Gateway(settings)
    document = orjson.dumps(openapi.document())

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="claims gateway", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.gateway = gateway

    def facility_of(request: Request) -> str:
        return gateway.verifier.facility(request.headers.get("authorization"))

    def counter() -> Counter:
        if gateway.counter is None:
            raise _NotReady
        return gateway.counter

    Handler = Callable[[Request], Awaitable[Answer]]

    def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Token first, then readiness; problem+json for both (and for any bug: never a bare 500)."""

        async def route(request: Request) -> Response:
            try:
                return _respond(await handler(request))
            except Unauthorized as exc:
                return _respond(problem(401, "Unauthorized", str(exc), **{"WWW-Authenticate": "Bearer"}))
            except _NotReady:
                return _respond(
                    problem(503, "Service Unavailable", "the gateway is starting", **{"Retry-After": "1"})
                )

        return route

    async def presettle(request: Request) -> Answer:
        facility = facility_of(request)
        desk = counter()
        now = now_text()
        read = desk.read_claim(await request.body(), facility, now)
        if isinstance(read, Answer):
            return read
        return await desk.quote(read[0], now)

    async def settle(request: Request) -> Answer:
        facility = facility_of(request)
        desk = counter()
        read = desk.read_claim(await request.body(), facility, now_text())
        if isinstance(read, Answer):
            return read
        wait = wait_seconds(request.headers.get("prefer"), settings.gateway_wait_seconds)
        return await desk.submit(read[0], read[1], facility, wait)

    async def reverse(request: Request) -> Answer:
        facility = facility_of(request)
        desk = counter()
        claim_id = request.path_params["claim_id"]
        if not ID_RE.fullmatch(claim_id):
            return problem(404, "Not Found", "not a claim id")
        read = desk.read_reversal(claim_id, await request.body(), facility, now_text())
        if isinstance(read, Answer):
            return read
        wait = wait_seconds(request.headers.get("prefer"), settings.gateway_wait_seconds)
        return await desk.reverse(read[0], read[1], facility, wait)

    async def status(request: Request) -> Answer:
        facility = facility_of(request)
        desk = counter()
        claim_id = request.path_params["claim_id"]
        if not ID_RE.fullmatch(claim_id):
            return problem(404, "Not Found", f"no claim {claim_id!r} of this facility")
        return await desk.status(claim_id, facility)

    async def statement(request: Request) -> Answer:
        facility = facility_of(request)
        counter()  # ready: following the outcome topics (for `lag`)
        return await gateway.statements.statement(facility, request.query_params)

    async def reconcile(request: Request) -> Answer:
        facility = facility_of(request)
        counter()
        return await gateway.statements.reconcile(facility, await request.body())

    # Plain Starlette routes: the handlers read the raw body and answer bytes, so FastAPI's
    # per-request dependency and validation machinery would only cost (~13% of a request's CPU).
    app.router.routes += [
        Route("/v1/claims/presettle", guarded(presettle), methods=["POST"]),
        Route("/v1/claims", guarded(settle), methods=["POST"]),
        Route("/v1/claims/{claim_id}/reversal", guarded(reverse), methods=["POST"]),
        Route("/v1/claims/{claim_id}", guarded(status), methods=["GET"]),
        Route("/v1/statements", guarded(statement), methods=["GET"]),
        Route("/v1/statements/reconcile", guarded(reconcile), methods=["POST"]),
    ]

    @app.get("/livez")
    async def livez() -> Response:
        return Response(status_code=204)

    @app.get("/readyz")
    async def readyz() -> Response:
        lacking = await gateway.missing()
        if lacking:
            return _respond(problem(503, "Service Unavailable", "; ".join(lacking), **{"Retry-After": "1"}))
        return Response(status_code=204)

    @app.get("/openapi.json")
    async def openapi_json() -> Response:
        return Response(document, media_type="application/json")

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> Response:  # a bug answers problem+json, logged
        log.exception("request failed: %s", type(exc).__name__)
        return _respond(problem(500, "Internal Server Error", "the gateway failed on this request"))

    if settings.metrics_enabled:
        registry = CollectorRegistry()
        templates = {r.endpoint: r.path for r in app.router.routes if isinstance(r, Route)}
        app.add_middleware(HttpMetricsMiddleware, metrics=GatewayMetrics(registry), templates=templates)

        async def metrics(_: Request) -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        app.router.routes.append(Route("/metrics", metrics, methods=["GET"]))

    return app


class _NotReady(Exception):
    pass


def run_gateway(settings: Settings | None = None) -> int:
    """Serve until SIGTERM/SIGINT (requests in hand are answered first). Exit status: 0 after a
    signal, 1 when not ready within WORKER_STARTUP_TIMEOUT_SECONDS, 2 when the port is unavailable."""
    settings = settings or load_settings()
    log.info(
        "gateway starting: %s; serving on %s:%d",
        settings.endpoints(),
        settings.gateway_host,
        settings.gateway_port,
    )
    return int(uvloop.run(_serve(create_gateway(settings), settings)))


async def _serve(app: FastAPI, settings: Settings) -> int:
    stop = stop_on_signals()
    server, serving = await start_server(
        app,
        settings.gateway_host,
        settings.gateway_port,
        http="httptools",
        timeout_graceful_shutdown=int(settings.graceful_timeout_seconds),
    )
    if serving.done():
        log.critical("not starting: port %s:%d unavailable", settings.gateway_host, settings.gateway_port)
        return 2
    gateway: Gateway = app.state.gateway
    code = 0
    started = await wait_started(gateway.ready.wait(), stop, settings.startup_timeout_seconds)
    if started:
        await stop.wait()
    elif started is None:
        code = not_ready(log, settings.startup_timeout_seconds, "; ".join(await gateway.missing()))
    server.should_exit = True
    await serving
    return code
