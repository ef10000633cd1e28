"""`python -m worker policy check PATH` and `policy show ID`: an operator validates a draft policy
set before deploying it and reads a policy as tables, with the articles each part implements."""

from __future__ import annotations

import sys
from pathlib import Path

from worker.domain.errors import PolicyError
from worker.domain.policy import Policy, check_path, load_policies


def _yuan(fen: int | None) -> str:
    if fen is None:
        return "no limit"
    whole, cents = divmod(fen, 100)
    return f"{whole:,}.{cents:02d}"


def _percent(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


def _cite(policy: Policy, part: str) -> str:
    article = policy.articles.get(part)
    return f" ({article})" if article else ""


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render(policy: Policy) -> str:
    """The policy as readable tables: segments, ratios by class and band, caps, categories, accounts."""
    out = [
        f"{policy.id} — {policy.city}, {policy.valid_from} … {policy.valid_to or 'open'}"
        + _cite(policy, "valid")
    ]
    if policy.source:
        out.append(policy.source)
    out.append("")
    out.append(f"Treatment classes{_cite(policy, 'class_tables')}:")
    out += _columns([["class", "table"], *([c, t] for c, t in policy.class_tables.items())])
    out.append(f"Band{_cite(policy, 'band')}: by facility {policy.band.by}")
    out += _columns([[policy.band.by, "band"], *([k, v] for k, v in policy.band.values.items())])
    bands = sorted(set(policy.band.values.values()))
    for name, table in policy.tables.items():
        classes = ", ".join(c for c, t in policy.class_tables.items() if t == name)
        out.append("")
        out.append(
            f"Table {name} ({classes}){_cite(policy, 'tables')}: annual fund cap {_yuan(table.cap_fen)} yuan"
        )
        rows = [["counted in the year (yuan)", *bands]]
        for seg in table.segments:
            span = f"{_yuan(seg.lower_fen)} – {_yuan(seg.upper_fen)}"
            rows.append(
                [
                    span,
                    *(
                        ["deductible"] + [""] * (len(bands) - 1)
                        if seg.deductible
                        else [_percent(seg.ratio(b)) for b in bands]
                    ),
                ]
            )
        out += _columns(rows)
    out.append("")
    for part, label in (
        ("fund_excluded_categories", "Not paid by the fund"),
        ("uncounted_categories", "Paid, not counted toward segments and cap"),
        ("uncapped_categories", "Counted, not toward the cap"),
    ):
        values = sorted(getattr(policy, part))
        out.append(f"{label}{_cite(policy, part)}: {', '.join(values) or '—'}")
    if policy.fund_exclusions:
        out.append(
            f"Fund exclusions{_cite(policy, 'fund_exclusions')}: "
            + ", ".join(f"{k} {'on' if v else 'off'}" for k, v in sorted(policy.fund_exclusions.items()))
        )
    accounts = policy.accounts
    out.append("")
    out.append(
        f"Personal accounts{_cite(policy, 'accounts')}: contribution"
        f" {_percent(accounts.contribution_rate)} of the base, back-pay {_percent(accounts.backpay_rate)}"
    )
    out.append(
        f"  payable categories{_cite(policy, 'accounts.allowed_categories')}:"
        f" {', '.join(sorted(accounts.allowed_categories))}"
    )
    out.append(f"  retiree credits{_cite(policy, 'accounts.retiree_credits')} (the first rule that applies):")
    for rule in accounts.retiree_credits:
        conditions = ", ".join(
            f"{k} {v}"
            for k, v in rule.model_dump(exclude_none=True).items()
            if k not in ("amount", "fixed_fen", "rate")
        )
        amount = (
            _yuan(rule.fixed_fen) + " yuan a month"
            if rule.amount == "fixed"
            else f"{rule.amount}" + (f" × {_percent(rule.rate)}" if rule.rate is not None else "")
        )
        out.append(f"    {conditions or 'always'}: {amount}")
    if accounts.incentive is not None:
        i = accounts.incentive
        out.append(
            f"  health incentive{_cite(policy, 'accounts.incentive')}: {_yuan(i.first_fen)} yuan,"
            f" +{_yuan(i.step_fen)} a year, at most {_yuan(i.max_fen)}, from {i.first_year}"
        )
    if accounts.payments:
        out.append(
            f"  payments{_cite(policy, 'accounts.payments')}: "
            + ", ".join(f"{k} ({v})" for k, v in accounts.payments.items())
        )
    if accounts.closing:
        out.append(
            f"  closing{_cite(policy, 'accounts.closing')}: "
            + ", ".join(
                f"{k} → {c.disposition}" + (f" (without heirs: {c.without_heirs})" if c.without_heirs else "")
                for k, c in accounts.closing.items()
            )
        )
    return "\n".join(out) + "\n"


def check(path: Path) -> int:
    problems = check_path(path)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{path}: valid")
    return 0


def show(policy_id: str, directory: Path | None) -> int:
    try:
        book = load_policies(directory)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    policy = book.by_id.get(policy_id)
    if policy is None:
        print(f"no policy {policy_id!r}; known: {', '.join(sorted(book.ids))}", file=sys.stderr)
        return 1
    print(render(policy), end="")
    return 0
