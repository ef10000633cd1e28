"""Benchmark of `simulate` (issue #13): `python -m worker.bench.simulate_bench [--members N]`.

Generates a synthetic Nanchang year (`worker.lab.population`, N members), a draft set that raises the
retirees' cap from 2 000 to 2 400 yuan, and runs `simulate` with 1 and with 2 processes, alternately,
twice each; prints one JSON object: claims settled per second for one policy set (claims × 2 sets /
wall time, decoding and comparing included). Target: >= 50,000 with both cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from worker.domain.policy import POLICY_DIR
from worker.lab.population import generate
from worker.lab.simulate import simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.bench.simulate_bench", description=__doc__)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="simulate-bench-"))
    try:
        year = folder / "year.jsonl"
        with year.open("wb") as out:
            for message in generate("nanchang", args.members, seed=1):
                out.write(orjson.dumps(message) + b"\n")
        draft = folder / "draft"
        draft.mkdir()
        for path in POLICY_DIR.glob("*.toml"):
            text = path.read_text(encoding="utf-8")
            if path.name.startswith("nanchang"):
                text = text.replace("cap_fen = 200000", "cap_fen = 240000")
            (draft / path.name).write_text(text, encoding="utf-8")
        runs: dict[str, list[int]] = {"1": [], "2": []}
        claims = 0
        for _ in range(args.rounds):
            for jobs in (1, 2):
                started = time.perf_counter()
                result = simulate(year, draft, None, jobs)
                seconds = time.perf_counter() - started
                claims = result["claims_compared"]
                runs[str(jobs)].append(round(claims * 2 / seconds))
        print(json.dumps({"members": args.members, "claims": claims, "claims_per_second_per_set": runs}))
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
