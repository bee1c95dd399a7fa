"""One error count: the runner's summary and fortio.py's CSV say the same for the same files.

The rule (results.error_count) is fortio's own: ErrorsDurationHistogram when the result has
one; otherwise the RetCodes the writing fortio's runner did not count as success (only 200
before fortio 1.7.0, 2xx and 418 from 1.7.0 on; SERVING for gRPC, OK for TCP).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from conftest import load_fortio_cli
from meshperf import fortiojson
from meshperf.local import platform as local_platform
from meshperf.platform import TestSpec as Spec
from meshperf.results import FortioResult, error_count, error_percent, parse_start_time
from meshperf.run import OK, Outcome, RunReport, _start_time, result_stats, summary_table

fortio_main = load_fortio_cli().main

LATENCIES = [0.0004 + i * 0.00001 for i in range(100)]


def _doc(version: str, codes: dict[str, int], run_type: str = "HTTP") -> dict[str, Any]:
    doc = fortio_data.http_result(LATENCIES, retcodes=codes, version=version)
    del doc["ErrorsDurationHistogram"]  # fortio < 1.28.0 wrote none: RetCodes decide
    doc["RunType"] = run_type
    return doc


CODES = {"200": 95, "204": 3, "418": 2}


@pytest.mark.parametrize(
    ("version", "codes", "run_type", "failed"),
    [
        ("1.75.2", CODES, "HTTP", 0),  # codeIsOK: 200-299 and 418 (fortio >= 1.7.0)
        ("1.7.0", CODES, "HTTP", 0),
        ("1.6.8", CODES, "HTTP", 5),  # before 1.7.0 only 200 was a success
        ("1.3.1", {"200": 90, "503": 7, "-1": 3}, "HTTP", 10),  # -1: socket error
        ("", CODES, "HTTP", 5),  # no version: the oldest rule
        ("1.75.2", {"SERVING": 98, "-1": 2}, "GRPC Health", 2),
        ("1.1.0", {"1": 97, "2": 3}, "GRPC Health", 3),  # numeric enum before 1.2.0
        ("1.75.2", {"OK": 99, "read: connection reset": 1}, "TCP", 1),
    ],
)
def test_error_count_rule(version: str, codes: dict[str, int], run_type: str, failed: int) -> None:
    doc = _doc(version, codes, run_type)
    assert error_count(doc) == failed
    assert error_percent(doc) == pytest.approx(failed)  # 100 calls
    assert FortioResult(doc).error_count == failed


def test_errors_histogram_wins_over_retcodes() -> None:
    doc = fortio_data.http_result(
        LATENCIES, retcodes={"200": 100, "503": 4}, error_latencies=[0.001] * 4
    )
    assert error_count(doc) == 4
    doc["RetCodes"] = {"200": 104}  # what the runner judged is the histogram, not the codes
    assert error_count(doc) == 4


def test_no_calls_is_not_an_error_rate() -> None:
    doc = fortio_data.http_result([], retcodes={})
    assert error_percent(doc) == 0.0
    assert FortioResult(doc).problem == "no calls recorded (Count 0)"
    assert result_stats(doc)["requests"] == 0  # the runner reports it as such


@pytest.mark.parametrize("version", ["1.75.2", "1.6.8"])
def test_runner_summary_equals_fortio_csv(tmp_path: Path, version: str) -> None:
    results = tmp_path / "results"
    results.mkdir()
    docs = []
    for i, conn in enumerate((1, 4)):
        doc = _doc(version, CODES)
        doc["Labels"] = f"0badcafe_qps_1000_c_{conn}_1024_both"
        doc["StartTime"] = fortiojson.go_time(fortio_data.START + dt.timedelta(minutes=i))
        doc["ID"] = fortiojson.gen_id(parse_start_time(doc["StartTime"]), doc["Labels"])
        fortio_data.write(results, doc)
        docs.append(doc)

    outcomes = [
        Outcome(
            index=i + 1,
            spec=Spec(mode="both", conn=c, qps=1000.0, duration=10.0, labels=d["Labels"]),
            status=OK,
            stats=result_stats(d),
        )
        for i, (c, d) in enumerate(zip((1, 4), docs, strict=True))
    ]
    table = summary_table(RunReport("0badcafe", results, outcomes))
    rows = [line.split() for line in table.splitlines()[1:3]]
    summary = {int(r[2]): r[8] for r in rows}  # conn -> errors%

    prefix = tmp_path / "summary"
    assert fortio_main([str(results), "--output", str(prefix)]) == 0
    with open(f"{prefix}.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    from_csv = {int(r["conn"]): f"{float(r['errorPercent']):.2f}" for r in csv_rows}

    expected = "0.00" if version == "1.75.2" else "5.00"  # 5 of 100 calls were 204 or 418
    assert summary == from_csv == {1: expected, 4: expected}


@pytest.mark.parametrize(
    "text",
    ["2026-03-04T10:00:00.123456789-07:00", "2026-03-04T17:00:00.123456Z", "2026-03-04T17:00:00Z"],
)
def test_one_start_time_parser(text: str) -> None:
    want = dt.datetime(2026, 3, 4, 17, 0, 0, tzinfo=dt.UTC)
    got = parse_start_time(text)
    assert abs((got - want).total_seconds()) < 0.2
    # The runner's file names and the local platform's sample windows use the same parser.
    assert _start_time({"StartTime": text}) == got
    assert local_platform._parse_start(text) == got.timestamp()


def test_start_time_without_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_start_time("2026-03-04T10:00:00")
    assert local_platform._parse_start("2026-03-04T10:00:00") is None
    assert _start_time({"StartTime": "garbage"}).tzinfo is not None  # falls back to now
