"""Early warning on outpatient costs (issue #12 §4): which facility-months breach the operator's
thresholds. Pure: indicator rows (computed by the records database's `facility_month_indicators`
view) and a validated thresholds file in, breaches out; publishing and listing live in
`worker.records.alerts`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

THRESHOLDS_FILE = Path(__file__).parent / "thresholds.toml"
Indicator = Literal["avg_cost", "self_pay_share", "examination_share", "cost_growth"]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    min_visits: int = Field(ge=1)
    max_avg_cost_vs_peers_bp: int = Field(gt=10_000)
    min_peers: int = Field(ge=2)
    max_self_pay_share_bp: int = Field(ge=0, le=10_000)
    max_examination_share_bp: int = Field(ge=0, le=10_000)
    max_cost_growth_bp: int = Field(gt=0)
    min_previous_total_fen: int = Field(ge=0)


class PartialLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    min_visits: int | None = None
    max_avg_cost_vs_peers_bp: int | None = None
    min_peers: int | None = None
    max_self_pay_share_bp: int | None = None
    max_examination_share_bp: int | None = None
    max_cost_growth_bp: int | None = None
    min_previous_total_fen: int | None = None


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: str = Field(min_length=1)
    format: Literal[1]
    default: Limits
    cities: dict[str, PartialLimits] = {}

    @model_validator(mode="after")
    def _cities_valid(self) -> Thresholds:
        for city in self.cities:
            self.limits(city)  # each city's merged limits must be valid too
        return self

    def limits(self, city: str) -> Limits:
        override = self.cities.get(city)
        if override is None:
            return self.default
        merged = {**self.default.model_dump(), **override.model_dump(exclude_none=True)}
        try:
            return Limits.model_validate(merged)
        except ValidationError as exc:
            raise ValueError(
                f"cities.{city}: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}"
            ) from None


class ThresholdsError(ValueError):
    """The file is not valid: the message names the file, the field and the problem."""


def load_thresholds(path: Path | None = None) -> Thresholds:
    path = path or THRESHOLDS_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ThresholdsError(f"{path}: {exc}") from None
    try:
        return Thresholds.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'file'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ThresholdsError(f"{path}: {problems}") from None


@dataclass(frozen=True, slots=True)
class Breach:
    """One facility-month's indicator above its threshold."""

    facility_id: str
    month: str
    indicator: Indicator
    value_bp: int
    threshold_bp: int
    row: dict[str, Any]


def breaches(rows: list[dict[str, Any]], thresholds: Thresholds) -> list[Breach]:
    """Judge each facility-month row of `facility_month_indicators` (month as YYYY-MM)."""
    out = []
    for row in rows:
        limits = thresholds.limits(row["city"])
        if row["visits"] < limits.min_visits:
            continue
        checks: list[tuple[Indicator, int | None, int]] = [
            ("self_pay_share", row["self_pay_share_bp"], limits.max_self_pay_share_bp),
            ("examination_share", row["examination_share_bp"], limits.max_examination_share_bp),
        ]
        if row["peers"] >= limits.min_peers:
            checks.append(("avg_cost", row["avg_cost_vs_peers_bp"], limits.max_avg_cost_vs_peers_bp))
        previous = row["previous_total_fen"]
        if previous is not None and previous >= limits.min_previous_total_fen:
            checks.append(("cost_growth", row["cost_growth_bp"], limits.max_cost_growth_bp))
        for indicator, value, limit in checks:
            if value is not None and value > limit:
                out.append(Breach(row["facility_id"], row["month"], indicator, value, limit, row))
    return out
