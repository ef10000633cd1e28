"""Policy operations (issue #13 §1–§2): a policy set from WORKER_POLICY_DIR, `policy check` and
`policy show`, and a version that starts mid-year — in replay and through the Kafka worker."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.builders import claim, facility, line, member, raw, reversal
from tests.kafka_support import fresh_world
from worker.domain.policy import POLICY_DIR, check_path, load_policies
from worker.local.services import Broker, RedisService
from worker.replay import Replayer

_counter = itertools.count()


def midyear_set(folder: Path) -> Path:
    """The packaged set, with Nanchang's 2023 version ended on 30 June and a draft from 1 July:
    the employed ratios up 10 points, the employed cap from 1 800 to 2 400 yuan."""
    folder.mkdir(parents=True, exist_ok=True)
    nanchang = (POLICY_DIR / "nanchang-2023.toml").read_text(encoding="utf-8")
    first = nanchang.replace("valid_from = 2023-01-01", "valid_from = 2023-01-01\nvalid_to = 2023-06-30")
    second = (
        nanchang.replace('id = "nanchang-2023"', 'id = "nanchang-2023h2"')
        .replace("valid_from = 2023-01-01", "valid_from = 2023-07-01")
        .replace("cap_fen = 180000", "cap_fen = 240000")
        .replace("level1 = 0.60, level2 = 0.55, level3 = 0.50", "level1 = 0.70, level2 = 0.65, level3 = 0.60")
    )
    assert first != nanchang and second != nanchang
    (folder / "nanchang-2023.toml").write_text(first, encoding="utf-8")
    (folder / "nanchang-2023h2.toml").write_text(second, encoding="utf-8")
    (folder / "nanjing-2023.toml").write_text((POLICY_DIR / "nanjing-2023.toml").read_text(encoding="utf-8"))
    return folder


def _messages() -> list[dict[str, Any]]:
    """One employed Nanchang member, level-1 visits on both sides of 1 July, and a reversal."""
    day = "2023-{}T10:00:00+08:00"
    return [
        facility("NC-H1", "nanchang", level=1),
        member("NC-M1", "nanchang"),
        claim("MY-1", "NC-M1", "NC-H1", "2023-06-20", [line("1", 70_000)], submitted_at=day.format("06-20")),
        claim("MY-2", "NC-M1", "NC-H1", "2023-06-30", [line("1", 10_000)], submitted_at=day.format("06-30")),
        claim("MY-3", "NC-M1", "NC-H1", "2023-07-01", [line("1", 10_000)], submitted_at=day.format("07-01")),
        claim("MY-4", "NC-M1", "NC-H1", "2023-07-20", [line("1", 400_000)], submitted_at=day.format("07-20")),
        reversal("MY-2", "NC-M1", at="2023-07-21T10:00:00+08:00"),
        claim("MY-5", "NC-M1", "NC-H1", "2023-08-01", [line("1", 20_000)], submitted_at=day.format("08-01")),
    ]


def _replay(folder: Path, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = io.BytesIO()
    Replayer(load_policies(folder)).run([raw(m) for m in messages], out)
    return [orjson.loads(x) for x in out.getvalue().splitlines()]


async def _replay_async(folder: Path, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = io.BytesIO()
    await Replayer(load_policies(folder)).replay([raw(m) for m in messages], out)
    return [orjson.loads(x) for x in out.getvalue().splitlines()]


def test_a_version_starting_mid_year_applies_from_its_date_and_the_year_continues(tmp_path: Path) -> None:
    events = {
        e["claim_id"]: e
        for e in _replay(midyear_set(tmp_path / "p"), _messages())
        if e["type"] != "claim.reversed"
    }
    reversed_event = next(
        e for e in _replay(midyear_set(tmp_path / "q"), _messages()) if e["type"] == "claim.reversed"
    )
    # before: deductible 600 yuan, then 60% (the old version) — the last day of June included
    assert events["MY-1"]["policy_version"] == "nanchang-2023"
    assert events["MY-1"]["fund_pay_fen"] == 6_000  # 60 000 deductible + 10 000 × 60%
    assert events["MY-2"]["policy_version"] == "nanchang-2023" and events["MY-2"]["fund_pay_fen"] == 6_000
    # after: 70% from 1 July, on the counted amount the year already holds (80 000: no new deductible)
    assert events["MY-3"]["policy_version"] == "nanchang-2023h2"
    assert events["MY-3"]["fund_pay_fen"] == 7_000
    acc = events["MY-3"]["accumulators_after"]
    assert (acc["counted_fen"], acc["fund_fen"], acc["claims"], acc["cap_fen"]) == (
        90_000,
        19_000,
        3,
        240_000,
    )
    # the new cap (2 400 yuan) bounds the year's fund, counting what the old version paid
    assert events["MY-4"]["fund_pay_fen"] == 240_000 - 19_000
    assert events["MY-4"]["fund_limits"] == ["CAP_REACHED"]
    # a reversal after the change gives back exactly what the claim took, under the old version
    assert reversed_event["fund_pay_fen"] == 6_000
    assert reversed_event["accumulators_after"]["capped_fund_fen"] == 240_000 - 6_000
    # so the next claim finds 60 yuan of room under the new cap
    assert events["MY-5"]["fund_pay_fen"] == 6_000


def test_the_packaged_set_without_the_draft_pays_the_old_ratio_all_year(tmp_path: Path) -> None:
    events = {e["claim_id"]: e for e in _replay(POLICY_DIR, _messages()) if e["type"] == "claim.settled"}
    assert {e["policy_version"] for e in events.values()} == {"nanchang-2023"}
    assert events["MY-3"]["fund_pay_fen"] == 6_000
    assert events["MY-4"]["fund_pay_fen"] == 180_000 - 18_000


@pytest.mark.integration
async def test_the_worker_settles_with_the_policy_dir_like_replay(
    broker: Broker, redis_service: RedisService, tmp_path: Path
) -> None:
    folder = midyear_set(tmp_path / "policies")
    world = await fresh_world(broker.bootstrap_servers, redis_service.url, f"pol{next(_counter)}", tmp_path)
    try:
        messages = _messages()
        await world.publish([raw(m) for m in messages[:2]])  # the registry first
        world.worker(WORKER_POLICY_DIR=str(folder)).start()
        await world.publish_in_order([raw(m) for m in messages[2:]])
        received = await world.wait_outputs(len(messages) - 2)
        got = {(r.event["type"], r.event["claim_id"]): r.event for r in received}
        for want in await _replay_async(folder, messages):
            have = got[(want["type"], want["claim_id"])]
            for field in ("policy_version", "fund_pay_fen", "accumulators_after", "fund_limits"):
                assert have.get(field) == want.get(field), (want["claim_id"], field)
        refused = world.refused_start(WORKER_POLICY_DIR=str(tmp_path / "nowhere"))
        assert "WORKER_POLICY_DIR" in refused and "no policy files" in refused
    finally:
        world.close()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], capture_output=True, text=True, env={**os.environ, **env}
    )


def test_policy_check_names_the_file_the_field_and_the_problem(tmp_path: Path) -> None:
    good = midyear_set(tmp_path / "good")
    assert check_path(good) == []
    done = _cli("policy", "check", str(good))
    assert done.returncode == 0 and "valid" in done.stdout
    bad = midyear_set(tmp_path / "bad")
    text = (bad / "nanchang-2023h2.toml").read_text()
    (bad / "nanchang-2023h2.toml").write_text(
        text.replace("valid_from = 2023-07-01", "valid_from = 2023-06-01").replace(
            "cap_fen = 240000", "cap_fen = -5"
        )
    )
    (bad / "nanjing-2023.toml").write_text(
        (bad / "nanjing-2023.toml")
        .read_text()
        .replace('tables = "art. 14"', 'tables = "art. 14", tabels = "x"')
    )
    problems = check_path(bad)
    assert any(p.startswith("nanchang-2023h2.toml: tables.employed.cap_fen:") for p in problems), problems
    assert any(p.startswith("nanjing-2023.toml: articles") and "tabels" in p for p in problems), problems
    (bad / "nanchang-2023h2.toml").write_text(
        text.replace("valid_from = 2023-07-01", "valid_from = 2023-06-01")
    )
    overlap = check_path(bad)
    assert any(
        p.startswith("nanchang-2023h2.toml: valid_from:")
        and "overlaps nanchang-2023 in nanchang-2023.toml" in p
        for p in overlap
    ), overlap
    done = _cli("policy", "check", str(bad))
    assert done.returncode == 1 and "nanchang-2023h2.toml: valid_from" in done.stderr
    one = _cli("policy", "check", str(bad / "nanjing-2023.toml"))
    assert one.returncode == 1 and "tabels" in one.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("policy", "check", str(empty)).returncode == 1
    (empty / "x.toml").write_text("id = ")
    broken = _cli("policy", "check", str(empty))
    assert broken.returncode == 1 and "x.toml: cannot read policy file" in broken.stderr


def test_policy_show_prints_tables_with_their_articles(tmp_path: Path) -> None:
    done = _cli("policy", "show", "nanjing-2023")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for expected in (
        "宁政规字〔2022〕5号",
        "(art. 14)",
        "community",
        "non_community",
        "health incentive",
        "retired_70plus",
    ):
        assert expected in text, expected
    drafted = _cli("policy", "show", "nanchang-2023h2", WORKER_POLICY_DIR=str(midyear_set(tmp_path / "p")))
    assert drafted.returncode == 0 and "2,400.00" in drafted.stdout and "70.00%" in drafted.stdout
    assert "2023-07-01 … open" in drafted.stdout
    unknown = _cli("policy", "show", "nowhere-2099")
    assert unknown.returncode == 1 and "nanchang-2023" in unknown.stderr
