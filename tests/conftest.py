from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.builders import NANCHANG_FACILITIES, NANJING_FACILITIES, raw
from worker.domain.policy import PolicyBook, load_policies
from worker.replay import Replayer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLES = SHARED / "spec" / "examples"


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


def assert_matches_expected(name: str, actual: list[dict[str, Any]]) -> None:
    """`actual` equals NAME.expected.jsonl after the spec's normalisation (../shared/tools/compare.py)."""
    compare = load_compare()
    expected = [orjson.loads(x) for x in (EXAMPLES / f"{name}.expected.jsonl").read_bytes().splitlines() if x]
    assert len(actual) == len(expected)
    for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
        found: list[Any] = []
        compare.diff(compare.normalise(want, False), compare.normalise(got, False), "", found)
        assert not found, f"{name} message {index}: {found[:3]}"


def load_compare() -> Any:
    """The spec's own comparison (../shared/tools/compare.py), imported as a module."""
    sys.path.insert(0, str(SHARED / "tools"))
    try:
        import compare
    finally:
        sys.path.pop(0)
    return compare


# ---------------------------------------------------------------- Redis (private redis-server)

from collections.abc import AsyncIterator, Iterator  # noqa: E402

import pytest_asyncio  # noqa: E402

from worker.adapters.redis_client import connect  # noqa: E402
from worker.adapters.redis_store import RedisStore  # noqa: E402
from worker.local.services import RedisService, start_redis  # noqa: E402


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
