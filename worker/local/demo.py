"""`make demo`: a day of claims for both cities through a real broker, Redis and the worker, a
counter visit through the gateway, and the agency's books.

Starts a local broker, Redis and PostgreSQL (or uses KAFKA_BOOTSTRAP_SERVERS / REDIS_URL /
DATABASE_URL), starts one worker and the records service, publishes a sample registry, account
credits and a day of claims, prints the settlements as a table with a few ledger events, runs a
counter visit over HTTP, then reconciles the facility's day, prints the agency's statement and
statistics and writes the month's HTML report. Stops everything it started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

from contracts.types import CHINA_TZ
from worker.bench import synthetic
from worker.bench.kafka_bench import _settings
from worker.gateway.auth import issue_token
from worker.kafka.topics import ensure_topics
from worker.local.kafka_io import WorkerProcess, collect, output_topics, produce_lines
from worker.local.services import free_port, start_broker, start_postgres, start_redis

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
    head += "  why the fund paid what it did"
    rows = [head, "-" * len(head)]
    for e in sorted(events, key=lambda e: str(e["claim_id"])):
        rows.append(
            f"{e['claim_id']:<16}{e['city']:<10}{e['treatment']:<16}{_yuan(e['total_fen']):>11}"
            f"{_yuan(e['fund_pay_fen']):>11}{_yuan(e['account_pay_fen']):>11}{_yuan(e['cash_pay_fen']):>11}"
            f"  {_why(e)}"
        )
    return "\n".join(rows)


def _why(e: dict[str, Any]) -> str:
    """In plain words: exclusions, the deductible, the cap or ceiling, who the fund pays."""
    if e["fund_exclusions"]:
        return "nothing: " + ", ".join(e["fund_exclusions"])
    parts = []
    if e["deductible_fen"]:
        parts.append(f"deductible {_yuan(e['deductible_fen'])}")
    parts += [
        {"CAP_REACHED": "annual cap reached", "CEILING_REACHED": "ceiling reached"}[x]
        for x in e["fund_limits"]
    ]
    if e["full_self_pay_fen"]:
        parts.append(f"self-pay items {_yuan(e['full_self_pay_fen'])}")
    if e["fund_payee"] == "member":
        parts.append("reimbursement: the fund pays the member")
    return "; ".join(parts) or "-"


def _show(title: str, response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json() if response.content else {}
    print(f"\n{title}: HTTP {response.status_code}")
    if body.get("type") in ("claim.settled", "claim.presettled"):
        why = []
        if body["fund_exclusions"]:
            why.append("fund pays nothing: " + ", ".join(body["fund_exclusions"]))
        elif body["deductible_fen"]:
            why.append(f"deductible {_yuan(body['deductible_fen'])} yuan")
        why += [f"limit {x}" for x in body["fund_limits"]]
        print(
            f"  total {_yuan(body['total_fen'])} = fund {_yuan(body['fund_pay_fen'])} + account "
            f"{_yuan(body['account_pay_fen'])} + cash {_yuan(body['cash_pay_fen'])} yuan; balance after "
            f"{_yuan(body['account_balance_after_fen'])}" + (f" ({'; '.join(why)})" if why else "")
        )
    elif body.get("type") == "claim.reversed":
        print(
            f"  fund {_yuan(body['fund_pay_fen'])} and account "
            f"{_yuan(body['account_pay_fen'])} yuan given back"
        )
    elif body.get("type") == "claim.rejected":
        print(f"  rejected: {body['reasons'][0]['code']} — {body['reasons'][0]['message']}")
    elif "status" in body and "claim_id" in body:
        print(f"  claim {body['claim_id']}: {body['status']}")
    else:
        print("  " + orjson.dumps(body).decode()[:200])
    return body


async def _counter_visit(url: str, secret: str, member_id: str) -> None:
    """What a hospital's HIS sees: a token, a quote, the settlement, a resubmission, a reversal."""
    token = issue_token(secret, "NC-H00", 600)
    headers = {"Authorization": f"Bearer {token}"}
    print("\n== A counter visit over HTTP (the point-of-sale gateway) ==")
    print(f"token for facility NC-H00 (python -m worker gateway token NC-H00): {token[:24]}…")
    claim = {
        "claim_id": "POS-0001",
        "member_id": member_id,
        "facility_id": "NC-H00",
        "service_date": DAY,
        "submitted_at": f"{DAY}T16:00:00+08:00",
        "lines": [
            {"line_id": "1", "item_code": "XC01", "category": "drug", "coverage": "A", "amount_fen": 90_000},
            {
                "line_id": "2",
                "item_code": "CT01",
                "category": "examination",
                "coverage": "B",
                "self_pay_ratio_bp": 1000,
                "amount_fen": 30_000,
            },
        ],
    }
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        _show(
            "POST /v1/claims/presettle (the patient sees what they will pay)",
            await http.post("/v1/claims/presettle", json=claim, headers=headers),
        )
        _show("POST /v1/claims (settle)", await http.post("/v1/claims", json=claim, headers=headers))
        _show(
            "POST /v1/claims again (a resubmitted claim: the same settlement)",
            await http.post("/v1/claims", json=claim, headers=headers),
        )
        _show("GET /v1/claims/POS-0001", await http.get("/v1/claims/POS-0001", headers=headers))
        _show(
            "POST /v1/claims/POS-0001/reversal",
            await http.post(
                "/v1/claims/POS-0001/reversal",
                json={"member_id": member_id, "reason": "drug returned"},
                headers=headers,
            ),
        )
        _show("GET /v1/claims/POS-0001", await http.get("/v1/claims/POS-0001", headers=headers))
        stranger = {**claim, "claim_id": "POS-0002", "member_id": "NOBODY"}
        _show(
            "POST /v1/claims for a member not in the registry",
            await http.post("/v1/claims", json=stranger, headers=headers),
        )
        other = {"Authorization": f"Bearer {issue_token(secret, 'NC-H01', 600)}"}
        _show(
            "GET /v1/claims/POS-0001 with another facility's token (looks like no claim)",
            await http.get("/v1/claims/POS-0001", headers=other),
        )


async def _agency_books(url: str, secret: str, env: dict[str, str], settled: list[dict[str, Any]]) -> None:
    """The facility reconciles its day over HTTP; the agency reads its statement, statistics, report."""
    print("\n== The agency's books (python -m worker records fills PostgreSQL) ==")
    today = dt.datetime.now(CHINA_TZ).date().isoformat()
    headers = {"Authorization": f"Bearer {issue_token(secret, 'NC-H00', 600)}"}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        statement: dict[str, Any] = {}
        for _ in range(300):
            response = await http.get("/v1/statements", params={"from": today, "to": today}, headers=headers)
            statement = response.json()
            if response.status_code == 200 and statement["lag"] == 0:
                break
            await asyncio.sleep(0.1)
        print(f"\nGET /v1/statements?from={today}&to={today} (3201) for NC-H00:")
        print("  " + orjson.dumps(statement).decode())
        ours = [e for e in settled if e["facility_id"] == "NC-H00"]
        theirs = [
            {k: e[k] for k in ("claim_id", "total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen")}
            | {"reversed": False}
            for e in ours[1:]
        ]
        visit = (await http.get("/v1/claims/POS-0001", headers=headers)).json()["settlement"]
        fields = ("claim_id", "total_fen", "fund_pay_fen", "account_pay_fen", "cash_pay_fen")
        theirs.append({k: visit[k] for k in fields} | {"reversed": True})  # the counter visit, reversed
        if theirs:
            theirs[0]["fund_pay_fen"] += 100  # the HIS recorded one fund share a yuan too high
        body = {"from": today, "to": today, "claims": theirs}
        print(
            f"POST /v1/statements/reconcile (3202): the HIS's {len(theirs)} claims,"
            " one missing, one a yuan off:"
        )
        result = (await http.post("/v1/statements/reconcile", json=body, headers=headers)).json()
        print(f"  balanced: {result['balanced']}")
        for mismatch in result["mismatches"][:6]:
            print("  " + orjson.dumps(mismatch).decode())
    month = today[:7]
    report = Path(tempfile.gettempdir()) / f"claims-demo-report-{month}.html"
    for title, args in (
        (
            f"python -m worker statement --month {month} --format text",
            ["statement", "--month", month, "--format", "text"],
        ),
        (
            f"python -m worker stats --month {month} --view fund_spending",
            ["stats", "--month", month, "--view", "fund_spending"],
        ),
        (f"python -m worker alerts --month {month} --dry-run", ["alerts", "--month", month, "--dry-run"]),
        (
            f"python -m worker report --month {month} --out {report}",
            ["report", "--month", month, "--out", str(report)],
        ),
    ):
        print(f"\n$ {title}")
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "worker", *args],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        print(done.stdout.rstrip() or done.stderr.rstrip())
    print(f"open {report} in a browser: the month's charts and tables, no network needed")


async def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="claims-demo-"))
    try:
        return await _main(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"removed the demo's temporary folder {workdir}")


async def _main(workdir: Path) -> int:
    print("starting a local broker, Redis and PostgreSQL ...")
    broker = start_broker(str(workdir))
    redis = start_redis()
    postgres = start_postgres()
    worker: WorkerProcess | None = None
    gateway: WorkerProcess | None = None
    records: WorkerProcess | None = None
    try:
        prefix = f"demo{int(time.time())}"
        settings, env = _settings(broker.bootstrap_servers, redis.url, prefix, 4)
        env["DATABASE_URL"] = await postgres.create_database(prefix)
        env["WORKER_RECORDS_GROUP"] = f"{prefix}-records"
        print(
            f"broker: {broker.kind} at {broker.bootstrap_servers}; redis: {redis.url};"
            f" postgres: {postgres.kind}"
        )
        await ensure_topics(settings)
        registry, accounts, claims = _sample()
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode(registry))
        worker = WorkerProcess(env, workdir / "worker.log")
        print("starting the worker and the records service ...")
        worker.start()
        records = WorkerProcess(
            {**env, "WORKER_HEALTH_PORT": "0"}, workdir / "records.log", command="records"
        )
        records.start()
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
        payment = next((e for e in ledger if e.get("request_id") == "D-P1"), None)
        if payment is not None:
            outcome = (
                f"debited {_yuan(payment['amount_fen'])} yuan, balance {_yuan(payment['balance_after_fen'])}"
                if payment["type"] == "account.debited"
                else f"refused: {payment['reasons'][0]['code']}"
            )
            print(f"the long-term-care contribution paid from an account (D-P1): {outcome}")
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
        reimbursed = [e for e in settled if e["fund_payee"] == "member"]
        print(f"of which reimbursements (the fund pays the member, 零星报销): {len(reimbursed)}")
        poison = b'{"type": "claim.submitted", "claim_id": '
        await produce_lines(broker.bootstrap_servers, settings, [poison])
        dead = [r.event for r in await collect(broker.bootstrap_servers, [settings.topic_dlq], 1, 30)]
        if dead:
            print(f"a truncated message went to {settings.topic_dlq}: {dead[0]['error']}")
        secret = secrets.token_urlsafe(32)
        port = free_port()
        gateway = WorkerProcess(
            {**env, "WORKER_GATEWAY_PORT": str(port), "WORKER_GATEWAY_JWT_SECRET": secret},
            workdir / "gateway.log",
            command="gateway",
        )
        print("\nstarting the gateway ...")
        gateway.start()
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                if (await http.get(url + "/readyz")).status_code == 204:
                    break
                await asyncio.sleep(0.1)
        nanchang = next(m for m in registry if m["type"] == "member.profile" and m["city"] == "nanchang")
        transfer = {
            "type": "account.transfer_in",
            "request_id": "D-T1",
            "member_id": nanchang["member_id"],
            "requested_at": f"{DAY}T15:00:00+08:00",
            "amount_fen": 30_000,
        }
        await produce_lines(broker.bootstrap_servers, settings, synthetic.encode([transfer]))
        answered = len(accounts) + len(claims) + 2  # and the dead letter, and the transfer
        await collect(broker.bootstrap_servers, output_topics(settings), answered, 30)
        print(f"{nanchang['member_id']} brings 300 yuan into the account (transfer in) before the visit")
        await _counter_visit(url, secret, nanchang["member_id"])
        await _agency_books(url, secret, env, settled)
        return 0 if len(settled) + len(rejected) == len(claims) else 1
    finally:
        print("stopping the worker, the records service, the broker, Redis and PostgreSQL ...")
        if records is not None:
            records.close()
        if gateway is not None:
            gateway.close()
        if worker is not None:
            worker.close()
        redis.close()
        postgres.close()
        broker.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
