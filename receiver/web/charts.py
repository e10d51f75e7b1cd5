"""Charts drawn on the server as inline SVG: no script, no front-end build.

Each chart is an `<svg role="img">` with a `<title>` and an `aria-label` that
summarise it, so a screen reader hears the figures without the drawing.
Colours come from the stylesheet (classes `s0`, `s1`, ...); the width follows
the page through the viewBox, so a chart fits a 390 px phone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

WIDTH = 480
COLUMN_HEIGHT = 220
ROW_HEIGHT = 36
PAD = 24
VALUE_ROOM = 70


@dataclass(frozen=True)
class Series:
    """One named series of values, one value per label."""

    name: str
    values: Sequence[float]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{int(value)}"


def _open(chart_id: str, title: str, summary: str, height: int) -> Markup:
    return Markup(
        '<svg id="{id}" class="chart" role="img" viewBox="0 0 {w} {h}" '
        'preserveAspectRatio="xMinYMin meet" aria-label="{summary}"><title>{title}</title>'
    ).format(id=chart_id, w=WIDTH, h=height, summary=summary, title=title)


def columns(chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Grouped columns over time (one group per label), with the largest value on the axis."""
    totals = ", ".join(f"{s.name} {_number(sum(s.values))}" for s in series)
    span = f"{labels[0]} to {labels[-1]}" if labels else "no dates"
    summary = f"{title}, {span}: {totals}"
    largest = max((v for s in series for v in s.values), default=0)
    top = largest or 1
    plot_w, plot_h = WIDTH - 2 * PAD, COLUMN_HEIGHT - 2 * PAD
    base = PAD + plot_h
    group = plot_w / max(len(labels), 1)
    bar = group / max(len(series), 1)
    parts = [_open(chart_id, title, summary, COLUMN_HEIGHT)]
    parts.append(
        Markup(
            '<line class="axis" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}"/>'
            '<text class="tick" x="{x1}" y="{t}">max {top}</text>'
        ).format(x1=PAD, x2=PAD + plot_w, y=base, t=PAD - 8, top=_number(largest))
    )
    # The legend, right-aligned above the plot: a swatch and a name per series.
    x = WIDTH - PAD
    for k, s in reversed(list(enumerate(series))):
        x -= 8 * len(s.name) + 24
        parts.append(
            Markup(
                '<rect class="s{k}" x="{x}" y="{y}" width="10" height="10"/>'
                '<text class="tick" x="{tx}" y="{ty}">{name}</text>'
            ).format(k=k, x=x, y=PAD - 18, tx=x + 14, ty=PAD - 8, name=s.name)
        )
    for k, s in enumerate(series):
        for i, value in enumerate(s.values):
            if not value:
                continue  # a zero draws nothing; ten years of days stays small
            h = plot_h * value / top
            parts.append(
                Markup('<rect class="s{k}" x="{x}" y="{y}" width="{w}" height="{h}"/>').format(
                    k=k,
                    x=f"{PAD + i * group + k * bar:.2f}",
                    y=f"{base - h:.2f}",
                    w=f"{max(bar * 0.9, 0.5):.2f}",
                    h=f"{h:.2f}",
                )
            )
    if labels:
        parts.append(
            Markup(
                '<text class="tick" x="{x1}" y="{y}">{first}</text>'
                '<text class="tick" x="{x2}" y="{y}" text-anchor="end">{last}</text>'
            ).format(x1=PAD, x2=WIDTH - PAD, y=COLUMN_HEIGHT - 6, first=labels[0], last=labels[-1])
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def bars(chart_id: str, title: str, items: Sequence[tuple[str, float]]) -> Markup:
    """Horizontal bars, each under its label and with its number written beside it."""
    listed = "; ".join(f"{label}: {_number(value)}" for label, value in items) or "no data"
    summary = f"{title}: {listed}"
    height = PAD // 2 + ROW_HEIGHT * max(len(items), 1)
    top = max((v for _, v in items), default=0) or 1
    plot_w = WIDTH - 2 * PAD - VALUE_ROOM
    parts = [_open(chart_id, title, summary, height)]
    if not items:
        parts.append(
            Markup('<text class="tick" x="{x}" y="{y}">No data in this range</text>').format(
                x=PAD, y=PAD
            )
        )
    for i, (label, value) in enumerate(items):
        y = PAD / 2 + i * ROW_HEIGHT
        w = plot_w * value / top
        parts.append(
            Markup(
                '<text class="label" x="{x}" y="{ty}">{label}</text>'
                '<rect class="s0" x="{x}" y="{by}" width="{w}" height="12"/>'
                '<text class="value" x="{vx}" y="{vy}">{value}</text>'
            ).format(
                x=PAD,
                ty=f"{y + 8:.0f}",
                label=label,
                by=f"{y + 14:.0f}",
                w=f"{w:.2f}",
                vx=f"{PAD + 6 + w:.2f}",
                vy=f"{y + 25:.0f}",
                value=_number(value),
            )
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
