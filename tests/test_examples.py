"""The worked examples (tests/golden, from the amended spec) replayed and compared as the spec compares."""

from __future__ import annotations

import io
import subprocess
import sys

import orjson
import pytest

from tests.conftest import EXAMPLE_NAMES, EXAMPLES, ROOT, assert_matches_expected
from worker.domain.policy import PolicyBook
from worker.replay import Replayer

NAMES = EXAMPLE_NAMES


def test_examples_are_present() -> None:
    assert set(NAMES) == {"accounts", "amendments", "pooling-nanchang", "pooling-nanjing", "rejections"}


@pytest.mark.parametrize("name", NAMES)
def test_replay_matches_expected_with_accounts(name: str, policies: PolicyBook) -> None:
    out = io.BytesIO()
    with (EXAMPLES / f"{name}.jsonl").open("rb") as handle:
        Replayer(policies).run(handle, out)
    assert_matches_expected(name, [orjson.loads(x) for x in out.getvalue().splitlines()])


def test_replay_cli_matches_every_example() -> None:
    """`python -m worker replay FILE` as the spec's checker runs it, one process per example."""
    for name in NAMES:
        result = subprocess.run(
            [sys.executable, "-m", "worker", "replay", str(EXAMPLES / f"{name}.jsonl")],
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert_matches_expected(name, [orjson.loads(x) for x in result.stdout.splitlines()])


def test_replay_reads_stdin() -> None:
    data = (EXAMPLES / "rejections.jsonl").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "worker", "replay"], input=data, capture_output=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == len(
        (EXAMPLES / "rejections.expected.jsonl").read_bytes().splitlines()
    )
