"""Thousands of malformed lines: each gets exactly one claim.rejected / request_rejected or dead_letter,
and replay never raises (issue #2 §6 Bad input)."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import orjson

from contracts.outbound import OUTBOUND
from tests.builders import NANCHANG_FACILITIES, account, claim, line, member, raw
from worker.domain.policy import load_policies
from worker.replay import Replayer

TEMPLATES: list[dict[str, Any]] = [
    claim("F-C", "F-M", "NC-H3", "2023-03-01", [line("1", 1000), line("2", 500, coverage="B", ratio=1000)]),
    account("contribution_posted", "F-R", "F-M", period="2023-01", base_fen=800000, kind="regular"),
    account(
        "payment_requested",
        "F-R",
        "F-M",
        purpose="family_medical_expense",
        beneficiary_member_id="X",
        amount_fen=5,
    ),
    {
        "type": "claim.reversal_requested",
        "claim_id": "F-C",
        "member_id": "F-M",
        "requested_at": "2023-03-01T10:00:00Z",
    },
]
NASTY: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    10**20,
    -(10**20),
    "",
    "x" * 70,
    "2023-02-30",
    "2023-13-01",
    "12",
    "true",
    [],
    {},
    [1],
    {"a": 1},
    "2023-03-01T10:00:00",
    "9999-99-99T99:99:99+99:99",
    "\u0000",
    "🙂",
    2**63,
    1e308,
]


def _mutate(rng: random.Random, message: Any, depth: int = 0) -> Any:
    if isinstance(message, dict) and message:
        out = dict(message)
        key = rng.choice(sorted(out))
        action = rng.random()
        if action < 0.25:
            del out[key]
        elif action < 0.75 or depth > 2:
            out[key] = rng.choice(NASTY)
        else:
            out[key] = _mutate(rng, out[key], depth + 1)
        return out
    if isinstance(message, list) and message:
        out_list = list(message)
        index = rng.randrange(len(out_list))
        out_list[index] = _mutate(rng, out_list[index], depth + 1)
        if rng.random() < 0.2:
            out_list.append(out_list[0])
        return out_list
    return rng.choice(NASTY)


def _malformed(rng: random.Random) -> bytes:
    template = rng.choice(TEMPLATES)
    kind = rng.random()
    if kind < 0.70:
        return json.dumps(_mutate(rng, template)).encode()
    encoded = raw(template)
    if kind < 0.80:
        cut = rng.randrange(len(encoded))
        return encoded[:cut]  # truncated JSON
    if kind < 0.88:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))  # noise
    if kind < 0.94:
        return raw({**template, "lines": [line(str(i), 1) for i in range(rng.randrange(201, 260))]})
    return raw({**template, "padding": "p" * (1 << 20)})  # oversize


def test_every_malformed_line_gets_exactly_one_answer() -> None:
    rng = random.Random(20231101)
    replayer = Replayer(load_policies())
    replayer.run([raw(m) for m in [*NANCHANG_FACILITIES, member("F-M", "nanchang")]], io.BytesIO())
    kinds: dict[str, int] = {}
    for _ in range(3000):
        payload = _malformed(rng)
        out = io.BytesIO()
        replayer.run([payload], out)
        events = [orjson.loads(x) for x in out.getvalue().splitlines()]
        assert len(events) == 1, (payload[:200], events)
        event = events[0]
        OUTBOUND.validate_python(event)
        kinds[event["type"]] = kinds.get(event["type"], 0) + 1
    # the mutations reach every kind of answer, including ones that are (accidentally) still valid
    assert kinds.get("dead_letter", 0) > 300
    assert kinds.get("claim.rejected", 0) > 300
    assert kinds.get("account.request_rejected", 0) > 100
