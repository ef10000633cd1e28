"""The shared worked examples (../shared/spec/examples) replayed and compared as the spec compares."""

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
    assert set(NAMES) >= {"accounts", "pooling-nanchang", "pooling-nanjing", "rejections"}


@pytest.mark.parametrize("name", NAMES)
def test_replay_matches_expected_with_accounts(name: str, policies: PolicyBook) -> None:
    out = io.BytesIO()
    with (EXAMPLES / f"{name}.jsonl").open("rb") as handle:
        Replayer(policies).run(handle, out)
    assert_matches_expected(name, [orjson.loads(x) for x in out.getvalue().splitlines()])


def test_replay_cli_and_check_examples_tool() -> None:
    """`python -m worker replay FILE` as the spec's own checker runs it."""
    result = subprocess.run(
        [str(ROOT.parent / "shared" / "tools" / "check-examples"), sys.executable],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("matches (with personal accounts)") == len(NAMES), result.stdout


def test_replay_reads_stdin() -> None:
    data = (EXAMPLES / "rejections.jsonl").read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "worker", "replay"], input=data, capture_output=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == len(
        (EXAMPLES / "rejections.expected.jsonl").read_bytes().splitlines()
    )
