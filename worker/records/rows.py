"""Outcome events → table rows (one row per event), as the writer copies them into PostgreSQL.

Pure: bytes and positions in, tuples out, in the column order of `COLUMNS`. A record that cannot be
read (not JSON, a field missing or of the wrong type) raises `Unreadable`: the service keeps it in
`unreadable_events` instead of stopping or dropping it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts.types import CHINA_TZ

ROW_FORMAT = 1
"""Layout version of the event rows (the `format` column)."""

COLUMNS: dict[str, tuple[str, ...]] = {
    "settlements": (
        "event_id", "format", "claim_id", "member_id", "city", "policy_version", "facility_id",
        "prescribing_facility_id", "service_date", "settled_at", "settled_on", "channel", "fund_payee",
        "treatment", "band", "total_fen", "full_self_pay_fen", "pre_self_pay_fen", "eligible_fen",
        "deductible_fen", "fund_pay_fen", "member_share_fen", "account_pay_fen", "cash_pay_fen",
        "examination_fen", "sole_category", "category_totals", "fund_limits", "fund_exclusions",
        "source_partition", "source_offset",
    ),
    "reversals": (
        "event_id", "format", "claim_id", "member_id", "facility_id", "reversed_at", "reversed_on",
        "fund_pay_fen", "account_pay_fen", "source_partition", "source_offset",
    ),
    "rejections": (
        "event_id", "format", "request_type", "claim_id", "member_id", "rejected_at", "rejected_on",
        "codes", "source_partition", "source_offset",
    ),
    "ledger_events": (
        "event_id", "format", "type", "request_id", "member_id", "cause", "purpose", "disposition",
        "period", "beneficiary_member_id", "amount_fen", "balance_after_fen", "codes", "booked_at",
        "booked_on", "source_partition", "source_offset",
    ),
    "members": ("member_id", "format", "city"),
    "facilities": ("facility_id", "format", "city", "kind", "level", "community"),
}  # fmt: skip
"""Event tables are insert-once by `event_id`; `members` and `facilities` keep the last record per key."""

KEYED = {"members": "member_id", "facilities": "facility_id"}

_KINDS: dict[str, str] = {
    "settlements": "sisssssSdtDsssS" + "i" * 10 + "Sjaaii",
    "reversals": "sissStDiiii",
    "rejections": "sissStDaii",
    "ledger_events": "sissSSSSSSIIAtDii",
    "members": "sis",
    "facilities": "sissib",
}
"""Per column: s text, S text or null, i integer, I integer or null, d/D date, t timestamp, j JSON text,
a list of text, A list of text or null, b boolean. Checked before a row joins a batch, so that one
malformed record cannot fail the COPY of its whole batch."""
_BIGINT = 1 << 63
_CHECKS: dict[str, type | tuple[type, ...]] = {
    "s": str, "S": (str, type(None)), "i": int, "I": (int, type(None)), "d": dt.date, "D": dt.date,
    "t": dt.datetime, "j": str, "a": list, "A": (list, type(None)), "b": bool,
}  # fmt: skip


class Unreadable(ValueError):
    """The record is not an event of its topic's kind."""


@dataclass
class Rows:
    """One batch's rows per table, and its unreadable records (topic, partition, offset, error, bytes)."""

    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {t: [] for t in COLUMNS})
    unreadable: list[tuple[str, int, int, str, bytes | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.tables.values()) + len(self.unreadable)


def _moment(text: Any) -> dt.datetime:
    if not isinstance(text, str):
        raise Unreadable("timestamp is not a string")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise Unreadable(f"not a timestamp: {text[:40]!r}") from None
    if moment.tzinfo is None:
        raise Unreadable("timestamp without offset")
    return moment


def china_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(CHINA_TZ).date()


def _fen(value: Any) -> int:
    if type(value) is not int:
        raise Unreadable("amount is not an integer")
    return value


def _settled(e: dict[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    at = _moment(e["settled_at"])
    categories = e["category_totals_fen"]
    if not isinstance(categories, dict):
        raise Unreadable("category_totals_fen is not an object")
    return (
        e["event_id"], ROW_FORMAT, e["claim_id"], e["member_id"], e["city"], e["policy_version"],
        e["facility_id"], e.get("prescribing_facility_id"), dt.date.fromisoformat(e["service_date"]),
        at, china_day(at), e["channel"], e["fund_payee"], e["treatment"], e.get("band"),
        _fen(e["total_fen"]), _fen(e["full_self_pay_fen"]), _fen(e["pre_self_pay_fen"]),
        _fen(e["eligible_fen"]), _fen(e["deductible_fen"]), _fen(e["fund_pay_fen"]),
        _fen(e["member_share_fen"]), _fen(e["account_pay_fen"]), _fen(e["cash_pay_fen"]),
        _fen(categories.get("examination", 0)), next(iter(categories)) if len(categories) == 1 else None,
        orjson.dumps(categories).decode(), list(e["fund_limits"]), list(e["fund_exclusions"]),
        partition, offset,
    )  # fmt: skip


def _reversed(e: dict[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    at = _moment(e["reversed_at"])
    return (
        e["event_id"], ROW_FORMAT, e["claim_id"], e["member_id"], e.get("facility_id"), at, china_day(at),
        _fen(e["fund_pay_fen"]), _fen(e["account_pay_fen"]), partition, offset,
    )  # fmt: skip


def _rejected(e: dict[str, Any], partition: int, offset: int) -> tuple[Any, ...]:
    at = _moment(e["rejected_at"])
    codes = [reason["code"] for reason in e["reasons"]]
    return (
        e["event_id"], ROW_FORMAT, e["request_type"], e["claim_id"], e.get("member_id"), at, china_day(at),
        codes, partition, offset,
    )  # fmt: skip


def _ledger(e: dict[str, Any], partition: int, offset: int, timestamp_ms: int) -> tuple[Any, ...]:
    at = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    kind = e["type"]
    if kind not in ("account.credited", "account.debited", "account.closed", "account.request_rejected"):
        raise Unreadable(f"not a ledger event: {str(kind)[:40]!r}")
    amount = e.get("amount_fen")
    balance = e.get("balance_after_fen")
    codes = [reason["code"] for reason in e["reasons"]] if kind == "account.request_rejected" else None
    return (
        e["event_id"], ROW_FORMAT, kind, e["request_id"], e.get("member_id"), e.get("cause"),
        e.get("purpose"), e.get("disposition"), e.get("period"), e.get("beneficiary_member_id"),
        None if amount is None else _fen(amount), None if balance is None else _fen(balance), codes,
        at, china_day(at), partition, offset,
    )  # fmt: skip


def add(
    rows: Rows, role: str, topic: str, partition: int, offset: int, timestamp_ms: int, value: bytes | None
) -> None:
    """Add one record of a topic playing `role` (settled, rejected, ledger, profiles, facilities)."""
    try:
        event = orjson.loads(value or b"")
        if not isinstance(event, dict):
            raise Unreadable("not a JSON object")
        table, row = _row(role, event, partition, offset, timestamp_ms)
        _check(table, row)
        rows.tables[table].append(row)
    except (Unreadable, orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        detail = str(exc) if isinstance(exc, Unreadable) else type(exc).__name__
        rows.unreadable.append((topic, partition, offset, f"{role}: {detail}"[:200], value))


def _check(table: str, row: tuple[Any, ...]) -> None:
    for index, (column, kind) in enumerate(zip(COLUMNS[table], _KINDS[table], strict=True)):
        value: Any = row[index]
        if not isinstance(row[index], _CHECKS[kind]) or (
            kind in "iI" and value is not None and (type(value) is bool or not -_BIGINT <= value < _BIGINT)
        ):
            raise Unreadable(f"{column} is not of its type")
        if kind in "aA" and value is not None and not all(isinstance(x, str) for x in value):
            raise Unreadable(f"{column} holds a value that is not text")


def _row(
    role: str, e: dict[str, Any], partition: int, offset: int, timestamp_ms: int
) -> tuple[str, tuple[Any, ...]]:
    kind = e.get("type")
    if role == "settled":
        if kind == "claim.settled":
            return "settlements", _settled(e, partition, offset)
        if kind == "claim.reversed":
            return "reversals", _reversed(e, partition, offset)
    elif role == "rejected" and kind == "claim.rejected":
        return "rejections", _rejected(e, partition, offset)
    elif role == "ledger":
        return "ledger_events", _ledger(e, partition, offset, timestamp_ms)
    elif role == "profiles" and kind == "member.profile":
        return "members", (e["member_id"], ROW_FORMAT, e["city"])
    elif role == "facilities" and kind == "facility.registered":
        return "facilities", (
            e["facility_id"],
            ROW_FORMAT,
            e["city"],
            e["kind"],
            int(e["level"]),
            bool(e.get("community", False)),
        )
    raise Unreadable(f"unexpected type {str(kind)[:40]!r}")
