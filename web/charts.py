"""Charts drawn on the server as inline SVG: no chart library, no JavaScript, no CDN.

A station's old laptop and a supervisor's phone both render SVG; the page works offline, and
screen readers get a <title> and the numbers as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

PALETTE = ("#2f6f8f", "#e08a3c", "#5b9a5b", "#b5534f", "#7a68a6", "#c2a13a", "#4f8f8a", "#8a6a4f")


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, unit: str = "", width: int = 520,
              highlight: Sequence[str] = ()) -> str:
    """Horizontal bars, one per (label, value), labels left, values right."""
    if not items:
        return f'<svg class="chart" role="img" width="{width}" height="30"><title>{escape(title)}</title></svg>'
    row, label_w, value_w = 26, 170, 70
    height = row * len(items) + 8
    top = max((v for _, v in items), default=0) or 1
    span = width - label_w - value_w
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    for i, (name, value) in enumerate(items):
        y = 4 + i * row
        w = max(1.0, span * value / top) if value else 0
        color = PALETTE[3] if name in highlight else PALETTE[0]
        shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 17}" text-anchor="end" class="chart-label">{escape(_short(name))}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" rx="3" fill="{color}">'
            f"<title>{escape(name)}: {escape(shown)}{escape(unit)}</title></rect>"
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}" class="chart-value">{escape(shown)}{escape(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def donut_chart(items: Sequence[tuple[str, float]], *, title: str, size: int = 220) -> str:
    """A donut with a legend: shares of a whole (e.g. children by guardianship type)."""
    total = sum(v for _, v in items)
    legend_w = 230
    width = size + legend_w
    height = max(size, 22 * len(items) + 10)
    cx = cy = size / 2
    r, inner = size / 2 - 6, size / 4
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>"]
    if total <= 0:
        parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="#ddd"/>')
    angle = -math.pi / 2
    for i, (name, value) in enumerate(items):
        if total <= 0 or value <= 0:
            continue
        sweep = 2 * math.pi * value / total
        color = PALETTE[i % len(PALETTE)]
        if sweep >= 2 * math.pi - 1e-9:
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="{r}" fill="{color}"/>')
        else:
            x1, y1 = cx + r * math.cos(angle), cy + r * math.sin(angle)
            x2, y2 = cx + r * math.cos(angle + sweep), cy + r * math.sin(angle + sweep)
            large = 1 if sweep > math.pi else 0
            parts.append(f'<path d="M{cx},{cy} L{x1:.2f},{y1:.2f} A{r},{r} 0 {large} 1 {x2:.2f},{y2:.2f} Z" '
                         f'fill="{color}"><title>{escape(name)}: {value:,.0f}</title></path>')
        angle += sweep
    parts.append(f'<circle cx="{cx}" cy="{cy}" r="{inner}" fill="#fff"/>')
    parts.append(f'<text x="{cx}" y="{cy + 6}" text-anchor="middle" class="chart-total">{total:,.0f}</text>')
    for i, (name, value) in enumerate(items):
        y = 10 + i * 22
        pct = f"{100 * value / total:.0f}%" if total else "-"
        parts.append(f'<rect x="{size + 10}" y="{y}" width="14" height="14" rx="2" fill="{PALETTE[i % len(PALETTE)]}"/>'
                     f'<text x="{size + 30}" y="{y + 12}" class="chart-label">{escape(_short(name, 12))} '
                     f"{value:,.0f} ({pct})</text>")
    parts.append("</svg>")
    return "".join(parts)


def _short(name: str, limit: int = 14) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def day_columns(days: Sequence[tuple[str, float]], *, title: str, width: int = 270, height: int = 40) -> str:
    """One thin column per day (oldest left), height by the day's count; a day with none is a
    grey tick. For a site's contacts over the last weeks: small enough to sit in a table cell.
    Colours are SVG attributes, not style (the pages' CSP has no inline styles)."""
    n = max(1, len(days))
    step = width / n
    top = max((v for _, v in days), default=0) or 1
    parts = [f'<svg class="chart spark" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
    for i, (day, value) in enumerate(days):
        x = i * step
        if value:
            h = max(2.0, (height - 2) * value / top)
            parts.append(f'<rect x="{x:.1f}" y="{height - h:.1f}" width="{max(1.0, step - 0.6):.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[0]}"><title>{escape(day)}: {value:,.0f}</title></rect>')
        else:
            parts.append(f'<rect x="{x:.1f}" y="{height - 1}" width="{max(1.0, step - 0.6):.1f}" height="1" '
                         f'fill="#b8c4cc"/>')
    parts.append("</svg>")
    return "".join(parts)
