"""The policy lab (issue #13 §3–§4): the synthetic city year, and `simulate` agreeing with replaying
the same stream under each policy set."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from worker.domain.policy import POLICY_DIR, load_policies
from worker.lab.population import generate
from worker.lab.simulate import simulate
from worker.replay import Replayer


def _draft(folder: Path) -> Path:
    """Nanchang raises the retirees' cap from 2 000 to 2 400 yuan."""
    folder.mkdir()
    for path in POLICY_DIR.glob("*.toml"):
        text = path.read_text(encoding="utf-8")
        if path.name == "nanchang-2023.toml":
            text = text.replace("cap_fen = 200000", "cap_fen = 240000").replace(
                'id = "nanchang-2023"', 'id = "nanchang-2023-draft"'
            )
        (folder / path.name).write_text(text, encoding="utf-8")
    return folder


def _write(path: Path, messages: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in messages))
    return path


def _replayed(path: Path, folder: Path) -> dict[str, Any]:
    """Replay under one set: fund of claims settled and not reversed, by month; members at the cap."""
    out = io.BytesIO()
    Replayer(load_policies(folder)).run(path.read_bytes().splitlines(), out)
    events = [orjson.loads(x) for x in out.getvalue().splitlines()]
    reversed_ids = {e["claim_id"] for e in events if e["type"] == "claim.reversed"}
    settled = [e for e in events if e["type"] == "claim.settled" and e["claim_id"] not in reversed_ids]
    by_month: dict[str, int] = defaultdict(int)
    for e in settled:
        by_month[e["service_date"][:7]] += e["fund_pay_fen"]
    return {
        "fund": sum(e["fund_pay_fen"] for e in settled),
        "by_month": dict(by_month),
        "cap": len({e["member_id"] for e in settled if "CAP_REACHED" in e["fund_limits"]}),
        "claims": len(settled),
    }


def test_the_synthetic_year_is_deterministic_and_shaped_as_documented() -> None:
    first = list(generate("nanjing", 2_000, seed=3))
    assert first == list(generate("nanjing", 2_000, seed=3))
    assert first != list(generate("nanjing", 2_000, seed=4))
    kinds = Counter(m["type"] for m in first)
    profiles = [m for m in first if m["type"] == "member.profile"]
    retirees = sum(1 for p in profiles if p["retirement_date"])
    assert 0.24 < retirees / len(profiles) < 0.32  # 28%
    claims = [m for m in first if m["type"] == "claim.submitted"]
    assert 3 < len(claims) / len(profiles) < 12  # visits a member a year
    pharmacy = sum(1 for c in claims if "prescribing_facility_id" in c)
    assert 0.07 < pharmacy / len(claims) < 0.13  # 10%
    assert kinds["claim.reversal_requested"] > 0 and kinds["account.retiree_credit_due"] > 0
    assert all(m["city"] == "nanjing" for m in first if "city" in m)


def test_simulate_agrees_with_replaying_the_stream_under_each_set(tmp_path: Path) -> None:
    year = _write(tmp_path / "year.jsonl", list(generate("nanchang", 1_500, seed=2)))
    draft = _draft(tmp_path / "draft")
    result = simulate(year, draft, None, jobs=2)
    base, new = _replayed(year, POLICY_DIR), _replayed(year, draft)
    assert result["claims_compared"] == base["claims"] == new["claims"]
    assert result["fund"]["baseline_fen"] == base["fund"]
    assert result["fund"]["draft_fen"] == new["fund"]
    assert result["fund"]["change_fen"] == new["fund"] - base["fund"] > 0
    assert {r["key"]: r["baseline_fen"] for r in result["by_month"]} == base["by_month"]
    assert {r["key"]: r["draft_fen"] for r in result["by_month"]} == new["by_month"]
    assert result["members_reaching_cap"] == {"baseline": base["cap"], "draft": new["cap"]}
    assert {r["key"] for r in result["by_treatment"] if r["change_fen"]} <= {
        "retired",
        "retired_70plus",
        "pre1949",
    }
    assert sum(d["members"] for d in result["member_share"]["distribution"]) == result["members"]
    assert result["member_share"]["average_change_fen"] < 0  # the fund pays more, members less
    assert result["most_affected_members"][0]["share_change_fen"] < 0
    one = simulate(year, draft, None, jobs=1)
    assert {k: v for k, v in one.items() if k != "run"} == {k: v for k, v in result.items() if k != "run"}
    many = simulate(year, draft, None, jobs=2, shard_bytes=256 << 10)  # ≈ 50 members a shard
    assert many["run"]["shards"] > 20 and many["run"]["messages"] == result["run"]["messages"]
    assert {k: v for k, v in many.items() if k != "run"} == {k: v for k, v in result.items() if k != "run"}


def test_simulate_cli_json_html_in_chromium_and_a_bad_draft(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    year = _write(tmp_path / "year.jsonl", list(generate("nanchang", 600, seed=5)))
    draft = _draft(tmp_path / "draft")
    page_file = tmp_path / "simulation.html"
    done = subprocess.run(
        [sys.executable, "-m", "worker", "simulate", "--claims", str(year), "--draft", str(draft), "--json",
         "--out", str(page_file)],
        capture_output=True, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["fund"]["change_fen"] > 0
    text = page_file.read_text()
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_file.as_uri())
            drawn = page.eval_on_selector_all(
                "svg.chart", "els => els.map(e => [e.dataset.chart, e.querySelectorAll('rect.bar').length])"
            )
            page.screenshot(path=str(tmp_path / "simulation.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert {name for name, bars in drawn if bars > 0} >= {
        "change-by-month",
        "share-distribution",
        "facilities",
    }
    (draft / "nanchang-2023.toml").write_text("id = ")
    bad = subprocess.run(
        [sys.executable, "-m", "worker", "simulate", "--claims", str(year), "--draft", str(draft)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "nanchang-2023.toml" in bad.stderr


@pytest.mark.parametrize("city", ["nanchang", "nanjing"])
def test_the_population_cli_writes_the_stream(tmp_path: Path, city: str) -> None:
    out = tmp_path / f"{city}.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "worker", "population", "--city", city, "--members", "50", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().splitlines() == [orjson.dumps(m) for m in generate(city, 50)]


def test_the_worked_example_drafts_are_valid_sets_changing_only_what_they_say() -> None:
    from worker.domain.policy import check_path

    drafts = Path(__file__).resolve().parents[1] / "docs" / "examples" / "drafts"
    packaged = load_policies(POLICY_DIR)
    for name, city, changed in (
        ("nanchang-retiree-cap-2400", "nanchang", "tables"),
        ("nanjing-community-minus-5", "nanjing", "tables"),
    ):
        assert check_path(drafts / name) == []
        book = load_policies(drafts / name)
        draft = next(p for p in book.by_id.values() if p.city == city)
        base = next(p for p in packaged.by_id.values() if p.city == city)
        differing = {k for k in type(base).model_fields if getattr(base, k) != getattr(draft, k)}
        assert differing == {"id", changed}, differing
    nanchang = load_policies(drafts / "nanchang-retiree-cap-2400").by_id["nanchang-2023-retiree-cap-2400"]
    assert nanchang.tables["retired"].cap_fen == 240_000 and nanchang.tables["employed"].cap_fen == 180_000
    nanjing = load_policies(drafts / "nanjing-community-minus-5").by_id["nanjing-2023-community-minus-5"]
    assert nanjing.tables["employed"].segments[0].ratios == {"community": 4_500, "non_community": 4_000}
    assert nanjing.tables["employed"].segments[1].ratios["community"] == 7_000
