"""Merging many clients' fortio results into one (``meshperf.clients``): exact histograms,
summed counts, the overlap of the clients' windows, late starters, splitting a test."""

from __future__ import annotations

import argparse
import datetime as dt
import random

import pytest

import fortio_data
from meshperf import clients
from meshperf.histogram import calc_percentile

T0 = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def client_result(latencies: list[float], start: dt.datetime, duration_s: float = 10.0,
                  errors: int = 0, qps: float = 100.0, threads: int = 4) -> dict:
    codes = {"200": len(latencies)} | ({"503": errors} if errors else {})
    doc = fortio_data.http_result(
        latencies, error_latencies=[0.002] * errors, retcodes=codes, qps=qps, threads=threads,
        duration_s=duration_s, start=start,
    )  # fmt: skip
    doc["Resolution"] = 0.0001
    doc["Offset"] = 0
    return doc


def _latencies(seed: int, n: int, scale: float) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-7.5, 0.6) * scale for _ in range(n)]


def test_three_clients_merge_exactly() -> None:
    lat = [_latencies(1, 3000, 1.0), _latencies(2, 2500, 1.3), _latencies(3, 2800, 0.8)]
    parts = [
        client_result(lat[0], T0, errors=3),
        client_result(lat[1], T0 + dt.timedelta(milliseconds=200), errors=0),
        client_result(lat[2], T0 + dt.timedelta(milliseconds=450), errors=7),
    ]
    merged = clients.merge_results(parts, ["c0", "c1", "c2"], labels="merged_label")
    dh = merged["DurationHistogram"]
    # The expectation, independently: one histogram that recorded every call of every client.
    every = [v for lv in lat for v in lv] + [0.002] * 10
    whole = fortio_data.histogram(every).export()
    assert dh["Count"] == sum(len(lv) for lv in lat) + 10 == whole["Count"]
    assert dh["Min"] == min(every) and dh["Max"] == max(every)
    assert dh["Sum"] == pytest.approx(sum(every), rel=1e-12)
    assert dh["Data"] == whole["Data"]
    for p in (50, 75, 90, 99, 99.9):
        got = next(x["Value"] for x in dh["Percentiles"] if x["Percentile"] == p)
        assert got == calc_percentile(whole, p)
    assert dh["StdDev"] == pytest.approx(whole["StdDev"], rel=1e-9)
    assert merged["ErrorsDurationHistogram"]["Count"] == 10
    assert merged["RetCodes"] == {"200": 8300, "503": 10}
    assert merged["NumThreads"] == 12 and merged["RequestedQPS"] == "300"
    assert merged["ActualQPS"] == pytest.approx(sum(p["ActualQPS"] for p in parts))
    assert merged["Labels"] == "merged_label"
    sizes = fortio_data.histogram([1024 + 150] * 8310, 100).export()
    assert merged["Sizes"]["Count"] == sizes["Count"] and merged["Sizes"]["Data"] == sizes["Data"]


def test_merged_window_is_the_overlap_and_late_starts_warn() -> None:
    # http_result's runs last duration + 1.234567 ms.
    parts = [
        client_result([0.001] * 10, T0),
        client_result([0.001] * 10, T0 + dt.timedelta(seconds=0.3)),
        client_result([0.001] * 10, T0 + dt.timedelta(seconds=2.5)),
    ]
    merged = clients.merge_results(parts, ["a", "b", "late"])
    info = merged["meshperf"]
    assert merged["StartTime"] == "2026-05-01T12:00:02.5Z"
    assert merged["ActualDuration"] == 10_001_234_567 - 2_500_000_000
    assert info["clients_overlap_s"] == pytest.approx(7.501234567)
    assert info["clients_span_s"] == pytest.approx(12.501234567)
    assert [c["start_offset_s"] for c in info["clients"]] == [0.0, 0.3, 2.5]
    assert info["clients_warning"] == (
        "client late started 2.500 s after the first (> 1 s: clock skew or a slow start)"
    )
    on_time = clients.merge_results(parts[:2], ["a", "b"])
    assert "clients_warning" not in on_time["meshperf"]


def test_windows_that_never_overlap_are_said_to() -> None:
    parts = [client_result([0.001], T0), client_result([0.001], T0 + dt.timedelta(seconds=30))]
    merged = clients.merge_results(parts, ["a", "b"])
    assert merged["ActualDuration"] == 0
    assert "never loaded together" in merged["meshperf"]["clients_warning"]


def test_different_resolutions_are_refused() -> None:
    a, b = client_result([0.001], T0), client_result([0.001], T0)
    b["Resolution"] = 0.001
    with pytest.raises(Exception, match="resolution"):
        clients.merge_results([a, b], ["a", "b"])


def test_histogram_round_trip_keeps_every_bucket() -> None:
    values = _latencies(9, 5000, 3.0) + [0.0, 12.5]  # bucket 0 and the overflow bucket
    h = fortio_data.histogram(values)
    back = clients.histogram_from_export(h.export(), 0.0001)
    assert back.counts == h.counts
    assert (back.count, back.min, back.max) == (h.count, h.min, h.max)
    single = fortio_data.histogram([0.00042] * 5)
    assert clients.histogram_from_export(single.export(), 0.0001).counts == single.counts


def test_split_test() -> None:
    assert clients.split_test(16, 1000.0, 3) == [(6, 375.0), (5, 312.5), (5, 312.5)]
    assert sum(q for _, q in clients.split_test(7, 700.0, 7)) == pytest.approx(700.0)
    assert clients.split_test(8, 0.0, 2) == [(4, 0.0), (4, 0.0)]
    with pytest.raises(ValueError, match="cannot be shared"):
        clients.split_test(2, 100.0, 3)
    assert clients.clients_count("3") == 3
    for bad in ("0", "x", "65"):
        with pytest.raises(argparse.ArgumentTypeError):
            clients.clients_count(bad)
