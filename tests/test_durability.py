"""Durable before visible, and the state marker (issue #10 §1, §2) against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from tests.builders import NANCHANG_FACILITIES, claim, line, member, raw
from tests.redis_support import RedisHarness
from worker.adapters.redis_client import connect
from worker.adapters.redis_durability import Durability, DurabilityError, NotDurable
from worker.adapters.redis_store import RedisStore
from worker.domain.policy import PolicyBook
from worker.local.services import RedisService, Started, _redis_process, free_port, wait_for_port
from worker.marker import StateLost, StateMarker, parse_marker, verdict

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def client(redis_service: RedisService) -> AsyncIterator[Redis]:
    redis = connect(redis_service.url, cluster=False)
    assert isinstance(redis, Redis)
    await redis.flushall()
    yield redis
    await redis.config_set("appendonly", "no")  # the session's server is shared: leave it as found
    await redis.config_set("appendfsync", "everysec")
    await redis.flushall()
    await redis.aclose()


async def _store(client: Redis, level: str, timeout_ms: int = 2000) -> RedisStore:
    store = RedisStore(client, 3600, Durability.parse(level, timeout_ms))
    await store.load_scripts()
    await store.check_durability()
    return store


def _visit(claim_id: str) -> list[bytes]:
    return [
        raw(NANCHANG_FACILITIES[0]),
        raw(member("M1", "nanchang")),
        raw(claim(claim_id, "M1", "NC-H3", "2023-03-01", [line("1", 30000)])),
    ]


def test_the_level_is_parsed_strictly() -> None:
    assert Durability.parse("replicas:2").replicas == 2
    for wrong in ("", "LOCAL", "replicas:0", "replicas:", "always", "local "):
        with pytest.raises(ValueError, match="none, local or replicas:N"):
            Durability.parse(wrong)


def test_what_the_server_confirms_is_checked_not_assumed() -> None:
    waitaof = Durability("local", 0, 100, ("WAITAOF", 1, 0, 100))
    waitaof.confirm([1, 0])
    with pytest.raises(NotDurable, match="0 local"):
        waitaof.confirm([0, 0])  # the fsync did not happen in time
    wait = Durability("replicas", 2, 100, ("WAIT", 2, 100))
    wait.confirm(2)
    with pytest.raises(NotDurable, match="1 of 2 replicas"):
        wait.confirm(1)


async def test_local_refuses_a_redis_without_the_append_only_file(client: Redis) -> None:
    with pytest.raises(DurabilityError, match="appendonly no"):
        await _store(client, "local")


async def test_local_without_waitaof_requires_fsync_always(client: Redis, policies: PolicyBook) -> None:
    await client.config_set("appendonly", "yes")
    info = await client.info("server")
    if tuple(int(x) for x in str(info["redis_version"]).split(".")[:2]) >= (7, 2):
        store = await _store(client, "local")  # WAITAOF after every write batch
        assert store.durability.wait_command == ("WAITAOF", 1, 0, 2000)
    else:
        with pytest.raises(DurabilityError, match="appendfsync everysec"):
            await _store(client, "local")
        await client.config_set("appendfsync", "always")
        store = await _store(client, "local")
        assert store.durability.wait_command is None  # every acknowledged write is fsynced already
    answers = await RedisHarness(store, policies).send(_visit("C1"))
    assert [a["type"] for a in answers] == ["claim.settled"]


@pytest.fixture
def replica(redis_service: RedisService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    started = Started()
    primary = redis_service.url.rsplit(":", 1)[1].split("/")[0]
    started.processes.append(
        _redis_process(str(tmp_path_factory.mktemp("replica")), port, "--replicaof", "127.0.0.1", primary)
    )
    wait_for_port(port, process=started.processes[-1])
    yield port
    started.close()


async def test_replicas_refuses_too_few_replicas(client: Redis) -> None:
    with pytest.raises(DurabilityError, match="0 connected replica"):
        await _store(client, "replicas:1")


async def test_replicas_waits_for_the_replica_and_holds_back_when_it_is_gone(
    client: Redis, replica: int, policies: PolicyBook
) -> None:
    # connected, and past the initial full sync; a loaded machine may take a while
    for _ in range(600):
        if (await client.info("replication")).get("slave0", {}).get("state") == "online":
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the replica did not come online in 30 s")
    # a generous wait while the replica is up: the acknowledgement, not its speed, is under test
    store = await _store(client, "replicas:1", timeout_ms=10_000)
    assert store.durability.wait_command == ("WAIT", 1, 10_000)
    harness = RedisHarness(store, policies)
    assert [a["type"] for a in await harness.send(_visit("C1"))] == ["claim.settled"]
    replica_client = Redis(host="127.0.0.1", port=replica)
    assert await replica_client.hexists(*store.claim_owner("C1")) == 1  # the replica had it before the answer
    # the replica stops acknowledging: a batch is not confirmed, so its answers are not given out
    await replica_client.shutdown(nosave=True)
    # the same store, now waiting 300 ms: the replica is gone, so nothing acknowledges the batch
    store.durability = Durability("replicas", 1, 300, ("WAIT", 1, 300))
    with pytest.raises(NotDurable, match="0 of 1 replicas"):
        await harness.send([raw(claim("C2", "M1", "NC-H3", "2023-03-02", [line("1", 1000)]))])


# ---------------------------------------------------------------- the state marker


def test_a_new_deployment_may_start_and_lost_state_may_not() -> None:
    assert verdict(None, {}) is None
    refusal = verdict(None, {("claims.inbound", 0): (120, "")})
    assert refusal is not None and "no state marker" in refusal and "python -m worker rebuild" in refusal
    marker = StateMarker("e1", {("claims.inbound", 0): 120})
    assert verdict(marker, {("claims.inbound", 0): (120, "e1")}) is None
    assert verdict(marker, {("claims.inbound", 0): (100, "")}) is None  # answered, not yet committed
    behind = verdict(marker, {("claims.inbound", 0): (121, "e1")})
    assert behind is not None and "older than the committed offsets" in behind
    other = verdict(marker, {("claims.inbound", 0): (120, "e0")})
    assert other is not None and "epoch e0" in other


def test_a_marker_of_an_unknown_format_is_an_error() -> None:
    with pytest.raises(ValueError, match="format '3'"):
        parse_marker({"format": "3", "epoch": "e", "owner-buckets": "8"})
    with pytest.raises(ValueError, match="rebuild"):  # format 1: a key per owner id, before buckets
        parse_marker({"format": "1", "epoch": "e"})
    with pytest.raises(ValueError, match="owner-buckets"):
        parse_marker({"format": "2", "epoch": "e"})
    assert parse_marker(
        {
            "format": "2",
            "epoch": "e",
            "owner-buckets": "64",
            "c:claims.inbound:3": "7",
            "p:members.profiles:0": "9",
        }
    ) == (StateMarker("e", {("claims.inbound", 3): 7}, {("members.profiles", 0): 9}, owner_buckets=64))


async def test_every_process_adopts_the_owner_index_layout_of_the_marker(
    client: Redis, policies: PolicyBook
) -> None:
    first = RedisStore(client, 3600, owner_buckets=8)
    await first.load_scripts()
    await first.create_marker("e1")
    await RedisHarness(first, policies).send(_visit("C1"))
    assert await client.hlen(first.claim_owner("C1")[0]) == 1
    other = RedisStore(client, 3600, owner_buckets=4096)  # e.g. the gateway with another setting
    await other.load_scripts()
    assert await other.find_claim("C1") is None  # looked up in the wrong bucket
    await other.adopt_marker()
    assert other.owner_buckets == 8 and (await other.find_claim("C1")) is not None


async def test_a_marker_of_the_old_layout_is_refused_with_the_rebuild_hint(client: Redis) -> None:
    from worker.kafka.marking import Marking, StateRefused

    await client.hset("state-marker", mapping={"format": "1", "epoch": "old"})
    store = RedisStore(client, 3600)
    with pytest.raises(StateRefused, match="python -m worker rebuild"):
        await Marking(store).establish({})


async def test_the_marker_never_moves_back_and_notices_lost_writes(client: Redis) -> None:
    store = await _store(client, "none")
    first = await store.create_marker("e1")
    assert (await store.create_marker("e2")).epoch == first.epoch == "e1"  # the first worker's stands
    await store.advance_marker("e1", [("c:t:0", -1, 10)])
    await store.advance_marker("e1", [("c:t:0", 10, 5)])  # an older flight: no move back
    assert (await store.read_marker()) == StateMarker("e1", {("t", 0): 10}, owner_buckets=store.owner_buckets)
    with pytest.raises(StateLost, match="epoch"):
        await store.advance_marker("e0", [("c:t:0", 10, 20)])
    await client.hset("state-marker", "c:t:0", 4)  # as after a crash that lost the last writes
    with pytest.raises(StateLost, match="back at 4 from 10"):
        await store.advance_marker("e1", [("c:t:0", 10, 20)])
    await client.flushall()
    with pytest.raises(StateLost):
        await store.advance_marker("e1", [("c:t:0", 10, 20)])
