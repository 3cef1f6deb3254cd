"""Verdicts per hour as an SVG bar chart, laid out here and drawn by a template.

No script and no chart library: the server computes each bar's rectangle and the
template writes <rect> elements (escaped like everything else on the page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

COLORS = {"infected": "#b03a2e", "blocked": "#ca6f1e", "spam": "#d4ac0d",
          "unscannable": "#7d3c98", "gave_up": "#566573", "error": "#566573"}
OTHER = "#2e86c1"
HEIGHT = 200
BAR = 4                     # pixels per hour
LEFT, BOTTOM = 40, 20


@dataclass
class Bar:
    x: int
    y: float
    w: int
    h: float
    fill: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    bars: list[Bar] = field(default_factory=list)
    days: list[tuple[int, str]] = field(default_factory=list)       # x, label
    ticks: list[tuple[float, int]] = field(default_factory=list)    # y, value
    legend: list[tuple[str, str, int]] = field(default_factory=list)  # verdict, colour, total
    peak: int = 0


def hourly(counts: dict[tuple[int, str], int], now: float, days: int) -> Chart:
    """counts: (hour since the epoch, verdict) -> entries. The last `days` days to now."""
    last = int(now // 3600)
    hours = days * 24
    first = last - hours + 1
    per_hour: dict[int, int] = {}
    totals: dict[str, int] = {}
    for (h, v), n in counts.items():
        if first <= h <= last:
            per_hour[h] = per_hour.get(h, 0) + n
            totals[v] = totals.get(v, 0) + n
    peak = max(per_hour.values(), default=0)
    scale = HEIGHT / peak if peak else 0.0
    chart = Chart(LEFT + hours * BAR + 10, HEIGHT + BOTTOM + 10, peak=peak)
    order = sorted(totals, key=lambda v: (-totals[v], v))
    for h in range(first, last + 1):
        x = LEFT + (h - first) * BAR
        y = float(HEIGHT)
        for v in order:
            n = counts.get((h, v), 0)
            if not n:
                continue
            height = n * scale
            y -= height
            when = datetime.fromtimestamp(h * 3600, UTC).strftime("%Y-%m-%d %H:00")
            chart.bars.append(Bar(x, round(y, 2), BAR - 1, round(height, 2),
                                  COLORS.get(v, OTHER), f"{when} UTC: {n} {v}"))
        if h % 24 == 0:
            chart.days.append((x, datetime.fromtimestamp(h * 3600, UTC).strftime("%m-%d")))
    if peak:
        chart.ticks = [(round(HEIGHT - f * HEIGHT, 2), round(f * peak)) for f in (0.5, 1.0)]
    chart.legend = [(v, COLORS.get(v, OTHER), totals[v]) for v in order]
    return chart


__all__ = ["Chart", "hourly"]
