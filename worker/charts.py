"""Self-contained HTML for the product's reports (the monthly fund report, the policy simulation):
inline CSS and SVG bar charts drawn here — no script, nothing fetched — so a report opens anywhere,
offline, and a test can check that every chart drew its bars. Money is shown in yuan from integer fen
(no float); ratios from basis points."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

PALETTE = ("#2f6db5", "#e07b39", "#3a9d5d", "#b54a4a", "#7a5bb5", "#8c8c8c", "#c2a32d", "#3aa5b5")


def yuan(fen: int) -> str:
    """Fen as yuan with thousands separators, exactly (no float)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def percent(bp: int | None) -> str:
    if bp is None:
        return "–"
    sign = "-" if bp < 0 else ""
    whole, rest = divmod(abs(bp), 100)
    return f"{sign}{whole}.{rest:02d}%"


def bar_chart(name: str, bars: Sequence[tuple[str, int]], unit: str = "fen", vertical: bool = False) -> str:
    """An SVG bar chart; bars are (label, value) — values may be negative (reversals, outflows)."""
    width, row_height = 720, 26
    if not bars:
        return f'<p class="empty" data-chart="{html.escape(name)}">No data this month.</p>'
    top = max(max(v for _, v in bars), 0)
    bottom = min(min(v for _, v in bars), 0)
    span = (top - bottom) or 1
    fmt = yuan if unit == "fen" else percent if unit == "bp" else str
    parts = []
    if vertical:
        height, plot = 240, 200
        step = width / len(bars)
        zero = 10 + plot * top / span
        for index, (label, value) in enumerate(bars):
            h = plot * abs(value) / span
            y = zero - h if value >= 0 else zero
            x = index * step
            parts.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}"'
                f' height="{max(h, 0.5):.1f}"'
                f' fill="{PALETTE[0]}"><title>{html.escape(label)}: {fmt(value)}</title></rect>'
            )
            if len(bars) <= 31:
                parts.append(
                    f'<text x="{x + step / 2:.1f}" y="{height - 8}" text-anchor="middle" class="tick">'
                    f"{html.escape(label[-2:])}</text>"
                )
        parts.append(f'<line x1="0" x2="{width}" y1="{zero:.1f}" y2="{zero:.1f}" class="axis"/>')
        parts.append(f'<text x="4" y="12" class="tick">max {fmt(top)}</text>')
    else:
        height = row_height * len(bars) + 10
        label_width, plot = 220, width - 220 - 130
        zero = label_width + plot * (-bottom) / span
        for index, (label, value) in enumerate(bars):
            y = 5 + index * row_height
            w = plot * abs(value) / span
            x = zero if value >= 0 else zero - w
            colour = PALETTE[index % len(PALETTE)]
            parts.append(
                f'<text x="{label_width - 8}" y="{y + 17}" text-anchor="end" class="label">'
                f"{html.escape(label)}</text>"
                f'<rect class="bar" x="{x:.1f}" y="{y + 3}" width="{max(w, 0.5):.1f}"'
                f' height="{row_height - 8}"'
                f' fill="{colour}"><title>{html.escape(label)}: {fmt(value)}</title></rect>'
                f'<text x="{label_width + plot + 8}" y="{y + 17}" class="value">{fmt(value)}</text>'
            )
        parts.append(f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="0" y2="{height}" class="axis"/>')
    return (
        f'<svg class="chart" data-chart="{html.escape(name)}" viewBox="0 0 {width} {height}" width="{width}"'
        f' height="{height}" role="img" aria-label="{html.escape(name)}">{"".join(parts)}</svg>'
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(title: str, chart: str, data: str, note: str = "") -> str:
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        f"<section><h2>{html.escape(title)}</h2>{note_html}<figure>{chart}</figure>"
        f"<details open><summary>Table</summary>{data}</details></section>"
    )


STYLE = (
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI','Noto Sans CJK SC',sans-serif;"
    "margin:24px auto;max-width:980px;color:#222}"
    "h1{font-size:22px;margin-bottom:4px}"
    "h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd;padding-bottom:4px}"
    ".kpis{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}"
    ".kpi{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}"
    ".kpi b{display:block;font-size:18px}.note,.empty{color:#666}"
    "svg.chart{max-width:100%;height:auto;background:#fafafa}"
    ".tick,.label,.value{font-size:11px;fill:#333}.axis{stroke:#999}"
    "table{border-collapse:collapse;margin:6px 0;font-size:12px}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f2f2f2}"
    "td:first-child,th:first-child{text-align:left}.alert{color:#b54a4a;font-weight:600}"
    "footer{margin-top:32px;color:#888;font-size:12px}"
)


def page(title: str, subtitle: str, body: str, footer: str) -> str:
    """A whole HTML document around `body`."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="note">{html.escape(subtitle)}</p>{body}'
        f"<footer>{html.escape(footer)}</footer></body></html>\n"
    )


def kpis(items: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f'<div class="kpi">{html.escape(k)}<b>{html.escape(v)}</b></div>' for k, v in items)
    return f'<div class="kpis">{cells}</div>'
