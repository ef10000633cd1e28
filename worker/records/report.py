"""The monthly fund report (issue #12 §5): one self-contained HTML file (`worker.charts`: inline CSS
and SVG charts, no script, nothing fetched) that opens anywhere, offline. Each chart is a `<figure>`
with the table behind it right below, so a reader can check every bar.

`render(data)` is pure (data in, HTML out); `gather()` reads the data from the records database.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.charts import STYLE, bar_chart, figure, percent, table, yuan
from worker.clock import now_text
from worker.domain.warning import Thresholds
from worker.records import alerts as alert_store
from worker.records import queries
from worker.records.database import Connection


@dataclass
class ReportData:
    month: str
    city: str | None
    daily: list[dict[str, Any]] = field(default_factory=list)
    spending: list[dict[str, Any]] = field(default_factory=list)
    flows: list[dict[str, Any]] = field(default_factory=list)
    indicators: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)


async def gather(
    connection: Connection, month: str, thresholds: Thresholds, city: str | None = None
) -> ReportData:
    """The month's figures; its alerts are the breaches under `thresholds` now, each marked
    published when `python -m worker alerts` has published it."""
    published = {a["event_id"] for a in await alert_store.kept(connection, month, city) if a["published"]}
    found = await alert_store.find_only(connection, month, thresholds, now_text(), city)
    return ReportData(
        month=month,
        city=city,
        daily=await queries.daily_spending(connection, month, city),
        spending=await queries.monthly(connection, "fund_spending", month, city),
        flows=await queries.monthly(connection, "account_flows", month, city),
        indicators=await alert_store.indicators(connection, month, city),
        alerts=[{**a, "published": a["event_id"] in published} for a in found],
    )


def _sum_by(rows: Sequence[dict[str, Any]], key: str, value: str) -> list[tuple[str, int]]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[str(row[key])] += int(row[value] or 0)
    return sorted(totals.items(), key=lambda kv: -kv[1])


def render(data: ReportData) -> str:
    scope = data.city or "all cities"
    fund = sum(int(r["fund_pay_fen"]) for r in data.spending)
    total = sum(int(r["total_fen"]) for r in data.spending)
    settlements = sum(int(r["settlements"]) for r in data.spending)
    reversals = sum(int(r["reversals"]) for r in data.spending)
    account = sum(int(r["account_pay_fen"]) for r in data.spending)
    kpis = "".join(
        f'<div class="kpi">{html.escape(k)}<b>{html.escape(v)}</b></div>'
        for k, v in (
            ("Pooling fund paid (yuan)", yuan(fund)),
            ("Total cost (yuan)", yuan(total)),
            ("Settlements / reversals", f"{settlements:,} / {reversals:,}"),
            ("Paid from accounts (yuan)", yuan(account)),
            ("Alerts", str(len(data.alerts))),
        )
    )
    daily = [(str(r["day"]), int(r["fund_pay_fen"])) for r in data.daily]
    by_class = _sum_by(data.spending, "treatment", "fund_pay_fen")
    by_band = _sum_by(data.spending, "band", "fund_pay_fen")
    by_kind = _sum_by(data.spending, "facility_kind", "fund_pay_fen")
    signed: dict[str, int] = defaultdict(int)
    for r in data.flows:  # summed over cities; money leaving the accounts drawn to the left
        outflow = r["flow"] in ("debit", "claim_payment") or (r["flow"] == "closing")
        signed[f"{r['flow']}: {r['reason']}"] += int(r["amount_fen"] or 0) * (-1 if outflow else 1)
    flows = list(signed.items())
    flows.sort(key=lambda kv: -kv[1])
    ranked = sorted(
        (r for r in data.indicators if r["avg_cost_vs_peers_bp"] is not None),
        key=lambda r: -int(r["avg_cost_vs_peers_bp"]),
    )[:10]
    alerted = {a["facility_id"] for a in data.alerts}
    sections = [
        figure(
            "Pooling-fund spending by day",
            bar_chart("fund-by-day", daily, vertical=True),
            table(
                ["day", "fund paid (yuan)", "total (yuan)", "settlements"],
                [
                    (r["day"], yuan(r["fund_pay_fen"]), yuan(r["total_fen"]), r["settlements"])
                    for r in data.daily
                ],
            ),
            "Settlements of the day minus reversals of the day (China dates).",
        ),
        figure(
            "Pooling-fund spending by treatment class",
            bar_chart("fund-by-class", by_class),
            table(["treatment class", "fund paid (yuan)"], [(k, yuan(v)) for k, v in by_class]),
        ),
        figure(
            "Pooling-fund spending by band and facility kind",
            bar_chart("fund-by-band", by_band + [(f"kind: {k}", v) for k, v in by_kind]),
            table(
                [
                    "city",
                    "treatment",
                    "band",
                    "channel",
                    "facility kind",
                    "settlements",
                    "reversals",
                    "total (yuan)",
                    "fund (yuan)",
                    "account (yuan)",
                    "cash (yuan)",
                ],
                [
                    (
                        r["city"],
                        r["treatment"],
                        r["band"],
                        r["channel"],
                        r["facility_kind"],
                        r["settlements"],
                        r["reversals"],
                        yuan(r["total_fen"]),
                        yuan(r["fund_pay_fen"]),
                        yuan(r["account_pay_fen"]),
                        yuan(r["cash_pay_fen"]),
                    )
                    for r in data.spending
                ],
            ),
        ),
        figure(
            "Personal-account flows",
            bar_chart("account-flows", flows),
            table(
                ["city", "flow", "reason", "pooling fund", "events", "amount (yuan)"],
                [
                    (
                        r["city"],
                        r["flow"],
                        r["reason"],
                        r["pooling_fund"],
                        r["events"],
                        yuan(int(r["amount_fen"] or 0)),
                    )
                    for r in data.flows
                ],
            ),
            "Credits by cause (retiree credits and incentives come from the pooling fund), "
            "debits by purpose, closings by disposition, and payments in claims by facility kind "
            "(shown as outflows).",
        ),
        figure(
            "Facilities with the highest average cost per visit against their peers",
            bar_chart(
                "top-facilities",
                [(r["facility_id"], int(r["avg_cost_vs_peers_bp"])) for r in ranked],
                unit="bp",
            ),
            table(
                [
                    "facility",
                    "city",
                    "kind",
                    "band",
                    "visits",
                    "avg cost (yuan)",
                    "peer median (yuan)",
                    "vs peers",
                    "self-pay",
                    "examination",
                    "growth",
                ],
                [
                    (
                        ("⚠ " if r["facility_id"] in alerted else "") + r["facility_id"],
                        r["city"],
                        r["facility_kind"],
                        r["band"],
                        r["visits"],
                        yuan(r["avg_cost_fen"]),
                        yuan(r["peer_median_avg_cost_fen"] or 0),
                        percent(r["avg_cost_vs_peers_bp"]),
                        percent(r["self_pay_share_bp"]),
                        percent(r["examination_share_bp"]),
                        percent(r["cost_growth_bp"]),
                    )
                    for r in ranked
                ],
            ),
            "Bars: the facility's average cost per visit (次均费用) as basis points of its peers' "
            "median (10000 = the median).",
        ),
    ]
    alert_rows = [
        (
            a["facility_id"],
            a["city"],
            a["indicator"],
            percent(a["value_bp"]),
            percent(a["threshold_bp"]),
            a["visits"],
            "yes" if a.get("published") else "no",
        )
        for a in data.alerts
    ]
    sections.append(
        "<section><h2>Alerts of the month</h2>"
        + (
            table(["facility", "city", "indicator", "value", "threshold", "visits", "published"], alert_rows)
            if alert_rows
            else '<p class="empty">No alerts this month.</p>'
        )
        + "</section>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Fund report {html.escape(data.month)} — {html.escape(scope)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>"
        f"<h1>Outpatient pooling fund — monthly report {html.escape(data.month)}</h1>"
        f'<p class="note">{html.escape(scope)} · amounts in yuan · from the settlement records</p>'
        f'<div class="kpis">{kpis}</div>{"".join(sections)}'
        "<footer>职工医保门诊共济 · python -m worker report</footer></body></html>\n"
    )
