"""Bar charts as inline SVG, drawn on the server (no script).

The Content-Security-Policy of the case pages forbids inline `style` attributes, inside SVG too:
colours and sizes are SVG presentation attributes (which also print and render in the PDF of the
yearly overview), and classes let meldbot.css adjust them. A hidden count ("<5") never gets a bar:
the chart writes "<5" where its bar would start, and the table beside every chart holds the exact
shown values for anyone who cannot see the chart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from markupsafe import Markup, escape

from bot.core.stats import Count

#: Colours: this period (the product's accent), the period compared with, text and muted text.
CURRENT = "#154273"
PREVIOUS = "#9fb3c8"
INK = "#1d2430"
MUTED = "#5a6472"
GRID = "#d5dae1"

WIDTH = 640
FONT_SIZE = 13
#: Characters of a label drawn in a horizontal chart; the whole label is in the bar's <title>.
LABEL_CHARS = 30


@dataclass(frozen=True)
class Bar:
    """One group of bars: a label, this period's count and optionally the earlier period's."""

    label: str
    current: Count
    previous: Count | None = None


def _short(label: str, chars: int = LABEL_CHARS) -> str:
    return label if len(label) <= chars else label[: chars - 1].rstrip() + "…"


def _legend(current_label: str, previous_label: str | None, y: int) -> list[str]:
    parts = [f'<g class="chart-legend"><rect x="0" y="{y - 10}" width="12" height="12" fill="{CURRENT}"/>'
             f'<text x="18" y="{y}" fill="{INK}">{escape(current_label)}</text>']
    if previous_label:
        x = 30 + 8 * len(current_label)
        parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{PREVIOUS}"/>'
                     f'<text x="{x + 18}" y="{y}" fill="{INK}">{escape(previous_label)}</text>')
    parts.append("</g>")
    return parts


def _svg(body: list[str], height: int, title: str, chart_id: str, summary: str, kind: str) -> Markup:
    label = f"{title}. {summary}" if summary else title
    return Markup(
        f'<svg class="chart chart-{kind}" id="{escape(chart_id)}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'font-size="{FONT_SIZE}" font-family="DejaVu Sans, system-ui, sans-serif">'
        f"<title>{escape(label)}</title>" + "".join(body) + "</svg>"
    )


def _bar(x: float, y: float, width: float, height: int, count: Count, fill: str, css: str, label: str) -> str:
    """One bar with its value after it; a hidden count draws only its "<5"."""
    tip = f"<title>{escape(label)}: {escape(count.shown)}</title>"
    if count.suppressed:
        return (f'<text class="chart-hidden" x="{x + 2:.1f}" y="{y + height - 2}" fill="{MUTED}">'
                f"{escape(count.shown)}{tip}</text>")
    parts = []
    if count.value:
        parts.append(f'<rect class="bar {css}" x="{x:.1f}" y="{y}" width="{max(width, 1.5):.1f}" height="{height}" '
                     f'fill="{fill}">{tip}</rect>')
    colour = INK if count.value else MUTED
    parts.append(f'<text class="chart-value" x="{x + max(width, 0) + 4:.1f}" y="{y + height - 2}" fill="{colour}">'
                 f"{escape(count.shown)}</text>")
    return "".join(parts)


def bar_chart(bars: Sequence[Bar], *, title: str, chart_id: str, current_label: str,
              previous_label: str | None = None, summary: str = "") -> Markup:
    """Horizontal bars, one group per label (this period above the earlier one when given)."""
    compare = previous_label is not None
    largest = max([1] + [b.current.chart_value for b in bars]
                  + [b.previous.chart_value for b in bars if b.previous is not None])
    label_width, right = 230, 50
    area = WIDTH - label_width - right
    bar_height = 13 if compare else 16
    group = (2 * bar_height + 12) if compare else (bar_height + 10)
    top = 28
    body = _legend(current_label, previous_label, 14)
    body.append(f'<line x1="{label_width}" y1="{top - 4}" x2="{label_width}" '
                f'y2="{top + group * len(bars)}" stroke="{GRID}"/>')
    for index, bar in enumerate(bars):
        y = top + index * group
        body.append(f'<g class="chart-group"><title>{escape(bar.label)}</title>')
        middle = y + (group - 10) / 2 + 5
        body.append(f'<text class="chart-label" x="{label_width - 8}" y="{middle:.1f}" text-anchor="end" '
                    f'fill="{INK}">{escape(_short(bar.label))}</text>')
        body.append(_bar(label_width, y, bar.current.chart_value / largest * area, bar_height, bar.current,
                         CURRENT, "bar-current", f"{bar.label}, {current_label}"))
        if compare and bar.previous is not None:
            body.append(_bar(label_width, y + bar_height + 2, bar.previous.chart_value / largest * area, bar_height,
                             bar.previous, PREVIOUS, "bar-previous", f"{bar.label}, {previous_label}"))
        body.append("</g>")
    return _svg(body, top + group * len(bars) + 6, title, chart_id, summary, "bars")


def column_chart(bars: Sequence[Bar], *, title: str, chart_id: str, current_label: str,
                 previous_label: str | None = None, summary: str = "") -> Markup:
    """Vertical bars over time (months), this period beside the earlier one when given."""
    compare = previous_label is not None
    largest = max([1] + [b.current.chart_value for b in bars]
                  + [b.previous.chart_value for b in bars if b.previous is not None])
    left, top, plot = 10, 34, 150
    count = max(1, len(bars))
    slot = (WIDTH - left * 2) / count
    bar_width = min(22.0, (slot - 6) / (2 if compare else 1))
    # Labels of long periods would overlap: every n-th month then.
    step = 1 if slot >= 34 else int(34 // slot) + 1
    body = _legend(current_label, previous_label, 14)
    baseline = top + plot
    body.append(f'<line x1="{left}" y1="{baseline}" x2="{WIDTH - left}" y2="{baseline}" stroke="{GRID}"/>')
    for index, bar in enumerate(bars):
        x0 = left + index * slot + (slot - bar_width * (2 if compare else 1)) / 2
        body.append(f'<g class="chart-group"><title>{escape(bar.label)}</title>')
        pairs = [(bar.current, CURRENT, "bar-current", current_label)]
        if compare and bar.previous is not None:
            pairs.append((bar.previous, PREVIOUS, "bar-previous", previous_label))
        for offset, (value, fill, css, period) in enumerate(pairs):
            x = x0 + offset * bar_width
            tip = f"<title>{escape(bar.label)}, {escape(period)}: {escape(value.shown)}</title>"
            if value.suppressed:
                body.append(f'<text class="chart-hidden" x="{x + bar_width / 2:.1f}" y="{baseline - 4}" '
                            f'text-anchor="middle" font-size="10" fill="{MUTED}">{escape(value.shown)}{tip}</text>')
                continue
            height = value.chart_value / largest * plot
            # A zero needs no number over the time axis: the table beside it says 0.
            if value.value:
                body.append(f'<rect class="bar {css}" x="{x:.1f}" y="{baseline - height:.1f}" '
                            f'width="{bar_width - 1:.1f}" height="{height:.1f}" fill="{fill}">{tip}</rect>')
                body.append(f'<text class="chart-value" x="{x + bar_width / 2:.1f}" y="{baseline - height - 4:.1f}" '
                            f'text-anchor="middle" font-size="10" fill="{INK}">{escape(value.shown)}</text>')
        if index % step == 0:
            body.append(f'<text class="chart-label" x="{left + index * slot + slot / 2:.1f}" y="{baseline + 16}" '
                        f'text-anchor="middle" fill="{INK}">{escape(bar.label)}</text>')
        body.append("</g>")
    return _svg(body, baseline + 24, title, chart_id, summary, "columns")
