"""Charts drawn on the server as SVG (no script, no inline style: the CSP allows neither)."""

from __future__ import annotations

from datetime import datetime, timedelta

from markupsafe import Markup, escape

__all__ = ["weekly_bars"]

_W, _H, _PAD, _AXIS = 780, 220, 8, 28


def weekly_bars(counts: list[int], start: datetime, title: str) -> Markup:
    """A bar per week from ``start``: ``counts[i]`` in week ``i``; each bar carries its
    week and count as a tooltip, and the figure a text alternative for screen readers."""
    top = max(counts, default=0) or 1
    width = (_W - 2 * _PAD) / max(len(counts), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
             f'aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="chart-title">{escape(title)}: {sum(counts)} in total</title>',
             f'<line class="axis" x1="{_PAD}" y1="{_H - _AXIS}" x2="{_W - _PAD}" '
             f'y2="{_H - _AXIS}"/>']
    plot = _H - _AXIS - _PAD
    for i, n in enumerate(counts):
        week = (start + timedelta(weeks=i)).date().isoformat()
        h = round(plot * n / top, 1) if n else 0
        x = round(_PAD + i * width + 1, 1)
        parts.append(f'<rect class="bar" x="{x}" y="{_H - _AXIS - h}" '
                     f'width="{round(width - 2, 1)}" height="{h}">'
                     f'<title>week of {week}: {n}</title></rect>')
        if i % 4 == 0:
            parts.append(f'<text class="tick" x="{x}" y="{_H - 10}">{week[5:]}</text>')
    parts.append(f'<text class="tick" x="{_W - _PAD}" y="{_PAD + 10}" '
                 f'text-anchor="end">max {top}</text></svg>')
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only
