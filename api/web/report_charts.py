"""The reports' charts as SVG, drawn by pygal from a :class:`ReportTable` (docs/reports.md says
why pygal: pure Python, SVG natively, about 20 ms a chart, no numpy; matplotlib's SVG backend
took ~135 ms for the same stacked bar chart, too slow for nine charts in a 500 ms page).

The page embeds each SVG as an ``<img>`` with a ``data:`` URL: the page's CSP allows
``img-src data:``, and an SVG shown as an image runs no script and cannot restyle the page, so
pygal's own inline style and script stay inside the picture. The same numbers are in a table
under each chart and in its CSV: the picture is never the only way to read them.
"""

from __future__ import annotations

import base64
import math
from typing import Final

import pygal
from pygal.style import Style

from api.web.report_data import ReportTable

__all__ = ["chart_data_url", "chart_svg"]

# Okabe–Ito, distinguishable with the common colour-vision deficiencies; dark text on white.
PALETTE: Final = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#7A4A00",
    "#17603A",
    "#A1161F",
)
STYLE: Final = Style(
    background="white",
    plot_background="white",
    foreground="#1a1f24",
    foreground_strong="#1a1f24",
    foreground_subtle="#cfd5db",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    label_font_size=12,
    major_label_font_size=12,
    legend_font_size=12,
    title_font_size=14,
    value_font_size=11,
    colors=PALETTE,
)
WIDTH: Final = 720
HEIGHT: Final = 320


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def chart_svg(table: ReportTable) -> str | None:
    """The chart of ``table`` as an SVG document, or None when it has no data yet."""
    if not table.has_data or not table.rows:
        return None
    config = pygal.Config()
    config.style = STYLE
    config.width = WIDTH
    config.height = HEIGHT
    config.js = []  # no script fetched from anywhere (and none runs in an <img>)
    config.disable_xml_declaration = True
    config.show_legend = len(table.series) > 1
    config.legend_at_bottom = True
    config.legend_at_bottom_columns = min(4, max(1, len(table.series)))
    config.truncate_legend = -1
    config.truncate_label = -1
    config.margin = 12
    config.explicit_size = True  # width and height on <svg>: the image keeps its ratio
    chart: pygal.Bar | pygal.StackedBar | pygal.Line
    if table.kind == "stacked":
        chart = pygal.StackedBar(config)
    elif table.kind == "line":
        config.range = (0, 100)
        config.dots_size = 2
        chart = pygal.Line(config)
    else:
        chart = pygal.Bar(config)
    labels = [str(row[0]) for row in table.rows]
    chart.x_labels = labels
    if len(labels) > 14:  # weekly charts: a label every few weeks, every bar still drawn
        chart.x_label_rotation = 30
        chart.x_labels_major_every = max(1, len(labels) // 8)
        chart.show_minor_x_labels = False
    elif any(len(label) > 10 for label in labels):
        chart.x_label_rotation = 20
    top = 0.0
    for name in table.series:
        column = table.columns.index(name)
        values = [_number(row[column]) for row in table.rows]
        chart.add(name, values)
        top = max([top, *(v for v in values if v is not None)])
    if table.kind == "stacked":
        top = max(
            [top]
            + [
                sum(_number(row[table.columns.index(n)]) or 0.0 for n in table.series)
                for row in table.rows
            ]
        )
    if table.kind != "line":  # counts: whole-number ticks, at most about ten
        step = max(1, math.ceil(top / 10))
        chart.y_labels = list(range(0, int(top) + step + 1, step))
    return str(chart.render(is_unicode=True))


def chart_data_url(svg: str) -> str:
    """``data:image/svg+xml;base64,…`` for an ``<img src>``."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
