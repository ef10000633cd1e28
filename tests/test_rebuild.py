"""Rebuild the state from Kafka after Redis lost it (issue #10 §3): a real broker, Redis and workers.

A stream is settled, Redis loses the state (FLUSHALL; or an append-only file restored from before the
last writes), the worker refuses, `python -m worker rebuild` restores it, and the worker goes on: the
Redis state equals the uninterrupted one, and every answer equals the uninterrupted run's (replay)."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from tests.builders import reversal
from tests.kafka_support import Cluster, actual_streams, fresh_world, streams
from worker.adapters.redis_client import connect
from worker.adapters.redis_store import decode_ledger
from worker.bench import synthetic
from worker.kafka.publisher import route
from worker.local.services import Broker, RedisService, restart_redis_process, start_redis
from worker.replay import Replayer
from worker.settings import Settings

pytestmark = pytest.mark.integration
_counter = itertools.count()
MEMBERS = 40


@pytest_asyncio.fixture
async def world(broker: Broker, redis_service: RedisService, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, f"rb{next(_counter)}", tmp_path)
    yield cluster
    cluster.close()


def _phase_one() -> tuple[list[bytes], list[bytes], list[bytes]]:
    reference = synthetic.encode([*synthetic.facilities(), *synthetic.members(MEMBERS)])
    credits = synthetic.encode(synthetic.contributions(MEMBERS))
    settled = list(synthetic.claims(300, MEMBERS, seed=21, prefix="P1"))
    claims = synthetic.encode(
        [*settled, *(reversal(c["claim_id"], c["member_id"]) for c in settled[::7])]  # some reversed
    )
    return reference, credits, claims


def _phase_two() -> tuple[list[bytes], list[bytes]]:
    """After the rebuild: messages that read every kind of restored state."""
    settled = list(synthetic.claims(300, MEMBERS, seed=21, prefix="P1"))
    credits = synthetic.encode(
        [
            *itertools.islice(synthetic.contributions(MEMBERS), 5),  # same request ids: stored answers
            *(
                {**c, "request_id": f"K2-{n}"} for n, c in enumerate(synthetic.contributions(5))
            ),  # same period
        ]
    )
    later = list(synthetic.claims(200, MEMBERS, seed=22, prefix="P2"))
    claims = synthetic.encode(
        [
            *later,
            *settled[:5],  # duplicates of settled claims: the same answer again
            {**settled[5], "lines": [*settled[5]["lines"][:1], {**settled[5]["lines"][0], "line_id": "x"}]},
            *(reversal(c["claim_id"], c["member_id"]) for c in settled[1::7][:10]),  # restored records
            *(reversal(c["claim_id"], c["member_id"]) for c in settled[::7][:5]),  # reversed already
        ]
    )
    return credits, claims


async def _state(url: str) -> dict[str, Any]:
    """Every key of member state, ledgers decoded, without what the state does not promise to keep
    across a rebuild (per-message answers of rejections, dead-letter markers, the ledger's version)."""
    client = connect(url, cluster=False)
    try:
        out: dict[str, Any] = {}
        async for key in client.scan_iter(count=1000):
            name = key.decode()
            if ":msg:" in name or name.startswith(("dead-lettered:", "state-marker", "gw:")):
                continue
            kind = (await client.type(key)).decode()
            if kind == "hash":
                fields = await client.hgetall(key)
                if name.endswith(":ledger"):
                    out[name] = decode_ledger(fields[b"d"]).to_dict() if b"d" in fields else None
                else:
                    out[name] = fields
            else:
                out[name] = await client.get(key)
        return out
    finally:
        await client.aclose()


def _rebuild(world: Cluster, jobs: int = 2) -> subprocess.CompletedProcess[str]:
    """`python -m worker rebuild --jobs N`: N processes restore the partitions (1: in the command's own)."""
    return subprocess.run(
        [sys.executable, "-m", "worker", "rebuild", "--jobs", str(jobs)],
        # the synthetic claims are of 2023: a window long enough that the rebuild archives none
        # (as the uninterrupted run, which never ran `compact`)
        env={**os.environ, **world.env, "WORKER_CLAIM_RETENTION_YEARS": "50"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _rebuild_killed_after_its_wipe(world: Cluster) -> None:
    interrupted = subprocess.Popen(
        [sys.executable, "-m", "worker", "rebuild"],
        env={**os.environ, **world.env, "WORKER_CLAIM_RETENTION_YEARS": "50"},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert interrupted.stderr is not None
    for _ in range(20):  # the start-up lines (endpoints), then the wipe's progress line
        if "keys of member state deleted" in interrupted.stderr.readline():
            break
    else:
        raise AssertionError("the rebuild never reported its wipe")
    interrupted.kill()
    interrupted.wait(30)
    interrupted.stderr.close()


async def _replayed(lines: list[bytes], settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """The uninterrupted run's answers: replay of the whole stream, routed to their topics."""
    sink = io.BytesIO()
    await Replayer().replay(lines, sink)
    routes = route(settings)
    events = [orjson.loads(x) for x in sink.getvalue().splitlines() if x]
    return [(routes[e["type"]], e) for e in events]


async def test_rebuild_after_flushall_restores_the_state_and_the_answers(world: Cluster) -> None:
    reference, credits, claims = _phase_one()
    await world.publish(reference)
    first = world.worker().start()
    await world.publish(credits)
    await world.wait_outputs(len(credits))
    await world.publish(claims)
    await world.wait_outputs(len(credits) + len(claims))
    assert first.terminate() == 0
    before = await _state(world.redis_url)

    client = connect(world.redis_url, cluster=False)
    await client.flushall()
    await client.aclose()
    world.refused_start()

    _rebuild_killed_after_its_wipe(world)  # no marker yet, so workers keep refusing
    world.refused_start()

    done = _rebuild(world)  # simply run again
    assert done.returncode == 0, done.stderr[-3000:]
    assert "events/s" in done.stderr and "marker written" in done.stderr

    worker = world.worker().start()  # the profiles come back from their topic at start
    assert await _state(world.redis_url) == before

    credits_two, claims_two = _phase_two()
    await world.publish(credits_two)
    await world.wait_outputs(len(credits) + len(claims) + len(credits_two))
    await world.publish(claims_two)
    total = len(credits) + len(claims) + len(credits_two) + len(claims_two)
    received = await world.wait_outputs(total)
    assert worker.terminate() == 0
    expected = await _replayed([*reference, *credits, *claims, *credits_two, *claims_two], world.settings)
    assert actual_streams(received) == streams(expected)


async def test_redis_crash_losing_its_last_writes_is_noticed_and_rebuilt(
    broker: Broker, tmp_path: Path
) -> None:
    """Redis with `appendfsync everysec` killed, and back from an append-only file that misses the
    last writes (what a machine crash leaves): the running worker stops before answering on that
    state, a new one refuses, a rebuild restores it, and every answer equals the uninterrupted run's."""
    redis = start_redis(use_env=False, persistent=True, fsync="everysec")
    world = await fresh_world(broker.bootstrap_servers, redis.url, f"rb{next(_counter)}", tmp_path)
    try:
        reference, credits, claims = _phase_one()
        early, late = claims[:150], claims[150:]
        await world.publish(reference)
        worker = world.worker().start()
        await world.publish(credits)
        await world.wait_outputs(len(credits))
        await world.publish(early)
        await world.wait_outputs(len(credits) + len(early))
        client = connect(redis.url, cluster=False)
        await client.execute_command("BGREWRITEAOF")  # a consistent file to go back to
        await _aof_rewritten(client)
        snapshot = tmp_path / "aof-before"
        shutil.copytree(Path(redis.started.dirs[0]) / "appendonlydir", snapshot)
        await world.publish(late)
        answered = len(credits) + len(claims)
        await world.wait_outputs(answered)
        await client.aclose()

        def older_file(folder: Path) -> None:
            shutil.rmtree(folder / "appendonlydir")
            shutil.copytree(snapshot, folder / "appendonlydir")

        restart_redis_process(redis, 0.5, kill=True, while_down=older_file)
        credits_two, claims_two = _phase_two()
        await world.publish(credits_two)
        assert worker.process is not None and worker.process.wait(90) == 0  # stopped itself
        assert "Redis lost the state" in worker.log_text()
        assert len(await world.outputs(answered + 1, 5)) == answered  # nothing answered on old state

        assert "older than the committed offsets" in world.refused_start()
        done = _rebuild(world, jobs=1)
        assert done.returncode == 0, done.stderr[-3000:]
        world.worker().start()
        await world.publish(claims_two)
        total = answered + len(credits_two) + len(claims_two)
        received = await world.wait_outputs(total)
        expected = await _replayed([*reference, *credits, *claims, *credits_two, *claims_two], world.settings)
        assert actual_streams(received) == streams(expected)
    finally:
        world.close()
        redis.close()


async def _aof_rewritten(client: Any) -> None:
    for _ in range(600):
        info = await client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("AOF rewrite did not finish")
