"""Command line: `python -m worker replay [FILE]`, `run` (the Kafka worker), `rebuild` (the state in Redis
from the outbound topics), `compact` (archive claims past the retention window), `inspect member|claim
ID` (one member's or claim's state in plain words), `gateway` (the point-of-sale HTTP gateway; `gateway
token FACILITY_ID` prints a token), `bench`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def _replay(args: argparse.Namespace) -> int:
    from worker.replay import Replayer
    from worker.settings import load_settings

    replayer = Replayer(load_settings(policies=True).policies())  # WORKER_POLICY_DIR, like every process
    out = sys.stdout.buffer
    if args.file in (None, "-"):
        replayer.run(sys.stdin.buffer, out)
    else:
        with open(args.file, "rb") as handle:
            replayer.run(handle, out)
    out.flush()
    return 0


def _run(args: argparse.Namespace) -> int:
    from worker.kafka.app import run_worker

    return run_worker()


def _rebuild(args: argparse.Namespace) -> int:
    from worker.kafka.rebuild import run_rebuild

    return run_rebuild(args.jobs)


def _compact(args: argparse.Namespace) -> int:
    import asyncio

    from worker.adapters.redis_client import state_store
    from worker.clock import china_year
    from worker.settings import load_settings

    settings = load_settings()
    before = china_year() - settings.claim_retention_years

    async def run() -> tuple[int, int]:
        store = state_store(settings)
        try:
            await store.adopt_marker()
            return await store.archive_claims(before)
        finally:
            await store.redis.aclose()

    seen, archived = asyncio.run(run())
    print(f"compact: {archived:,} of {seen:,} claim records archived (service years before {before})")
    return 0


def _records(args: argparse.Namespace) -> int:
    from worker.records.service import run_records

    return run_records()


STATS_VIEWS = ("fund_spending", "account_claim_payments", "account_flows", "indicators")
"""`worker.records.queries.VIEWS` (a test keeps the two equal; importing it here would load asyncpg for
every command)."""


def month_arg(text: str) -> str:
    """argparse type of --month: YYYY-MM, or `current` / `previous` (China dates; for scheduled jobs)."""
    import datetime as dt

    if text in ("current", "previous"):
        from worker.clock import china_today

        today = china_today()
        day = today if text == "current" else today.replace(day=1) - dt.timedelta(days=1)
        return day.strftime("%Y-%m")
    try:
        if len(text) != 7:
            raise ValueError
        dt.date.fromisoformat(text + "-01")
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a month YYYY-MM: {text!r}") from None
    return text


def _books(args: argparse.Namespace) -> int:
    """statement, stats, alerts and report: the agency's commands on the records database."""
    from worker.records import cli

    if args.command == "alerts" and not args.check and args.month is None:
        print("alerts: --month is required (or --check)", file=sys.stderr)
        return 2
    if args.command == "alerts" and args.check:
        return cli.check_thresholds(args.thresholds)
    from worker.settings import load_settings

    settings = load_settings()
    if args.command == "statement":
        return cli.statement(settings, args.month, args.facility, args.format, args.reimbursements)
    if args.command == "stats":
        views = list(STATS_VIEWS) if args.view == "all" else [args.view]
        return cli.stats(settings, args.month, args.city, views, args.format)
    if args.command == "alerts":
        return cli.alert(settings, args.month, args.city, args.dry_run, args.format, args.thresholds)
    return cli.write_report(settings, args.month, args.city, Path(args.out))


def _policy(args: argparse.Namespace) -> int:
    from worker.ops import policy

    if args.action == "check":
        return policy.check(args.path)
    directory = args.dir or (
        Path(os.environ["WORKER_POLICY_DIR"]) if os.environ.get("WORKER_POLICY_DIR") else None
    )
    return policy.show(args.id, directory)


def _simulate(args: argparse.Namespace) -> int:
    import json

    from worker.domain.errors import PolicyError
    from worker.lab.report import render, summary
    from worker.lab.simulate import simulate
    from worker.settings import load_settings

    settings = load_settings()
    baseline = args.baseline or (Path(settings.policy_dir) if settings.policy_dir else None)
    if not args.claims.is_file():
        print(f"simulate: no file {args.claims}", file=sys.stderr)
        return 2
    try:
        result = simulate(args.claims, args.draft, baseline, max(1, args.jobs))
    except PolicyError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(render(result), encoding="utf-8")
        print(f"report written to {args.out}", file=sys.stderr)
    print(
        json.dumps(result, ensure_ascii=False, indent=2) if args.json else summary(result),
        end="\n" if args.json else "",
    )
    return 0


def _population(args: argparse.Namespace) -> int:
    import orjson

    from worker.lab.population import generate

    out = sys.stdout.buffer if args.out in (None, "-") else open(args.out, "wb")  # noqa: SIM115
    try:
        count = 0
        for message in generate(args.city, args.members, args.year, args.seed):
            out.write(orjson.dumps(message) + b"\n")
            count += 1
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    print(f"{count:,} messages of a synthetic {args.city} year {args.year}", file=sys.stderr)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from worker.ops.inspect import run_inspect
    from worker.settings import load_settings

    return run_inspect(load_settings(), args.what, args.id)


def _gateway(args: argparse.Namespace) -> int:
    from worker.settings import load_settings

    settings = load_settings(policies=True)
    if args.action == "token":
        from worker.gateway.auth import issue_token

        if settings.gateway_jwt_secret is None:
            print("set WORKER_GATEWAY_JWT_SECRET to issue HS256 tokens", file=sys.stderr)
            return 2
        if not args.facility_id:
            print("usage: claims-worker gateway token FACILITY_ID [--ttl SECONDS]", file=sys.stderr)
            return 2
        print(issue_token(settings.gateway_jwt_secret.get_secret_value(), args.facility_id, args.ttl))
        return 0
    from worker.gateway.app import run_gateway

    return run_gateway(settings)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # the benchmark has its own options (python -m worker bench --help)
        try:
            from worker.bench.kafka_bench import main as bench_main
        except ImportError:  # the runtime wheel leaves the development tooling out
            print("bench is development tooling: run it from a clone (make bench)", file=sys.stderr)
            return 2
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="claims-worker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A command whose --help lists every option with its default."""
        return sub.add_parser(name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    settings_help = (
        "Settings come from the environment: KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, "
        "KAFKA_SASL_*, KAFKA_SSL_*, REDIS_URL, REDIS_SSL_*, DATABASE_URL and WORKER_* (e.g. "
        "WORKER_PARTITIONS, WORKER_LOG_LEVEL, WORKER_HEALTH_PORT). The README's 'Settings' table lists "
        "every one with its default; a bad value exits with status 2 and one line naming the variable."
    )
    replay = add("replay", help="replay inbound JSONL (FILE or stdin) to outbound JSONL on stdout")
    replay.add_argument("file", nargs="?")
    replay.set_defaults(func=_replay)
    run = add("run", help="run the Kafka worker (settings from the environment)", epilog=settings_help)
    run.set_defaults(func=_run)
    rebuild = add(
        "rebuild",
        help="restore the state in Redis from claims.settled and accounts.ledger (workers stopped)",
        epilog=settings_help,
    )
    rebuild.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes restoring partitions in parallel (min(2, CPUs) by default)",
    )
    rebuild.set_defaults(func=_rebuild)
    compact = add(
        "compact",
        help="archive claims past the retention window (WORKER_CLAIM_RETENTION_YEARS), workers running",
        epilog=settings_help,
    )
    compact.set_defaults(func=_compact)
    gateway = add(
        "gateway",
        help="run the point-of-sale HTTP gateway, or `gateway token FACILITY_ID` to print an HS256 token",
        epilog=settings_help,
    )
    gateway.add_argument("action", nargs="?", choices=["token"], help="print a token instead of serving")
    gateway.add_argument("facility_id", nargs="?")
    gateway.add_argument("--ttl", type=int, default=3600, help="token lifetime in seconds")
    gateway.set_defaults(func=_gateway)
    inspect = add(
        "inspect",
        help="show one member's state (profile, accumulators per year, balance, claims) or a claim's record",
        epilog=settings_help,
    )
    inspect.add_argument("what", choices=["member", "claim"])
    inspect.add_argument("id", help="member id or claim id")
    inspect.set_defaults(func=_inspect)
    records = add(
        "records",
        help="run the settlement-records service: outcome events into PostgreSQL (DATABASE_URL) exactly once",
        epilog=settings_help,
    )
    records.set_defaults(func=_records)
    books_help = " Reads the records database (DATABASE_URL) that `records` fills."
    statement = add(
        "statement",
        help="the agency's monthly settlement statement per facility (fund share owed, net of reversals)",
        epilog=books_help,
    )
    statement.add_argument("--month", type=month_arg, required=True, help="YYYY-MM (settlement dates)")
    statement.add_argument("--facility", help="one facility only")
    statement.add_argument("--format", choices=["csv", "json", "text"], default="csv")
    statement.add_argument(
        "--reimbursements",
        action="store_true",
        help="list the reimbursements paid to members instead (csv, text)",
    )
    statement.set_defaults(func=_books)
    stats = add("stats", help="monthly fund statistics from the documented SQL views", epilog=books_help)
    stats.add_argument("--month", type=month_arg, required=True, help="YYYY-MM")
    stats.add_argument("--city", help="one city only (e.g. nanchang)")
    stats.add_argument(
        "--view",
        choices=["all", *("fund_spending", "account_claim_payments", "account_flows", "indicators")],
        default="all",
    )
    stats.add_argument("--format", choices=["text", "csv", "json"], default="text")
    stats.set_defaults(func=_books)
    alerts = add(
        "alerts",
        help="early warning: judge a month's facility indicators, publish new breaches, list them",
        epilog=books_help,
    )
    alerts.add_argument("--month", type=month_arg, help="YYYY-MM (required unless --check)")
    alerts.add_argument("--city", help="one city only")
    alerts.add_argument(
        "--thresholds",
        type=Path,
        help="thresholds file (default: WORKER_WARNING_THRESHOLDS or the packaged one)",
    )
    alerts.add_argument("--check", action="store_true", help="only validate the thresholds file (exit 0 / 1)")
    alerts.add_argument("--dry-run", action="store_true", help="list the breaches; keep and publish nothing")
    alerts.add_argument("--format", choices=["text", "json"], default="text")
    alerts.set_defaults(func=_books)
    report = add("report", help="the monthly fund report: one self-contained HTML file", epilog=books_help)
    report.add_argument("--month", type=month_arg, required=True, help="YYYY-MM")
    report.add_argument("--city", help="one city only")
    report.add_argument("--out", default="report.html", help="the HTML file to write")
    report.set_defaults(func=_books)
    policy = add("policy", help="check a policy file or folder, or show a policy as tables")
    policy_commands = policy.add_subparsers(dest="action", required=True)
    check = policy_commands.add_parser(
        "check", help="validate a policy file or a folder (exit 0 valid, 1 not)"
    )
    check.add_argument("path", type=Path)
    check.set_defaults(func=_policy)
    show = policy_commands.add_parser(
        "show", help="print a policy as tables, with the articles each part implements"
    )
    show.add_argument("id", help="a policy id, e.g. nanchang-2023")
    show.add_argument(
        "--dir", type=Path, help="the policy folder (default: WORKER_POLICY_DIR or the packaged set)"
    )
    show.set_defaults(func=_policy)
    sim = add(
        "simulate",
        help="the fund impact of a draft policy set: settle the same stream under the baseline and the draft",
    )
    sim.add_argument("--claims", type=Path, required=True, help="inbound JSONL (registry, accounts, claims)")
    sim.add_argument(
        "--draft", type=Path, required=True, help="the draft policy set (a folder of TOML files)"
    )
    sim.add_argument("--baseline", type=Path, help="default: WORKER_POLICY_DIR or the packaged set")
    sim.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (members split by id)")
    sim.add_argument("--json", action="store_true", help="the figures as JSON")
    sim.add_argument("--out", help="also write a self-contained HTML report")
    sim.set_defaults(func=_simulate)
    population = add("population", help="a synthetic city year (inbound JSONL), deterministic by seed")
    population.add_argument("--city", default="nanchang")
    population.add_argument("--members", type=int, default=10_000)
    population.add_argument("--year", type=int, default=2024)
    population.add_argument("--seed", type=int, default=1)
    population.add_argument("--out", help="file to write (default: stdout)")
    population.set_defaults(func=_population)
    add("bench", help="end-to-end Kafka benchmark (python -m worker bench --help)")
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
