"""`make demo`: a day of claims for both cities through a real broker, Redis and the worker.

Starts a local broker and Redis (or uses KAFKA_BOOTSTRAP_SERVERS / REDIS_URL), starts one worker,
publishes a sample registry, account credits and a day of claims, prints the settlements as a table
with a few ledger events, and stops everything it started.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from worker.bench import synthetic
from worker.bench.kafka_bench import _settings
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, collect, output_topics, produce_lines
from worker.local.services import start_broker, start_redis

DAY = "2023-06-15"


def _sample() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Registry, account requests and claims: a small, varied day in Nanchang and Nanjing."""
    registry = [*synthetic.facilities(), *synthetic.members(16)]
    members = [m for m in registry if m["type"] == "member.profile"]
    accounts = [
        {
            "type": "account.contribution_posted",
            "request_id": f"D-K{n}",
            "member_id": m["member_id"],
            "requested_at": f"{DAY}T08:00:00+08:00",
            "period": "2023-06",
            "base_fen": 600_000,
            "kind": "backpay",
        }
        for n, m in enumerate(members[:10])
    ]
    accounts.append(
        {
            "type": "account.payment_requested",
            "request_id": "D-P1",
            "member_id": members[1]["member_id"],
            "requested_at": f"{DAY}T08:30:00+08:00",
            "purpose": "ltc_contribution",
            "beneficiary_member_id": members[1]["member_id"],
            "amount_fen": 2_000,
        }
    )
    claims = []
    for n, claim in enumerate(synthetic.claims(40, 16, seed=2023, prefix="D")):
        claim["service_date"] = DAY
        claim["submitted_at"] = f"{DAY}T{8 + n // 6:02d}:{(n * 7) % 60:02d}:00+08:00"
        if n % 13 == 5:
            claim["channel"] = "reimbursement"
        if n % 17 == 9:
            claim["inpatient_stay"] = True
        claims.append(claim)
    return registry, accounts, claims


def _yuan(fen: Any) -> str:
    return f"{int(fen) / 100:,.2f}"


def _table(events: list[dict[str, Any]]) -> str:
    head = f"{'claim':<16}{'city':<10}{'treatment':<16}" + "".join(
        f"{name:>11}" for name in ("total", "fund", "account", "cash")
    )
    head += "  exclusions"
    rows = [head, "-" * len(head)]
    for e in sorted(events, key=lambda e: str(e["claim_id"])):
        rows.append(
            f"{e['claim_id']:<16}{e['city']:<10}{e['treatment']:<16}{_yuan(e['total_fen']):>11}"
            f"{_yuan(e['fund_pay_fen']):>11}{_yuan(e['account_pay_fen']):>11}{_yuan(e['cash_pay_fen']):>11}"
            f"  {','.join(e['fund_exclusions']) or '-'}"
        )
    return "\n".join(rows)


async def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="claims-demo-"))
    print("starting a local broker and Redis ...")
    broker = start_broker(str(workdir))
    redis = start_redis()
    worker: WorkerProcess | None = None
    try:
        settings, env = _settings(broker.bootstrap_servers, redis.url, f"demo{int(time.time())}", 4)
        print(f"broker: {broker.kind} at {broker.bootstrap_servers}; redis: {redis.url}")
        await ensure_topics(settings)
        registry, accounts, claims = _sample()
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(registry))
        worker = WorkerProcess(env, workdir / "worker.log")
        print("starting the worker ...")
        worker.start()
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(accounts))
        await collect(broker.bootstrap_servers, output_topics(settings), len(accounts), 60)
        started = time.monotonic()
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(claims))
        received = await collect(
            broker.bootstrap_servers, output_topics(settings), len(accounts) + len(claims), 60
        )
        elapsed = time.monotonic() - started
        events = [r.event for r in received]
        settled = [e for e in events if e["type"] == "claim.settled"]
        rejected = [e for e in events if e["type"] == "claim.rejected"]
        ledger = [e for e in events if str(e["type"]).startswith("account.")]
        print()
        print(f"Settlements of {DAY} (yuan):")
        print(_table(settled))
        for e in rejected:
            print(f"rejected {e['claim_id']}: {e['reasons'][0]['code']}")
        print()
        print("Ledger events (accounts.ledger), first five:")
        for e in ledger[:5]:
            print(
                "  " + orjson.dumps({k: e[k] for k in e if k not in ("schema_version", "event_id")}).decode()
            )
        total = sum(int(e["total_fen"]) for e in settled)
        fund = sum(int(e["fund_pay_fen"]) for e in settled)
        account = sum(int(e["account_pay_fen"]) for e in settled)
        cash = sum(int(e["cash_pay_fen"]) for e in settled)
        print()
        print(
            f"{len(settled)} settled, {len(rejected)} rejected in {elapsed:.1f} s: "
            f"total {_yuan(total)} yuan = fund {_yuan(fund)} + account {_yuan(account)} + cash {_yuan(cash)}"
        )
        return 0 if len(settled) + len(rejected) == len(claims) else 1
    finally:
        print("stopping the worker, broker and Redis ...")
        if worker is not None:
            worker.close()
        redis.close()
        broker.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
