"""Strict field types shared by the inbound and outbound models.

Validation follows contracts.md §Validation: JSON integers only (no "12", 12.0 or true), real calendar
dates, RFC 3339 timestamps that carry an offset, ids of 1-64 characters from [A-Za-z0-9._:-].
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
ID_RE = re.compile(ID_PATTERN)

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
"""A claim, member, facility, line or request id."""

MAX_AMOUNT_FEN = 100_000_000
Amount = Annotated[int, Field(ge=1, le=MAX_AMOUNT_FEN)]
"""A positive money amount in fen, 1 … 100 000 000."""

Fen = Annotated[int, Field(ge=0)]
"""A non-negative money amount in fen (outbound)."""

ProfileMoney = Annotated[int, Field(ge=0, le=MAX_AMOUNT_FEN)]
"""A money figure of a member profile, 0 … 100 000 000."""

Bp = Annotated[int, Field(ge=0, le=10_000)]
"""A ratio in basis points."""

SchemaVersion = Annotated[int, Field(ge=1, le=1)]
"""Only version 1 exists; a strict int so that `true` and `1.0` are refused."""

_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_TIMESTAMP_ERROR = "must be an ISO 8601 timestamp with an offset"


def _check_timestamp(value: str) -> str:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError as exc:  # e.g. 2023-02-30T10:00:00+08:00
        raise ValueError(_TIMESTAMP_ERROR) from exc
    return value


Timestamp = Annotated[str, StringConstraints(pattern=_TIMESTAMP_PATTERN), AfterValidator(_check_timestamp)]
"""An RFC 3339 timestamp with a mandatory offset, kept as written (see `china_date`)."""


def _check_period(value: str) -> str:
    year, month = int(value[:4]), int(value[5:])
    if not (2000 <= year <= 2100 and 1 <= month <= 12):
        raise ValueError("must be a month YYYY-MM of a year 2000-2100")
    return value


Period = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}$"), AfterValidator(_check_period)]
"""A calendar month `YYYY-MM`, year 2000–2100."""

Year = Annotated[int, Field(ge=2000, le=2100)]

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))


def china_date(timestamp: str) -> dt.date:
    """The calendar date of a validated timestamp in UTC+08:00 (the date rules.md compares against)."""
    if timestamp.endswith("+08:00"):  # written in China time already, as point-of-sale systems do
        return dt.date.fromisoformat(timestamp[:10])
    return dt.datetime.fromisoformat(timestamp).astimezone(CHINA_TZ).date()


def period_start(period: str) -> dt.date:
    """First day of a `YYYY-MM` period."""
    return dt.date(int(period[:4]), int(period[5:]), 1)
