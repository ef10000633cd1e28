"""The one clock of the product: the time written into `*_at` fields and gateway answers."""

from __future__ import annotations

import datetime as dt

from contracts.types import CHINA_TZ


def now_text() -> str:
    """The current time in UTC+08:00, second precision, as written into `*_at` fields."""
    return dt.datetime.now(CHINA_TZ).isoformat(timespec="seconds")


def china_year() -> int:
    """The current calendar year in UTC+08:00 (the retention window counts in service years)."""
    return dt.datetime.now(CHINA_TZ).year


def china_today() -> dt.date:
    """Today's date in UTC+08:00 (statements and months count in China dates)."""
    return dt.datetime.now(CHINA_TZ).date()
