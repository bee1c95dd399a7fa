"""Fortio's bucketing, merge and export rules (spec section 2)."""

from __future__ import annotations

import math
import random

import pytest

from meshperf.histogram import (
    BUCKETS,
    NUM_VALUES,
    Histogram,
    bucket_index,
    calc_percentile,
    parse_percentiles,
)


def test_bucket_edges_are_left_open_right_closed() -> None:
    # A value exactly on an edge belongs to the lower bucket (fortio >= 1.54.2).
    assert bucket_index(0.001, 0.0, 0.001) == 1
    assert bucket_index(0.0010001, 0.0, 0.001) == 2
    assert bucket_index(0.0, 0.0, 0.001) == 0
    assert bucket_index(-1.0, 0.0, 0.001) == 0
    assert bucket_index(0.0125, 0.0, 0.001) == BUCKETS.index(14)
    assert bucket_index(100.0, 0.0, 0.001) == NUM_VALUES - 1
    assert bucket_index(100.0001, 0.0, 0.001) == NUM_VALUES
    # Offset shifts every edge.
    assert bucket_index(0.0015, 0.001, 0.0005) == 1


def test_export_follows_fortio_data_rule() -> None:
    h = Histogram(0.0, 0.001)
    for v in (0.0005, 0.0007, 0.0031, 0.0032, 0.250):
        h.record(v)
    data = h.data()
    assert [b["Count"] for b in data] == [2, 2, 1]
    assert data[0]["Start"] == 0.0005  # first Start is Min
    assert data[0]["End"] == 0.001
    assert data[1]["Start"] == 0.001 * 3  # lower edge of (3, 4], after skipped buckets
    assert data[1]["End"] == 0.001 * 4
    assert data[-1]["End"] == 0.250  # last End is Max
    assert [b["Percent"] for b in data] == [40.0, 80.0, 100.0]
    out = h.export([50, 99.9])
    values = [0.0005, 0.0007, 0.0031, 0.0032, 0.250]
    mean = sum(values) / len(values)
    assert out["Sum"] == pytest.approx(0.2575)
    assert out["Avg"] == pytest.approx(0.0515)
    # p50: 2.5 of 5 values lies in the second bucket (40%..80%), a quarter of the way from its
    # Start 0.003 to its End 0.004 (fortio interpolates linearly inside a bucket).
    assert out["Percentiles"][0] == {"Percentile": 50, "Value": pytest.approx(0.00325)}
    # p99.9 lies in the last bucket (80%..100%), which holds 0.250 in fortio's (0.200, 0.250]
    # bucket: 99.5% of the way from that bucket's Start 0.200 to Max 0.250.
    assert data[-1]["Start"] == pytest.approx(0.200)
    assert out["Percentiles"][1]["Value"] == pytest.approx(0.200 + 0.995 * (0.250 - 0.200))
    assert math.isclose(out["StdDev"], math.sqrt(sum((v - mean) ** 2 for v in values) / 5))


def test_empty_histogram_exports_like_fortio() -> None:
    out = Histogram().export()
    assert out == {
        "Count": 0,
        "Min": 0.0,
        "Max": 0.0,
        "Sum": 0.0,
        "Avg": 0.0,
        "StdDev": 0.0,
        "Data": None,
    }
    assert calc_percentile(out, 50) == 0.0


def test_merge_is_exact_and_state_round_trips() -> None:
    rng = random.Random(7)
    values = [rng.expovariate(1000.0) for _ in range(5000)]
    whole = Histogram(0.0, 0.0001)
    parts = [Histogram(0.0, 0.0001) for _ in range(3)]
    for i, v in enumerate(values):
        whole.record(v)
        parts[i % 3].record(v)
    merged = Histogram(0.0, 0.0001)
    for p in parts:
        merged.merge(Histogram.from_state(p.to_state()))
    assert merged.counts == whole.counts
    assert (merged.count, merged.min, merged.max) == (whole.count, whole.min, whole.max)
    assert math.isclose(merged.sum, whole.sum, rel_tol=1e-12)
    merged_data, whole_data = merged.data(), whole.data()
    # Start/End/Percent/Count agree exactly; only the float Sum may differ in its last bits.
    assert merged_data == whole_data
    with pytest.raises(ValueError):
        merged.merge(Histogram(0.0, 0.001))


def test_percentile_walks_buckets() -> None:
    h = Histogram(0.0, 0.001)
    for _ in range(99):
        h.record(0.0005)
    h.record(0.0095)
    exp = h.export([50, 99.5])
    # p50 interpolates inside the first bucket from Min (at 100/Count %) to its End.
    assert exp["Percentiles"][0]["Value"] == 0.0005 + (50 - 1.0) / (99.0 - 1.0) * (0.001 - 0.0005)
    start = 0.001 * 9  # the edge as fortio computes it: 0.009000000000000001
    assert exp["Percentiles"][1]["Value"] == start + (99.5 - 99.0) / (100 - 99.0) * (0.0095 - start)
    assert calc_percentile(exp, 100) == 0.0095


@pytest.mark.parametrize(
    ("text", "match"),
    [("100", "> 0 and < 100"), ("0", "> 0 and < 100"), ("-1", "> 0 and < 100"),
     ("abc", "not a number"), ("", "no percentiles"), (",,", "no percentiles"),
     ("nan", "> 0 and < 100")],
)  # fmt: skip
def test_parse_percentiles_rejects(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_percentiles(text)


def test_parse_percentiles_accepts_fortio_lists() -> None:
    # Empty items are skipped, as fortio's strings.Split + TrimSpace loop does.
    assert parse_percentiles("50,,") == [50.0]
    assert parse_percentiles(" 50, 99.9 ,75") == [50.0, 99.9, 75.0]
