"""Read benchmark CSVs and turn them into Bokeh charts (the library behind ``runner/graph.py``).

One module per step, in dependency order:

* ``names``: the vocabulary (metrics, axes, proxies, statistics, CSV formats); a leaf.
* ``csvread``: any supported CSV shape into one normalized table (``load_csv``).
* ``model``: the pure chart model, no Bokeh (``build_chart``, ``overhead_chart``,
  ``build_all`` for the ``all`` page).
* ``render``: Bokeh figures and pages (``make_figure``, ``build_page``).
* ``export``: the offline HTML file, its default name, PNG export through headless Chromium.

The names below are the package's public interface; import them from ``meshperf.graphing``.
"""

from meshperf.graphing.csvread import LoadedCsv, detect_format, load_csv
from meshperf.graphing.export import (
    default_output,
    export_png,
    find_chromium,
    start_chromium,
    write_html,
)
from meshperf.graphing.model import Chart, Series, build_all, build_chart, overhead_chart
from meshperf.graphing.names import (
    FORMAT_DESCRIPTIONS,
    FORMAT_ISTIO2019,
    FORMAT_ISTIO_TOOLS,
    FORMAT_MESHPERF,
    LATENCY_METRICS,
    MESH_NAME,
    METRICS,
    PROXIES,
    RESOURCE_METRICS,
    STATS,
    XAXES,
)
from meshperf.graphing.render import build_page, make_figure, series_colors

__all__ = [
    "FORMAT_DESCRIPTIONS",
    "FORMAT_ISTIO2019",
    "FORMAT_ISTIO_TOOLS",
    "FORMAT_MESHPERF",
    "LATENCY_METRICS",
    "MESH_NAME",
    "METRICS",
    "PROXIES",
    "RESOURCE_METRICS",
    "STATS",
    "XAXES",
    "Chart",
    "LoadedCsv",
    "Series",
    "build_all",
    "build_chart",
    "build_page",
    "default_output",
    "detect_format",
    "export_png",
    "find_chromium",
    "load_csv",
    "make_figure",
    "overhead_chart",
    "series_colors",
    "start_chromium",
    "write_html",
]
