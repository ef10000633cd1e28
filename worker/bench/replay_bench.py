"""Offline replay throughput: `python -m worker.bench.replay_bench [--claims N] [--members M]`.

Generates the synthetic workload, then times `Replayer.run` over it (decode, engine, in-memory
state, orjson output) on one core. Prints a summary and, last, one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

from worker.bench import synthetic
from worker.domain.policy import load_policies
from worker.replay import Replayer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--members", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    reference = synthetic.encode([*synthetic.facilities(), *synthetic.members(args.members)])
    credits = synthetic.encode(synthetic.contributions(args.members))
    claims = synthetic.encode(synthetic.claims(args.claims, args.members))
    rates: list[float] = []
    for round_number in range(args.rounds):
        replayer = Replayer(load_policies())
        replayer.run([*reference, *credits], io.BytesIO())
        with open(os.devnull, "wb") as sink:  # streamed like stdout, not accumulated
            started = time.perf_counter()
            replayer.run(claims, sink)
            elapsed = time.perf_counter() - started
        rate = len(claims) / elapsed
        rates.append(rate)
        print(f"round {round_number + 1}: {len(claims)} claims in {elapsed:.2f} s = {rate:,.0f} claims/s")
    print(
        json.dumps(
            {
                "benchmark": "replay",
                "claims": len(claims),
                "members": args.members,
                "first_round_claims_per_s": round(rates[0]),  # a fresh process: an analyst's one-off run
                "best_claims_per_s": round(max(rates)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
