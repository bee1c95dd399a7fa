"""graph.py and meshperf.graphing: what the charts hold, for every CSV shape, and bad input.

Expected values are read off the hand-written CSVs in tests/data/graph/ (latency columns in
microseconds, charts in milliseconds). Rows in those files are deliberately out of order and
not monotonic in x, so pairing points by position instead of by x would fail these tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bokeh.models import GlyphRenderer, HoverTool, Legend

import fortio_data
import graph
from meshperf.errors import ExitCode, ResultsError
from meshperf.graphing import (
    FORMAT_ISTIO2019,
    FORMAT_ISTIO_TOOLS,
    FORMAT_MESHPERF,
    Chart,
    build_chart,
    build_page,
    detect_format,
    load_csv,
    make_figure,
    overhead_chart,
)

DATA = Path(__file__).resolve().parent / "data" / "graph"
MESHPERF = DATA / "meshperf.csv"
MIXED = DATA / "meshperf_mixed_qps.csv"
LINKERD = DATA / "meshperf_linkerd.csv"
CSV2019 = DATA / "istio2019.csv"
ISTIO_TOOLS = DATA / "istio_tools.csv"


def points(chart: Chart) -> dict[str, list[tuple[float, float]]]:
    return {s.name: s.points() for s in chart.series}


def approx_points(expected: dict[str, list[tuple[float, float]]]) -> Any:
    return {k: [pytest.approx(p) for p in v] for k, v in expected.items()}


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = graph.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("path", "fmt"),
    [(MESHPERF, FORMAT_MESHPERF), (MIXED, FORMAT_MESHPERF), (LINKERD, FORMAT_MESHPERF),
     (CSV2019, FORMAT_ISTIO2019), (ISTIO_TOOLS, FORMAT_ISTIO_TOOLS)],
)
def test_format_is_detected(path: Path, fmt: str) -> None:
    assert load_csv(path).format == fmt


def test_detect_format_names_missing_columns() -> None:
    with pytest.raises(ResultsError, match="Labels, NumThreads"):
        detect_format(["StartTime", "p50"])
    with pytest.raises(ResultsError, match="conn"):
        detect_format(["mode", "p50"])


# ---------------------------------------------------------------- meshperf CSV


def test_meshperf_latency_pairs_points_by_x_in_ms() -> None:
    chart = build_chart([load_csv(MESHPERF)], "p99")
    assert [s.name for s in chart.series] == ["baseline", "serversidecar", "both"]
    assert points(chart) == approx_points({
        "baseline": [(1, 0.300), (4, 0.160), (16, 0.250)],
        "serversidecar": [(1, 0.580), (4, 0.590), (16, 0.670)],
        "both": [(1, 0.750), (4, 0.860), (16, 1.180)],
    })
    assert chart.y_label == "p99 latency (ms)"
    assert chart.x_label == "connections"
    assert "1000 qps" in chart.title and "istio" in chart.title
    assert "varies" not in chart.title


def test_row_order_does_not_change_the_chart(tmp_path: Path) -> None:
    lines = MESHPERF.read_text().splitlines()
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    assert points(build_chart([load_csv(shuffled)], "p90")) == points(
        build_chart([load_csv(MESHPERF)], "p90")
    )


def test_figure_holds_the_chart_data() -> None:
    chart = build_chart([load_csv(MESHPERF)], "p50")
    fig = make_figure(chart)
    assert fig.title.text == chart.title
    assert fig.yaxis[0].axis_label == "p50 latency (ms)"
    assert fig.xaxis[0].axis_label == "connections"
    lines = {r.name: r.data_source.data for r in fig.renderers
             if isinstance(r, GlyphRenderer) and type(r.glyph).__name__ == "Line"}
    assert set(lines) == {"baseline", "serversidecar", "both"}
    assert list(zip(lines["both"]["x"], lines["both"]["y"], strict=True)) == [
        pytest.approx((1, 0.478)), pytest.approx((4, 0.495)), pytest.approx((16, 0.530))]
    assert lines["serversidecar"]["actual_qps"] == pytest.approx([1000.0, 999.9, 999.7])
    legend = fig.select_one({"type": Legend})
    assert [item.label.value for item in legend.items] == ["baseline", "serversidecar", "both"]
    hover = fig.select_one({"type": HoverTool})
    assert ("p50 latency (ms)", "@y{0.000}") in hover.tooltips


def test_cpu_and_mem_default_to_the_server_sidecar_max() -> None:
    data = [load_csv(MESHPERF)]
    cpu = build_chart(data, "cpu")
    assert points(cpu) == approx_points({
        "baseline": [(1, 3), (4, 3), (16, 4)],
        "serversidecar": [(1, 225), (4, 240), (16, 260)],
        "both": [(1, 220), (4, 228), (16, 230)],
    })
    assert cpu.y_label == "max CPU (millicores)"
    assert "server sidecar" in cpu.title
    mem = build_chart(data, "mem", stat="avg")
    assert points(mem)["both"] == [pytest.approx(p) for p in [(1, 17.9), (4, 17.9), (16, 18.0)]]
    assert mem.y_label == "avg memory (MB)"


def test_client_proxy_skips_modes_without_it() -> None:
    chart = build_chart([load_csv(MESHPERF)], "cpu", proxy="client", stat="min")
    assert points(chart) == approx_points({"both": [(1, 150), (4, 155), (16, 160)]})
    assert any("6 rows without a cpu value skipped" in n for n in chart.notes)


def test_missing_proxy_column_is_named() -> None:
    with pytest.raises(ResultsError, match="cpu_mili_max_ingressgateway_proxy"):
        build_chart([load_csv(MESHPERF)], "cpu", proxy="ingress")


def test_overhead_is_mode_minus_baseline_at_same_x() -> None:
    over = overhead_chart(build_chart([load_csv(MESHPERF)], "p50"))
    assert over.metric == "overhead-p50"
    assert points(over) == approx_points({
        "serversidecar": [(1, 0.318 - 0.068), (4, 0.330 - 0.070), (16, 0.340 - 0.075)],
        "both": [(1, 0.478 - 0.068), (4, 0.495 - 0.070), (16, 0.530 - 0.075)],
    })
    assert {s.baseline for s in over.series} == {"baseline"}
    assert "ms" in over.y_label


# ---------------------------------------------------------------- filters and mixed values


def test_mixed_qps_become_series_per_value() -> None:
    chart = build_chart([load_csv(MIXED)], "p50")
    assert points(chart) == approx_points({
        "baseline @ 500 qps": [(4, 0.065), (16, 0.066)],
        "baseline @ 1000 qps": [(4, 0.070), (16, 0.075)],
        "both @ 500 qps": [(4, 0.450), (16, 0.470)],
        "both @ 1000 qps": [(4, 0.495), (16, 0.530)],
        # Two repeats at 4 connections: their mean.
        "nomixer_both @ 1000 qps": [(4, 0.415), (16, 0.430)],
    })
    assert "varies" in chart.title
    assert any("mix qps (500, 1000)" in n for n in chart.notes)
    assert chart.by_name()["nomixer_both @ 1000 qps"].runs == (2, 1)


def test_qps_filter_keeps_one_value() -> None:
    chart = build_chart([load_csv(MIXED)], "p50", qps=500)
    assert points(chart) == approx_points({
        "baseline": [(4, 0.065), (16, 0.066)],
        "both": [(4, 0.450), (16, 0.470)],
    })
    assert "at 500 qps" in chart.title
    assert not any("mix" in n for n in chart.notes)


def test_conn_filter_with_qps_axis() -> None:
    chart = build_chart([load_csv(MIXED)], "p99", "qps", conn=16)
    assert chart.x_label == "requested QPS"
    assert "at 16 connections" in chart.title
    assert points(chart) == approx_points({
        "baseline": [(500, 0.170), (1000, 0.250)],
        "both": [(500, 0.900), (1000, 1.180)],
        "nomixer_both": [(1000, 0.990)],
    })


def test_qps_axis_without_filter_splits_connections() -> None:
    chart = build_chart([load_csv(MIXED)], "p99", "qps")
    assert "baseline @ 4 conn" in chart.by_name()
    assert any("mix connections (4, 16)" in n for n in chart.notes)


def test_filter_without_rows_lists_what_exists() -> None:
    with pytest.raises(ResultsError, match=r"no p50 rows with qps 777; the CSV has 500, 1000"):
        build_chart([load_csv(MIXED)], "p50", qps=777)


# ---------------------------------------------------------------- 2019 scripts' CSV


def test_istio2019_modes_from_label_suffix_and_conn_from_numthreads() -> None:
    data = load_csv(CSV2019)
    assert data.format == FORMAT_ISTIO2019
    chart = build_chart([data], "p90")
    assert [s.name for s in chart.series] == [
        "baseline", "serversidecar", "both", "ingress", "nomixer_both"]
    assert points(chart) == approx_points({
        "baseline": [(1, 0.430), (4, 0.470), (16, 0.560)],
        "serversidecar": [(1, 0.950), (4, 1.210), (16, 1.700)],
        "both": [(1, 1.480), (4, 1.900), (16, 3.020)],
        "ingress": [(4, 2.300), (16, 3.600)],
        "nomixer_both": [(4, 1.620), (16, 2.500)],
    })
    assert "at 1000 qps" in chart.title


def test_istio2019_single_statistic_is_used_and_said() -> None:
    chart = build_chart([load_csv(CSV2019)], "mem", stat="avg")
    assert points(chart)["both"] == [(1.0, 52.0), (4.0, 54.0), (16.0, 58.0)]
    assert any("only the max of mem" in n for n in chart.notes)
    assert chart.y_label == "max memory (MB)"
    # cpu has avg and max: the asked one is used, no note.
    cpu = build_chart([load_csv(CSV2019)], "cpu", stat="avg")
    assert points(cpu)["ingress"] == [(4.0, 530.0), (16.0, 700.0)]
    assert not any("only" in n for n in cpu.notes)


def test_istio2019_ingress_gateway_dashes_are_missing_values() -> None:
    chart = build_chart([load_csv(CSV2019)], "cpu", proxy="ingress")
    assert points(chart) == {"ingress": [(4.0, 680.0), (16.0, 1010.0)]}


# ---------------------------------------------------------------- istio/tools CSV


def test_istio_tools_columns_and_variants() -> None:
    data = load_csv(ISTIO_TOOLS)
    assert data.mem_unit == "MiB"
    chart = build_chart([data], "p50", qps=1000)
    assert points(chart) == approx_points({
        "v2-sd-full-nullvm_baseline": [(2, 0.305), (16, 0.495), (32, 0.579)],
        "v2-sd-full-nullvm_serversidecar": [(2, 0.635), (16, 1.408)],
        "v2-sd-full-nullvm_both": [(2, 1.101), (16, 2.636), (32, 5.202)],
    })
    mem = build_chart([data], "mem", qps=1000)
    assert mem.y_label == "avg memory (MiB)"
    assert points(mem)["v2-sd-full-nullvm_both"] == [(2.0, 44.0), (16.0, 47.0), (32.0, 49.0)]
    assert any("only the avg of mem" in n for n in mem.notes)
    client = build_chart([data], "cpu", qps=1000, proxy="client", stat="avg")
    assert points(client)["v2-sd-full-nullvm_both"] == [(2.0, 1210.0), (16.0, 1400.0),
                                                        (32.0, 1640.0)]


def test_istio_tools_qps_axis_at_16_connections() -> None:
    chart = build_chart([load_csv(ISTIO_TOOLS)], "p99", "qps", conn=16)
    assert points(chart) == approx_points({
        "v2-sd-full-nullvm_baseline": [(100, 1.142), (1000, 0.996)],
        "v2-sd-full-nullvm_serversidecar": [(1000, 2.218)],
        "v2-sd-full-nullvm_both": [(100, 4.854), (1000, 3.476)],
    })


# ---------------------------------------------------------------- several CSVs


def test_several_csvs_name_series_by_mesh_and_mode() -> None:
    chart = build_chart([load_csv(MESHPERF), load_csv(LINKERD)], "p50")
    assert [s.name for s in chart.series] == [
        "istio baseline", "istio serversidecar", "istio both", "linkerd baseline", "linkerd both"]
    assert points(chart)["linkerd both"] == [pytest.approx((1, 0.380)),
                                             pytest.approx((16, 0.410))]
    over = overhead_chart(chart)
    assert points(over) == approx_points({
        "istio serversidecar": [(1, 0.250), (4, 0.260), (16, 0.265)],
        "istio both": [(1, 0.410), (4, 0.425), (16, 0.455)],
        # Linkerd's own baseline, not Istio's.
        "linkerd both": [(1, 0.380 - 0.090), (16, 0.410 - 0.095)],
    })


def test_mesh_option_names_csvs_without_mesh_column() -> None:
    chart = build_chart([load_csv(CSV2019, mesh="linkerd"), load_csv(MESHPERF)], "p50")
    names = [s.name for s in chart.series]
    assert "linkerd nomixer_both" in names and "istio both" in names
    assert points(chart)["linkerd both"][0] == pytest.approx((1, 1.120))


def test_same_mesh_in_two_csvs_keeps_series_apart() -> None:
    chart = build_chart([load_csv(MESHPERF), load_csv(MIXED)], "p50", qps=1000)
    names = {s.name for s in chart.series}
    assert {"istio both (meshperf.csv)", "istio both (meshperf_mixed_qps.csv)"} <= names


# ---------------------------------------------------------------- the "all" page


def test_all_page_has_every_metric_and_overheads() -> None:
    _, charts, notes = build_page([load_csv(CSV2019)], "all")
    assert [c.metric for c in charts] == [
        "p50", "p90", "p99", "cpu", "mem", "overhead-p50", "overhead-p90", "overhead-p99"]
    assert any("p999: not drawn" in n and "p999" in n for n in notes)
    over = {c.metric: c for c in charts}["overhead-p99"]
    assert points(over)["ingress"] == [pytest.approx((4, 3.900 - 0.980)),
                                       pytest.approx((16, 5.200 - 1.200))]


# ---------------------------------------------------------------- the CLI


@pytest.fixture
def csv_copy(tmp_path: Path) -> Path:
    return Path(shutil.copy(MESHPERF, tmp_path / "results.csv"))


def test_main_writes_offline_html_beside_the_csv(csv_copy: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run_main([str(csv_copy), "p99"], capsys)
    assert rc == ExitCode.OK
    html_path = csv_copy.with_name("results_p99_connections.html")
    assert out.strip() == str(html_path)
    assert "format meshperf" in err
    text = html_path.read_text()
    # INLINE resources: BokehJS is in the file, nothing is fetched, so it opens offline.
    assert "cdn.bokeh.org" not in text
    assert re.findall(r"<script[^>]*\bsrc=", text) == []
    assert "Bokeh" in text and "serversidecar" in text
    assert not list(csv_copy.parent.glob("*.png"))


def test_main_output_option_and_mixed_note(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "sub.html"
    rc, out, err = run_main([str(MIXED), str(LINKERD), "all", "--output", str(out_file)], capsys)
    assert rc == ExitCode.OK
    assert out.strip() == str(out_file) and out_file.stat().st_size > 100_000
    assert "mix qps (500, 1000): plotting one series per value; pick one with --qps" in err


def test_main_reports_2019_format_and_single_stat(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run_main([str(CSV2019), "mem", "--stat", "min", "-o", str(tmp_path / "m.html")],
                          capsys)
    assert rc == ExitCode.OK
    assert "format 2019" in err
    assert "only the max of mem" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}", "p99"], "no such file"),
        (["{nocols}", "p99"], "missing column(s) Labels, NumThreads"),
        (["{csv}", "p95"], "unknown metric 'p95'"),
        (["{csv}", "p50", "--qps", "777"], "no p50 rows with qps 777"),
        (["{empty}", "p50"], "empty file"),
        # a file that exists but cannot be read (root reads past mode bits; this fails for all)
        (["{unreadable}", "p50"], "cannot read: Input/output error"),
        (["{header}", "p50"], "no data rows"),
        (["{csv2019}", "p999"], "no p999 column"),
        (["{csv}", "cpu", "--proxy", "ingress"], "cpu_mili_max_ingressgateway_proxy"),
        (["{csv}", "p50", "--output", "{csv}"], "would overwrite an input CSV"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    argv: list[str], message: str, tmp_path: Path, csv_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "nocols.csv").write_text("StartTime,p50\n2020-01-01T00:00:00Z,100\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text(MESHPERF.read_text().splitlines()[0] + "\n")
    paths = {"missing": tmp_path / "nope.csv", "nocols": tmp_path / "nocols.csv",
             "csv": csv_copy, "empty": tmp_path / "empty.csv",
             "header": tmp_path / "header.csv", "csv2019": CSV2019, "unreadable": "/proc/self/mem"}
    rc, out, err = run_main([a.format(**paths) for a in argv], capsys)
    assert rc == ExitCode.ERROR
    assert out == ""
    error_lines = [ln for ln in err.splitlines() if ln.startswith("graph.py: error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.html"))


def test_axis_filter_mismatch_is_a_usage_error(csv_copy: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        graph.main([str(csv_copy), "p50", "--xaxis", "qps", "--qps", "1000"])
    assert e.value.code == ExitCode.USAGE
    assert "with --xaxis qps use --conn" in capsys.readouterr().err


# ---------------------------------------------------------------- with runner/fortio.py


def test_csv_written_by_fortio_py_from_fortio_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fortio  # runner/fortio.py

    fixtures = fortio_data.samples_dir()
    assert fortio.main([str(fixtures), "--output", str(tmp_path / "summary")]) == ExitCode.OK
    capsys.readouterr()
    data = load_csv(tmp_path / "summary.csv")
    assert data.format == FORMAT_MESHPERF
    # Only the 2019 runner's result has a mode (from its label ..._both); the others are plain
    # fortio runs, drawn as one series per Labels value rather than guessed (issue 12 item 2).
    assert any("3 of 4 rows have no mode" in n for n in data.notes)
    chart = build_chart([data], "p50", qps=1000)
    # The sample's p50: 50 of its 100 calls at 1 ms, the first bucket's End.
    assert points(chart) == {"both": [(1.0, pytest.approx(1.0, abs=1e-9))],
                             "Sample with errors": [(8.0, pytest.approx(0.3, abs=1e-9))]}
    assert "at 1000 qps" in chart.title


def test_mesh_names_one_per_csv_and_options_between_csvs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy2019 = Path(shutil.copy(CSV2019, tmp_path / "linkerd-2019.csv"))
    out = tmp_path / "two.html"
    rc, _, err = run_main([str(CSV2019), "--mesh", "istio,linkerd", str(copy2019), "p50",
                           "-o", str(out)], capsys)
    assert rc == ExitCode.OK, err
    text = out.read_text()
    assert "istio nomixer_both" in text and "linkerd nomixer_both" in text
    with pytest.raises(SystemExit):
        graph.main([str(CSV2019), str(copy2019), "p50", "--mesh", "istio,linkerd,kuma"])
    assert "3 names for 2 CSVs" in capsys.readouterr().err


def test_interpreter_without_pandas_is_one_line(tmp_path: Path) -> None:
    """``python runner/graph.py`` with a Python that lacks the project's packages (``-S``
    leaves site-packages out, as a system python without them would)."""
    csv = next(DATA.glob("*.csv"))
    proc = subprocess.run(
        [sys.executable, "-S", graph.__file__, str(csv), "p50", "-o", str(tmp_path / "x.html")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.startswith("graph.py: error: Python package ")
    assert proc.stderr.count("\n") == 1 and "make bootstrap" in proc.stderr, proc.stderr


def test_default_output_names_keep_proxies_apart(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    csv = Path(shutil.copy(MESHPERF, tmp_path / "r.csv"))
    written = []
    client, avg = ["--proxy", "client"], ["--stat", "avg"]
    for extra in ([], client, avg, client + avg):
        rc, out, err = run_main([str(csv), "cpu", *extra], capsys)
        assert rc == ExitCode.OK, err
        written.append(Path(out.strip()).name)
    assert written == [
        "r_cpu_connections.html",
        "r_cpu_client_connections.html",
        "r_cpu_avg_connections.html",
        "r_cpu_client_avg_connections.html",
    ]
