"""Malformed messages: each gets exactly one claim.rejected / request_rejected or dead_letter, replay
never raises (issue #2 §6), and through Kafka the worker answers each as replay does and never stops
(issue #10 §7). The harness is `tests/fuzzing.py`; its long run is a documented command."""

from __future__ import annotations

import io
import itertools
import random
from pathlib import Path

import orjson
import pytest

from contracts.outbound import OUTBOUND
from tests.fuzzing import fuzz_through_kafka, malformed, reference
from tests.kafka_support import fresh_world
from worker.domain.policy import load_policies
from worker.local.services import Broker, RedisService
from worker.replay import Replayer

_counter = itertools.count()


def test_every_malformed_line_gets_exactly_one_answer() -> None:
    rng = random.Random(20231101)
    replayer = Replayer(load_policies())
    replayer.run(reference(), io.BytesIO())
    kinds: dict[str, int] = {}
    for _ in range(3000):
        payload, fixed = malformed(rng)
        out = io.BytesIO()
        replayer.run([payload], out)
        events = [orjson.loads(x) for x in out.getvalue().splitlines()]
        assert len(events) == 1, (payload[:200], events)
        event = events[0]
        OUTBOUND.validate_python(event)
        assert fixed is None or event["type"] == fixed, (payload[:200], event)
        kinds[event["type"]] = kinds.get(event["type"], 0) + 1
    # the mutations reach every kind of answer, including ones that are (accidentally) still valid
    assert kinds.get("dead_letter", 0) > 300
    assert kinds.get("claim.rejected", 0) > 300
    assert kinds.get("account.request_rejected", 0) > 100
    assert kinds.get("claim.settled", 0) > 10


@pytest.mark.integration
async def test_malformed_messages_through_kafka_are_answered_as_replay_answers_them(
    broker: Broker, redis_service: RedisService, tmp_path: Path
) -> None:
    world = await fresh_world(broker.bootstrap_servers, redis_service.url, f"kfuzz{next(_counter)}", tmp_path)
    try:
        seen = await fuzz_through_kafka(world, 3000, seed=7, oversize=0.005)
    finally:
        world.close()
    assert seen["dead_letter"] > 300 and seen["claim.rejected"] > 300 and seen["claim.settled"] > 0
