"""Conformance: meshperf's histogram, JSON and result model against real fortio result files.

The files are fortio's own (conformance data, read in place; see tests/conformance.py): every
stored percentile must recompute exactly, every histogram's Data export must come back out of
meshperf.histogram, and every file must round-trip byte for byte.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import require
from meshperf import fortiojson
from meshperf.histogram import Histogram, calc_percentile
from meshperf.results import FortioResult, load_file, write_result

FIXTURES = require("fixtures", "fortio")
FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))
ISTIO = FIXTURES / "http-istio-tools-1.3.1.json"
ERRORS = FIXTURES / "http-with-errors-1.28.0.json"
GRPC = FIXTURES / "grpc-ping-0.9.0.json"
DEFAULTS = FIXTURES / "http-defaults-1.11.5.json"

# Histogram resolution (divider) of each fixture's histograms: -r for latency, fortio's fixed
# 100 for Sizes and 5 for HeaderSizes (spec 2.1).
DIVIDERS: dict[str, dict[str, float]] = {
    DEFAULTS.name: {"DurationHistogram": 0.001, "Sizes": 100, "HeaderSizes": 5},
    ISTIO.name: {"DurationHistogram": 0.00005, "Sizes": 100, "HeaderSizes": 5},
    ERRORS.name: {
        "DurationHistogram": 0.0001,
        "ErrorsDurationHistogram": 0.0001,
        "Sizes": 100,
        "HeaderSizes": 5,
    },
}


def load_raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def histograms(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, value in doc.items():
        if isinstance(value, dict) and "Count" in value and "Data" in value:
            yield key, value


ALL_HISTOGRAMS = [
    pytest.param(path, name, id=f"{path.stem}:{name}")
    for path in FIXTURE_FILES
    for name, _ in histograms(load_raw(path))
]


def test_fixtures_present() -> None:
    assert len(FIXTURE_FILES) == 4, FIXTURES
    assert len(ALL_HISTOGRAMS) >= 10


# -- every histogram of every fixture ----------------------------------------------------------


@pytest.mark.parametrize(("path", "name"), ALL_HISTOGRAMS)
def test_stored_percentiles_recompute_exactly(path: Path, name: str) -> None:
    hist = load_raw(path)[name]
    stored = hist.get("Percentiles") or []
    for entry in stored:
        assert calc_percentile(hist, entry["Percentile"]) == entry["Value"], entry
    if name in ("DurationHistogram", "ErrorsDurationHistogram"):
        assert len(stored) == 5  # all latency histograms in the fixtures carry them


DIVIDER_CASES = [
    pytest.param(FIXTURES / f, name, div, id=f"{Path(f).stem}:{name}")
    for f, by_name in DIVIDERS.items()
    for name, div in by_name.items()
]


@pytest.mark.parametrize(("path", "name", "divider"), DIVIDER_CASES)
def test_histogram_reproduces_fortio_data_export(path: Path, name: str, divider: float) -> None:
    """Values placed in each stored bucket come back out as fortio's exact ``Data``."""
    stored = load_raw(path)[name]
    data = stored["Data"]
    h = Histogram(offset=0.0, divider=divider)
    for i, b in enumerate(data):
        count = b["Count"]
        inside = b["Start"] if b["Start"] == b["End"] else (b["Start"] + b["End"]) / 2
        if i == 0:
            h.record(stored["Min"])
            count -= 1
        if i == len(data) - 1 and count > 0:
            h.record(stored["Max"])
            count -= 1
        h.record_n(inside, count)
    assert h.count == stored["Count"]
    assert h.min == stored["Min"] and h.max == stored["Max"]
    assert h.data() == data


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_round_trip_byte_identical(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    doc = json.loads(text)
    assert fortiojson.dumps(doc, newline=text.endswith("\n")) == text
    out = write_result(tmp_path / path.name, doc)
    # write_result writes like fortio's CLI: with the trailing newline.
    assert out.read_text() == text.rstrip("\n") + "\n"


# -- the model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_every_fixture_loads(path: Path) -> None:
    r = load_file(path)
    raw = load_raw(path)
    assert r.raw == raw
    assert r.start_time.tzinfo is not None
    assert r.actual_duration == raw["ActualDuration"] / 1e9
    assert r.num_threads == raw["NumThreads"]
    assert r.labels == raw["Labels"]
    assert r.count == raw["DurationHistogram"]["Count"]
    for entry in raw["DurationHistogram"]["Percentiles"]:
        assert r.percentile(entry["Percentile"]) == entry["Value"]
    assert r.problem is None


def test_istio_tools_fixture_facts() -> None:
    r = load_file(ISTIO)
    assert r.start_time == dt.datetime(2019, 7, 10, 17, 1, 28, 933303, tzinfo=dt.UTC)
    assert r.requested_qps == 1000.0
    assert r.actual_qps == 742.1756283598205
    assert r.actual_duration == 240.001144195
    assert r.run_type == "HTTP"
    assert r.mode == "both"
    assert (r.conn, r.qps, r.payload_size, r.extra_labels) == (1, 1000.0, 1024, "")
    assert r.run_id == "193ff770"
    assert r.mesh == "" and r.platform == ""  # not in the file: never guessed
    assert r.error_count == 0 and r.error_percent == 0.0


def test_error_percent_prefers_errors_histogram() -> None:
    r = load_file(ERRORS)
    assert r.error_count == 70
    assert r.error_percent == 100.0 * 70 / 3000
    raw = load_raw(ERRORS)
    del raw["ErrorsDurationHistogram"]
    # Without it, RetCodes other than 200 count: 56 x 429 + 14 x 503.
    assert FortioResult(raw).error_count == 70
    raw["RetCodes"] = {"200": 2990, "-1": 10}
    assert FortioResult(raw).error_percent == 100.0 * 10 / 3000


def test_grpc_numeric_retcodes() -> None:
    r = load_file(GRPC)
    assert r.run_type.startswith("GRPC")
    assert r.error_count == 0  # "1" is SERVING in fortio < 1.2.0
    raw = load_raw(GRPC)
    raw["RetCodes"] = {"1": 37, "2": 3}
    assert FortioResult(raw).error_count == 3
    raw["RetCodes"] = {"SERVING": 39, "ERROR": 1}
    assert FortioResult(raw).error_count == 1
    # For HTTP a "1" is no success.
    http = load_raw(DEFAULTS)
    http["RetCodes"] = {"1": 40}
    assert FortioResult(http).error_count == 40


