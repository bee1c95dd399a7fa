"""Bokeh rendering: a figure per ``Chart``, and the page for one metric or for ``all``.

Only Bokeh 3 APIs (``width``/``height``, ``scatter(marker=...)``, ``legend_label``,
``Legend.ncols``). Bokeh is imported inside the functions, so the CSV reader and the chart
model load without it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from meshperf.errors import ConfigError, ResultsError
from meshperf.graphing.csvread import LoadedCsv
from meshperf.graphing.model import Chart, Series, build_all, build_chart
from meshperf.graphing.names import (
    FORMAT_DESCRIPTIONS,
    LATENCY_METRICS,
    METRICS,
    RESOURCE_METRICS,
)

if TYPE_CHECKING:
    from bokeh.models.ui.ui_element import UIElement
    from bokeh.plotting import figure as Figure  # noqa: N812


def series_colors(names: Iterable[str]) -> dict[str, str]:
    """A color per series name, so one series keeps its color in every figure of a page."""
    from bokeh.palettes import Category10_10, Category20_20

    unique = list(dict.fromkeys(names))
    palette = Category10_10 if len(unique) <= 10 else Category20_20
    return {n: palette[i % len(palette)] for i, n in enumerate(unique)}


def make_figure(
    chart: Chart, width: int = 640, height: int = 400, colors: dict[str, str] | None = None
) -> Figure:
    """One Bokeh 3 figure: a line plus markers per series, hover with the exact values.

    Where a point averages repeats, a vertical bar with end caps spans their min to max, in
    the series' colour (hidden with it from the legend), so the spread is seen, not only the
    mean.
    """
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.plotting import figure

    # The legend sits below the plot: grow the figure so the plot keeps its height.
    legend_rows = math.ceil(len(chart.series) / 2)
    p = figure(
        title=chart.title,
        x_axis_label=chart.x_label,
        y_axis_label=chart.y_label,
        width=width,
        height=height + 22 * legend_rows + 20,
        tools="pan,box_zoom,wheel_zoom,reset,save",
        toolbar_location="above",
        name=chart.metric,
    )
    colors = {**series_colors(s.name for s in chart.series), **(colors or {})}
    markers = ("circle", "square", "triangle", "diamond", "inverted_triangle", "hex")
    points: list[Any] = []
    xs: set[float] = set()
    for i, s in enumerate(chart.series):
        source = ColumnDataSource(
            data={
                "x": list(s.x),
                "y": list(s.y),
                "series": [s.name] * len(s.x),
                "runs": list(s.runs),
                "y_min": list(s.y_min or s.y),
                "y_max": list(s.y_max or s.y),
                "actual_qps": list(s.actual_qps),
                "label": list(s.labels),
                "baseline": [s.baseline or "-"] * len(s.x),
                "warnings": [w or "-" for w in (s.warnings or [""] * len(s.x))],
            },
            name=s.name,
        )
        color = colors[s.name]
        p.line("x", "y", source=source, legend_label=s.name, color=color, line_width=2, name=s.name)
        points.append(
            p.scatter(
                "x",
                "y",
                source=source,
                legend_label=s.name,
                color=color,
                size=8,
                marker=markers[(i // 10) % len(markers)],
                name=s.name,
            )
        )
        _draw_spread(p, s, color)
        _draw_warnings(p, s, source)
        xs.update(s.x)
    x_fmt = "0" if chart.xaxis == "connections" else "0.[00]"
    p.add_tools(
        HoverTool(
            renderers=points,
            tooltips=[
                ("series", "@series"),
                (chart.x_label, f"@x{{{x_fmt}}}"),
                (chart.y_label, f"@y{{{chart.y_format}}}"),
                ("achieved QPS", "@actual_qps{0.0}"),
                ("runs", "@runs"),
                (
                    "95% interval" if any(s.interval for s in chart.series) else "repeats min..max",
                    f"@y_min{{{chart.y_format}}} .. @y_max{{{chart.y_format}}}",
                ),
                ("warnings", "@warnings"),
                ("label", "@label"),
                *((("minus", "@baseline"),) if chart.metric.startswith("overhead-") else ()),
            ],
        )
    )
    if 0 < len(xs) <= 16:
        p.xaxis.ticker = sorted(xs)
    if not chart.metric.startswith("overhead-"):
        p.y_range.start = 0  # type: ignore[attr-defined]  # a DataRange1d at run time
    if chart.series:
        # Below the plot, so it never hides a point; click an entry to hide its series.
        legend = p.legend[0]
        p.add_layout(legend, "below")
        legend.ncols = 2
        legend.click_policy = "hide"
        legend.location = "top_left"
    return p


def _draw_warnings(p: Figure, s: Series, source: Any) -> None:
    """A red ring around each point whose rows carry warnings (meshperf.trust)."""
    from bokeh.models import CDSView, IndexFilter

    idx = [i for i, w in enumerate(s.warnings) if w]
    if not idx:
        return
    p.scatter(
        "x", "y", source=source, view=CDSView(filter=IndexFilter(indices=idx)), marker="circle",
        size=16, fill_alpha=0.0, line_color="#d62728", line_width=2, legend_label=s.name,
        name=f"{s.name} warnings",
    )  # fmt: skip


def _draw_spread(p: Figure, s: Series, color: str) -> None:
    """Min-max bars at the points with several runs (nothing where a point is one run)."""
    from bokeh.models import ColumnDataSource

    idx = [i for i, r in enumerate(s.runs) if r > 1 and s.y_min and s.y_min[i] != s.y_max[i]]
    if not idx:
        return
    bars = ColumnDataSource(
        data={
            "x": [s.x[i] for i in idx],
            "lo": [s.y_min[i] for i in idx],
            "hi": [s.y_max[i] for i in idx],
        },
        name=f"{s.name} spread",
    )
    p.segment(
        "x", "lo", "x", "hi", source=bars, legend_label=s.name, color=color, line_width=2,
        line_alpha=0.6, name=f"{s.name} spread",
    )  # fmt: skip
    for end in ("lo", "hi"):
        p.scatter(
            "x", end, source=bars, legend_label=s.name, color=color, marker="dash", size=10,
            line_width=2, name=f"{s.name} spread",
        )  # fmt: skip


def _notes_div(notes: Sequence[str], width: int) -> Any:
    from bokeh.models.widgets.markups import Div

    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return Div(
        text=f"<ul style='color:#555;font-size:12px'>{items}</ul>", width=width, name="notes"
    )


def build_page(
    datas: Sequence[LoadedCsv],
    metric: str,
    xaxis: str = "connections",
    *,
    qps: float | None = None,
    conn: int | None = None,
    proxy: str = "server",
    stat: str = "max",
    baseline_series: str | None = None,
) -> tuple[UIElement, list[Chart], list[str]]:
    """The layout for one metric, or for ``all``: every metric plus the overhead view.

    ``baseline_series`` names the series the overhead view subtracts (``overhead_chart``).
    Returns the layout, the charts drawn (in page order) and the notes for the user (those of
    loading the CSVs included; the overhead view's skipped series summed up, one line per
    cause for all percentiles together).
    """
    from bokeh.layouts import column, gridplot
    from bokeh.models.widgets.markups import Div

    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    opts: dict[str, Any] = {"qps": qps, "conn": conn, "proxy": proxy, "stat": stat}
    # The page also says how each CSV was read; the returned notes leave that to the caller.
    read_as = [f"{d.name}: read as {FORMAT_DESCRIPTIONS[d.format]}" for d in datas]
    load_notes = [n for d in datas for n in d.notes]
    if metric != "all":
        chart = build_chart(datas, metric, xaxis, **opts)
        if not chart.series:
            raise ResultsError(f"no {metric} data to plot")
        notes = list(dict.fromkeys([*load_notes, *chart.notes]))
        items: list[Any] = [make_figure(chart, 800, 480), _notes_div([*read_as, *notes], 800)]
        return column(*items, name="page"), [chart], notes

    charts, overheads, more = build_all(datas, xaxis, baseline_series=baseline_series, **opts)
    notes = list(dict.fromkeys([*load_notes, *more]))
    w, h = 600, 320
    colors = series_colors(s.name for c in charts for s in c.series)
    sections: list[Any] = [
        Div(
            text=f"<h2 style='margin:4px 0'>{html.escape(', '.join(d.name for d in datas))}</h2>",
            width=2 * w,
        )
    ]
    lat: list[Any] = [make_figure(c, w, h, colors) for c in charts if c.metric in LATENCY_METRICS]
    if lat:
        sections += [Div(text="<h3>Latency</h3>", width=2 * w), gridplot(lat, ncols=2)]
    if overheads:
        over: list[Any] = [make_figure(o, w, h, colors) for o in overheads]
        sections += [
            Div(
                text="<h3>Overhead vs baseline (latency minus baseline at the same x)</h3>",
                width=2 * w,
            ),
            gridplot(over, ncols=2),
        ]
    else:
        sections.append(
            Div(
                text="<h3>Overhead vs baseline</h3><p>not available: no baseline "
                "series matches the other series (see the notes)</p>",
                width=2 * w,
            )
        )
    res: list[Any] = [make_figure(c, w, h, colors) for c in charts if c.metric in RESOURCE_METRICS]
    if res:
        sections += [Div(text="<h3>CPU and memory</h3>", width=2 * w), gridplot(res, ncols=2)]
    sections.append(_notes_div([*read_as, *notes], 2 * w))
    return column(*sections, name="page"), [*charts, *overheads], notes
