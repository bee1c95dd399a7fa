"""Within one run: each mode's overhead over baseline with its interval (runner summary)."""

from __future__ import annotations

import math
from typing import Any

from meshperf import compare as cmp


def _cells(values: dict[str, list[float]], conn: int = 16) -> list[tuple[dict[str, Any], dict]]:
    out = []
    for mode, p50s in values.items():
        for rep, v in enumerate(p50s):
            facts = {"mode": mode, "conn": conn, "qps": 1000.0, "size": 1024,
                     "extra_labels": "", "repeat": rep}  # fmt: skip
            out.append((facts, {"p50_ms": v, "p90_ms": 2 * v, "p99_ms": 4 * v}))
    return out


def test_paired_interval_by_repeat() -> None:
    # Differences 0.59, 0.60, 0.59 ms: mean 0.5933, sd 0.00577, t(0.975, 2) = 4.303.
    lines = cmp.overhead_lines(_cells({"baseline": [0.10, 0.12, 0.11], "both": [0.69, 0.72, 0.70]}))
    assert lines[0] == "overhead over baseline, mean and 95% interval:"
    half = 4.303 * math.sqrt(((0.59 - 0.5933) ** 2 * 2 + (0.60 - 0.5933) ** 2) / 2) / math.sqrt(3)
    assert f"{0.5933 - half:.2f}" == "0.58" and f"{0.5933 + half:.2f}" == "0.61"
    assert lines[1].startswith("  both c16 q1000 1024B: p50 +0.59 ms [0.58, 0.61]  p90 +1.19 ms")
    assert lines[1].endswith("(paired, 3 repeats)")


def test_single_run_has_no_interval_and_no_baseline_no_block() -> None:
    lines = cmp.overhead_lines(_cells({"baseline": [0.10], "serversidecar": [0.35]}))
    assert lines[1] == (
        "  serversidecar c16 q1000 1024B: p50 +0.25 ms  p90 +0.50 ms  p99 +1.00 ms  (single run)"
    )
    assert cmp.overhead_lines(_cells({"both": [0.7, 0.8]})) == []


def test_pairing_removes_drift_that_welch_keeps() -> None:
    # Both modes drift together from repeat to repeat; the overhead itself is steady.
    base = {0: 0.1, 1: 0.5, 2: 0.9}
    mode = {0: 0.4, 1: 0.8, 2: 1.2}
    d, lo, hi, how = cmp.overhead(base, mode)
    assert how == "paired, 3 repeats" and lo is not None and hi is not None
    assert math.isclose(d, 0.3) and hi - lo < 1e-9
    d2, lo2, hi2, how2 = cmp.overhead({0: 0.1, 1: 0.5, 2: 0.9}, {5: 0.4, 6: 0.8, 7: 1.2})
    assert how2 == "3 vs 3 repeats" and lo2 is not None and hi2 is not None
    assert lo2 < 0 < hi2  # unpaired, the drift swamps the overhead
