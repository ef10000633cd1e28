"""The point-of-sale gateway through real processes (issue #9 §7): broker, Redis, worker and gateway.

Every test runs its own topics; the gateway is `python -m worker gateway` in a subprocess, reached
over HTTP like a hospital's HIS would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.builders import NANCHANG_FACILITIES, NANJING_FACILITIES, account, claim, line, member, raw
from tests.gateway_support import GatewayProcess, auth, until_status
from tests.kafka_support import Cluster, fresh_world
from worker.adapters.redis_client import connect
from worker.local.services import Broker, RedisService, free_port, start_broker

pytestmark = pytest.mark.integration
_counter = itertools.count()


@pytest_asyncio.fixture
async def world(broker: Broker, redis_service: RedisService, tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await fresh_world(broker.bootstrap_servers, redis_service.url, f"g{next(_counter)}", tmp_path)
    await cluster.publish([raw(m) for m in [*NANCHANG_FACILITIES, *NANJING_FACILITIES]])
    await cluster.publish([raw(member("M1", "nanchang")), raw(member("M2", "nanchang"))])
    await cluster.publish([raw(member("J1", "nanjing"))])
    yield cluster
    cluster.close()


def _visit(
    claim_id: str, member_id: str = "M1", facility: str = "NC-H3", amount: int = 80_000
) -> dict[str, Any]:
    return claim(
        claim_id,
        member_id,
        facility,
        "2023-06-01",
        [line("1", amount), line("2", 3_000, category="examination", coverage="B", ratio=1000)],
    )


async def _credit(world: Cluster, member_id: str, amount: int) -> None:
    await world.publish_in_order(
        [raw(account("transfer_in", f"T-{member_id}", member_id, amount_fen=amount))]
    )


async def test_a_counter_visit_presettle_settle_resubmit_status_reversal(world: Cluster) -> None:
    world.worker().start()
    gateway = GatewayProcess(world)
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    await _credit(world, "M1", 10_000)
    body = _visit("V1")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        quote = await http.post("/v1/claims/presettle", json=body, headers=auth("NC-H3"))
        assert quote.status_code == 200, quote.text
        quoted = quote.json()
        assert quoted["type"] == "claim.presettled" and "event_id" not in quoted and "quoted_at" in quoted
        again = await http.post("/v1/claims/presettle", json=body, headers=auth("NC-H3"))
        assert (
            again.json()["account_balance_after_fen"] == quoted["account_balance_after_fen"]
        )  # wrote nothing

        settle = await http.post(
            "/v1/claims", json={k: v for k, v in body.items() if k != "type"}, headers=auth("NC-H3")
        )
        assert settle.status_code == 200, settle.text
        settled = settle.json()
        assert settled["type"] == "claim.settled" and settled["event_id"] == "V1:settled"
        for name in (
            "total_fen",
            "fund_pay_fen",
            "account_pay_fen",
            "cash_pay_fen",
            "segments",
            "category_totals_fen",
            "accumulators_after",
            "facility_id",
        ):
            assert settled[name] == quoted[name], name
        assert settled["category_totals_fen"] == {"drug": 80_000, "examination": 3_000}
        assert settled["account_pay_fen"] == 10_000

        resent = await http.post("/v1/claims", json=body, headers=auth("NC-H3"))
        assert resent.status_code == 200 and resent.content == settle.content  # byte for byte

        stored_quote = await http.post("/v1/claims/presettle", json=body, headers=auth("NC-H3"))
        assert stored_quote.status_code == 200 and stored_quote.content == settle.content

        status = await http.get("/v1/claims/V1", headers=auth("NC-H3"))
        assert status.json() == {
            "claim_id": "V1",
            "status": "settled",
            "settlement": settled,
            "reversal": None,
            "rejection": None,
        }

        reverse = await http.post(
            "/v1/claims/V1/reversal", json={"member_id": "M1", "reason": "returned"}, headers=auth("NC-H3")
        )
        assert reverse.status_code == 200, reverse.text
        reversed_ = reverse.json()
        assert reversed_["type"] == "claim.reversed" and reversed_["facility_id"] == "NC-H3"
        assert reversed_["account_pay_fen"] == 10_000 and reversed_["account_balance_after_fen"] == 10_000
        status = await http.get("/v1/claims/V1", headers=auth("NC-H3"))
        assert status.json()["status"] == "reversed" and status.json()["reversal"] == reversed_

        conflict = await http.post("/v1/claims", json=_visit("V1", amount=1), headers=auth("NC-H3"))
        assert conflict.status_code == 422
        assert conflict.json()["reasons"][0]["code"] == "DUPLICATE_CONFLICT"


async def test_rejections_and_bad_requests(world: Cluster) -> None:
    world.worker().start()
    gateway = GatewayProcess(world)
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        h = auth("NC-H3")
        unknown = await http.post("/v1/claims", json=_visit("R1", member_id="NOBODY"), headers=h)
        assert unknown.status_code == 422 and unknown.json()["reasons"][0]["code"] == "UNKNOWN_MEMBER"
        status = await http.get("/v1/claims/R1", headers=h)
        assert status.json()["status"] == "rejected" and status.json()["rejection"] == unknown.json()

        invalid = await http.post(
            "/v1/claims", json={**_visit("R2"), "service_date": "2023-02-30"}, headers=h
        )
        assert invalid.status_code == 422 and invalid.json()["reasons"][0]["code"] == "INVALID_PAYLOAD"
        wrong_type = await http.post("/v1/claims", json={**_visit("R3"), "type": "member.profile"}, headers=h)
        assert wrong_type.status_code == 422 and wrong_type.json()["reasons"][0]["field"] == "type"
        for content in (b"[1]", b"not json", b'{"claim_id": "bad id"}', b'{"claim_id": NaN}'):
            bad = await http.post("/v1/claims", content=content, headers=h)
            assert bad.status_code == 400, content
            assert bad.headers["content-type"] == "application/problem+json"
            assert set(bad.json()) == {"type", "title", "status", "detail"}
        missing = await http.get("/v1/claims/NO-SUCH", headers=h)
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        reverse_unknown = await http.post(
            "/v1/claims/NO-SUCH/reversal", json={"member_id": "M1", "reason": ""}, headers=h
        )
        assert reverse_unknown.status_code == 422
        assert reverse_unknown.json()["reasons"][0]["code"] == "UNKNOWN_CLAIM"
        bad_reversal = await http.post("/v1/claims/X/reversal", json={"reason": "no member"}, headers=h)
        assert bad_reversal.status_code == 422
        assert bad_reversal.json()["reasons"][0]["code"] == "INVALID_PAYLOAD"
        assert (await http.post("/v1/claims/bad%20id/reversal", json={}, headers=h)).status_code == 404


async def test_another_facilitys_claim_looks_like_no_claim_on_every_endpoint(world: Cluster) -> None:
    world.worker().start()
    gateway = GatewayProcess(world)
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        mine, theirs = auth("NC-H3"), auth("NC-H2")
        assert (await http.post("/v1/claims", json=_visit("F1"), headers=mine)).status_code == 200
        # settling or quoting a claim of another facility_id: 403, nothing published
        assert (await http.post("/v1/claims", json=_visit("F2"), headers=theirs)).status_code == 403
        assert (await http.post("/v1/claims/presettle", json=_visit("F2"), headers=theirs)).status_code == 403
        # reading and reversing: exactly as for a claim that does not exist
        seen = await http.get("/v1/claims/F1", headers=theirs)
        none = await http.get("/v1/claims/F-NONE", headers=theirs)
        assert seen.status_code == none.status_code == 404
        assert seen.json()["detail"].replace("F1", "X") == none.json()["detail"].replace("F-NONE", "X")
        reverse = await http.post(
            "/v1/claims/F1/reversal", json={"member_id": "M1", "reason": ""}, headers=theirs
        )
        nothing = await http.post(
            "/v1/claims/F-NONE/reversal", json={"member_id": "M1", "reason": ""}, headers=theirs
        )
        assert reverse.status_code == nothing.status_code == 422
        assert reverse.json()["reasons"] == [
            {**nothing.json()["reasons"][0], "message": reverse.json()["reasons"][0]["message"]}
        ]
        assert reverse.json()["reasons"][0]["code"] == "UNKNOWN_CLAIM"
        # and another member's claim of another facility too (facility is checked before member)
        other_member = await http.post(
            "/v1/claims/F1/reversal", json={"member_id": "M2", "reason": ""}, headers=theirs
        )
        assert other_member.json()["reasons"][0]["code"] == "UNKNOWN_CLAIM"
        # the same id settled by another facility: DUPLICATE_CONFLICT, which says only that it is taken
        taken = await http.post("/v1/claims", json=_visit("F1", facility="NC-H2"), headers=theirs)
        assert taken.status_code == 422 and taken.json()["reasons"][0]["code"] == "DUPLICATE_CONFLICT"
        status = await http.get("/v1/claims/F1", headers=mine)
        assert status.json()["status"] == "settled"  # still the owner's, untouched


async def test_two_gateway_replicas_answer_their_own_requests(world: Cluster) -> None:
    world.worker().start()
    first, second = GatewayProcess(world), GatewayProcess(world)
    for gateway in (first, second):
        gateway.start(wait_ready=0)
    first.wait_ready()
    second.wait_ready()
    async with httpx.AsyncClient(timeout=60) as http:

        async def settle(n: int) -> tuple[int, dict[str, Any]]:
            gateway = (first, second)[n % 2]
            body = _visit(f"P{n}", member_id=("M1", "M2")[n % 3 == 0], amount=1_000 + n)
            response = await http.post(gateway.url + "/v1/claims", json=body, headers=auth("NC-H3"))
            assert response.status_code == 200, response.text
            return n, response.json()

        results = await asyncio.gather(*(settle(n) for n in range(40)))
        for n, event in results:
            assert event["claim_id"] == f"P{n}" and event["total_fen"] == 1_000 + n + 3_000
        # the same claim id from both replicas at once: one settlement, the same answer to both
        same = _visit("P-SAME")
        a, b = await asyncio.gather(
            http.post(first.url + "/v1/claims", json=same, headers=auth("NC-H3")),
            http.post(second.url + "/v1/claims", json=same, headers=auth("NC-H3")),
        )
        assert a.status_code == b.status_code == 200 and a.content == b.content
        # 202 from one replica, the outcome from the other
        pending = await http.post(
            first.url + "/v1/claims", json=_visit("P-LATE"), headers={**auth("NC-H3"), "Prefer": "wait=0"}
        )
        assert pending.status_code == 202 and pending.headers["location"] == "/v1/claims/P-LATE"
        assert pending.json() == {"claim_id": "P-LATE", "status": "pending"}
        done = await until_status(http, second.url + "/v1/claims/P-LATE", "NC-H3", "settled")
        assert done["settlement"]["claim_id"] == "P-LATE"


async def test_gateway_started_before_the_worker_answers_pending_then_settled(world: Cluster) -> None:
    gateway = GatewayProcess(world)
    gateway.start(wait_ready=0)
    gateway.wait_ready()  # ready without a worker: it needs Kafka, Redis and the registry
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        h = {**auth("NC-H3"), "Prefer": "wait=1"}
        first = await http.post("/v1/claims", json=_visit("B1"), headers=h)
        assert first.status_code == 202
        status = await http.get("/v1/claims/B1", headers=auth("NC-H3"))
        assert status.json() == {
            "claim_id": "B1",
            "status": "pending",
            "settlement": None,
            "reversal": None,
            "rejection": None,
        }
        world.worker().start()
        settled = await until_status(http, gateway.url + "/v1/claims/B1", "NC-H3", "settled")
        again = await http.post("/v1/claims", json=_visit("B1"), headers=auth("NC-H3"))
        assert again.status_code == 200 and again.json() == settled["settlement"]


async def test_worker_killed_with_requests_in_flight(world: Cluster, redis_service: RedisService) -> None:
    """SIGKILL the worker while requests wait: each is answered (200) or pending (202), a new worker
    answers the rest, and every claim is settled once: the member's ledger is that of one pass."""
    worker = world.worker().start()
    gateway = GatewayProcess(world, WORKER_GATEWAY_WAIT_SECONDS="4")
    gateway.start(wait_ready=0)
    gateway.wait_ready()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:

        async def settle(n: int) -> int:
            await asyncio.sleep(n * 0.01)
            response = await http.post(
                "/v1/claims", json=_visit(f"K{n}", amount=10_000), headers=auth("NC-H3")
            )
            assert response.status_code in (200, 202), response.text
            return response.status_code

        requests = asyncio.gather(*(settle(n) for n in range(60)))
        await asyncio.sleep(0.3)
        worker.kill()
        codes = await requests
        world.worker().start()
        for n in range(60):
            await until_status(http, f"{gateway.url}/v1/claims/K{n}", "NC-H3", "settled", seconds=60)
        last = await http.get("/v1/claims/K59", headers=auth("NC-H3"))
    assert 202 in codes or 200 in codes
    client = connect(redis_service.url, cluster=False)
    try:
        from worker.adapters.redis_store import decode_ledger, member_key

        ledger = decode_ledger(await client.hget(member_key("M1", "ledger"), "d"))  # type: ignore[arg-type]
    finally:
        await client.aclose()
    year = ledger.year(2023)
    assert year.claims == 60 and year.counted == 60 * (10_000 + 2_700)  # each claim counted once
    assert last.json()["status"] == "settled"


async def test_kafka_not_acknowledging_is_503_with_retry_after(
    redis_service: RedisService, tmp_path: Path
) -> None:
    own = start_broker(str(tmp_path), port=free_port())  # a private broker, stopped below
    world = Cluster(own.bootstrap_servers, redis_service.url, f"g{next(_counter)}", tmp_path)
    try:
        await world.create_topics()
        gateway = GatewayProcess(world, WORKER_GATEWAY_PUBLISH_TIMEOUT_SECONDS="2")
        gateway.start(wait_ready=0)
        gateway.wait_ready()
        own.close()  # the broker is gone
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            response = await http.post("/v1/claims", json=_visit("U1"), headers=auth("NC-H3"))
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"] == "application/problem+json"
            ready = await http.get("/readyz")
            assert ready.status_code == 503
    finally:
        world.close()
        own.close()


def test_token_cli_prints_a_token_the_gateway_accepts(tmp_path: Path) -> None:
    import subprocess
    import sys

    from worker.gateway.auth import TokenVerifier

    result = subprocess.run(
        [sys.executable, "-m", "worker", "gateway", "token", "NC-H3", "--ttl", "60"],
        env={"WORKER_GATEWAY_JWT_SECRET": "s3cret", "PATH": "/usr/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert TokenVerifier("s3cret", None).facility("Bearer " + result.stdout.strip()) == "NC-H3"
