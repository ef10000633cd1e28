"""The Redis store under the same engine (issue #3 §2): examples, atomicity, idempotency, Cluster."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from contracts.wire import Emitted
from tests.builders import NANCHANG_FACILITIES, account, claim, line, member, raw, reversal
from tests.conftest import EXAMPLE_NAMES, EXAMPLES, assert_matches_expected
from tests.redis_support import RedisHarness
from worker.adapters.redis_client import connect
from worker.adapters.redis_store import (
    Plan,
    RedisStore,
    Wants,
    decode_ledger,
    decode_record,
    encode_ledger,
    encode_record,
    encode_record_v2,
    member_key,
    source_key,
)
from worker.bench import synthetic
from worker.domain.policy import PolicyBook
from worker.domain.state import Accumulators, ClaimRecord, Ledger
from worker.intake import Source
from worker.local.services import RedisService
from worker.settlement import Hold, Outgoing, Record, Settler

pytestmark = pytest.mark.integration
NAMES = EXAMPLE_NAMES
NOW = "2023-12-31T12:00:00+08:00"


@pytest.mark.parametrize("batch", [1, 7, 1000])
@pytest.mark.parametrize("name", NAMES)
async def test_examples_through_redis_equal_replay(
    redis_store: RedisStore, policies: PolicyBook, name: str, batch: int
) -> None:
    harness = RedisHarness(redis_store, policies)
    lines = (EXAMPLES / f"{name}.jsonl").read_bytes().splitlines()
    out = await harness.send(lines, batch=batch)
    # replay numbers dead letters by line; here they carry topic/partition/offset of the record
    by_digest = {hashlib.sha256(x).hexdigest(): n for n, x in enumerate(lines)}
    for event in out:
        if event["type"] == "dead_letter":
            event["source_topic"], event["partition"] = "replay", 0
            event["offset"] = by_digest[event["payload_sha256"]]
    assert_matches_expected(name, out)


async def test_redelivered_batch_republishes_stored_answers(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    harness = RedisHarness(redis_store, policies)
    await harness.send([raw(m) for m in [*NANCHANG_FACILITIES, member("M", "nanchang")]])
    records = [
        Record(Source("claims.inbound", 3, 10), b"M", raw(reversal("C1", "M"))),  # first: UNKNOWN_CLAIM
        Record(
            Source("claims.inbound", 3, 11),
            b"M",
            raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 90000)])),
        ),
        Record(Source("claims.inbound", 3, 12), b"M", raw(account("transfer_in", "T1", "M", amount_fen=500))),
    ]
    first = await harness.resend(records)
    ledger_before = await redis_store.redis.hgetall(member_key("M", "ledger"))
    again = await harness.resend(records)  # the same topic/partition/offsets: a redelivery
    assert [e["type"] for e in first] == ["claim.rejected", "claim.settled", "account.credited"]
    assert again == first  # byte-identical answers, including the UNKNOWN_CLAIM of the reversal
    assert await redis_store.redis.hgetall(member_key("M", "ledger")) == ledger_before
    # only the rejection is stored per message; the settlement and the credit come back from the state
    stored = [await redis_store.redis.exists(source_key(member_key("M", ""), r.source)) for r in records]
    assert stored == [1, 0, 0]


async def test_racing_workers_never_double_apply(redis_store: RedisStore, policies: PolicyBook) -> None:
    """Two settlers on the same member and messages (a rebalance): each claim counts once."""
    one, two = RedisHarness(redis_store, policies), RedisHarness(redis_store, policies)
    await one.send([raw(m) for m in [*NANCHANG_FACILITIES, member("M", "nanchang")]])
    two.facilities.update(one.facilities)
    records = [
        Record(
            Source("claims.inbound", 0, n),
            b"M",
            raw(claim(f"C{n}", "M", "NC-H2", "2023-04-01", [line("1", 30000)])),
        )
        for n in range(40)
    ]
    results = await asyncio.gather(
        *(h.resend(records[i::3] + records) for i, h in enumerate([one, two, one, two]))
    )
    ledger = decode_ledger(await redis_store.redis.hget(member_key("M", "ledger"), "d"))
    assert ledger.years[2023].claims == 40  # claims counted once each
    assert ledger.years[2023].counted == 40 * 30000
    settled = {e["claim_id"]: e for r in results for e in r if e["type"] == "claim.settled"}
    assert len(settled) == 40
    for result in results:  # every worker publishes the same answer for the same claim
        for event in result:
            assert event == settled[event["claim_id"]]


async def test_same_claim_id_for_two_members_conflicts(redis_store: RedisStore, policies: PolicyBook) -> None:
    harness = RedisHarness(redis_store, policies)
    await harness.send(
        [raw(m) for m in [*NANCHANG_FACILITIES, member("M", "nanchang"), member("N", "nanchang")]]
    )
    out = await harness.send(
        [
            raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 1000)])),
            raw(claim("C1", "N", "NC-H3", "2023-03-01", [line("1", 1000)])),
            raw(reversal("C1", "N")),
            raw(account("transfer_in", "R1", "M", amount_fen=5)),
            raw(account("transfer_in", "R1", "N", amount_fen=7)),
        ]
    )
    assert [e.get("reasons", [{}])[0].get("code") for e in out] == [
        None,
        "DUPLICATE_CONFLICT",
        "MEMBER_MISMATCH",
        None,
        None,
    ]
    assert out[4] == out[3]  # the request id's stored answer, for whichever member asks


async def test_profile_from_an_older_offset_does_not_overwrite(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    newer = raw(member("M", "nanjing"))
    older = raw(member("M", "nanchang"))
    await redis_store.put_profiles([("M", 20, newer)])
    await redis_store.put_profiles([("M", 19, older)])  # a lagging worker replays the topic
    loaded = await redis_store.load({"M": Wants()})
    assert loaded["M"].view.profile is not None and loaded["M"].view.profile.city == "nanjing"


async def test_examples_on_redis_cluster(redis_cluster_service: RedisService, policies: PolicyBook) -> None:
    client = connect(redis_cluster_service.url, cluster=True)
    try:
        await client.flushall()
        store = RedisStore(client, answer_ttl_seconds=3600)
        await store.load_scripts()
        for name in ("accounts", "pooling-nanchang", "pooling-nanjing"):
            await client.flushall()
            harness = RedisHarness(store, policies)
            harness.topic = f"claims-{name}"
            assert_matches_expected(
                name, await harness.send((EXAMPLES / f"{name}.jsonl").read_bytes().splitlines(), batch=5)
            )
        nodes = await client.cluster_nodes()
        assert len([n for n in nodes.values() if "master" in n["flags"]]) == 3
    finally:
        await client.aclose()


async def test_a_different_message_at_an_answered_offset_is_decided_afresh(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    """A topic deleted and created again reuses offsets: its new messages must not get old answers."""
    harness = RedisHarness(redis_store, policies)
    await harness.send([raw(m) for m in [*NANCHANG_FACILITIES, member("M", "nanchang")]])
    source = Source("claims.inbound", 0, 0)
    first = await harness.resend(
        [Record(source, b"M", raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 100)])))]
    )
    second = await harness.resend(
        [Record(source, b"M", raw(claim("C2", "M", "NC-H3", "2023-03-02", [line("1", 200)])))]
    )
    assert (first[0]["claim_id"], second[0]["claim_id"]) == ("C1", "C2")
    assert second[0]["accumulators_after"]["claims"] == 2


def _workload(members: int, claims: int) -> tuple[list[bytes], list[Record]]:
    """Registry lines, and credits then claims as records of one partition: few members, so that
    consecutive batches share members and a claim's outcome depends on the claims before it."""
    registry = synthetic.encode([*synthetic.facilities(), *synthetic.members(members)])
    lines = synthetic.encode([*synthetic.contributions(members), *synthetic.claims(claims, members)])
    records = [Record(Source("claims.inbound", 0, n), None, value) for n, value in enumerate(lines)]
    return registry, records


async def _ledgers(store: RedisStore, members: int) -> list[bytes | None]:
    return [await store.redis.hget(member_key(synthetic.member_id(n), "ledger"), "d") for n in range(members)]


async def _settle_held(settler: Settler, batch: list[Record]) -> list[Outgoing]:
    """Settle as a worker's flight does: members held until the batch is done."""
    hold = Hold()
    try:
        return await settler.settle(batch, NOW, hold)
    finally:
        settler.release(hold)


async def test_overlapping_settlements_keep_each_members_order(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    """Batches settled concurrently, as the worker pipelines them, answer exactly as one after another."""
    registry, records = _workload(members=12, claims=400)
    batches = [records[start : start + 25] for start in range(0, len(records), 25)]
    harness = RedisHarness(redis_store, policies)
    await harness.send(registry)
    sequential = [await harness.settler.settle(batch, NOW) for batch in batches]
    expected_ledgers = await _ledgers(redis_store, 12)

    await redis_store.redis.flushall()
    harness = RedisHarness(redis_store, policies)
    await harness.send(registry)
    settler = harness.settler
    concurrent = await asyncio.gather(*(_settle_held(settler, b) for b in batches))  # all in the air at once
    assert concurrent == sequential
    assert await _ledgers(redis_store, 12) == expected_ledgers


async def test_a_batch_decided_in_two_phases_does_not_deadlock_with_the_next(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    """A batch whose member names another member's claim is decided in two phases; a batch settled
    meanwhile that shares members with both phases must neither overtake it nor wait for it in a
    circle (found by the Kafka fuzz run: the worker stalled)."""
    harness = RedisHarness(redis_store, policies)
    await harness.send(
        [raw(f) for f in NANCHANG_FACILITIES] + [raw(member(m, "nanchang")) for m in ("M1", "M2")]
    )
    visit = claim("C1", "M1", "NC-H3", "2023-03-01", [line("1", 30000)])
    first = [
        Record(Source("claims", 0, 0), b"M1", raw(visit)),
        Record(Source("claims", 0, 1), b"M2", raw(reversal("C1", "M2"))),  # second phase: after M1's
    ]
    second = [
        Record(
            Source("claims", 1, 0), b"M2", raw(claim("C2", "M2", "NC-H3", "2023-03-02", [line("1", 100)]))
        ),
        Record(Source("claims", 1, 1), b"M1", raw(reversal("C1", "M1"))),
    ]
    settler = harness.settler
    one = asyncio.ensure_future(_settle_held(settler, first))
    await asyncio.sleep(0)  # the first batch is reading its first phase when the second one starts
    two = asyncio.ensure_future(_settle_held(settler, second))
    answers = await asyncio.wait_for(asyncio.gather(one, two), 20)
    kinds = [[orjson.loads(o.event.data)["type"] for o in batch] for batch in answers]
    assert kinds == [["claim.settled", "claim.rejected"], ["claim.settled", "claim.reversed"]]


class _FailingFirstSave(RedisStore):
    """The real store, whose first write fails as if Redis had dropped the connection."""

    failed = False

    async def save(self, plans: Sequence[Plan]) -> set[str]:
        if not self.failed:
            self.failed = True
            raise RedisConnectionError("injected: connection lost")
        return await super().save(plans)


async def test_a_batch_retried_after_a_failure_is_not_overtaken(
    redis_service: RedisService, policies: PolicyBook
) -> None:
    registry, records = _workload(members=4, claims=40)
    first, second = records[:24], records[24:]
    client = connect(redis_service.url, cluster=False)
    try:
        await client.flushall()
        store = _FailingFirstSave(client, answer_ttl_seconds=3600)
        await store.load_scripts()
        harness = RedisHarness(store, policies)
        await harness.send(registry)
        settler = harness.settler
        hold_first, hold_second = Hold(), Hold()
        with pytest.raises(RedisConnectionError):
            await settler.settle(first, NOW, hold_first)  # not released: the worker retries it
        later = asyncio.ensure_future(settler.settle(second, NOW, hold_second))
        await asyncio.sleep(0.2)
        assert not later.done()  # its members are held by the failed batch
        answers = await settler.settle(first, NOW, hold_first)
        settler.release(hold_first)
        answers += await later
        settler.release(hold_second)
        results = [orjson.loads(o.event.data) for o in answers]
        ledgers = await _ledgers(store, 4)

        await client.flushall()
        clean = RedisHarness(RedisStore(client, answer_ttl_seconds=3600), policies)
        await clean.store.load_scripts()
        await clean.send(registry)
        expected = [orjson.loads(o.event.data) for o in await clean.settler.settle(records, NOW)]
        assert results == expected
        assert ledgers == await _ledgers(clean.store, 4)
    finally:
        await client.aclose()


def test_ledger_and_record_encodings_round_trip() -> None:
    ledger = Ledger(
        {2023: Accumulators(5, 4, 3, 2, 1), 2024: Accumulators(9, 8, 7, 6, 5)}, 1234, True, 2024, True, 3
    )
    assert decode_ledger(encode_ledger(ledger)) == ledger
    assert decode_ledger(encode_ledger(Ledger())) == Ledger()
    settled = Emitted("claim.settled", orjson.dumps({"note": "line\nbreak", "cn": "门诊"}))
    record = ClaimRecord("C1", "M", "fp", 2023, Accumulators(1, 2, 3, 4, 1), 10, 20, None, "H1", settled)
    assert decode_record("C1", encode_record(record)) == record
    record.reversed = Emitted("claim.reversed", orjson.dumps({"type": "claim.reversed"}))
    record.cap_fen = 600_000
    assert decode_record("C1", encode_record(record)) == record


def test_claim_records_of_the_first_format_are_read_with_an_unknown_facility() -> None:
    """Records written before the facility was kept (format 1: the header starts with the member id)
    are still read; an unknown format is an error, never a misread."""
    settled = b'{"type":"claim.settled"}'
    old = orjson.dumps(["M", "fp", 2023, [1, 2, 3, 4, 1], 10, 20, 180000]) + b"\n" + settled
    record = decode_record("C1", old)
    assert (record.member_id, record.fund_pay, record.cap_fen, record.facility_id) == ("M", 20, 180000, None)
    assert record.settled.data == settled and record.reversed is None
    assert encode_record(record).startswith(b"\x03")  # written back in the current format
    assert decode_record("C1", encode_record(record)) == record
    future = orjson.dumps([4, "M", "fp", 2023, [1, 2, 3, 4, 1], 10, 20, None, "H1"]) + b"\n" + settled
    with pytest.raises(ValueError, match="unknown format 4"):
        decode_record("C1", future)
    with pytest.raises(ValueError, match="unknown format b'"):
        decode_record("C1", b"\x05" + future)
    with pytest.raises(ValueError, match="unknown format"):
        decode_ledger(orjson.dumps([3, 0, 0, False, None, False, 0]))


async def test_state_written_in_the_old_formats_is_read_and_upgraded(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    """A member whose ledger (format 1), claim record (format 2) and request answer (no format
    marker) were written by an earlier worker: duplicates and a reversal are answered from them, and
    what is written back is in the current formats."""
    harness = RedisHarness(redis_store, policies)
    await harness.send([*(raw(f) for f in NANCHANG_FACILITIES), raw(member("M", "nanchang"))])
    first = await harness.send(
        [
            raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 90000)])),
            raw(account("transfer_in", "R1", "M", amount_fen=5000)),
        ]
    )
    redis = redis_store.redis
    prefix = member_key("M", "")
    ledger = decode_ledger(await redis.hget(prefix + "ledger", "d"))
    record = decode_record("C1", await redis.get(prefix + "claim:C1"))
    answer = await redis.get(prefix + "answer:R1")
    old_ledger = orjson.dumps(ledger.to_flat()[1:])  # format 1: no version, no change count
    await redis.hset(prefix + "ledger", "d", old_ledger)
    await redis.set(prefix + "claim:C1", encode_record_v2(record))
    await redis.set(prefix + "answer:R1", answer.removeprefix(b"v2\n"))

    again = await harness.send(
        [
            raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 90000)])),
            raw(account("transfer_in", "R1", "M", amount_fen=5000)),
        ]
    )
    assert again == first  # the stored answers, byte for byte
    reversed_ = await harness.send([raw(reversal("C1", "M"))])
    assert reversed_[0]["type"] == "claim.reversed" and reversed_[0]["account_pay_fen"] == record.account_pay
    assert (await redis.hget(prefix + "ledger", "d")).startswith(b"[2,")
    upgraded = await redis.get(prefix + "claim:C1")
    assert upgraded.startswith(b"\x03") and decode_record("C1", upgraded).reversed is not None
    # a request's stored answer is written once and never changes: it stays in format 1, read as such


async def test_messages_for_members_that_do_not_exist_leave_no_lasting_keys(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    """Made-up member ids must not grow Redis with member state: a claim's rejection is kept only as
    an expiring message answer (for redelivery), and no ledger is made. An account request's answer
    and its owner index are kept, as rules §8.7 requires of every answered request_id."""
    harness = RedisHarness(redis_store, policies)
    await harness.send([raw(f) for f in NANCHANG_FACILITIES])
    answers = await harness.send(
        [raw(claim(f"C{n}", f"NOBODY-{n}", "NC-H3", "2023-03-01", [line("1", 100)])) for n in range(50)]
        + [raw(account("transfer_in", f"R{n}", f"NOBODY-{n}", amount_fen=5)) for n in range(50)]
    )
    assert {a["reasons"][0]["code"] for a in answers} == {"UNKNOWN_MEMBER"}
    keys = [k.decode() async for k in redis_store.redis.scan_iter(count=1000)]
    lasting = sorted([k for k in keys if await redis_store.redis.ttl(k) < 0])
    assert not [k for k in lasting if k.endswith(":ledger")]
    buckets = sorted({redis_store.request_owner(f"R{n}")[0] for n in range(50)})
    assert lasting == sorted([f"m:{{NOBODY-{n}}}:answer:R{n}" for n in range(50)] + buckets)
    assert sum([await redis_store.redis.hlen(b) for b in buckets]) == 50  # one owner entry a request
    assert len(keys) == 50 + 50 + len(buckets)  # plus the claims' expiring message answers


async def test_claims_past_the_retention_window_are_archived_and_never_settled_twice(
    redis_store: RedisStore, policies: PolicyBook
) -> None:
    """Archiving keeps only the owner index (member, facility, year): a resubmission is still
    refused, whatever its content; a reversal is CLAIM_ARCHIVED, after the facility and member
    checks; a claim of a later year is left whole."""
    harness = RedisHarness(redis_store, policies)
    await harness.send(
        [raw(f) for f in NANCHANG_FACILITIES] + [raw(member(m, "nanchang")) for m in ("M", "N")]
    )
    old = claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 90000)])
    recent = claim("C2", "M", "NC-H3", "2024-03-01", [line("1", 500)])
    assert [a["type"] for a in await harness.send([raw(old), raw(recent)])] == ["claim.settled"] * 2

    assert await redis_store.archive_claims(2024) == (2, 1)
    assert await redis_store.redis.exists(member_key("M", "claim:C1")) == 0
    assert await redis_store.archive_claims(2024) == (1, 0)  # idempotent
    assert await redis_store.find_claim("C1") is None and await redis_store.find_claim("C2") is not None

    answers = await harness.send(
        [
            raw(old),  # the same content: no stored answer left, and never settled again
            raw(claim("C1", "M", "NC-H3", "2023-03-01", [line("1", 100)])),
            raw(claim("C1", "N", "NC-H3", "2023-03-01", [line("1", 100)])),
            raw({**reversal("C1", "M"), "facility_id": "NC-H1"}),
            raw(reversal("C1", "N")),
            raw(reversal("C1", "M")),
            raw(reversal("C2", "M")),
        ]
    )
    codes = [a["reasons"][0]["code"] if a["type"] == "claim.rejected" else a["type"] for a in answers]
    assert codes == [
        "DUPLICATE_CONFLICT",
        "DUPLICATE_CONFLICT",
        "DUPLICATE_CONFLICT",
        "FACILITY_MISMATCH",
        "MEMBER_MISMATCH",
        "CLAIM_ARCHIVED",
        "claim.reversed",
    ]
