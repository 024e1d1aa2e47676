"""Small charts drawn on the server as inline SVG: no third-party script, nothing for the CSP to allow.

Only presentation attributes (``fill``, ``stroke``): a ``style`` attribute would be an inline
style, which the policy refuses. Every label is escaped; values are integers (money stays
exact; the y scale is the only division, and it only places pixels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 640, 190, 8, 22, 24


def _px(value: float) -> str:
    """A pixel position (format_html escapes its arguments to strings: numbers are formatted first)."""
    return f"{value:.1f}"


def _frame(title: str, body: SafeString, caption: str) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="finn-chart" role="img" viewBox="0 0 {} {}" width="{}" '
        'height="{}" aria-label="{}"><title>{}</title>'
        '<rect x="0" y="0" width="{}" height="{}" fill="#ffffff" stroke="#dddddd"/>'
        '<text x="{}" y="16" font-size="12" font-weight="bold" fill="#333333">{}</text>{}'
        '<text x="{}" y="{}" font-size="11" fill="#555555">{}</text></svg>',
        WIDTH, HEIGHT, WIDTH, HEIGHT, title, title, WIDTH, HEIGHT, PAD_LEFT, title, body, PAD_LEFT, HEIGHT - 6,
        caption,
    )  # fmt: skip


def bar_chart(
    title: str, points: Sequence[tuple[str, int]], *, value_label: Callable[[int], str], caption: str
) -> SafeString:
    """One bar per point (label, non-negative value); each bar's <title> names its label and value."""
    top = max([value for _, value in points] + [1])
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - 2 * PAD_LEFT) / max(len(points), 1)
    bars = format_html_join(
        "",
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}: {}</title></rect>',
        (
            (
                _px(PAD_LEFT + i * step + 1),
                _px(PAD_TOP + plot_h - plot_h * max(value, 0) / top),
                _px(max(step - 2, 1)),
                _px(plot_h * max(value, 0) / top),
                label,
                value_label(value),
            )
            for i, (label, value) in enumerate(points)
        ),
    )
    return _frame(title, bars, caption)


def line_chart(
    title: str, points: Sequence[tuple[str, int]], *, value_label: Callable[[int], str], caption: str
) -> SafeString:
    """A polyline over the points (label, value), with a dot and a <title> per point."""
    top = max([value for _, value in points] + [1])
    plot_h = HEIGHT - PAD_BOTTOM - PAD_TOP
    step = (WIDTH - 2 * PAD_LEFT) / max(len(points) - 1, 1)
    xy = [
        (PAD_LEFT + i * step, PAD_TOP + plot_h - plot_h * max(value, 0) / top, label, value)
        for i, (label, value) in enumerate(points)
    ]
    line = " ".join(f"{_px(x)},{_px(y)}" for x, y, _, _ in xy)
    dots = format_html_join(
        "",
        '<circle class="point" cx="{}" cy="{}" r="2" fill="#417690"><title>{}: {}</title></circle>',
        ((_px(x), _px(y), label, value_label(value)) for x, y, label, value in xy),
    )
    body = format_html('<polyline points="{}" fill="none" stroke="#417690" stroke-width="1.5"/>{}', line, dots)
    return _frame(title, body, caption)
