"""`python -m worker inspect member ID` / `inspect claim ID` (issue #11): one member's or one
claim's state in plain words, read from the Redis the worker writes."""

from __future__ import annotations

import subprocess
import sys

from tests.builders import NANCHANG_FACILITIES, claim, line, member, raw, reversal
from tests.conftest import ROOT
from tests.redis_support import RedisHarness
from worker.adapters.redis_store import RedisStore
from worker.domain.policy import PolicyBook
from worker.local.services import RedisService


def _inspect(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "REDIS_URL": url, "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-m", "worker", "inspect", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_inspect_shows_a_member_and_a_claim_in_plain_words(
    redis_store: RedisStore, redis_service: RedisService, policies: PolicyBook
) -> None:
    harness = RedisHarness(redis_store, policies)
    out = await harness.send([raw(m) for m in [*NANCHANG_FACILITIES, member("M7", "nanchang")]])
    out = await harness.send(
        [
            raw(claim("C70", "M7", "NC-H3", "2023-03-01", [line("1", 90_000)])),
            raw(claim("C71", "M7", "NC-H3", "2023-04-01", [line("1", 40_000)])),
            raw(reversal("C71", "M7")),
        ]
    )
    settled = next(e for e in out if e["type"] == "claim.settled" and e["claim_id"] == "C70")

    shown = _inspect(redis_service.url, "member", "M7")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.startswith("member M7") and "profile: " in text and "nanchang" in text
    assert "year 2023:" in text and "pooling fund paid" in text and "claims settled: 1" in text
    assert "claims kept: 2" in text and "claim C70: settled" in text and "claim C71: reversed" in text
    assert f"({settled['fund_pay_fen']:,} fen)" in text or settled["fund_pay_fen"] == 0

    shown = _inspect(redis_service.url, "claim", "C71")
    assert shown.returncode == 0 and "claim C71: reversed" in shown.stdout and "member M7" in shown.stdout

    assert _inspect(redis_service.url, "claim", "NOPE").returncode == 1
    assert _inspect(redis_service.url, "member", "NOBODY").stdout.startswith("no member NOBODY")
    assert _inspect(redis_service.url, "member", "bad id!").returncode == 2
