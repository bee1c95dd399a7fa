"""Charts of SLO searches (``runner.py --find-max``): what ``graph.py RUN.json p99`` draws.

Two figures from the ``slo_search`` records of a run file (``meshperf.search``):

* latency against offered load: one line per mode (and connection count) through its steps,
  x = the requested rate of each step, y = the chosen percentile in ms; steps that met the SLO
  are filled circles, steps that did not are crosses, steps that could not judge it (the load
  was not offered as asked) are hollow triangles; each search's knee, the highest rate that
  met, is a star, and the SLO's own bound on that percentile a dashed line;
* the highest rate under the SLO per mode as bars, a lower bound drawn hatched and labelled
  ``>=`` (the search stopped before it bracketed the limit).

x and y come from the same step, never paired by position. The percentile is read from each
step's result file beside the run file (fortio's rule on its histogram, so p50 ... p99.9 all
work); where the file is gone, the run file's own p99 is used and a note says so.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshperf import search
from meshperf.errors import ResultsError
from meshperf.results import FortioResult

if TYPE_CHECKING:
    from bokeh.models.ui.ui_element import UIElement

# graph.py's latency metric names and the percentile each is.
METRIC_PERCENTILE: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}
STEP_MARKERS = {True: "circle", False: "x", None: "triangle"}


def run_file_docs(paths: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]] | None:
    """The run files among ``paths`` that hold SLO searches, or None if ``paths`` are not all
    such run files (then they are CSVs for graph.py's usual charts)."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    for p in paths:
        if p.suffix != ".json":
            return None
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or not search.records_in(doc):
            return None
        docs.append((p, doc))
    return docs or None


def _step_value(base: Path, step: Mapping[str, Any], metric: str) -> tuple[float | None, bool]:
    """The step's ``metric`` in ms and whether it came from the step's own result file."""
    name = step.get("file")
    if name:
        try:
            r = FortioResult(json.loads((base / str(name)).read_text(encoding="utf-8")), name)
            if r.count:
                return 1000.0 * r.percentile(METRIC_PERCENTILE[metric]), True
        except (OSError, ValueError, ResultsError):
            pass
    key = {"p999": "p99.9"}.get(metric, metric)
    v = step.get(key)
    return (float(v) if isinstance(v, int | float) else None), False


def series_name(rec: Mapping[str, Any], many_conns: bool, many_runs: bool, run: str) -> str:
    name = str(rec["mode"])
    if many_conns:
        name += f" c={rec['conn']}"
    if many_runs:
        name += f" ({run})"
    return name


def gather(
    docs: Sequence[tuple[Path, Mapping[str, Any]]], metric: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """One entry per search: its name, steps (x, y, verdict), knee, SLO bound and max rate."""
    if metric not in METRIC_PERCENTILE:
        raise ResultsError(
            f"a search chart plots latency: metric must be one of {', '.join(METRIC_PERCENTILE)}"
            f" (got {metric!r})"
        )
    notes: list[str] = []
    pairs = [(path, doc, rec) for path, doc in docs for rec in search.records_in(doc)]
    many_conns = len({rec["conn"] for _, _, rec in pairs}) > 1
    many_runs = len(docs) > 1
    out: list[dict[str, Any]] = []
    for path, doc, rec in pairs:
        run = str(doc.get("run_id") or path.stem)
        name = series_name(rec, many_conns, many_runs, run)
        points = []
        from_record = 0
        for step in rec.get("steps") or []:
            y, own = _step_value(path.parent, step, metric)
            if y is None:
                continue
            from_record += not own
            points.append(
                {"x": float(step["qps"]), "y": y, "met": step.get("met"),
                 "achieved": float(step.get("achieved") or 0.0),
                 "reason": str(step.get("reason") or ""), "file": str(step.get("file") or "")}
            )  # fmt: skip
        if from_record:
            notes.append(
                f"{name}: {from_record} step(s) without their result file beside {path.name};"
                " their p99 comes from the run file"
            )
        points.sort(key=lambda p: p["x"])
        k = search.knee(rec)
        knee_point = next((p for p in points if k and p["x"] == k["qps"] and p["met"]), None)
        slo_text = str(rec.get("slo") or "")
        bound = None
        try:
            slo = search.parse_slo(slo_text)
            bound = next(
                (s * 1000 for p, s in slo.latency if p == METRIC_PERCENTILE[metric]), None
            )
        except Exception:  # noqa: BLE001 - an SLO this version cannot read: no bound line
            notes.append(f"{name}: SLO {slo_text!r} not understood; no bound drawn")
        out.append(
            {"name": name, "mode": rec["mode"], "conn": rec["conn"], "points": points,
             "knee": knee_point, "bound_ms": bound, "slo": slo_text,
             "max_qps": float(rec.get("max_qps") or 0.0),
             "lower_bound": bool(rec.get("lower_bound")), "reason": str(rec.get("reason") or "")}
        )  # fmt: skip
        if not points:
            notes.append(f"{name}: no step to draw")
    if not any(s["points"] for s in out):
        raise ResultsError("the run file's searches have no steps to draw")
    return out, notes


def build_search_page(
    docs: Sequence[tuple[Path, Mapping[str, Any]]], metric: str = "p99"
) -> tuple[UIElement, list[dict[str, Any]], list[str]]:
    """The page: latency against offered load with the knees, then max rate per mode."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, HoverTool
    from bokeh.models.annotations import Label, Span
    from bokeh.models.widgets.markups import Div
    from bokeh.plotting import figure

    from meshperf.graphing import series_colors

    searches, notes = gather(docs, metric)
    colors = series_colors(s["name"] for s in searches)
    slos = sorted({s["slo"] for s in searches})
    title = f"{metric} latency vs offered load (SLO {', '.join(slos)})"
    lat = figure(
        title=title, x_axis_label="offered load (requests/s)",
        y_axis_label=f"{metric} latency (ms)", width=900, height=480,
        tools="pan,box_zoom,wheel_zoom,reset,save", toolbar_location="above", name="latency",
    )  # fmt: skip
    step_renderers: list[Any] = []
    for s in searches:
        pts, color = s["points"], colors[s["name"]]
        if not pts:
            continue
        src = ColumnDataSource(
            data={
                "x": [p["x"] for p in pts], "y": [p["y"] for p in pts],
                "achieved": [p["achieved"] for p in pts],
                "verdict": [_verdict(p["met"]) for p in pts],
                "reason": [p["reason"] or "-" for p in pts],
                "series": [s["name"]] * len(pts),
                "marker": [STEP_MARKERS[p["met"]] for p in pts],
                "fill": [0.0 if p["met"] is None else 0.9 for p in pts],
            },
            name=s["name"],
        )  # fmt: skip
        lat.line("x", "y", source=src, color=color, line_width=2, legend_label=s["name"])
        step_renderers.append(
            lat.scatter("x", "y", source=src, marker="marker", size=10, color=color,
                        fill_alpha="fill", legend_label=s["name"], name=s["name"])
        )  # fmt: skip
        if s["knee"] is not None:
            kx, ky = s["knee"]["x"], s["knee"]["y"]
            lat.scatter([kx], [ky], marker="star", size=20, color=color, line_color="black",
                        legend_label=s["name"], name=f"knee {s['name']}")  # fmt: skip
            lat.add_layout(
                Label(x=kx, y=ky, text=f"knee {kx:g}/s", x_offset=8, y_offset=8,
                      text_font_size="11px", text_color=color, name=f"knee-label {s['name']}")
            )  # fmt: skip
    for bound in sorted({s["bound_ms"] for s in searches if s["bound_ms"] is not None}):
        lat.add_layout(
            Span(location=bound, dimension="width", line_dash="dashed", line_color="#d62728",
                 line_width=2, name="slo-bound")
        )  # fmt: skip
        lat.add_layout(
            Label(x=0, y=bound, x_units="screen", text=f"SLO {metric} {bound:g} ms",
                  y_offset=4, x_offset=6, text_font_size="11px", text_color="#d62728")
        )  # fmt: skip
    lat.add_tools(
        HoverTool(
            renderers=step_renderers,
            tooltips=[("series", "@series"), ("offered", "@x{0.[0]} req/s"),
                      ("achieved", "@achieved{0.0} req/s"), (metric, "@y{0.000} ms"),
                      ("SLO", "@verdict"), ("why", "@reason")],
        )
    )  # fmt: skip
    lat.y_range.start = 0  # type: ignore[attr-defined]  # a DataRange1d at run time
    if lat.legend:
        legend = lat.legend[0]
        lat.add_layout(legend, "below")
        legend.ncols = 3
        legend.click_policy = "hide"

    bars = max_rate_figure(searches, colors, slos)
    marks = (
        "filled circle: met the SLO; cross: did not; hollow triangle: could not judge (the load"
        " was not offered as asked); star: the knee, the highest rate that met"
    )
    items = "".join(
        f"<li>{html.escape(n)}</li>"
        for n in [marks, *(f"{s['name']}: {s['reason']}" for s in searches if s["reason"]),
                  *notes]
    )  # fmt: skip
    page = column(
        lat, bars, Div(text=f"<ul style='color:#555;font-size:12px'>{items}</ul>", width=900,
                       name="notes"),
        name="page",
    )  # fmt: skip
    return page, searches, notes


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "not met", None: "could not judge"}[met]


def max_rate_figure(
    searches: Sequence[Mapping[str, Any]], colors: Mapping[str, str], slos: Sequence[str]
) -> Any:
    """Bars of the highest rate under the SLO per search; lower bounds hatched, ``>=``."""
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool
    from bokeh.models.annotations import LabelSet
    from bokeh.plotting import figure

    names = [s["name"] for s in searches]
    src = ColumnDataSource(
        data={
            "name": names,
            "max_qps": [s["max_qps"] for s in searches],
            "color": [colors[n] for n in names],
            "hatch": [" " if not s["lower_bound"] else "/" for s in searches],
            "text": [(">= " if s["lower_bound"] else "") + f"{s['max_qps']:g}" for s in searches],
            "how": [s["reason"] or "-" for s in searches],
        }
    )
    p = figure(
        title=f"highest rate under the SLO ({', '.join(slos)})", x_range=FactorRange(factors=names),
        y_axis_label="requests/s", width=900, height=360, toolbar_location=None,
        tools="", name="max_qps",
    )  # fmt: skip
    bars = p.vbar(x="name", top="max_qps", width=0.6, source=src, color="color",
                  hatch_pattern="hatch", hatch_color="white", name="bars")  # fmt: skip
    p.add_layout(
        LabelSet(x="name", y="max_qps", text="text", source=src, text_align="center",
                 y_offset=4, text_font_size="12px")
    )  # fmt: skip
    p.add_tools(HoverTool(renderers=[bars], tooltips=[("", "@name"), ("max", "@text req/s"),
                                                      ("how it ended", "@how")]))  # fmt: skip
    p.y_range.start = 0  # type: ignore[attr-defined]
    return p


def default_output(run_file: Path, metric: str) -> Path:
    """``<run dir>/<run file stem>_search_<metric>.html``: beside the run file."""
    return run_file.with_name(f"{run_file.stem}_search_{metric}.html")


def main(args: Any, docs: Sequence[tuple[Path, Mapping[str, Any]]], prog: str) -> int:
    """``graph.py RUN.json [RUN.json ...] METRIC [-o FILE] [--png] [--show]``."""
    import sys
    import webbrowser

    from meshperf.errors import ExitCode, MeshperfError
    from meshperf.graphing import export_png, write_html

    try:
        layout, searches, notes = build_search_page(docs, args.metric)
        for note in notes:
            print(f"{prog}: note: {note}", file=sys.stderr)
        output = args.output or default_output(docs[0][0], args.metric)
        if output.resolve() in {p.resolve() for p, _ in docs}:
            raise MeshperfError(f"--output {output} would overwrite an input run file")
        write_html(layout, output, f"meshperf: SLO search, {docs[0][0].name}")
        print(output)
        if args.png:
            print(export_png(layout, output.with_suffix(".png")))
        if args.show and not webbrowser.open(output.resolve().as_uri()):
            print(f"{prog}: note: no browser could be started; open {output} yourself",
                  file=sys.stderr)  # fmt: skip
    except MeshperfError as e:
        hint = f" ({e.hint})" if e.hint else ""
        print(f"{prog}: error: {e}{hint}", file=sys.stderr)
        return int(ExitCode.ERROR)
    return int(ExitCode.OK)
