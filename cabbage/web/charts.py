"""The overview's throughput chart: jobs finished per minute, as inline SVG drawn on the server.

No script and no CDN: the page works offline and in any browser. Bars stack succeeded, failed
and cancelled jobs; every value in the markup is a number or a formatted time.
"""

from __future__ import annotations

import datetime
from typing import Sequence

from markupsafe import Markup, escape

from cabbage.admin import MinuteThroughput

WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 24  # margins for the axis labels
SERIES = (("succeeded", "var(--succeeded)"), ("failed", "var(--failed)"), ("cancelled", "var(--cancelled)"))


def minute_label(minute: datetime.datetime) -> str:
    return minute.astimezone(datetime.timezone.utc).strftime("%H:%M")


def throughput_chart(minutes: Sequence[MinuteThroughput]) -> Markup:
    """An SVG bar chart of ``minutes`` (oldest first), with a title per bar for its figures."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max([minute.finished for minute in minutes] + [1])
    slot = plot_width / max(len(minutes), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="jobs finished per minute over the last {len(minutes)} minutes">',
        f'<line x1="{LEFT}" y1="{TOP + plot_height}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_height}" class="axis"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 10}" class="label" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + plot_height}" class="label" text-anchor="end">0</text>',
    ]
    for index, minute in enumerate(minutes):
        x = LEFT + index * slot
        base = TOP + plot_height
        title = escape(
            f"{minute_label(minute.minute)} UTC: {minute.succeeded} succeeded, {minute.failed} failed, "
            f"{minute.cancelled} cancelled"
        )
        parts.append(f"<g><title>{title}</title>")
        for field, colour in SERIES:
            count = getattr(minute, field)
            if count:
                height = count / peak * plot_height
                base -= height
                parts.append(
                    f'<rect x="{x + 1:.1f}" y="{base:.1f}" width="{max(slot - 2, 1):.1f}" '
                    f'height="{height:.1f}" fill="{colour}" class="{field}"/>'
                )
        parts.append("</g>")
    if minutes:
        # First, middle and last minute; the ends anchored inwards so that no label is cut.
        labels = ((0, LEFT, "start"), (len(minutes) // 2, LEFT + plot_width / 2, "middle"),
                  (len(minutes) - 1, WIDTH - RIGHT, "end"))
        for index, x, anchor in labels:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 6}" class="label" text-anchor="{anchor}">'
                f"{minute_label(minutes[index].minute)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
