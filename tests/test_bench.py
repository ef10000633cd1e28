"""The committed Kafka benchmark runs end to end and reports what issue #3 asks for.

A small run (its numbers mean nothing here): every phase works against the real broker and Redis,
and the last line is the JSON summary with saturation throughput and latency percentiles.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def _bench(*args: str, timeout: int = 600) -> list[str]:
    """Run a benchmark command in a subprocess; its output lines (the last is its JSON summary)."""
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_bench_runs_every_phase_and_ends_with_a_json_summary() -> None:
    lines = _bench("worker", "bench", "--claims", "3000", "--rate", "300", "--seconds", "2")
    summary = json.loads(lines[-1])
    assert summary["claims"] == 3000  # every preloaded claim answered once
    assert summary["saturation_claims_per_s"] > 0
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"] <= summary["latency_ms"]["max"]
    assert summary["worker_cpu_us_per_claim"] > 0
    assert summary["worker_peak_rss_mib"] > 0
    assert any(line.startswith("latency at 300 claims/s") for line in lines)


def test_settle_bench_settles_every_claim_and_reports_cpu_per_claim() -> None:
    lines = _bench("worker.bench.settle_bench", "--claims", "2000", "--members", "500", timeout=300)
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == "settle" and summary["claims"] == summary["answers"] == 2000
    assert summary["claims_per_s"] > 0 and summary["cpu_us_per_claim"] > 0


def test_gateway_bench_runs_every_phase_and_every_request_is_answered() -> None:
    lines = _bench(
        "worker.bench.gateway_bench", "--members", "300", "--seconds", "2", "--rate", "30",
        "--saturation-rate", "60",
    )  # fmt: skip
    summary = json.loads(lines[-1])
    assert summary["presettle"]["codes"] == {"200": 60}
    assert summary["settle"]["codes"] == {"200": 60}
    assert summary["saturation"]["codes"] == {"200": 120}
    for phase in ("presettle", "settle", "saturation"):
        result = summary[phase]
        assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
        assert result["cpu_us_per_request"]["gateway"] > 0


def test_records_bench_writes_every_event_once() -> None:
    result = json.loads(_bench("worker.bench.records_bench", "--claims", "3000", "--partitions", "4")[-1])
    assert result["rows"] == result["events"] > 3000 and result["events_per_second"] > 0


def test_simulate_bench_reports_both_process_counts() -> None:
    result = json.loads(_bench("worker.bench.simulate_bench", "--members", "300", "--rounds", "1")[-1])
    assert result["claims"] > 1000 and set(result["claims_per_second_per_set"]) == {"1", "2"}


def test_simulate_bench_breakdown_says_where_one_sets_time_goes() -> None:
    result = json.loads(_bench("worker.bench.simulate_bench", "--members", "300", "--breakdown")[-1])
    steps = result["us_per_member_message_and_set"]
    assert result["claims"] > 1000 and result["claims"] < result["member_messages"] < result["messages"]
    assert steps["decide"] > 0 and steps["store"] > 0 and steps["decide"] + steps["store"] < steps["settle"]
    assert result["us_per_message"]["decode"] > 0 and result["ceiling_claims_per_second_per_set"] > 0
