"""Never consume on lost state; catch up profiles from the marker (issue #10 §2, §5), through real
worker processes, a real broker and a real Redis."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.kafka_support import Cluster, fresh_world
from worker.adapters.redis_client import connect
from worker.bench import synthetic
from worker.local.services import Broker, RedisService

pytestmark = pytest.mark.integration
_counter = itertools.count()


@pytest_asyncio.fixture
async def world(broker: Broker, redis_service: RedisService, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, f"sm{next(_counter)}", tmp_path)
    yield cluster
    cluster.close()


async def _flushall(url: str) -> None:
    client = connect(url, cluster=False)
    await client.flushall()
    await client.aclose()


async def test_a_worker_refuses_to_start_on_a_flushed_redis_and_says_what_to_run(world: Cluster) -> None:
    await world.publish(synthetic.encode([*synthetic.facilities(), *synthetic.members(20)]))
    first = world.worker().start()
    await world.publish(synthetic.encode(synthetic.claims(200, 20, seed=3)))
    await world.wait_outputs(200)
    assert first.terminate() == 0
    await _flushall(world.redis_url)

    log = world.refused_start()
    assert "no state marker" in log and "python -m worker rebuild" in log
    assert "ready:" not in log


async def test_redis_losing_its_state_mid_stream_stops_the_worker_before_it_answers(world: Cluster) -> None:
    await world.publish(synthetic.encode([*synthetic.facilities(), *synthetic.members(20)]))
    worker = world.worker().start()
    await world.publish(synthetic.encode(synthetic.claims(100, 20, seed=4)))
    await world.wait_outputs(100)
    await _flushall(world.redis_url)  # as a Redis restarted without its data

    await world.publish(synthetic.encode(synthetic.claims(50, 20, seed=5, prefix="X")))
    assert worker.process is not None and worker.process.wait(60) == 0  # stops itself, cleanly
    assert "Redis lost the state" in worker.log_text()
    assert len(await world.outputs(150, 5)) == 100  # nothing decided on the empty Redis went out


async def test_a_restarted_worker_catches_up_profiles_instead_of_rereading_them(world: Cluster) -> None:
    facilities = synthetic.facilities()
    await world.publish(synthetic.encode([*facilities, *synthetic.members(3000)]))
    first = world.worker().start()
    assert _reference_loaded(first.log_text()) == len(facilities) + 3000
    assert first.terminate() == 0

    await world.publish(synthetic.encode(synthetic.members(5)))  # five profiles changed meanwhile
    second = world.worker().start()
    assert _reference_loaded(second.log_text()) == len(facilities) + 5
    await world.publish(synthetic.encode(synthetic.claims(100, 3000, seed=6)))
    got = await world.wait_outputs(100)
    codes = {reason["code"] for r in got for reason in r.event.get("reasons", [])}
    assert "UNKNOWN_MEMBER" not in codes  # every member's profile is there


def _reference_loaded(log: str) -> int:
    found = re.findall(r"(\d+) reference records loaded", log)
    assert found, log[-2000:]
    return int(found[-1])
