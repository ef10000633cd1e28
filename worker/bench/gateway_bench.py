"""Gateway benchmark: `python -m worker.bench.gateway_bench [--rate 500] [--seconds 15] ...`.

Broker + Redis + one worker + one gateway on this machine, the registry (members, facilities) and
one account credit per member loaded first. A separate load-generator process
(`worker.bench.http_load`, open loop, keep-alive) then offers, in turn:

1. presettle at --rate requests/s (quotes on the members' state; nothing written);
2. settle at --rate requests/s (publish, worker, answer by correlation id);
3. saturation: settle at --saturation-rate requests/s; throughput = answered requests / time.

It reports p50/p95/p99 latency (from when each request was due), the status codes, and the
gateway's CPU per request (user + system time of the gateway process over the phase). The last
line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from worker.bench import synthetic
from worker.bench.kafka_bench import _settings, process_cpu_seconds
from worker.gateway.auth import issue_token
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, collect, output_topics, produce_lines
from worker.local.services import free_port, start_broker, start_redis

SECRET = "bench-secret-0123456789abcdef-0123456789"


def _bodies(path: Path, count: int, members: int, facility: str, prefix: str) -> None:
    """Claims of one facility (the token's), spread over the members."""
    with path.open("wb") as out:
        for n, claim in enumerate(synthetic.claims(count, members, seed=31, prefix=prefix)):
            claim["facility_id"] = facility
            claim.pop("prescribing_facility_id", None)
            claim["claim_id"] = f"{prefix}{n}"
            out.write(orjson.dumps(claim) + b"\n")


def _load(url: str, path: str, bodies: Path, rate: float, seconds: float, token: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker.bench.http_load",
            "--url",
            url,
            "--path",
            path,
            "--bodies",
            str(bodies),
            "--token",
            token,
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds * 10 + 120,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    broker = start_broker(str(workdir))
    redis = start_redis()
    processes: list[WorkerProcess] = []
    try:
        settings, env = _settings(broker.bootstrap_servers, redis.url, f"gwb{int(time.time())}", 4)
        await ensure_topics(settings)
        registry = [*synthetic.facilities(), *synthetic.members(args.members)]
        facility = next(
            f["facility_id"]
            for f in registry
            if f["type"] == "facility.registered" and f["kind"] == "medical" and f["city"] == "nanchang"
        )
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(registry))
        credits = synthetic.encode(synthetic.contributions(args.members))
        worker = WorkerProcess(env, workdir / "worker.log").start()
        processes.append(worker)
        await produce_lines(broker.bootstrap_servers, settings, credits)
        await collect(broker.bootstrap_servers, output_topics(settings), len(credits), 120)
        port = free_port()
        gateway = WorkerProcess(
            {**env, "WORKER_GATEWAY_PORT": str(port), "WORKER_GATEWAY_JWT_SECRET": SECRET},
            workdir / "gateway.log",
            command="gateway",
        ).start()
        processes.append(gateway)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(600):  # the gateway is ready within a minute or the bench fails below
                if (await client.get(url + "/readyz")).status_code == 204:
                    break
                await asyncio.sleep(0.1)
        token = issue_token(SECRET, facility, 3600)
        phases: dict[str, Any] = {}
        plan = [
            ("presettle", "/v1/claims/presettle", args.rate, "Q"),
            ("settle", "/v1/claims", args.rate, "S"),
            ("saturation", "/v1/claims", args.saturation_rate, "X"),
        ]
        for name, path, rate, prefix in plan:
            bodies = workdir / f"{name}.jsonl"
            _bodies(bodies, int(rate * args.seconds), args.members, facility, prefix)
            pids = {
                "gateway": gateway.pid,
                "worker": worker.pid,
                "broker": broker.started.processes[0].pid if broker.started.processes else None,
                "redis": redis.started.processes[0].pid if redis.started.processes else None,
            }
            before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
            result = await asyncio.to_thread(_load, url, path, bodies, rate, args.seconds, token)
            result["cpu_us_per_request"] = {
                name: round((process_cpu_seconds(pid) - before[name]) / result["requests"] * 1e6)
                for name, pid in pids.items()
                if pid is not None
            }
            phases[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
        return {"benchmark": "gateway", "broker": broker.kind, "members": args.members, **phases}
    finally:
        for process in processes:
            process.close()
        redis.close()
        broker.close()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--saturation-rate", type=float, default=2500)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
