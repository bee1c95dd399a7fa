"""The fortio result model and loaders, checked against real fortio files and their variants.

The fixture checks re-derive fortio's stored numbers (percentiles, Avg, StdDev, cumulative
Percent, Data edges) by fortio's rules (docs/fortio-format.md); the real fortio files are
checked in test_conformance_results.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from meshperf import fortiojson
from meshperf.errors import ResultsError
from meshperf.histogram import Histogram
from meshperf.results import (
    FortioResult,
    LabelShape,
    load_dir,
    load_file,
    parse_html_listing,
    parse_index_tsv,
    parse_start_time,
    write_result,
)

ISTIO_TEXT = fortiojson.dumps(fortio_data.istio_tools())


def load_raw(make: Any) -> dict[str, Any]:
    return make()  # type: ignore[no-any-return]


ISTIO = fortio_data.istio_tools
ERRORS = fortio_data.with_errors
GRPC = fortio_data.grpc_ping
DEFAULTS = fortio_data.http_defaults


def test_histogram_export_skips_empty_buckets() -> None:
    h = Histogram(divider=0.001)
    for v in (0.0005, 0.0007, 0.0105, 0.0106, 2.5):
        h.record(v)
    data = h.data()
    assert [b["Count"] for b in data] == [2, 2, 1]
    assert data[0]["Start"] == 0.0005 and data[-1]["End"] == 2.5
    assert data[1]["Start"] == 0.01  # the skipped buckets' edges carried over
    assert data[1]["End"] == 0.011


# -- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(fortio_data.SAMPLES))
def test_every_sample_loads(name: str, tmp_path: Path) -> None:
    path = fortio_data.write(tmp_path, fortio_data.SAMPLES[name](), name)
    r = load_file(path)
    raw = json.loads(path.read_text())
    assert r.raw == raw
    assert r.start_time.tzinfo is not None
    assert r.actual_duration == raw["ActualDuration"] / 1e9
    assert r.num_threads == raw["NumThreads"]
    assert r.labels == raw["Labels"]
    assert r.problem is None


def test_istio_tools_sample_facts() -> None:
    # 100 calls: 50 at 1 ms, 40 at 2 ms, 10 at 9 ms, in 0.1 s plus 1.234567 ms.
    r = FortioResult(fortio_data.istio_tools())
    assert r.start_time == dt.datetime(2019, 7, 10, 17, 1, 28, 933303, tzinfo=dt.UTC)
    assert r.requested_qps == 1000.0
    assert r.actual_qps == pytest.approx(100 / 0.101234567)
    assert r.actual_duration == 0.101234567
    assert r.count == 100
    assert r.percentile(50) == pytest.approx(0.001)
    assert r.percentile(90) == pytest.approx(0.002)
    assert r.percentile(100) == 0.009
    assert r.run_type == "HTTP"
    assert r.mode == "both"
    assert (r.conn, r.qps, r.payload_size, r.extra_labels) == (1, 1000.0, 1024, "")
    assert r.run_id == "193ff770"
    assert r.mesh == "" and r.platform == ""  # not in the file: never guessed
    assert r.error_count == 0 and r.error_percent == 0.0


def test_error_percent_prefers_errors_histogram() -> None:
    # 20 x 200, 5 x 429, 5 x 503; the ten errors also fill ErrorsDurationHistogram.
    raw = fortio_data.with_errors()
    r = FortioResult(raw)
    assert r.error_count == 10
    assert r.error_percent == 100.0 * 10 / 30
    del raw["ErrorsDurationHistogram"]
    # Without it, RetCodes other than 200 count: 5 x 429 + 5 x 503.
    assert FortioResult(raw).error_count == 10
    raw["RetCodes"] = {"200": 27, "-1": 3}
    assert FortioResult(raw).error_percent == 10.0


def test_grpc_numeric_retcodes() -> None:
    r = FortioResult(fortio_data.grpc_ping())
    assert r.run_type.startswith("GRPC")
    assert r.error_count == 0  # "1" is SERVING in fortio < 1.2.0
    raw = fortio_data.grpc_ping()
    raw["RetCodes"] = {"1": 5, "2": 3}
    assert FortioResult(raw).error_count == 3
    raw["RetCodes"] = {"SERVING": 7, "ERROR": 1}
    assert FortioResult(raw).error_count == 1
    # For HTTP a "1" is no success.
    http = fortio_data.http_defaults()
    http["RetCodes"] = {"1": 4}
    assert FortioResult(http).error_count == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-07-10T17:01:28.933303721Z", dt.datetime(2019, 7, 10, 17, 1, 28, 933303, dt.UTC)),
        ("2021-05-30T18:03:29.389507-04:00", dt.datetime(2021, 5, 30, 22, 3, 29, 389507, dt.UTC)),
        (
            "2018-04-03T16:32:58.895472681-07:00",
            dt.datetime(2018, 4, 3, 23, 32, 58, 895472, dt.UTC),
        ),
        ("2024-01-01T05:30:00+05:30", dt.datetime(2024, 1, 1, 0, 0, 0, 0, dt.UTC)),
        ("2024-01-01T12:00:00.5+14:00", dt.datetime(2023, 12, 31, 22, 0, 0, 500000, dt.UTC)),
        ("2024-01-01T00:00:00.1234567891z", dt.datetime(2024, 1, 1, 0, 0, 0, 123456, dt.UTC)),
        ("2024-02-29T23:59:59-09:30", dt.datetime(2024, 3, 1, 9, 29, 59, 0, dt.UTC)),
    ],
)
def test_start_time_any_offset(text: str, expected: dt.datetime) -> None:
    t = parse_start_time(text)
    assert t.tzinfo is not None
    assert t == expected


@pytest.mark.parametrize("text", ["2024-01-01T00:00:00", "yesterday", "", "2024-13-01T00:00:00Z"])
def test_start_time_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_start_time(text)


# -- synthetic variants of the fixtures --------------------------------------------------------

REQUIRED = {"DurationHistogram", "StartTime"}


# What each accessor gives for the istio/tools sample, and what it falls back to when one key
# is missing. Keys not listed change nothing an accessor returns.
FULL = {
    "run_type": "HTTP", "labels": "193ff770_qps_1000_c_1_1024_both", "requested_qps": 1000.0,
    "actual_qps": pytest.approx(100 / 0.101234567), "actual_duration": 0.101234567,
    "num_threads": 1, "version": "1.3.1",
    "mode": "both", "conn": 1, "qps": 1000.0, "payload_size": 1024, "error_count": 0,
    "error_percent": 0.0, "problem": None, "mesh": "",
}  # fmt: skip
FALLBACK: dict[str, dict[str, Any]] = {
    "RunType": {"run_type": "HTTP"},  # fortio 0.8.x wrote none; those were HTTP runs
    "Labels": {"labels": "", "mode": "", "conn": None, "qps": 1000.0, "payload_size": 1024},
    "RequestedQPS": {"requested_qps": None},
    "ActualQPS": {"actual_qps": 0.0},
    "ActualDuration": {"actual_duration": 0.0},
    "NumThreads": {"num_threads": 0},
    "Version": {"version": ""},
}


def optional_key_variants() -> Iterator[Any]:
    for key in fortio_data.istio_tools():
        if key not in REQUIRED:
            yield pytest.param(key, id=key)


@pytest.mark.parametrize("key", list(optional_key_variants()))
def test_any_optional_key_may_be_missing(key: str) -> None:
    raw = fortio_data.istio_tools()
    del raw[key]
    r = FortioResult(raw, "variant")
    expected = {**FULL, **FALLBACK.get(key, {})}
    got = {name: getattr(r, name) for name in expected}
    assert got == expected
    assert r.percentile(50) == pytest.approx(0.001)


def test_labels_and_url_both_missing_leave_no_size() -> None:
    raw = fortio_data.istio_tools()
    del raw["Labels"], raw["URL"]
    assert FortioResult(raw).payload_size is None


@pytest.mark.parametrize("key", sorted(REQUIRED))
def test_required_key_missing_is_results_error(key: str) -> None:
    raw = fortio_data.istio_tools()
    del raw[key]
    with pytest.raises(ResultsError, match=key):
        FortioResult(raw, "variant.json")


@pytest.mark.parametrize("how", ["null", "omitted"])
def test_percentiles_null_or_omitted(how: str) -> None:
    raw = fortio_data.istio_tools()
    stored = raw["DurationHistogram"]["Percentiles"]
    if how == "null":
        raw["DurationHistogram"]["Percentiles"] = None
    else:
        del raw["DurationHistogram"]["Percentiles"]
    r = FortioResult(raw)
    assert [r.percentile(e["Percentile"]) for e in stored] == [e["Value"] for e in stored]


@pytest.mark.parametrize("value", [0, 7, "2022-05-08-001228_1_Sample_with_errors", None])
def test_id_int_or_string(value: Any) -> None:
    raw = fortio_data.with_errors()
    raw["ID"] = value
    assert FortioResult(raw).count == 30


@pytest.mark.parametrize(
    ("value", "expected"),
    [("max", None), ("1000", 1000.0), ("4.2", 4.2), ("0", None), (250, 250.0)],
)
def test_requested_qps(value: Any, expected: float | None) -> None:
    raw = fortio_data.http_defaults()
    raw["RequestedQPS"] = value
    assert FortioResult(raw).requested_qps == expected


def error_shaped() -> dict[str, Any]:
    """What fortio >= 1.57.4 saves for a run that never started (spec 1.7)."""
    fake = Histogram(divider=0.001)
    fake.record(0.0)
    fake.record(0.001)
    return {
        "RunType": "HTTP",
        "Labels": "",
        "StartTime": "2024-03-01T10:00:00.123456789+01:00",
        "RequestedQPS": "8",
        "RequestedDuration": "5s",
        "ActualQPS": 0,
        "ActualDuration": 0,
        "NumThreads": 0,
        "Version": "1.60.0",
        "DurationHistogram": fake.export(None),
        "Exactly": 0,
        "RunID": 3,
        "ID": "2024-03-01-100000_3",
        "error": True,
        "message": "warmup error",
        "exception": "dial tcp 127.0.0.1:1: connect: connection refused",
        "RetCodes": {},
    }


def test_error_shaped_result_loads_with_its_reason() -> None:
    r = FortioResult(error_shaped(), "err.json")
    assert r.is_error
    assert r.problem is not None
    assert "warmup error" in r.problem and "connection refused" in r.problem


def test_count_zero_loads() -> None:
    raw = fortio_data.http_defaults()
    raw["DurationHistogram"] = {
        "Count": 0, "Min": 0, "Max": 0, "Sum": 0, "Avg": 0, "StdDev": 0, "Data": None,
    }  # fmt: skip
    raw["RetCodes"] = {}
    r = FortioResult(raw)
    assert r.count == 0
    assert r.percentile(99) == 0.0
    assert r.error_percent == 0.0
    assert r.problem == "no calls recorded (Count 0)"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(NumThreads="four"), "NumThreads"),
        (
            lambda d: d["DurationHistogram"]["Data"][2].update(End=float("nan")),
            r"Data\[2\].*finite",
        ),
        (
            lambda d: d["DurationHistogram"]["Data"][0].pop("Percent"),
            "needs Start, End and Percent",
        ),
        (lambda d: d["DurationHistogram"]["Data"][0].update(Start=True), "finite numbers"),
        (lambda d: d["DurationHistogram"].update(Data="x"), "Data"),
        (lambda d: d["DurationHistogram"].update(Count=-1), "Count"),
        (lambda d: d["DurationHistogram"].update(Data=None), "no Data"),
        (lambda d: d.update(ActualQPS="fast"), "ActualQPS"),
        (lambda d: d.update(RequestedQPS="lots"), "RequestedQPS"),
        (lambda d: d.update(StartTime="2019-07-10T17:01:28"), "offset"),
        (lambda d: d.update(RetCodes={"200": "many"}), "RetCodes"),
        (lambda d: d.update(meshperf={"mode": "sideways"}), "mode"),
    ],
)
def test_nonsense_is_a_results_error(mutate: Any, match: str) -> None:
    raw = fortio_data.istio_tools()
    mutate(raw)
    with pytest.raises(ResultsError, match=match):
        FortioResult(raw, "bad.json")


def test_not_a_result() -> None:
    for doc in ([1, 2], {"foo": 1}, "text"):
        with pytest.raises(ResultsError, match="not a fortio result"):
            FortioResult(doc)  # type: ignore[arg-type]


# -- labels and our block ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("193ff770_qps_1000_c_1_1024_both", ("193ff770", 1000.0, 1, 1024, "", "both")),
        ("ab12_qps_4000_c_64_1024_base", ("ab12", 4000.0, 64, 1024, "", "baseline")),
        ("ab12_qps_max_c_8_0_nomixer_serveronly", ("ab12", None, 8, 0, "nomixer", "serversidecar")),
        (
            "ab12_qps_10_c_2_512_no_mixer_v2_ingress",
            ("ab12", 10.0, 2, 512, "no_mixer_v2", "ingress"),
        ),
        ("ab12_qps_10_c_2_512_waypoint", ("ab12", 10.0, 2, 512, "", "waypoint")),
    ],
)
def test_label_shape_shape(label: str, expected: tuple[Any, ...]) -> None:
    s = LabelShape.parse(label)
    assert s is not None
    assert (s.run_id, s.qps, s.conn, s.size, s.extra_labels, s.mode) == expected


@pytest.mark.parametrize(
    "label", ["Sample with errors", "both", "x_qps_1_c_1_1_sidecar", "my_both_test", ""]
)
def test_other_labels_are_not_parsed(label: str) -> None:
    assert LabelShape.parse(label) is None
    raw = fortio_data.istio_tools()
    raw["Labels"] = label
    assert FortioResult(raw).mode == ""  # no guessing from substrings


def with_block(**block: Any) -> dict[str, Any]:
    raw = fortio_data.istio_tools()
    raw["meshperf"] = {"format": 1, **block}
    return raw


def test_our_block_wins_over_the_label() -> None:
    raw = with_block(
        mode="serversidecar", conn=16, qps=2000.0, size=0, extra_labels="x", mesh="linkerd",
        platform="local", repeat=2, run_id="r1",
    )  # fmt: skip
    r = FortioResult(raw)
    assert (r.mode, r.conn, r.qps, r.payload_size, r.extra_labels) == (
        "serversidecar", 16, 2000.0, 0, "x",
    )  # fmt: skip
    assert (r.mesh, r.platform, r.repeat, r.run_id) == ("linkerd", "local", 2, "r1")


def test_payload_size_from_url_when_nothing_else() -> None:
    raw = fortio_data.with_errors()
    assert FortioResult(raw).payload_size is None
    raw["URL"] = "http://127.0.0.1:8080/echo?size=512"
    assert FortioResult(raw).payload_size == 512


# -- directories and run metadata --------------------------------------------------------------


def test_directory_with_run_metadata(tmp_path: Path) -> None:
    a = with_block(run_id="abc123", mode="both", conn=1, qps=1000.0, size=1024)
    b = fortio_data.http_defaults()
    (tmp_path / "2019-07-10-170128_a.json").write_text(fortiojson.dumps(a))
    (tmp_path / "2021-05-30-180329_b.json").write_text(fortiojson.dumps(b))
    meta = {"run_id": "abc123", "mesh": "istio", "platform": "local", "envoy": "1.40.0"}
    (tmp_path / "run-abc123.json").write_text(json.dumps(meta))
    (tmp_path / "notes.txt").write_text("not json")
    sub = tmp_path / "older"
    sub.mkdir()
    (sub / "x.json").write_text(ISTIO_TEXT)  # only the top level is read

    report = load_dir(tmp_path)
    assert report.skipped == []
    assert sorted(Path(r.source).name for r in report.results) == [
        "2019-07-10-170128_a.json",
        "2021-05-30-180329_b.json",
    ]
    assert report.runs == {"abc123": meta}
    by_name = {Path(r.source).name: r for r in report.results}
    ours = by_name["2019-07-10-170128_a.json"]
    assert ours.run_metadata == meta
    assert (ours.mesh, ours.platform) == ("istio", "local")
    assert by_name["2021-05-30-180329_b.json"].run_metadata is None


def test_run_named_file_that_is_a_result_stays_a_result(tmp_path: Path) -> None:
    (tmp_path / "run-7.json").write_text(ISTIO_TEXT)
    report = load_dir(tmp_path)
    assert len(report.results) == 1 and report.runs == {}


def test_directory_with_bad_files(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text(ISTIO_TEXT)
    (tmp_path / "cut.json").write_text(ISTIO_TEXT[:1000])
    (tmp_path / "other.json").write_text('{"hello": "world"}')
    report = load_dir(tmp_path)
    assert [Path(r.source).name for r in report.results] == ["good.json"]
    reasons = {Path(s.source).name: s.reason for s in report.skipped}
    assert reasons.keys() == {"cut.json", "other.json"}
    assert reasons["cut.json"].startswith("not valid JSON")
    assert "not a fortio result" in reasons["other.json"]


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="cannot read"):
        load_file(tmp_path / "missing.json")
    with pytest.raises(ResultsError, match="cannot list"):
        load_dir(tmp_path / "missing")


# -- writing -----------------------------------------------------------------------------------


def test_write_result_refuses_to_overwrite(tmp_path: Path) -> None:
    raw = fortio_data.istio_tools()
    target = tmp_path / "r.json"
    write_result(target, raw)
    changed = copy.deepcopy(raw)
    changed["Labels"] = "changed"
    with pytest.raises(ResultsError, match="already exists"):
        write_result(target, changed)
    assert json.loads(target.read_text())["Labels"] == raw["Labels"]
    write_result(target, changed, overwrite=True)
    assert json.loads(target.read_text())["Labels"] == "changed"
    assert os.listdir(tmp_path) == ["r.json"]  # no temp files left behind


# -- listing formats ---------------------------------------------------------------------------


def test_parse_index_tsv() -> None:
    text = (
        "TsvHttpData-1.0\n"
        "http://fortio:8080/fortio/data/2019-07-10-170128_x.json\t4438\tq1w2e3==\n"
        "http://h/data/a%20b.json\t10\tzz==\n"
        "http://h/data/../../etc/passwd\t1\tx\n"
    )
    assert parse_index_tsv(text) == [
        ("2019-07-10-170128_x.json", 4438, "q1w2e3=="),
        ("a b.json", 10, "zz=="),
    ]
    with pytest.raises(ValueError):
        parse_index_tsv("<html>")


def test_parse_html_listing_and_browse() -> None:
    listing = '<html><body><ul>\n<li><a href="b.json">b</a>\n<li><a href="a.json">a</a>\n</ul>'
    assert parse_html_listing(listing) == ["b.json", "a.json"]
    browse = (
        '<select id="files"><option value="x.json" selected>x</option>\n<option value="y.json">'
    )
    assert parse_html_listing(browse, browse=True) == ["x.json", "y.json"]
    assert parse_html_listing('<a href="/other/page">x</a>') == []


def test_tests_the_run_could_not_run_are_reported(tmp_path: Path) -> None:
    run = {
        "run_id": "r9",
        "status": "interrupted",
        "tests": [
            {"index": 1, "label": "r9_qps_1000_c_1_1024_both", "status": "ok", "reason": "",
             "file": "2024-01-01-000000_r9.json"},
            {"index": 2, "label": "r9_qps_1000_c_4_1024_both", "status": "failed",
             "reason": "envoy exited with code 1", "file": ""},
            {"index": 3, "label": "r9_qps_1000_c_16_1024_both", "status": "not-run",
             "reason": "run interrupted (SIGINT)", "file": ""},
        ],
    }  # fmt: skip
    (tmp_path / "run-r9.json").write_text(json.dumps(run))
    report = load_dir(tmp_path)
    assert report.results == []
    assert [(Path(s.source.split(" ")[0]).name, s.reason) for s in report.skipped] == [
        ("run-r9.json", "failed in the run: envoy exited with code 1"),
        ("run-r9.json", "not-run in the run: run interrupted (SIGINT)"),
    ]
    assert "r9_qps_1000_c_4_1024_both" in report.skipped[0].source
    # While the run is still going, tests not run yet are not missing.
    run["status"] = "running"
    (tmp_path / "run-r9.json").write_text(json.dumps(run))
    assert [s.reason for s in load_dir(tmp_path).skipped] == [
        "failed in the run: envoy exited with code 1"
    ]


def test_actual_duration_in_whole_seconds_is_read_as_seconds() -> None:
    # Nighthawk's fortio-format samples write ActualDuration 5 for a 5 s run.
    raw = fortio_data.istio_tools()
    raw["ActualDuration"] = 5
    assert FortioResult(raw).actual_duration == 5.0
    raw["ActualDuration"] = 5_000_000_000  # fortio: nanoseconds
    assert FortioResult(raw).actual_duration == 5.0
