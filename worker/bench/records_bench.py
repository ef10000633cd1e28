"""Benchmark of the records service (issue #12): `python -m worker.bench.records_bench [--claims N]`.

A synthetic two months of both cities (claims, reversals, reimbursements, account requests; see
`worker.bench.books`) is settled with the worker's engine, its outcome events (with the `member_state`
the worker appends) are published on fresh topics, and then `python -m worker records` starts against
an empty database. Reported: events written per second from the service's `ready` to its last row
(target >= 10,000), and the rows against the events (must be equal). Starts its own broker and
PostgreSQL unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL are set; prints one JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from worker.bench import books
from worker.kafka.publisher import route
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, produce, produce_lines
from worker.local.services import start_broker, start_postgres
from worker.settings import Settings

TOPICS = ("settled", "rejected", "ledger", "profiles", "facilities")
EVENT_TABLES = ("settlements", "reversals", "rejections", "ledger_events")


async def _rows(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        total = 0
        for table in EVENT_TABLES:
            total += int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
        return total
    finally:
        await connection.close()


async def run(claims: int, partitions: int, batch: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="records-bench-"))
    broker = start_broker()
    postgres = start_postgres()
    try:
        tag = f"rb{int(time.time())}"
        url = await postgres.create_database(tag)
        topics: dict[str, Any] = {f"topic_{n}": f"{tag}.{n}" for n in TOPICS}
        settings = Settings(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers, partitions=partitions, **topics)
        await ensure_topics(settings)
        per_day = max(1, claims // (24 * 61))
        month = books.generate(members=max(400, claims // 20), visits_per_day=per_day, family_rate=0.01)
        events = await books.outcomes(month)
        topics = route(settings)
        await produce_lines(broker.bootstrap_servers, settings, [orjson.dumps(m) for m in month.reference])
        await produce(
            broker.bootstrap_servers,
            ((topics[e["type"]], e["member_id"].encode(), orjson.dumps(e)) for e in events),
        )
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "DATABASE_URL": url,
            "WORKER_RECORDS_GROUP": f"{tag}-records",
            "WORKER_RECORDS_BATCH_SIZE": str(batch),
            "WORKER_LOG_LEVEL": "WARNING",
            **{f"WORKER_TOPIC_{n.upper()}": f"{tag}.{n}" for n in TOPICS},
        }
        service = WorkerProcess(env, folder / "records.log", "records")
        service.env["WORKER_LOG_LEVEL"] = "INFO"
        started = time.perf_counter()
        service.start(wait_ready=120)
        ready = time.perf_counter()
        written = 0
        while written < len(events) and time.perf_counter() - ready < 600:
            await asyncio.sleep(0.1)
            written = await _rows(url)
        done = time.perf_counter()
        service.terminate()
        return {
            "events": len(events),
            "rows": written,
            "seconds": round(done - ready, 2),
            "events_per_second": round(len(events) / (done - ready)),
            "start_seconds": round(ready - started, 2),
            "partitions": partitions,
            "batch_size": batch,
            "broker": broker.kind,
            "database": postgres.kind,
        }
    finally:
        broker.close()
        postgres.close()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.bench.records_bench",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--claims", type=int, default=150_000, help="claims in the two synthetic months")
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=5000, help="WORKER_RECORDS_BATCH_SIZE")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.claims, args.partitions, args.batch_size))
    print(json.dumps(result))
    return 0 if result["rows"] == result["events"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
