"""Rows, columns, aggregation and CSV/JSON output, with golden values from sample results.

Expected values are computed here, from the sample files (tests/fortio_data.py) and fortio's
rules (docs/fortio-format.md: percentiles, units), never by calling the code under test.
test_conformance_collect.py runs the golden checks on real fortio files.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from meshperf import collect as col
from meshperf.errors import ConfigError, ResultsError
from meshperf.results import FortioResult, LoadReport, load_dir

FIXTURES = fortio_data.samples_dir()
ISTIO = FIXTURES / "http-istio-tools.json"
ERRORS = FIXTURES / "http-with-errors.json"

GOLDEN_COLUMNS = (
    "StartTime,ActualDuration,Labels,mode,NumThreads,conn,RequestedQPS,ActualQPS,size,"
    "errorPercent,min,p50,p75,p90,p99,p999,max,p95"
)


def us(seconds: float) -> str:
    return repr(round(seconds * 1e6, 3))


def quoted(text: str) -> str:
    return f'"{text}"' if "," in text or '"' in text else text


def expected_line(path: Path) -> tuple[str, str]:
    d = json.loads(path.read_text())
    h = d["DurationHistogram"]
    if "ErrorsDurationHistogram" in d:
        errors = d["ErrorsDurationHistogram"]["Count"]
    else:
        ok = {"200", "SERVING", "OK"} | ({"1"} if d["RunType"].startswith("GRPC") else set())
        errors = sum(n for code, n in d["RetCodes"].items() if code not in ok)
    label = d["Labels"]
    # Only the 2019 runner's label shape says what the test was (fixture 1.3.1).
    known = {"193ff770_qps_1000_c_1_1024_both": ("both", "1", "1024")}
    mode, conn, size = known.get(label, ("", "", ""))
    qps = d["RequestedQPS"]
    cells = [
        d["StartTime"],
        repr(d["ActualDuration"] / 1e9),
        quoted(label),
        mode,
        str(d["NumThreads"]),
        conn,
        "0" if qps == "max" else str(int(float(qps))),
        repr(d["ActualQPS"]),
        size,
        repr(100.0 * errors / h["Count"]),
        us(h["Min"]),
        *(us(fortio_data.spec_percentile(h, p)) for p in (50, 75, 90, 99, 99.9)),
        us(h["Max"]),
        us(fortio_data.spec_percentile(h, 95)),
    ]
    return d["StartTime"], ",".join(cells)


def fixture_rows(columns: list[str] | None = None) -> list[dict[str, Any]]:
    report = load_dir(FIXTURES)
    extra = col.extra_percentiles(columns or ())
    return col.collect(report, extra_percentiles=extra).rows


def test_golden_csv_from_fixtures() -> None:
    columns = col.parse_columns(GOLDEN_COLUMNS)
    rows = fixture_rows(columns)
    text = col.csv_text(rows, columns)
    # Rows are ordered by StartTime as an instant, so compare with the fixtures sorted by it.
    from meshperf.results import parse_start_time

    lines = sorted(
        (expected_line(p) for p in FIXTURES.glob("*.json")),
        key=lambda kv: parse_start_time(kv[0]),
    )
    expected = GOLDEN_COLUMNS + "\r\n" + "".join(line + "\r\n" for _, line in lines)
    assert text == expected


def test_percentiles_from_data_match_stored_ones() -> None:
    for row in fixture_rows():
        d = json.loads(Path(row["source"]).read_text())
        stored = {e["Percentile"]: e["Value"] for e in d["DurationHistogram"]["Percentiles"]}
        for column, p in (("p50", 50), ("p75", 75), ("p90", 90), ("p99", 99), ("p999", 99.9)):
            assert row[column] == round(stored[p] * 1e6, 3), (row["source"], column)


def test_old_files_without_percentiles_get_them(tmp_path: Path) -> None:
    d = json.loads(ISTIO.read_text())
    del d["DurationHistogram"]["Percentiles"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    row = col.collect(load_dir(tmp_path)).rows[0]
    # 50 calls at 1 ms, 40 at 2 ms, 10 at 9 ms: p50 is the first bucket's End (1 ms); p99.9
    # lies 99% of the way through the last bucket, from its Start 8 ms to Max 9 ms.
    assert row["p50"] == 1000.0
    assert row["p999"] == pytest.approx(8000 + 0.99 * 1000, abs=0.001)


def test_requested_qps_max_is_zero(tmp_path: Path) -> None:
    d = json.loads(ERRORS.read_text())
    d["RequestedQPS"] = "max"
    (tmp_path / "m.json").write_text(json.dumps(d))
    assert col.collect(load_dir(tmp_path)).rows[0]["RequestedQPS"] == 0


def local_result(**block: Any) -> dict[str, Any]:
    d = json.loads(ISTIO.read_text())
    base = {
        "format": 1, "run_id": "r1", "platform": "local", "mesh": "istio", "mode": "both",
        "conn": 16, "qps": 1000.0, "duration": 30.0, "size": 1024, "extra_labels": "",
        "repeat": 0, "arrival": "uniform",
    }  # fmt: skip
    d["meshperf"] = {**base, **block}
    return d


RESOURCES = {
    "fortioserver_deployment_proxy": {
        "cpu_mili": {"min": 180.0, "avg": 200.5, "max": 230.0},
        "mem_MB": {"min": 69.0, "avg": 70.0, "max": 71.25},
        "mem_uss_MB": {"min": 17.0, "avg": 18.0, "max": 18.5},
        "samples": [[1.0, 200.0, 70.0, 18.0]],
    },
    "fortio_deployment_proxy": {"cpu_mili": {"min": 150, "avg": 160, "max": 170}},
}


def test_local_resources_become_columns() -> None:
    r = FortioResult(local_result(resources=RESOURCES), "x.json")
    row = col.collect(LoadReport(results=[r])).rows[0]
    assert row["cpu_mili_avg_fortioserver_deployment_proxy"] == 200.5
    assert row["mem_MB_max_fortioserver_deployment_proxy"] == 71.25
    assert row["mem_uss_MB_min_fortioserver_deployment_proxy"] == 17.0
    assert row["cpu_mili_max_fortio_deployment_proxy"] == 170
    assert not any("samples" in k for k in row)
    assert (row["mode"], row["mesh"], row["platform"], row["conn"]) == (
        "both",
        "istio",
        "local",
        16,
    )
    assert (row["repeat"], row["arrival"], row["run_id"]) == (0, "uniform", "r1")
    cols = col.default_columns([row])
    assert cols[: len(col.DEFAULT_COLUMNS)] == list(col.DEFAULT_COLUMNS)
    assert cols[len(col.DEFAULT_COLUMNS) :] == [
        "cpu_mili_min_fortio_deployment_proxy",
        "cpu_mili_avg_fortio_deployment_proxy",
        "cpu_mili_max_fortio_deployment_proxy",
        *(
            f"{m}_{s}_fortioserver_deployment_proxy"
            for m in ("cpu_mili", "mem_MB", "mem_uss_MB")
            for s in ("min", "avg", "max")
        ),
    ]


def test_sendlag_p99() -> None:
    d = local_result()
    lag = json.loads(ERRORS.read_text())["DurationHistogram"]
    d["SendLagHistogram"] = lag
    row = col.collect(LoadReport(results=[FortioResult(d)])).rows[0]
    assert row["sendlag_p99"] == round(fortio_data.spec_percentile(lag, 99) * 1e6, 3)
    assert "sendlag_p99" in col.default_columns([row])


SEED_CSV = (
    "StartTime,ActualDuration,Labels,NumThreads,ActualQPS,p50,p90,p99,"
    "cpu_mili_avg_telemetry_mixer,cpu_mili_max_telemetry_mixer,mem_MB_max_telemetry_mixer,"
    "cpu_mili_avg_fortioserver_deployment_proxy,cpu_mili_max_fortioserver_deployment_proxy,"
    "mem_MB_max_fortioserver_deployment_proxy,cpu_mili_avg_ingressgateway_proxy,"
    "cpu_mili_max_ingressgateway_proxy,mem_MB_max_ingressgateway_proxy"
)


def test_2019_column_list_is_accepted_and_empty_columns_written_empty() -> None:
    columns = col.parse_columns(SEED_CSV)
    assert ",".join(columns) == SEED_CSV
    r = FortioResult(local_result(resources=RESOURCES))
    rows = col.collect(LoadReport(results=[r])).rows
    out = list(csv.DictReader(io.StringIO(col.csv_text(rows, columns))))
    assert out[0]["cpu_mili_avg_telemetry_mixer"] == ""
    assert out[0]["mem_MB_max_ingressgateway_proxy"] == ""
    assert out[0]["cpu_mili_avg_fortioserver_deployment_proxy"] == "200.5"
    full = json.loads(col.json_text(rows, columns))
    assert full[0]["cpu_mili_avg_telemetry_mixer"] is None
    assert full[0]["mem_uss_MB_avg_fortioserver_deployment_proxy"] == 18.0  # JSON is a superset


@pytest.mark.parametrize("bad", ["p50,latency", "StartTime,cpu_avg_x", "mem_MB_median_x", "p0"])
def test_unknown_column(bad: str) -> None:
    with pytest.raises(ConfigError, match="unknown column") as e:
        col.parse_columns(bad)
    assert "\n" not in str(e.value)
    assert "StartTime" in str(e.value) and "cpu_mili" in str(e.value)


def test_aggregate_columns_need_aggregate() -> None:
    with pytest.raises(ConfigError, match="--aggregate"):
        col.parse_columns("p50,p99_spread")
    assert col.parse_columns("p50,p99_spread,repeats", aggregated=True) == [
        "p50",
        "p99_spread",
        "repeats",
    ]


@pytest.mark.parametrize(
    ("name", "p"),
    [("p50", 50.0), ("p999", 99.9), ("p9999", 99.99), ("p95", 95.0), ("p100", 100.0), ("p5", 5.0)],
)
def test_percentile_columns(name: str, p: float) -> None:
    assert col.percentile_of_column(name) == p


def test_selector() -> None:
    report = load_dir(FIXTURES)
    by_label = col.collect(report, selector="with errors")
    assert [r["Labels"] for r in by_label.rows] == ["Sample with errors"]
    assert by_label.selected_out == 3
    by_time = col.collect(report, selector="^2019-07-10T17")
    assert [r["Labels"] for r in by_time.rows] == ["193ff770_qps_1000_c_1_1024_both"]
    assert col.collect(report, selector="^2019-07-11").rows == []


def test_failed_and_empty_results_are_skipped_with_reasons() -> None:
    bad = json.loads(ISTIO.read_text())
    bad["DurationHistogram"] = {"Count": 0, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0, "StdDev": 0}
    err = json.loads(ERRORS.read_text())
    err.update(error=True, message="warmup error", exception="connection refused")
    report = LoadReport(
        results=[FortioResult(bad, "zero.json"), FortioResult(err, "err.json")]
        + [FortioResult(json.loads(ISTIO.read_text()), "ok.json")]
    )
    got = col.collect(report)
    assert [r["source"] for r in got.rows] == ["ok.json"]
    reasons = {s.source: s.reason for s in got.skipped}
    assert reasons == {
        "zero.json": "no calls recorded (Count 0)",
        "err.json": "fortio run failed: warmup error: connection refused",
    }


def test_runs_cut_short_are_kept_and_reported() -> None:
    """A result fortio saved after a Ctrl-C (for instance from the pod's report UI) is kept,
    with one line saying it is not the full test."""
    full = {**json.loads(ISTIO.read_text()), "RequestedDuration": "4m0s",
            "ActualDuration": 240_001_144_195}  # fmt: skip
    short = {**full, "ActualDuration": 12_300_000_000, "Labels": "cut"}
    counted = {**full, "RequestedDuration": "exactly 1000 calls, interrupted after 12",
               "Labels": "counted"}  # fmt: skip
    no_duration = {**full, "RequestedDuration": "until stop", "ActualDuration": 1_000_000_000,
                   "Labels": "endless"}  # fmt: skip
    said: list[str] = []
    got = col.collect(
        LoadReport(results=[FortioResult(d, f"{d['Labels']}.json")
                            for d in (full, short, counted, no_duration)]),
        notify=said.append,
    )  # fmt: skip
    assert len(got.rows) == 4
    assert said == [
        "cut: ran 12.3 s of the requested 4m0s (stopped early?); kept",
        "counted: interrupted (exactly 1000 calls, interrupted after 12); kept",
    ]


def rows_for_aggregation() -> list[dict[str, Any]]:
    base = {k: "" for k in col.ROW_COLUMNS}
    rows = []
    for i, (p50, p99, qps) in enumerate([(100.0, 900.0, 990.0), (130.0, 1000.0, 1000.0),
                                         (110.0, 950.0, 995.0)]):  # fmt: skip
        rows.append({
            **base, "StartTime": f"2024-01-01T00:0{i}:00Z", "mode": "both", "mesh": "istio",
            "platform": "local", "conn": 16, "RequestedQPS": 1000, "size": 1024,
            "extra_labels": "", "repeat": i, "p50": p50, "p99": p99, "ActualQPS": qps,
            "Labels": f"r{i}", "cpu_mili_avg_x": 100.0 + i,
        })  # fmt: skip
    other = {**rows[0], "conn": 64, "p50": 300.0, "p99": 3000.0, "Labels": "other"}
    return [*rows, other]


def test_aggregate_repeats() -> None:
    out = col.aggregate(rows_for_aggregation())
    assert len(out) == 2
    a, b = out
    assert a["repeats"] == 3 and b["repeats"] == 1
    assert a["p50"] == 110.0 and a["p99"] == 950.0 and a["ActualQPS"] == 995.0
    assert (a["p50_min"], a["p50_max"]) == (100.0, 130.0)
    assert (a["p99_min"], a["p99_max"]) == (900.0, 1000.0)
    assert a["p50_spread"] == (130.0 - 100.0) / 110.0
    assert a["p99_spread"] == (1000.0 - 900.0) / 950.0
    assert a["cpu_mili_avg_x"] == statistics.median([100.0, 101.0, 102.0])
    assert a["StartTime"] == "2024-01-01T00:00:00Z" and a["Labels"] == "r0"  # the earliest
    assert a["repeat"] is None
    assert (b["conn"], b["p50"], b["p50_spread"]) == (64, 300.0, 0.0)


def test_aggregate_median_of_two_repeats_is_the_decimal() -> None:
    """Two repeats' median averages two decimals; the CSV must not show binary noise."""
    rows = rows_for_aggregation()[:2]
    rows[0].update(p90=180.645, mem_MB_min_x=27.244)
    rows[1].update(p90=180.651, mem_MB_min_x=27.248)
    (a,) = col.aggregate(rows)
    assert (180.645 + 180.651) / 2 != 180.648  # the noise this is about
    assert repr(a["p90"]) == "180.648" and repr(a["mem_MB_min_x"]) == "27.246"
    assert a["p50"] == 115.0 and a["conn"] == 16


def test_aggregate_keeps_unidentified_results_apart() -> None:
    rows = fixture_rows()
    out = col.aggregate(rows)
    # Three fixtures have no mode: only their Labels tell them apart; none may be merged.
    assert len(out) == len(rows) == 4
    assert all(r["repeats"] == 1 for r in out)


def test_write_outputs_refuses_overwrite(tmp_path: Path) -> None:
    rows = fixture_rows()
    prefix = tmp_path / "res"
    j, c = col.write_outputs(prefix, rows, ["Labels", "p50"])
    assert (j.name, c.name) == ("res.json", "res.csv")
    assert len(json.loads(j.read_text())) == 4
    assert c.read_text().splitlines()[0] == "Labels,p50"
    with pytest.raises(ConfigError, match="already exists"):
        col.check_outputs(prefix, overwrite=False)
    with pytest.raises(ResultsError, match="already exists"):
        col.write_outputs(prefix, rows, ["Labels"])
    assert c.read_text().splitlines()[0] == "Labels,p50"
    col.write_outputs(prefix, rows, ["Labels"], overwrite=True)
    assert c.read_text().splitlines()[0] == "Labels"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv", "res.json"]


def test_duplicates_count_once_but_other_repeats_do_not() -> None:
    raw = json.loads(ISTIO.read_text())
    again = json.loads(ISTIO.read_text())
    later = json.loads(ISTIO.read_text())
    later["StartTime"] = "2019-07-10T17:06:00Z"  # a repeat: same labels, another time
    report = LoadReport(
        results=[FortioResult(raw, "a.json"), FortioResult(again, "b.json"),
                 FortioResult(later, "c.json")]
    )  # fmt: skip
    got = col.collect(report)
    assert [r["source"] for r in got.rows] == ["a.json", "c.json"]
    assert [(d.source, d.reason) for d in got.duplicates] == [("b.json", "same test as a.json")]
    assert got.skipped == []
