"""Chart benchmark CSVs as interactive Bokeh HTML (optionally a PNG too).

Reads CSVs written by runner/fortio.py, by the 2019 perf/benchmark scripts or by today's
istio/tools pipeline (the format is detected and printed), draws one line per test identity
(mode, label variant such as nomixer_both, and mesh, platform or protocol where they differ;
a line per Labels value for plain fortio runs), with points paired by their x value and the
spread of repeats, and writes a self-contained HTML file next to the first CSV.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from pathlib import Path

from meshperf.argtypes import non_negative_float, positive_int
from meshperf.cli import fail, print_error, script_parser
from meshperf.errors import ExitCode, MeshperfError, exit_cli, missing_package

try:
    from meshperf import searchcharts
    from meshperf.graphing import (
        FORMAT_DESCRIPTIONS,
        MESH_NAME,
        METRICS,
        PROXIES,
        STATS,
        XAXES,
        build_page,
        default_output,
        export_png,
        load_csv,
        write_html,
    )
except ModuleNotFoundError as e:  # pandas and bokeh, outside the project's environment
    missing_package(e)

PROG = "graph.py"

EPILOG = """\
examples:
  python runner/graph.py results.csv p99
      p99 latency vs connections, one line per mode; writes results_p99_connections.html
  python runner/graph.py results.csv all --qps 1000
      every metric plus the overhead vs baseline view, rows with 1000 requested QPS only
  python runner/graph.py results.csv p90 --xaxis qps --conn 16 --png
      p90 vs QPS at 16 connections; also writes a PNG (needs chromium + chromedriver)
  python runner/graph.py istio.csv linkerd.csv cpu --mesh istio,linkerd --proxy client --stat avg
      client sidecar CPU of two runs in one chart; --mesh names, in order, the mesh of CSVs
      that have no mesh column (one name applies to all of them)
  python runner/graph.py plain-fortio.csv all --qps 1000 --baseline-series direct
      results without a mode: a series per Labels value; the overhead view subtracts the
      series named "direct"
  python runner/graph.py results/run-5ea4c400.json p99
      a runner.py --find-max run: p99 vs offered load per mode with the knees, and the
      highest rate under the SLO per mode (docs/slo.md)

Latency is drawn in milliseconds (CSV columns are microseconds). The HTML embeds BokehJS
(INLINE resources), so it opens without network access.
"""






def mesh_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    for n in names:
        if not MESH_NAME.match(n):
            raise argparse.ArgumentTypeError(f"invalid mesh name {n!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = script_parser(PROG, __doc__, EPILOG)
    parser.add_argument(
        "csv",
        nargs="+",
        metavar="CSV",
        type=Path,
        help="CSV file(s) from runner/fortio.py, the 2019 scripts or istio/tools",
    )
    parser.add_argument(
        "metric",
        metavar="METRIC",
        help=f"y axis: one of {', '.join(METRICS)} (all: every metric on one page "
        "plus latency overhead vs baseline)",
    )
    data = parser.add_argument_group("what to plot")
    data.add_argument(
        "--xaxis", choices=XAXES, default="connections", help="x axis (default: connections)"
    )
    held = data.add_mutually_exclusive_group()
    held.add_argument(
        "--qps",
        type=non_negative_float,
        metavar="N",
        help="with --xaxis connections: keep only rows with this requested QPS "
        "(0 = max); without it, each QPS value is its own series",
    )
    held.add_argument(
        "--conn",
        type=positive_int,
        metavar="N",
        help="with --xaxis qps: keep only rows with this many connections",
    )
    data.add_argument(
        "--mesh",
        type=mesh_list,
        metavar="NAME[,NAME...]",
        help="mesh of CSVs without a mesh column, e.g. istio or linkerd; one name "
        "for all CSVs or one per CSV in order (default: istio, or linkerd "
        "when the labels say so)",
    )
    data.add_argument(
        "--series",
        metavar="COLUMN",
        help="name each series by this CSV column's value (e.g. Labels, Version, RunType); "
        "rows still split by everything that identifies a test. Default: by mode, and by "
        "Labels for rows without a mode (plain fortio runs)",
    )
    data.add_argument(
        "--baseline-series",
        metavar="NAME",
        help="with METRIC all: the series the overhead view subtracts, by its legend name "
        "(without the ' @ ...' part), e.g. direct; default: the baseline mode's series",
    )
    data.add_argument(
        "--proxy",
        choices=PROXIES,
        default="server",
        help="cpu/mem of which proxy: server sidecar (default), client sidecar, "
        "ingress gateway, or ambient mode's ztunnel and waypoint",
    )
    data.add_argument(
        "--stat",
        choices=STATS,
        default="max",
        help="cpu/mem statistic over the test (default: max; when the CSV has "
        "only one, that one is used and a note says so)",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="HTML file to write (default: <first CSV>_<metric>_<xaxis>.html beside the first CSV)",
    )
    out.add_argument("--show", action="store_true", help="open the HTML in a browser")
    out.add_argument(
        "--png",
        action="store_true",
        help="also save a PNG beside the HTML (headless Chromium + chromedriver)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Intermixed, so options may sit between the CSVs and METRIC.
    args = parser.parse_intermixed_args(argv)
    searches = searchcharts.run_file_docs(args.csv)  # run files of runner.py --find-max
    if searches is not None:
        return searchcharts.main(args, searches, PROG)
    meshes: list[str | None] = [None] * len(args.csv)
    if args.mesh is not None:
        if len(args.mesh) == 1:
            meshes = [args.mesh[0]] * len(args.csv)
        elif len(args.mesh) == len(args.csv):
            meshes = list(args.mesh)
        else:
            parser.error(
                f"--mesh has {len(args.mesh)} names for {len(args.csv)} CSVs; "
                "give one name or one per CSV"
            )
    if args.metric not in METRICS:
        return fail(PROG, f"unknown metric {args.metric!r}; expected one of {', '.join(METRICS)}")
    if args.baseline_series is not None and args.metric != "all":
        parser.error("--baseline-series sets the overhead view's baseline: use it with METRIC all")
    if args.xaxis == "connections" and args.conn is not None:
        parser.error("--conn holds connections constant; with --xaxis connections use --qps")
    if args.xaxis == "qps" and args.qps is not None:
        parser.error("--qps holds QPS constant; with --xaxis qps use --conn")
    try:
        datas = []
        for path, mesh in zip(args.csv, meshes, strict=True):
            data = load_csv(path, mesh=mesh, series=args.series)
            print(f"{PROG}: {path}: format {FORMAT_DESCRIPTIONS[data.format]}", file=sys.stderr)
            datas.append(data)
        layout, charts, notes = build_page(
            datas,
            args.metric,
            args.xaxis,
            qps=args.qps,
            conn=args.conn,
            proxy=args.proxy,
            stat=args.stat,
            baseline_series=args.baseline_series,
        )
        for note in notes:
            print(f"{PROG}: note: {note}", file=sys.stderr)
        output = args.output or default_output(
            args.csv[0], args.metric, args.xaxis, args.qps, args.conn, args.proxy, args.stat
        )
        if output.resolve() in {p.resolve() for p in args.csv}:
            raise MeshperfError(f"--output {output} would overwrite an input CSV")
        title = charts[0].title if args.metric != "all" else f"meshperf: {args.csv[0].name}"
        write_html(layout, output, title)
        print(output)
        if args.png:
            png = export_png(layout, output.with_suffix(".png"))
            print(png)
        if args.show and not webbrowser.open(output.resolve().as_uri()):
            print(f"{PROG}: note: no browser could be started; open {output} yourself",
                  file=sys.stderr)
    except MeshperfError as e:
        print_error(PROG, e)  # meshperf.cli: the one error line of every script
        return ExitCode.ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return ExitCode.OK


if __name__ == "__main__":
    exit_cli(main)
