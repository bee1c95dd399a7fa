"""What makes a series: rows are repeats only when everything that identifies a test is equal.

Issue 12 items 1-4 and 6 on the chart side, and the spread of repeats. Every CSV is written
here by hand (latency columns in microseconds, charts in milliseconds), so each expected
value is read off the rows above it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bokeh.models import GlyphRenderer

import graph
from meshperf.errors import ConfigError, ExitCode, ResultsError
from meshperf.graphing import build_chart, build_page, load_csv, make_figure, overhead_chart


def write(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def points(chart: object) -> dict[str, list[tuple[float, float]]]:
    return {s.name: [pytest.approx(p) for p in s.points()] for s in chart.series}  # type: ignore[attr-defined]


# fortio.py's default columns: no extra_labels column, as in issue 12 item 1.
DEFAULT = "StartTime,Labels,mode,mesh,platform,NumThreads,conn,RequestedQPS,ActualQPS,size,p50,p99"


# ---------------------------------------------------------------- item 1: identity


def test_extra_label_variant_is_its_own_series_without_an_extra_labels_column(
    tmp_path: Path,
) -> None:
    csv = write(tmp_path / "r.csv", DEFAULT, [
        "2019-07-10T17:00:00Z,a1_qps_1000_c_1_1024_both,both,istio,,1,1,1000,1000,1024,900,9002.6",
        "2019-07-10T17:10:00Z,b2_qps_1000_c_1_1024_nomixer_both,both,istio,,1,1,1000,1000,1024,"
        "700,1315.9",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv)], "p99")
    # Not their mean (5159.25 us): two lines.
    assert points(chart) == {"both": [(1, 9.0026)], "nomixer_both": [(1, 1.3159)]}
    assert not any("mean" in n for n in chart.notes)


def test_platform_and_protocol_split_series_and_name_them(tmp_path: Path) -> None:
    header = "Labels,mode,mesh,platform,protocol,conn,RequestedQPS,ActualQPS,size,p50"
    csv = write(tmp_path / "r.csv", header, [
        "x,both,istio,local,http,4,1000,1000,1024,400",
        "x,both,istio,kubernetes,http,4,1000,1000,1024,900",
        "x,both,istio,kubernetes,grpc,4,1000,1000,1024,1100",
        "x,baseline,istio,local,http,4,1000,1000,1024,70",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv)], "p50")
    # Named by what differs: the platform and protocol (the mesh is the same everywhere).
    assert points(chart) == {
        "kubernetes grpc both": [(4, 1.1)],
        "kubernetes http both": [(4, 0.9)],
        "local http baseline": [(4, 0.07)],
        "local http both": [(4, 0.4)],
    }
    assert chart.title.startswith("istio on kubernetes, local: p50 latency")


def test_true_repeats_are_averaged_and_their_spread_kept(tmp_path: Path) -> None:
    csv = write(tmp_path / "r.csv", DEFAULT, [
        "2026-11-20T10:00:00Z,r1_qps_1000_c_4_1024_both,both,envoy,local,4,4,1000,1000,1024,400,800",
        "2026-11-20T11:00:00Z,r2_qps_1000_c_4_1024_both,both,envoy,local,4,4,1000,1000,1024,460,1000",
        "2026-11-20T12:00:00Z,r3_qps_1000_c_4_1024_both,both,envoy,local,4,4,1000,1000,1024,430,1200",
        "2026-11-20T10:05:00Z,r1_qps_1000_c_16_1024_both,both,envoy,local,16,16,1000,1000,1024,500,1500",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv)], "p99")
    both = chart.by_name()["both"]
    assert both.points() == [pytest.approx((4, 1.0)), pytest.approx((16, 1.5))]
    assert both.runs == (3, 1)
    assert both.spread() == [pytest.approx((4, 0.8, 1.2)), pytest.approx((16, 1.5, 1.5))]
    assert any("repeats" in n and "mean" in n for n in chart.notes)
    # Item 8: the title says what the results recorded, not a fixed "istio".
    assert chart.title == "envoy on local: p99 latency vs connections at 1000 qps"


def test_the_figure_draws_the_spread_of_repeats(tmp_path: Path) -> None:
    csv = write(tmp_path / "r.csv", DEFAULT, [
        "t,r1_qps_1000_c_4_1024_both,both,istio,local,4,4,1000,1000,1024,400,800",
        "t,r2_qps_1000_c_4_1024_both,both,istio,local,4,4,1000,1000,1024,460,1200",
        "t,r1_qps_1000_c_16_1024_both,both,istio,local,16,16,1000,1000,1024,500,1500",
    ])  # fmt: skip
    fig = make_figure(build_chart([load_csv(csv)], "p99"))
    bars = [r for r in fig.renderers
            if isinstance(r, GlyphRenderer) and type(r.glyph).__name__ == "Segment"]
    assert len(bars) == 1
    data = bars[0].data_source.data
    # Only the point with two runs has a bar: from its min to its max.
    assert (list(data["x"]), list(data["lo"]), list(data["hi"])) == ([4.0], [0.8], [1.2])
    line = next(r for r in fig.renderers if type(r.glyph).__name__ == "Line")
    assert list(line.data_source.data["y_min"]) == pytest.approx([0.8, 1.5])


# ---------------------------------------------------------------- item 2: no mode


PLAIN = (
    "StartTime,ActualDuration,Labels,mode,mesh,platform,NumThreads,conn,RequestedQPS,"
    "ActualQPS,size,p50,p99"
)


def plain_rows() -> list[str]:
    rows = []
    for setup, base in (("direct", 500), ("envoy", 800), ("haproxy", 650)):
        for conn, extra in ((1, 0), (8, 100)):
            rows.append(f"2020-05-23T08:50:11Z,300,{setup},,,,{conn},,1000,1000,,"
                        f"{base + extra},{2 * (base + extra)}")
    return rows


def test_plain_fortio_rows_are_a_series_per_labels_value(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path / "plain.csv", PLAIN, plain_rows()))
    assert any(
        "6 of 6 rows have no mode" in n and "one series per Labels value" in n
        and "_no_istio" in n and "_clientonly" in n and "_waypoint" in n
        for n in data.notes
    ), data.notes
    chart = build_chart([data], "p50")
    assert points(chart) == {
        "direct": [(1, 0.5), (8, 0.6)],
        "envoy": [(1, 0.8), (8, 0.9)],
        "haproxy": [(1, 0.65), (8, 0.75)],
    }
    # No mesh or platform recorded: the title claims none.
    assert chart.title == "p50 latency vs connections at 1000 qps"


def test_series_option_names_series_by_a_column(tmp_path: Path) -> None:
    header = "Labels,Version,mode,conn,RequestedQPS,p50"
    csv = write(tmp_path / "v.csv", header, [
        "run,1.3.1,,1,1000,500", "run,1.75.2,,1,1000,450", "run,1.75.2,,4,1000,470",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv, series="Version")], "p50")
    assert points(chart) == {"1.3.1": [(1, 0.5)], "1.75.2": [(1, 0.45), (4, 0.47)]}
    with pytest.raises(ConfigError, match=r"--series Nope: no such column; the CSV has Labels, "):
        load_csv(csv, series="Nope")


def test_no_usable_rows_names_every_cause(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    csv = write(tmp_path / "bad.csv", "Labels,mode,conn,RequestedQPS,p50", [
        "direct,,,1000,500", "envoy,,,1000,800",
    ])  # fmt: skip
    rc = graph.main([str(csv), "p50", "-o", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert rc == ExitCode.ERROR
    last = err.splitlines()[-1]
    assert last.startswith(f"graph.py: error: {csv}: no usable rows (2 of 2 rows have no mode")
    assert last.endswith("; 2 rows without a connection count skipped)")


# ---------------------------------------------------------------- item 3: istio/tools labels


TOOLS = (
    "StartTime,ActualDuration,Labels,NumThreads,ActualQPS,p50,p90,p99,p999,"
    "cpu_mili_avg_istio_proxy_fortioserver"
)


def test_istio_tools_modes_no_istio_clientonly_and_linkerd(tmp_path: Path) -> None:
    csv = write(tmp_path / "t.csv", TOOLS, [
        "t,240,a1_qps_1000_c_16_1024_none_mtls_no_istio,16,1000,100,150,200,300,0",
        "t,240,a1_qps_1000_c_16_1024_none_mtls_serveronly,16,1000,300,350,400,500,200",
        "t,240,a1_qps_1000_c_16_1024_none_mtls_clientonly,16,1000,350,400,450,550,0",
        "t,240,a1_qps_1000_c_16_1024_none_mtls_both,16,1000,500,550,600,700,210",
        "t,240,b2_qps_1000_c_16_1024_linkerd_both,16,1000,450,500,550,650,150",
        "t,240,b2_qps_1000_c_16_1024_linkerd_no_istio,16,1000,110,160,210,310,0",
    ])  # fmt: skip
    data = load_csv(csv)
    assert data.format == "istio-tools"
    chart = build_chart([data], "p50")
    assert [s.name for s in chart.series] == [
        "istio none_mtls_baseline", "istio none_mtls_serversidecar", "istio none_mtls_clientonly",
        "istio none_mtls_both", "linkerd baseline", "linkerd both"]
    assert points(chart) == {
        "istio none_mtls_baseline": [(16, 0.1)],
        "istio none_mtls_serversidecar": [(16, 0.3)],
        "istio none_mtls_clientonly": [(16, 0.35)],
        "istio none_mtls_both": [(16, 0.5)],
        "linkerd baseline": [(16, 0.11)],
        "linkerd both": [(16, 0.45)],
    }
    over = overhead_chart(chart)
    # Each mesh's own baseline, not the other's.
    assert points(over) == {
        "istio none_mtls_serversidecar": [(16, 0.2)],
        "istio none_mtls_clientonly": [(16, 0.25)],
        "istio none_mtls_both": [(16, 0.4)],
        "linkerd both": [(16, 0.34)],
    }


def test_our_mode_column_spellings_are_read(tmp_path: Path) -> None:
    csv = write(tmp_path / "m.csv", "Labels,mode,mesh,conn,RequestedQPS,p50", [
        "x,clientsidecar,istio,2,100,300", "x,baseline,istio,2,100,100",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv)], "p50")
    assert [s.name for s in chart.series] == ["baseline", "clientonly"]


# ---------------------------------------------------------------- item 6: the overhead page


def tools_runs() -> list[str]:
    """Four istio/tools runs: two ran a baseline (none_mtls, istio_with_stats), two did not."""
    rows = []
    runs = {
        "a1": ("none_mtls", {"no_istio": 100, "both": 400}),
        "b2": ("v2-sd-full-nullvm", {"both": 600, "serveronly": 450}),
        "c3": ("v2-stats-nullvm", {"both": 550}),
        "d4": ("istio_with_stats", {"no_istio": 120, "both": 500}),
    }
    for run, (telemetry, modes) in runs.items():
        for mode, p50 in modes.items():
            for conn, extra in ((2, 0), (16, 50)):
                v = p50 + extra
                rows.append(f"t,240,{run}_qps_1000_c_{conn}_1024_{telemetry}_{mode},{conn},1000,"
                            f"{v},{v + 50},{v + 100},{v + 200},10")
    return rows


def test_istio_tools_all_page_draws_the_overhead_with_few_notes(tmp_path: Path) -> None:
    csv = write(tmp_path / "tools.csv", TOOLS, tools_runs())
    _, charts, notes = build_page([load_csv(csv)], "all")
    over = {c.metric: c for c in charts if c.metric.startswith("overhead-")}
    assert list(over) == ["overhead-p50", "overhead-p90", "overhead-p99", "overhead-p999"]
    # The runs with a baseline are drawn against their own.
    assert points(over["overhead-p50"]) == {
        "none_mtls_both": [(2, 0.3), (16, 0.3)],
        "istio_with_stats_both": [(2, 0.38), (16, 0.38)],
    }
    overhead_notes = [n for n in notes if n.startswith("overhead")]
    # The three series without a baseline of their own: one line for all four percentiles.
    assert overhead_notes == [
        "overhead p50, p90, p99, p999: 3 series not drawn: several baselines could apply; "
        "name one with --baseline-series; e.g. 'v2-sd-full-nullvm_serversidecar' "
        "(candidates: istio_with_stats_baseline, none_mtls_baseline)"
    ]
    assert len(notes) <= 4, notes


def test_baseline_series_option_picks_the_baseline(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    csv = write(tmp_path / "tools.csv", TOOLS, tools_runs())
    _, charts, notes = build_page([load_csv(csv)], "all", baseline_series="none_mtls_baseline")
    p50 = {c.metric: c for c in charts}["overhead-p50"]
    assert points(p50) == {
        "none_mtls_both": [(2, 0.3), (16, 0.3)],
        "v2-sd-full-nullvm_serversidecar": [(2, 0.35), (16, 0.35)],
        "v2-sd-full-nullvm_both": [(2, 0.5), (16, 0.5)],
        "v2-stats-nullvm_both": [(2, 0.45), (16, 0.45)],
        "istio_with_stats_both": [(2, 0.4), (16, 0.4)],
    }
    assert {s.baseline for s in p50.series} == {"none_mtls_baseline"}
    assert not [n for n in notes if n.startswith("overhead")]
    # Through the CLI, and a name that is not a series.
    out = tmp_path / "o.html"
    assert graph.main([str(csv), "all", "--baseline-series", "none_mtls_baseline",
                       "-o", str(out)]) == ExitCode.OK
    assert graph.main([str(csv), "all", "--baseline-series", "direct",
                       "-o", str(out)]) == ExitCode.ERROR
    err = capsys.readouterr().err
    assert "graph.py: error: --baseline-series 'direct': no such series in the p50 chart; " \
           "the series are: istio_with_stats_baseline, istio_with_stats_both, " \
           "none_mtls_baseline, none_mtls_both, v2-sd-full-nullvm_serversidecar, " \
           "v2-sd-full-nullvm_both, v2-stats-nullvm_both\n" in err
    with pytest.raises(SystemExit):
        graph.main([str(csv), "p50", "--baseline-series", "none_mtls_baseline"])
    assert "use it with METRIC all" in capsys.readouterr().err


def test_same_run_baseline_when_the_variant_has_none(tmp_path: Path) -> None:
    # Two runs, each with a baseline whose labels differ from its other tests' labels.
    csv = write(tmp_path / "runs.csv", DEFAULT, [
        "t,r1_qps_1000_c_4_1024_mtls_base,baseline,istio,,4,4,1000,1000,1024,100,200",
        "t,r1_qps_1000_c_4_1024_mtls_tuned_both,both,istio,,4,4,1000,1000,1024,400,800",
        "t,r2_qps_1000_c_4_1024_plain_base,baseline,istio,,4,4,1000,1000,1024,150,300",
        "t,r2_qps_1000_c_4_1024_plain_tuned_both,both,istio,,4,4,1000,1000,1024,350,700",
    ])  # fmt: skip
    over = overhead_chart(build_chart([load_csv(csv)], "p50"))
    assert points(over) == {"mtls_tuned_both": [(4, 0.3)], "plain_tuned_both": [(4, 0.2)]}
    assert {s.name: s.baseline for s in over.series} == {
        "mtls_tuned_both": "mtls_baseline", "plain_tuned_both": "plain_baseline"}  # fmt: skip


def test_plain_results_overhead_against_a_named_setup(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path / "plain.csv", PLAIN, plain_rows()))
    over = overhead_chart(build_chart([data], "p50"), baseline_series="direct")
    assert points(over) == {"envoy": [(1, 0.3), (8, 0.3)], "haproxy": [(1, 0.15), (8, 0.15)]}
    # Without it: no baseline, said once for all percentiles, with the way out.
    _, _, notes = build_page([data], "all")
    assert "p50, p99: no baseline rows, so no overhead view; name a series to subtract with " \
           "--baseline-series" in notes


def test_unknown_baseline_series_in_the_library(tmp_path: Path) -> None:
    data = load_csv(write(tmp_path / "plain.csv", PLAIN, plain_rows()))
    with pytest.raises(ConfigError, match="the series are: direct, envoy, haproxy"):
        overhead_chart(build_chart([data], "p50"), baseline_series="mesh")
    with pytest.raises(ResultsError, match="no such file"):
        load_csv(tmp_path / "missing.csv")


def test_plain_runs_in_the_2019_shape_claim_no_mesh(tmp_path: Path) -> None:
    # The 2019 scripts' fortio.py --csv output of runs that were not theirs: no mode, no mesh.
    header = "StartTime,ActualDuration,Labels,NumThreads,ActualQPS,p50,p90,p99"
    csv = write(tmp_path / "s.csv", header, [
        "t,300,direct,1,1000,500,800,990", "t,300,envoy,1,1000,800,1100,1500",
    ])  # fmt: skip
    data = load_csv(csv)
    assert data.format == "istio2019"
    assert not any("mesh taken as" in n for n in data.notes)
    chart = build_chart([data], "p99")
    assert points(chart) == {"direct": [(1, 0.99)], "envoy": [(1, 1.5)]}
    # Requested QPS taken from ActualQPS (the CSV has no other), and said.
    assert chart.title == "p99 latency vs connections at 1000 qps"
    assert any("taken as the achieved ActualQPS" in n for n in data.notes)


def test_series_without_a_baseline_at_its_rate_is_one_note(tmp_path: Path) -> None:
    # The baseline ran at 1000 qps only; both ran at 500 and 1000.
    csv = write(tmp_path / "q.csv", DEFAULT, [
        "t,r_qps_1000_c_4_1024_base,baseline,istio,,4,4,1000,1000,1024,100,200",
        "t,r_qps_1000_c_4_1024_both,both,istio,,4,4,1000,1000,1024,400,800",
        "t,r_qps_500_c_4_1024_both,both,istio,,4,4,500,500,1024,380,700",
        "t,r_qps_500_c_4_1024_serveronly,serversidecar,istio,,4,4,500,500,1024,300,600",
    ])  # fmt: skip
    _, charts, notes = build_page([load_csv(csv)], "all")
    p50 = {c.metric: c for c in charts}["overhead-p50"]
    assert points(p50) == {"both @ 1000 qps": [(4, 0.3)]}
    assert [n for n in notes if n.startswith("overhead")] == [
        "overhead p50, p99: 2 series not drawn: no baseline at the same qps; "
        "e.g. 'serversidecar @ 500 qps'"
    ]


def test_protocol_token_of_our_labels_splits_series_beside_extra_labels(tmp_path: Path) -> None:
    # The runner puts the protocol (grpc, tcp, h2) first in the label's extra part; the
    # extra_labels column holds only --labels. HTTP and gRPC runs must not be averaged.
    header = "Labels,mode,mesh,platform,conn,RequestedQPS,size,extra_labels,p50"
    csv = write(tmp_path / "p.csv", header, [
        "r1_qps_1000_c_4_1024_nomixer_both,both,envoy,local,4,1000,1024,nomixer,400",
        "r1_qps_1000_c_4_1024_grpc_nomixer_both,both,envoy,local,4,1000,1024,nomixer,650",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv)], "p50")
    assert points(chart) == {"nomixer_both": [(4, 0.4)], "grpc_nomixer_both": [(4, 0.65)]}


def test_the_chart_model_needs_no_bokeh(tmp_path: Path) -> None:
    """csvread and model are pure: the all page's charts are built with Bokeh unimportable."""
    import subprocess
    import sys

    csv = write(tmp_path / "tools.csv", TOOLS, tools_runs())
    code = (
        "import sys; sys.modules['bokeh'] = None\n"
        "from meshperf.graphing.csvread import load_csv\n"
        "from meshperf.graphing.model import build_all\n"
        f"charts, over, notes = build_all([load_csv({str(csv)!r})])\n"
        "print([c.metric for c in charts + over])\n"
        "print(len([n for n in notes if n.startswith('overhead')]))\n"
        "print('bokeh' in sys.modules and sys.modules['bokeh'] is not None)\n"
    )
    runner_dir = Path(graph.__file__).resolve().parent
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, cwd=runner_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "['p50', 'p90', 'p99', 'p999', 'cpu', 'overhead-p50', 'overhead-p90', "
        "'overhead-p99', 'overhead-p999']",
        "1",
        "False",
    ]


def test_aggregated_rows_bring_their_repeats_spread(tmp_path: Path) -> None:
    # fortio.py --aggregate: one row per test, the median of its repeats, their min and max.
    header = "Labels,mode,mesh,platform,conn,RequestedQPS,size,p50,p99,repeats,p99_min,p99_max"
    csv = write(tmp_path / "agg.csv", header, [
        "r_qps_1000_c_4_1024_both,both,envoy,local,4,1000,1024,450,1000,3,800,1500",
        "r_qps_1000_c_16_1024_both,both,envoy,local,16,1000,1024,500,1200,1,1200,1200",
    ])  # fmt: skip
    chart = build_chart([load_csv(csv)], "p99")
    both = chart.by_name()["both"]
    assert both.points() == [pytest.approx((4, 1.0)), pytest.approx((16, 1.2))]
    assert both.spread() == [pytest.approx((4, 0.8, 1.5)), pytest.approx((16, 1.2, 1.2))]
    assert both.runs == (3, 1)
    # One row per point: nothing was averaged here.
    assert not any("mean" in n for n in chart.notes)
    bars = [r.data_source.data for r in make_figure(chart).renderers
            if type(r.glyph).__name__ == "Segment"]  # fmt: skip
    assert [(list(b["lo"]), list(b["hi"])) for b in bars] == [([0.8], [1.5])]
    # p50 has no min/max columns: no spread.
    assert build_chart([load_csv(csv)], "p50").by_name()["both"].spread() == [
        pytest.approx((4, 0.45, 0.45)), pytest.approx((16, 0.5, 0.5))]  # fmt: skip
