"""City policies are data, validated at load (rules §1, §6.1): bad files are refused with a clear message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.builders import claim, facility, line, member
from tests.conftest import Harness
from worker.domain.errors import PolicyError
from worker.domain.policy import POLICY_DIR, load_policies, load_policy

NANCHANG = (POLICY_DIR / "nanchang-2023.toml").read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str, name: str = "city.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("{ lower_fen = 60000, ratios", "{ lower_fen = 50000, ratios", "overlap"),
        ("{ lower_fen = 60000, ratios", "{ lower_fen = 70000, ratios", "gap"),
        ("level1 = 0.60,", "level1 = 0.60005,", "whole number of basis points"),
        ("level1 = 0.60,", "level1 = 1.60,", "between 0 and 1"),
        (
            'uncapped_categories = ["consultation_fee"]',
            'uncapped_categories = ["elixir"]',
            "uncapped_categories",
        ),
        (', pre1949 = "retired" }', " }", "no table for class pre1949"),
        ('pre1949 = "retired" }', 'pre1949 = "missing" }', "unknown table"),
        ("level1 = 0.60, level2 = 0.55, ", "level2 = 0.55, ", "ratios must name exactly the bands"),
        ("distinguishes_age70 = false", "distinguishes_age70 = false\nsurprise = 1", "surprise"),
        ("cap_fen = 180000", "cap_fen = -1", "cap_fen"),
    ],
)
def test_bad_policy_file_is_refused(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in NANCHANG
    path = _write(tmp_path, NANCHANG.replace(old, new, 1))
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_unreadable_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(_write(tmp_path, "id = "))


def test_overlapping_versions_of_a_city_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, NANCHANG, "a.toml")
    _write(
        tmp_path,
        NANCHANG.replace('id = "nanchang-2023"', 'id = "nanchang-2025"').replace(
            "valid_from = 2023-01-01", "valid_from = 2025-01-01"
        ),
        "b.toml",
    )
    with pytest.raises(PolicyError, match="overlap"):
        load_policies(tmp_path)


def test_ratios_convert_exactly_to_bp() -> None:
    policy = load_policy(POLICY_DIR / "nanjing-2023.toml")
    assert policy.table("pre1949").segments[0].ratios == {"community": 10000, "non_community": 9500}
    assert policy.accounts.retiree_credits[2].rate == 540


def test_a_third_city_is_one_data_file(tmp_path: Path) -> None:
    for path in POLICY_DIR.glob("*.toml"):
        _write(tmp_path, path.read_text(encoding="utf-8"), path.name)
    _write(
        tmp_path,
        NANCHANG.replace('id = "nanchang-2023"', 'id = "jiujiang-2024"')
        .replace('city = "nanchang"', 'city = "jiujiang"')
        .replace("valid_from = 2023-01-01", "valid_from = 2024-01-01")
        .replace("cap_fen = 180000", "cap_fen = 150000"),
        "jiujiang-2024.toml",
    )
    book = load_policies(tmp_path)
    assert book.find("jiujiang", dt.date(2024, 5, 1)).id == "jiujiang-2024"  # type: ignore[union-attr]
    harness = Harness(book)
    harness.send(member("JJ", "jiujiang"), facility("JJ-H1", "jiujiang", level=1))
    event = harness.one(claim("C1", "JJ", "JJ-H1", "2024-05-01", [line("1", 900000)]))
    assert (event["policy_version"], event["fund_pay_fen"], event["fund_limits"]) == (
        "jiujiang-2024",
        150000,
        ["CAP_REACHED"],
    )
