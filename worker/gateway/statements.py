"""The facility statements of the gateway (gateway.md 3201 / 3202), read from the records database,
never from Redis: `GET /v1/statements` (the facility's totals over settlement dates) and
`POST /v1/statements/reconcile` (its own records compared with ours, claim by claim).

Scoped to the token's facility: another facility's claims are simply not among "ours", so a claim
id of theirs in a body comes back as `missing_here`, as for any id we never settled. `lag` counts the
outcome events already on `claims.settled` that the records service has not written yet.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import orjson
from pydantic import ValidationError

from contracts.gateway import ReconcileBody
from worker.domain.reconciliation import ClaimFigures, reconcile
from worker.gateway.counter import Answer, problem
from worker.records import queries
from worker.records.database import Connection, DatabaseError, dsn, require_schema
from worker.settings import Settings

log = logging.getLogger("worker.gateway.statements")
MAX_DAYS = 366
MAX_RECONCILE_BYTES = 32 << 20
"""100 000 claims of about 150 bytes, with room to spare."""


class Period(ValueError):
    """Not a valid `from`..`to` (the message says why)."""


def period(first: object, last: object) -> tuple[dt.date, dt.date]:
    dates = []
    for name, value in (("from", first), ("to", last)):
        if not isinstance(value, str):
            raise Period(f"{name} is required (YYYY-MM-DD)")
        try:
            if len(value) != 10:
                raise ValueError
            dates.append(dt.date.fromisoformat(value))
        except ValueError:
            raise Period(f"{name} is not a date YYYY-MM-DD") from None
    if dates[1] < dates[0]:
        raise Period("to is before from")
    if (dates[1] - dates[0]).days + 1 > MAX_DAYS:
        raise Period(f"a statement covers at most {MAX_DAYS} days")
    return dates[0], dates[1]


class Statements:
    """Statements and reconciliation for one gateway; the database pool is opened on first use."""

    def __init__(self, settings: Settings, published: Callable[[str], Awaitable[dict[int, int]]]) -> None:
        self.settings = settings
        self.published = published
        self._pool: asyncpg.Pool | None = None

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(dsn(self.settings), min_size=1, max_size=4, command_timeout=30)
            assert pool is not None
            try:
                async with pool.acquire() as connection:
                    await require_schema(connection)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def statement(self, facility: str, query: Mapping[str, str]) -> Answer:
        try:
            first, last = period(query.get("from"), query.get("to"))
        except Period as exc:
            return problem(400, "Bad Request", str(exc))
        return await self._guarded(lambda c: self._statement(c, facility, first, last))

    async def reconcile(self, facility: str, body: bytes) -> Answer:
        if len(body) > MAX_RECONCILE_BYTES:
            return problem(413, "Payload Too Large", "a reconciliation body is at most 32 MiB")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            return problem(400, "Bad Request", "the body is not a JSON object")
        try:
            request = ReconcileBody.model_validate(data)
            first, last = period(request.from_, request.to)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(x) for x in error["loc"])
            return problem(422, "Unprocessable Content", f"{where}: {error['msg']}")
        except Period as exc:
            return problem(422, "Unprocessable Content", str(exc))
        theirs: dict[str, ClaimFigures] = {}
        for claim in request.claims:
            if claim.claim_id in theirs:
                return problem(422, "Unprocessable Content", f"claim {claim.claim_id} is listed twice")
            theirs[claim.claim_id] = ClaimFigures(
                claim.total_fen, claim.fund_pay_fen, claim.account_pay_fen, claim.cash_pay_fen, claim.reversed
            )

        async def answer(connection: Connection) -> Answer:
            ours = await self._statement_body(connection, facility, first, last)
            claims = await queries.settled_claims(connection, facility, first, last)
            mismatches = reconcile(claims, theirs)
            return Answer(
                200, orjson.dumps({"balanced": not mismatches, "ours": ours, "mismatches": mismatches})
            )

        return await self._guarded(answer)

    async def _guarded(self, read: Callable[[Connection], Awaitable[Answer]]) -> Answer:
        """Run a read; a database that is not configured, migrated or reachable answers 503."""
        try:
            pool = await self._connection_pool()
            async with (
                pool.acquire() as connection,
                connection.transaction(readonly=True, isolation="repeatable_read"),
            ):
                return await read(connection)
        except DatabaseError as exc:
            return problem(
                503, "Service Unavailable", f"statements unavailable: {exc}", **{"Retry-After": "30"}
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("records database unavailable (%s)", type(exc).__name__)
            return problem(
                503, "Service Unavailable", "the records database is not reachable", **{"Retry-After": "5"}
            )

    async def _statement(
        self, connection: Connection, facility: str, first: dt.date, last: dt.date
    ) -> Answer:
        return Answer(200, orjson.dumps(await self._statement_body(connection, facility, first, last)))

    async def _statement_body(
        self, connection: Connection, facility: str, first: dt.date, last: dt.date
    ) -> dict[str, object]:
        figures = await queries.statement(connection, facility, first, last)
        stored = await queries.stored_offsets(
            connection, self.settings.records_group, self.settings.topic_settled
        )
        published = await self.published(self.settings.topic_settled)
        lag = sum(max(0, end - stored.get(p, 0)) for p, end in published.items())
        return {
            "facility_id": facility,
            "from": first.isoformat(),
            "to": last.isoformat(),
            **figures,
            "lag": lag,
        }
