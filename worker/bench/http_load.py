"""Open-loop HTTP load generator: `python -m worker.bench.http_load --url U --path P --rate R ...`.

Request i is due at start + i / rate whatever happened to the earlier ones (constant arrival rate),
and its latency is measured from when it was due, so a slow answer delays no later request and
queueing is counted, not hidden. Keep-alive connections (a pool), a separate process from the
system under test. Bodies come from a JSONL file, one request each, cycled. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import httpx


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, bodies: list[bytes]) -> dict[str, object]:
    total = int(args.rate * args.seconds)
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=args.url, limits=limits, timeout=60, headers=headers) as client:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2

        async def one(index: int) -> None:
            due = start + index / args.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                response = await client.post(args.path, content=bodies[index % len(bodies)])
                codes[response.status_code] += 1
            except httpx.HTTPError:
                codes[0] += 1
            latencies.append(loop.time() - due)

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - began - 0.2
    return {
        "path": args.path,
        "offered_per_s": args.rate,
        "requests": total,
        "answered_per_s": round(total / elapsed),
        "codes": dict(codes),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0) * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True, help="JSONL file, one request body a line")
    parser.add_argument("--token", required=True)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    import uvloop

    with open(args.bodies, "rb") as handle:
        bodies = [line for line in handle.read().splitlines() if line]
    result = uvloop.run(run(args, bodies))
    print(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
