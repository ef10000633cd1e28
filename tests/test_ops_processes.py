"""Operations (issue #11) through real processes: the worker's health routes tell the truth when
Redis or Kafka is down, its metrics count what it did without ids, no log line of the worker or the
gateway carries a member id, claim id or birth date it was sent, and every process speaks TLS to
Kafka when told to."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from tests.gateway_support import GatewayProcess, auth
from tests.kafka_support import Cluster, fresh_world, split_reference
from worker.local.kafka_io import WorkerProcess
from worker.local.services import Broker, RedisService, free_port, start_broker, start_redis

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).parent / "golden"
_counter = itertools.count()


@pytest_asyncio.fixture
async def private_redis() -> AsyncIterator[RedisService]:
    service = start_redis(use_env=False)
    yield service
    service.close()


@pytest_asyncio.fixture
async def world(broker: Broker, private_redis: RedisService, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await fresh_world(broker.bootstrap_servers, private_redis.url, f"ops{next(_counter)}", tmp_path)
    yield cluster
    cluster.close()


def health_url(process: WorkerProcess, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"health on [0-9.]+:(\d+)", process.log_text())
        if found:
            return f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.05)
    raise TimeoutError(process.log_text()[-2000:])


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(url)


async def until_ready(url: str, want: int, within: float = 60) -> httpx.Response:
    deadline = time.monotonic() + within
    response = await get(url + "/readyz")
    while response.status_code != want and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        response = await get(url + "/readyz")
    assert response.status_code == want, response.text
    return response


def _personal(lines: list[bytes]) -> set[str]:
    """The ids and birth dates the inputs carry (what no log line may show)."""
    found: set[str] = set()
    for line in lines:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(message, dict):  # the examples hold some malformed messages on purpose
            continue
        for key in ("member_id", "claim_id", "request_id", "birth_date", "original_claim_id"):
            value = message.get(key)
            if isinstance(value, str) and len(value) >= 3:
                found.add(value)
    return found


def _leaks(log: str, personal: set[str]) -> list[str]:
    out = []
    for line in log.splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            out.append(f"not a JSON log line: {line[:120]}")
            continue
        if record.get("level") == "DEBUG":
            continue
        text = orjson.dumps(record).decode()
        out += [
            f"{value!r} in {text[:200]}" for value in personal if re.search(rf"\b{re.escape(value)}\b", text)
        ]
    return out


async def test_health_metrics_and_logs_of_a_worker_through_the_examples(
    world: Cluster, private_redis: RedisService
) -> None:
    worker = world.worker()
    worker.start(wait_ready=0)
    url = health_url(worker)
    assert (await get(url + "/livez")).status_code == 204
    await until_ready(url, 204)
    sent: list[bytes] = []
    for path in sorted(EXAMPLES.glob("*.jsonl")):
        if path.stem.endswith("expected"):
            continue
        lines = path.read_bytes().splitlines()
        reference, rest = split_reference(lines)
        await world.publish(reference)
        await world.publish_in_order(rest)
        sent += lines
    metrics = (await get(url + "/metrics")).text
    assert re.search(r'claims_worker_answers_total\{outcome="applied",type="claim.settled"\} [1-9]', metrics)
    assert re.search(r'claims_worker_rejections_total\{code="[A-Z_]+"\} [1-9]', metrics)
    assert re.search(r"claims_worker_publish_to_answer_seconds_count [1-9]", metrics)
    assert re.search(r'claims_worker_consumer_lag\{partition="\d+",topic="[^"]+"\} 0', metrics)
    assert "faststream_received_messages_total" in metrics
    for _ in range(300):  # the last batch's commit may still be on its way; then the worker is idle
        if "claims_worker_not_committing_seconds 0.0" in metrics:
            break
        await asyncio.sleep(0.1)
        metrics = (await get(url + "/metrics")).text
    assert "claims_worker_not_committing_seconds 0.0" in metrics
    await asyncio.sleep(1.5)  # idle stays 0: a finished flight does not count as "not committing"
    assert "claims_worker_not_committing_seconds 0.0" in (await get(url + "/metrics")).text
    personal = _personal(sent)
    assert personal and not [v for v in personal if re.search(rf'"{re.escape(v)}"', metrics)]

    private_redis.close()  # Redis goes away: not ready, and says why
    response = await until_ready(url, 503)
    assert "Redis is not reachable" in response.text
    assert (await get(url + "/livez")).status_code == 204
    assert worker.terminate() == 0
    assert _leaks(worker.log_text(), personal) == []


async def test_readyz_says_what_start_up_waits_for_and_a_start_that_never_ends_exits_1(
    world: Cluster, tmp_path: Path
) -> None:
    dead = free_port()
    worker = world.worker(REDIS_URL=f"redis://127.0.0.1:{dead}/0", WORKER_STARTUP_TIMEOUT_SECONDS="6")
    worker.start(wait_ready=0)
    url = health_url(worker)
    response = await until_ready(url, 503, within=5)
    assert "start-up: connecting to Redis" in response.text
    assert worker.process is not None and worker.process.wait(30) == 1
    assert "WORKER_STARTUP_TIMEOUT_SECONDS" in worker.log_text()


async def test_a_gateway_never_ready_exits_1(world: Cluster) -> None:
    dead = free_port()
    gateway = GatewayProcess(
        world, REDIS_URL=f"redis://127.0.0.1:{dead}/0", WORKER_STARTUP_TIMEOUT_SECONDS="4"
    )
    gateway.start(wait_ready=0)
    assert gateway.process is not None and gateway.process.wait(30) == 1
    assert (
        "WORKER_STARTUP_TIMEOUT_SECONDS" in gateway.log_text()
        and "Redis is not reachable" in gateway.log_text()
    )


async def test_readyz_when_kafka_goes_away(private_redis: RedisService, tmp_path: Path) -> None:
    own = start_broker(str(tmp_path))
    try:
        world = await fresh_world(own.bootstrap_servers, private_redis.url, "opsk", tmp_path)
        worker = world.worker()
        worker.start()
        url = health_url(worker)
        await until_ready(url, 204)
        own.close()
        assert "Kafka is not reachable" in (await until_ready(url, 503, within=60)).text
        world.close()
    finally:
        own.close()


async def test_the_gateway_logs_no_personal_data(world: Cluster) -> None:
    lines = (EXAMPLES / "pooling-nanchang.jsonl").read_bytes().splitlines()
    reference, rest = split_reference(lines)
    await world.publish(reference)
    world.worker().start()
    gateway = GatewayProcess(world, WORKER_LOG_LEVEL="INFO")
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    claims = [orjson.loads(x) for x in rest if b'"claim.submitted"' in x]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        for claim in claims:
            body = {k: v for k, v in claim.items() if k != "type"}
            await http.post("/v1/claims/presettle", json=body, headers=auth(claim["facility_id"]))
            settled = await http.post("/v1/claims", json=body, headers=auth(claim["facility_id"]))
            assert settled.status_code < 500, settled.text
            await http.get(f"/v1/claims/{claim['claim_id']}", headers=auth(claim["facility_id"]))
        await http.post("/v1/claims", content=b"{not json", headers=auth("NC-H3"))
        metrics = (await http.get("/metrics")).text
    counted = [x for x in metrics.splitlines() if x.startswith("claims_gateway_requests_total")]
    assert re.search(
        r'claims_gateway_requests_total\{method="POST",route="/v1/claims",status="\d+"\} [1-9]', metrics
    ), counted
    assert 'route="/v1/claims/{claim_id}"' in metrics
    personal = _personal(lines)
    assert gateway.terminate() == 0
    assert _leaks(gateway.log_text(), personal) == []
    assert _leaks(world.workers[0].log_text(), personal) == []


class _Spy:
    """A TCP listener that keeps the first bytes of every connection: a TLS client opens with a
    handshake record (0x16 0x03 ...), a plaintext Kafka client with a request size."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.first: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                self.first.append(conn.recv(3))
            conn.close()


@pytest.fixture
def spy() -> Iterator[_Spy]:
    listener = _Spy()
    yield listener
    listener.sock.close()


@pytest.mark.parametrize("command", ["run", "gateway", "rebuild"])
def test_every_process_speaks_tls_to_kafka_when_told(
    command: str, spy: _Spy, private_redis: RedisService, tmp_path: Path
) -> None:
    env: dict[str, Any] = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{spy.port}",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "claims",
        "KAFKA_SASL_PASSWORD": "pw-that-must-not-be-logged",
        "REDIS_URL": private_redis.url,
        "WORKER_GATEWAY_JWT_SECRET": "x" * 32,
        "WORKER_GATEWAY_PORT": str(free_port()),
        "WORKER_LOG_LEVEL": "DEBUG",
    }
    process = WorkerProcess(env, tmp_path / f"{command}.log", command=command).start(wait_ready=0)
    try:
        deadline = time.monotonic() + 30
        while not spy.first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spy.first, process.log_text()[-2000:]
        assert all(first[:2] == b"\x16\x03" for first in spy.first), spy.first
    finally:
        process.close()
    assert "pw-that-must-not-be-logged" not in process.log_text()
