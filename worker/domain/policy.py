"""City policies as data (rules §1–§8): one TOML file per policy version in `policies/`.

A file is validated when it is loaded — unknown keys, overlapping or gapped segments, a ratio that is
not a whole basis point, an unknown category, a treatment class without a table — and rejected with a
message naming the file and the field. A new city is one new file; no code branches on a city.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from contracts.inbound import CATEGORIES, CloseReason, PaymentPurpose
from contracts.outbound import FundExclusion
from worker.domain.errors import PolicyError

POLICY_DIR = Path(__file__).parent / "policies"
TREATMENT_CLASSES = ("employed", "retired", "retired_70plus", "pre1949")
EXCLUSION_CODES: tuple[str, ...] = FundExclusion.__args__  # type: ignore[attr-defined]


def _to_bp(value: Any) -> int:
    """A ratio written as a fraction (0.60) becomes 6000 bp exactly; anything finer is refused."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError("a ratio is a decimal fraction such as 0.60")
    fraction = Decimal(str(value))
    if not Decimal(0) <= fraction <= Decimal(1):
        raise ValueError(f"ratio {value} is not between 0 and 1")
    bp = fraction * 10_000
    if bp != bp.to_integral_value():
        raise ValueError(f"ratio {value} is not a whole number of basis points")
    return int(bp)


RatioBp = Annotated[int, BeforeValidator(_to_bp)]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentSpec(_Data):
    """`[lower_fen, upper_fen)` of the year's counted amount, with a ratio per band."""

    lower_fen: int = Field(ge=0)
    upper_fen: int | None = None
    deductible: bool = False
    ratios: dict[str, RatioBp] = {}

    @model_validator(mode="after")
    def _shape(self) -> SegmentSpec:
        if self.upper_fen is not None and self.upper_fen <= self.lower_fen:
            raise ValueError(f"segment [{self.lower_fen}, {self.upper_fen}) is empty")
        if self.deductible and any(self.ratios.values()):
            raise ValueError("a deductible segment pays nothing: its ratios must be 0 or absent")
        return self

    def ratio(self, band: str) -> int:
        return 0 if self.deductible else self.ratios[band]


class TableSpec(_Data):
    """The pooling table of a treatment class: ordered segments and an optional annual fund cap."""

    cap_fen: int | None = Field(default=None, ge=0)
    segments: tuple[SegmentSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _contiguous(self) -> TableSpec:
        expected = 0
        for index, seg in enumerate(self.segments):
            if seg.lower_fen != expected:
                kind = "overlap" if seg.lower_fen < expected else "leave a gap"
                raise ValueError(f"segments {index - 1} and {index} {kind} at {seg.lower_fen} fen")
            if seg.upper_fen is None and index != len(self.segments) - 1:
                raise ValueError(f"segment {index} is unbounded but is not the last one")
            expected = seg.upper_fen if seg.upper_fen is not None else -1
        return self


class BandRule(_Data):
    """Which facility attribute sets the ratio band (Nanchang: level; Nanjing: community)."""

    by: Literal["level", "community"]
    values: dict[str, str] = Field(min_length=1)


class RetireeCreditRule(_Data):
    """One way to compute a monthly retiree credit; the first rule whose conditions hold applies."""

    pre1949: bool | None = None
    period_from: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}$")
    period_to: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}$")
    retired_before: dt.date | None = None
    retired_from: dt.date | None = None
    amount: Literal["fixed", "profile_base_credit", "retirement_pension", "request_pension"]
    fixed_fen: int | None = Field(default=None, ge=0)
    rate: RatioBp | None = None

    @model_validator(mode="after")
    def _complete(self) -> RetireeCreditRule:
        if self.amount == "fixed" and self.fixed_fen is None:
            raise ValueError("amount 'fixed' needs fixed_fen")
        if self.amount in ("retirement_pension", "request_pension") and self.rate is None:
            raise ValueError(f"amount '{self.amount}' needs a rate")
        return self


class IncentiveSpec(_Data):
    """Nanjing health incentive (art. 7): first, step and maximum credit in fen."""

    first_fen: int = Field(ge=0)
    step_fen: int = Field(ge=0)
    max_fen: int = Field(ge=0)
    first_year: int = Field(ge=2000, le=2100)
    """The first year evaluated (`incentive_first_year`); earlier years are `NOT_APPLICABLE`."""


Disposition = Literal["inherited", "to_pooling_fund", "withdrawn", "transferred"]


class ClosingSpec(_Data):
    """Disposition of the balance when an account closes; `without_heirs` only for death."""

    disposition: Disposition
    without_heirs: Disposition | None = None


class AccountSpec(_Data):
    contribution_rate: RatioBp
    backpay_rate: RatioBp
    allowed_categories: frozenset[Category]
    liability_blocks_account: bool = True
    retiree_credits: tuple[RetireeCreditRule, ...] = Field(min_length=1)
    incentive: IncentiveSpec | None = None
    payments: dict[PaymentPurpose, Literal["self", "family", "self_or_family"]] = {}
    closing: dict[CloseReason, ClosingSpec] = {}


ARTICLE_KEYS = frozenset(
    {
        "valid", "class_tables", "band", "tables", "fund_excluded_categories", "uncounted_categories",
        "uncapped_categories", "fund_exclusions", "accounts", "accounts.allowed_categories",
        "accounts.retiree_credits", "accounts.incentive", "accounts.payments", "accounts.closing",
    }
)  # fmt: skip
"""The parts of a policy an `articles` entry may cite (what `policy show` prints beside each table)."""


class Policy(_Data):
    """One policy version of one city.

    Versions of one city must not overlap. A version that starts inside a year (mid-year) applies its
    segments, ratios and caps to claims served from its `valid_from`; the member's year accumulators
    (counted amount, fund paid, capped fund, claims) continue across the change — the year is the
    member's, not the version's (README "Policy versions").
    """

    id: str = Field(min_length=1)
    city: str = Field(min_length=1)
    valid_from: dt.date
    valid_to: dt.date | None = None
    source: str | None = None
    """The document this version implements (title and number)."""
    articles: dict[str, str] = {}
    """Part of the policy → the articles it implements, e.g. `tables = "art. 17"`."""
    distinguishes_age70: bool = False
    class_tables: dict[Literal["employed", "retired", "retired_70plus", "pre1949"], str]
    tables: dict[str, TableSpec]
    band: BandRule
    fund_excluded_categories: frozenset[Category] = frozenset()
    uncounted_categories: frozenset[Category] = frozenset()
    uncapped_categories: frozenset[Category] = frozenset()
    fund_exclusions: dict[str, bool] = {}
    accounts: AccountSpec

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError("valid_to is before valid_from")
        missing = [c for c in TREATMENT_CLASSES if c not in self.class_tables]
        if missing:
            raise ValueError(f"class_tables: no table for class {', '.join(missing)}")
        for cls, table_name in self.class_tables.items():
            if table_name not in self.tables:
                raise ValueError(f"class_tables.{cls}: unknown table '{table_name}'")
        bands = set(self.band.values.values())
        for name, table in self.tables.items():
            for index, seg in enumerate(table.segments):
                if seg.deductible:
                    continue
                if set(seg.ratios) != bands:
                    raise ValueError(
                        f"tables.{name}.segments[{index}]: ratios must name exactly the bands "
                        f"{sorted(bands)}, got {sorted(seg.ratios)}"
                    )
        unknown = set(self.fund_exclusions) - set(EXCLUSION_CODES)
        if unknown:
            raise ValueError(f"fund_exclusions: unknown code {', '.join(sorted(unknown))}")
        if self.uncounted_categories & self.uncapped_categories:
            raise ValueError("a category cannot be both uncounted and uncapped")
        unknown_parts = set(self.articles) - ARTICLE_KEYS
        if unknown_parts:
            raise ValueError(f"articles: unknown part {', '.join(sorted(unknown_parts))}")
        return self

    def in_force(self, day: dt.date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day <= self.valid_to)

    def table(self, treatment: str) -> TableSpec:
        return self.tables[self.class_tables[treatment]]  # type: ignore[index]

    def exclusion_on(self, code: str) -> bool:
        return self.fund_exclusions.get(code, True)


def overlaps(policies: Iterable[Policy]) -> list[tuple[Policy, Policy]]:
    """Pairs of versions of one city whose periods overlap (each pair once, in date order)."""
    by_city: dict[str, list[Policy]] = {}
    for policy in policies:
        by_city.setdefault(policy.city, []).append(policy)
    out = []
    for versions in by_city.values():
        versions.sort(key=lambda p: p.valid_from)
        for index, before in enumerate(versions):
            for after in versions[index + 1 :]:
                if before.valid_to is None or before.valid_to >= after.valid_from:
                    out.append((before, after))
    return out


def _period(policy: Policy) -> str:
    return f"{policy.valid_from} … {policy.valid_to or 'open'}"


class PolicyBook:
    """All policy versions, looked up by (member city, date)."""

    def __init__(self, policies: Iterable[Policy]) -> None:
        every = list(policies)
        clashes = overlaps(every)
        if clashes:
            before, after = clashes[0]
            raise PolicyError(
                f"{before.city}: versions {before.id} ({_period(before)}) and {after.id}"
                f" ({_period(after)}) overlap"
            )
        by_city: dict[str, list[Policy]] = {}
        for policy in sorted(every, key=lambda p: p.valid_from):
            by_city.setdefault(policy.city, []).append(policy)
        self._by_city = by_city
        self.ids = frozenset(p.id for p in every)
        self.by_id = {p.id: p for p in every}

    def find(self, city: str, day: dt.date) -> Policy | None:
        for policy in self._by_city.get(city, ()):
            if policy.in_force(day):
                return policy
        return None


def load_policy(path: Path) -> Policy:
    """Parse and validate one policy file; ratios are read as exact decimals."""
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle, parse_float=Decimal)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path.name}: cannot read policy file: {exc}") from exc
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<file>"
        raise PolicyError(f"{path.name}: {where}: {first['msg']}") from exc


def load_policies(directory: Path | None = None) -> PolicyBook:
    """The policy set of a folder (`WORKER_POLICY_DIR`; default: the packaged `policies/`)."""
    directory = directory or POLICY_DIR
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise PolicyError(f"no policy files in {directory}")
    return PolicyBook(load_policy(path) for path in files)


def check_path(path: Path) -> list[str]:
    """Every problem of a policy file or folder, one line each naming the file and the field: what
    `python -m worker policy check` prints (empty: the set is valid). Versions of one city that
    overlap are named by file."""
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    if not files:
        return [f"{path}: no policy files (*.toml)"]
    problems: list[str] = []
    loaded: dict[str, tuple[Path, Policy]] = {}
    for file in files:
        try:
            with file.open("rb") as handle:
                raw = tomllib.load(handle, parse_float=Decimal)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{file.name}: cannot read policy file: {exc}")
            continue
        try:
            policy = Policy.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                where = "".join(f"{part}: " for part in [".".join(str(x) for x in error["loc"])] if part)
                # a whole-file check names its field in its message ("articles: unknown part …")
                problems.append(f"{file.name}: {where}{error['msg'].removeprefix('Value error, ')}")
            continue
        if policy.id in loaded:
            problems.append(f"{file.name}: id: '{policy.id}' is also the id of {loaded[policy.id][0].name}")
            continue
        loaded[policy.id] = (file, policy)
    files_of = {policy.id: file for file, policy in loaded.values()}
    for before, after in overlaps(policy for _, policy in loaded.values()):
        problems.append(
            f"{files_of[after.id].name}: valid_from: {before.city} version {after.id} ({_period(after)})"
            f" overlaps {before.id} in {files_of[before.id].name} ({_period(before)})"
        )
    return problems
