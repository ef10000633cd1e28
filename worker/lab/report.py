"""What `simulate` shows a person: a text summary and a self-contained HTML page (`worker.charts`, the
same rendering as the monthly fund report)."""

from __future__ import annotations

from typing import Any

from worker.charts import bar_chart, figure, kpis, page, percent, table, yuan


def _sets(result: dict[str, Any]) -> str:
    policies = result["policies"]
    return f"baseline {', '.join(policies['baseline'])} → draft {', '.join(policies['draft'])}"


def summary(result: dict[str, Any]) -> str:
    fund = result["fund"]
    lines = [
        f"policies: {_sets(result)}",
        f"claims compared: {result['claims_compared']:,} of {result['members']:,} members"
        f" (settled only under the baseline: {result['claims_settled_only_under_baseline']:,},"
        f" only under the draft: {result['claims_settled_only_under_draft']:,})",
        f"pooling fund: {yuan(fund['baseline_fen'])} → {yuan(fund['draft_fen'])} yuan,"
        f" change {yuan(fund['change_fen'])} ({percent(fund['change_bp'])})",
        f"members reaching the cap: {result['members_reaching_cap']['baseline']:,} →"
        f" {result['members_reaching_cap']['draft']:,}; the ceiling:"
        f" {result['members_reaching_ceiling']['baseline']:,}"
        f" → {result['members_reaching_ceiling']['draft']:,}",
        "average change of a member's share over the year:"
        f" {yuan(result['member_share']['average_change_fen'])} yuan",
    ]
    for name, title in (("by_city", "city"), ("by_treatment", "treatment class"), ("by_band", "band")):
        lines.append(f"by {title}: " + "; ".join(f"{r['key']} {yuan(r['change_fen'])}" for r in result[name]))
    run = result["run"]
    lines.append(
        f"settled {run['messages']:,} messages under both sets in {run['seconds']} s"
        f" with {run['jobs']} processes"
        f" ({run['claims_per_second_per_set']:,} claims/s a set)"
    )
    return "\n".join(lines) + "\n"


def _rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (r["key"], r["claims"], yuan(r["baseline_fen"]), yuan(r["draft_fen"]), yuan(r["change_fen"]))
        for r in rows
    ]


def render(result: dict[str, Any], title: str = "Policy simulation") -> str:
    fund = result["fund"]
    headers = ["", "claims", "baseline (yuan)", "draft (yuan)", "change (yuan)"]
    body = kpis(
        [
            ("Fund under the baseline (yuan)", yuan(fund["baseline_fen"])),
            ("Fund under the draft (yuan)", yuan(fund["draft_fen"])),
            ("Change", f"{yuan(fund['change_fen'])} ({percent(fund['change_bp'])})"),
            (
                "Members reaching the cap",
                f"{result['members_reaching_cap']['baseline']:,}"
                f" → {result['members_reaching_cap']['draft']:,}",
            ),
            ("Average member share change (yuan)", yuan(result["member_share"]["average_change_fen"])),
        ]
    )
    sections = [
        figure(
            "Change of fund spending by month of service",
            bar_chart(
                "change-by-month", [(r["key"], r["change_fen"]) for r in result["by_month"]], vertical=True
            ),
            table(headers, _rows(result["by_month"])),
        ),
        figure(
            "Change by treatment class",
            bar_chart("change-by-treatment", [(r["key"], r["change_fen"]) for r in result["by_treatment"]]),
            table(headers, _rows(result["by_treatment"])),
        ),
        figure(
            "Change by band",
            bar_chart("change-by-band", [(r["key"], r["change_fen"]) for r in result["by_band"]]),
            table(headers, _rows(result["by_band"])),
        ),
        figure(
            "How each member's share over the year changes",
            bar_chart(
                "share-distribution",
                [(d["change"], d["members"]) for d in result["member_share"]["distribution"]],
                unit="count",
            ),
            table(
                ["change of the member's share", "members"],
                [(d["change"], d["members"]) for d in result["member_share"]["distribution"]],
            ),
        ),
        figure(
            "Facilities most affected",
            bar_chart(
                "facilities",
                [(f["facility_id"], f["fund_change_fen"]) for f in result["most_affected_facilities"]],
            ),
            table(
                ["facility", "fund change (yuan)"],
                [(f["facility_id"], yuan(f["fund_change_fen"])) for f in result["most_affected_facilities"]],
            ),
        ),
        "<section><h2>Members most affected</h2>"
        + table(
            ["member", "share change (yuan)"],
            [(m["member_id"], yuan(m["share_change_fen"])) for m in result["most_affected_members"]],
        )
        + "</section>",
    ]
    subtitle = f"{_sets(result)}; {result['claims_compared']:,} claims of {result['members']:,} members"
    return page(title, subtitle, body + "".join(sections), "职工医保门诊共济 · python -m worker simulate")
