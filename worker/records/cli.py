"""The agency's commands on the records database: `statement`, `stats`, `alerts`, `report`.

Thin: parse, read through `queries` / `alerts` / `report`, print. Amounts are fen in CSV and JSON
(machines), yuan in text (people). A database that is unset, unreachable or not migrated is one line
on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from worker.charts import yuan
from worker.clock import now_text
from worker.domain.warning import Thresholds, ThresholdsError, load_thresholds
from worker.records import alerts, queries, report
from worker.records.database import Connection, DatabaseError, dsn, require_schema
from worker.settings import Settings


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, indent=2)


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v.isoformat() if isinstance(v, dt.date) else v for k, v in row.items()})
    return out.getvalue()


def _text(rows: Sequence[dict[str, Any]]) -> str:
    """Aligned columns; `*_fen` columns shown in yuan."""
    if not rows:
        return "(nothing this month)\n"
    headers = [h.removesuffix("_fen") + (" (yuan)" if h.endswith("_fen") else "") for h in rows[0]]
    cells = [
        [
            yuan(v) if k.endswith("_fen") and isinstance(v, int) else ("" if v is None else str(v))
            for k, v in r.items()
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += [
        "  ".join(
            c.rjust(w) if c[:1].isdigit() or c[:1] == "-" else c.ljust(w)
            for c, w in zip(row, widths, strict=True)
        )
        for row in cells
    ]
    return "\n".join(lines) + "\n"


def _run(settings: Settings, work: Callable[[Connection], Awaitable[int]]) -> int:
    async def main() -> int:
        connection = await asyncpg.connect(dsn(settings), command_timeout=300)
        try:
            await require_schema(connection)
            return await work(connection)
        finally:
            await connection.close()

    try:
        return asyncio.run(main())
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: the records database is not reachable ({type(exc).__name__})", file=sys.stderr)
        return 2


def statement(settings: Settings, month: str, facility: str | None, form: str, reimbursements: bool) -> int:
    """The agency's monthly settlement statement per facility (CSV, JSON or text)."""

    async def work(connection: Connection) -> int:
        rows = await queries.monthly_statement(connection, month, facility)
        paid = await queries.reimbursements(connection, month, facility)
        if form == "json":
            print(_dumps({"month": month, "facilities": rows, "reimbursements": paid}))
        elif reimbursements:
            print(_csv(paid) if form == "csv" else _text(paid), end="")
        else:
            print(_csv(rows) if form == "csv" else _text(rows), end="")
        return 0

    return _run(settings, work)


def stats(settings: Settings, month: str, city: str | None, views: list[str], form: str) -> int:
    """Fund statistics of the month from the documented views."""

    async def work(connection: Connection) -> int:
        found = {view: await queries.monthly(connection, view, month, city) for view in views}
        if form == "json":
            print(_dumps({"month": month, "city": city, **found}))
            return 0
        for view, rows in found.items():
            if len(views) > 1:
                print(f"# {view} ({queries.VIEWS[view]})")
            print(_csv(rows) if form == "csv" else _text(rows))
        return 0

    return _run(settings, work)


def _thresholds(settings: Settings, path: Path | None) -> Thresholds | None:
    """--thresholds, else WORKER_WARNING_THRESHOLDS, else the packaged file; None (said on stderr)
    when the file is not valid."""
    chosen = path or (Path(settings.warning_thresholds) if settings.warning_thresholds else None)
    try:
        return load_thresholds(chosen)
    except ThresholdsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def check_thresholds(path: Path | None) -> int:
    try:
        thresholds = load_thresholds(path)
    except ThresholdsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path or 'packaged thresholds'}: valid ({thresholds.id})")
    return 0


def alert(
    settings: Settings, month: str, city: str | None, dry_run: bool, form: str, path: Path | None
) -> int:
    """Judge the month, keep and publish new breaches (unless --dry-run), list the month's alerts."""
    thresholds = _thresholds(settings, path)
    if thresholds is None:
        return 2

    async def work(connection: Connection) -> int:
        if dry_run:
            found = await alerts.find_only(connection, month, thresholds, now_text(), city)
            published = 0
        else:
            async with connection.transaction():
                await alerts.find(connection, month, thresholds, now_text(), city)
            published = await alerts.publish_pending(connection, settings)
            found = await alerts.kept(connection, month, city)
        if form == "json":
            print(_dumps({"month": month, "published_now": published, "alerts": found}))
        else:
            columns = ("facility_id", "city", "indicator", "value_bp", "threshold_bp", "visits", "published")
            print(
                _text([{k: a.get(k, False if k == "published" else None) for k in columns} for a in found]),
                end="",
            )
            print(f"{len(found)} alerts for {month}; {published} published now", file=sys.stderr)
        return 0

    return _run(settings, work)


def write_report(settings: Settings, month: str, city: str | None, out: Path) -> int:
    pages: list[str] = []
    thresholds = _thresholds(settings, None)
    if thresholds is None:
        return 2

    async def work(connection: Connection) -> int:
        pages.append(report.render(await report.gather(connection, month, thresholds, city)))
        return 0

    code = _run(settings, work)
    if code == 0:
        out.write_text(pages[0], encoding="utf-8")
        print(f"report written to {out}", file=sys.stderr)
    return code
