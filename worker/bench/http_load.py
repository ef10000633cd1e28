"""Open-loop HTTP load generator: `python -m worker.bench.http_load --url U --path P --rate R ...`.

Request i is due at start + i / rate whatever happened to the earlier ones (constant arrival rate),
and its latency is measured from when it was due, so a slow answer delays no later request and
queueing is counted, not hidden. A pool of keep-alive HTTP/1.1 connections takes due requests in
order. A separate process from the system under test, and lean: requests are prebuilt bytes and
answers are read with asyncio streams on uvloop (an httpx client spent ~4× the gateway's own CPU
per request, which on two cores made the generator the bottleneck). Bodies come from a JSONL file,
one request each. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from urllib.parse import urlsplit


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build_requests(host: str, path: str, token: str, bodies: list[bytes]) -> list[bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()
    return [head + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length framed, as uvicorn answers); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run(args: argparse.Namespace, requests: list[bytes]) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    total = min(int(args.rate * args.seconds), len(requests))
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (item := await queue.get()) is not None:
                index, due = item
                try:
                    writer.write(requests[index])
                    codes[await _read_response(reader)] += 1
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    codes[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                latencies.append(loop.time() - due)
        finally:
            writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(args.connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    began = time.perf_counter()
    start = loop.time()
    for index in range(total):
        due = start + index / args.rate
        delay = due - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        queue.put_nowait((index, due))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - began
    return {
        "path": args.path,
        "offered_per_s": args.rate,
        "requests": total,
        "answered_per_s": round(total / elapsed),
        "codes": {str(code): count for code, count in sorted(codes.items())},
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0) * 1000, 1),
        "load_generator_cpu_us_per_request": round(time.process_time() / max(total, 1) * 1e6),
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
    url = urlsplit(args.url)
    requests = build_requests(url.netloc, args.path, args.token, bodies)
    print(json.dumps(uvloop.run(run(args, requests))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
