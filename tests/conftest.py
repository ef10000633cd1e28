from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.builders import NANCHANG_FACILITIES, NANJING_FACILITIES, raw
from worker.domain.policy import PolicyBook, load_policies
from worker.replay import Replayer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "golden"
"""The conformance examples under the amended contract (a copy of ../shared/spec/examples-next, kept
here so that a clone with nothing beside it tests itself; `make check-examples` compares the two)."""


@pytest.fixture(scope="session")
def policies() -> PolicyBook:
    return load_policies()


class Harness:
    """Feeds wire dicts (or raw bytes) through replay and returns the decoded outbound events."""

    def __init__(self, policies: PolicyBook) -> None:
        self.replayer = Replayer(policies)
        self.send(*NANCHANG_FACILITIES, *NANJING_FACILITIES)

    def send(self, *messages: dict[str, Any] | bytes) -> list[dict[str, Any]]:
        out = io.BytesIO()
        lines = [m if isinstance(m, bytes) else raw(m) for m in messages]
        self.replayer.run(lines, out)
        return [orjson.loads(x) for x in out.getvalue().splitlines()]

    def one(self, message: dict[str, Any] | bytes) -> dict[str, Any]:
        events = self.send(message)
        assert len(events) == 1, events
        return events[0]


@pytest.fixture
def harness(policies: PolicyBook) -> Harness:
    return Harness(policies)


EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.jsonl") if not p.stem.endswith("expected"))


def normalise(event: Any) -> Any:
    """The comparison the spec allows (shared/tools/compare.py's rules): `*_at` fields dropped at any
    depth, no `event_id` on rejections, only the first reason's code, no dead-letter `error`."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if not k.endswith("_at")}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    out = walk(event)
    if not isinstance(out, dict):
        return out
    if out.get("type") in ("claim.rejected", "account.request_rejected"):
        out.pop("event_id", None)
    if isinstance(out.get("reasons"), list) and out["reasons"]:
        out["reasons"] = [{"code": out["reasons"][0].get("code")}]
    if out.get("type") == "dead_letter":
        out.pop("error", None)
    return out


def differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where `got` differs from `want`; fields only `got` has are allowed (consumers ignore them)."""
    if isinstance(want, dict) and isinstance(got, dict):
        found = []
        for key, value in want.items():
            if key not in got:
                found.append(f"{path}.{key}: missing")
            else:
                found += differences(value, got[key], f"{path}.{key}")
        return found
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: {len(want)} items expected, {len(got)} found"]
        return [
            d
            for i, (a, b) in enumerate(zip(want, got, strict=True))
            for d in differences(a, b, f"{path}[{i}]")
        ]
    return [] if want == got and type(want) is type(got) else [f"{path}: expected {want!r}, got {got!r}"]


def expected_events(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in (EXAMPLES / f"{name}.expected.jsonl").read_bytes().splitlines() if x]


def assert_matches_expected(name: str, actual: list[dict[str, Any]]) -> None:
    """`actual` equals NAME.expected.jsonl after the spec's normalisation."""
    expected = expected_events(name)
    assert len(actual) == len(expected)
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        found = differences(normalise(want), normalise(got))
        assert not found, f"{name} message {index}: {found[:3]}"


# ---------------------------------------------------------------- Redis (private redis-server)

from collections.abc import AsyncIterator, Iterator  # noqa: E402

import pytest_asyncio  # noqa: E402

from worker.adapters.redis_client import connect  # noqa: E402
from worker.adapters.redis_store import RedisStore  # noqa: E402
from worker.local.services import Broker, RedisService, start_broker, start_redis  # noqa: E402


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    started = start_broker()
    yield started
    started.close()


@pytest.fixture(scope="session")
def redis_service() -> Iterator[RedisService]:
    service = start_redis(use_env=False)
    yield service
    service.close()


@pytest.fixture(scope="session")
def redis_cluster_service() -> Iterator[RedisService]:
    service = start_redis(cluster=True)
    yield service
    service.close()


@pytest_asyncio.fixture
async def redis_store(redis_service: RedisService) -> AsyncIterator[RedisStore]:
    client = connect(redis_service.url, cluster=False)
    await client.flushall()
    store = RedisStore(client, answer_ttl_seconds=3600)
    await store.load_scripts()
    yield store
    await client.aclose()


# ---------------------------------------------------------------- PostgreSQL (private cluster)

from worker.local.services import PostgresService, start_postgres  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresService]:
    """`DATABASE_URL` when set, else a testcontainer or a private cluster; tests create databases on it."""
    service = start_postgres()
    yield service
    service.close()
