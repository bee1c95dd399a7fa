"""Fortio's histogram: bucketing, ``Data`` export and percentile rule.

A leaf module (imports nothing else of meshperf), the counterpart of fortio's ``stats``
package. The rules are pinned in ``docs/fortio-format.md`` section 2 and reproduce
fortio's stored percentiles bit for bit.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Scaled bucket boundaries (fortio ``histogramBucketValues``, unchanged since v0.6.0).
BUCKETS: tuple[int, ...] = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
    12, 14, 16, 18, 20,
    25, 30, 35, 40, 45, 50,
    60, 70, 80, 90, 100,
    120, 140, 160, 180, 200,
    250, 300, 350, 400, 450, 500,
    600, 700, 800, 900, 1000,
    2000, 3000, 4000, 5000, 7500, 10000,
    20000, 30000, 40000, 50000, 75000, 100000,
)  # fmt: skip
NUM_VALUES = len(BUCKETS)  # 56
NUM_BUCKETS = NUM_VALUES + 1  # 57: bucket 56 is the overflow bucket

DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 75.0, 90.0, 99.0, 99.9)


def bucket_index(value: float, offset: float, divider: float) -> int:
    """Index of the bucket ``value`` falls in (fortio >= 1.54.2: left-open, right-closed)."""
    scaled = (value - offset) / divider
    if scaled <= 0:
        return 0
    if scaled > BUCKETS[-1]:
        return NUM_VALUES
    k = int(scaled)
    if scaled - k < 1e-12:
        k -= 1
    return bisect_right(BUCKETS, k)


class Histogram:
    """Counter stats plus fortio's bucket counts; merges exactly with another of the same shape."""

    __slots__ = ("offset", "divider", "counts", "count", "min", "max", "sum", "sum_sq")

    def __init__(self, offset: float = 0.0, divider: float = 0.001) -> None:
        if not divider > 0:
            raise ValueError(f"histogram resolution must be > 0, got {divider!r}")
        self.offset = float(offset)
        self.divider = float(divider)
        self.counts = [0] * NUM_BUCKETS
        self.count = 0
        self.min = 0.0
        self.max = 0.0
        self.sum = 0.0
        self.sum_sq = 0.0

    def record(self, value: float) -> None:
        self.record_n(value, 1)

    def record_n(self, value: float, n: int) -> None:
        if n <= 0:
            return
        if self.count == 0:
            self.min = value
            self.max = value
        elif value < self.min:
            self.min = value
        elif value > self.max:
            self.max = value
        self.count += n
        fv = float(value)
        self.sum += fv * n
        self.sum_sq += fv * fv * n
        self.counts[bucket_index(fv, self.offset, self.divider)] += n

    def merge(self, other: Histogram) -> None:
        """Add ``other`` into this histogram (fortio's ``Transfer``/merge semantics)."""
        if other.offset != self.offset or other.divider != self.divider:
            raise ValueError("cannot merge histograms with different resolution or offset")
        if other.count == 0:
            return
        if self.count == 0:
            self.min, self.max = other.min, other.max
        else:
            self.min = min(self.min, other.min)
            self.max = max(self.max, other.max)
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        for i, c in enumerate(other.counts):
            self.counts[i] += c

    @property
    def avg(self) -> float:
        return self.sum / self.count if self.count else 0.0

    @property
    def stddev(self) -> float:
        if self.count == 0:
            return 0.0
        n = float(self.count)
        sigma = (self.sum_sq - self.sum * self.sum / n) / n
        return math.sqrt(sigma) if sigma > 0 else 0.0

    def data(self) -> list[dict[str, Any]]:
        """Fortio's exported ``Data`` list (spec section 2.3)."""
        out: list[dict[str, Any]] = []
        if self.count == 0:
            return out
        last = max(i for i, c in enumerate(self.counts) if c)
        prev = BUCKETS[0]
        total = 0
        for i in range(last + 1):
            c = self.counts[i]
            if c == 0:
                if i < NUM_VALUES:
                    prev = BUCKETS[i]
                continue
            total += c
            start = self.min if not out else self.divider * prev + self.offset
            if i < NUM_VALUES:
                end = self.divider * BUCKETS[i] + self.offset
                prev = BUCKETS[i]
            else:
                end = self.max
            pct = 100.0 * total / self.count
            out.append({"Start": start, "End": end, "Percent": pct, "Count": c})
        out[-1]["End"] = self.max
        return out

    def export(self, percentiles: Sequence[float] | None = DEFAULT_PERCENTILES) -> dict[str, Any]:
        """Fortio's ``HistogramData`` JSON object (>= 1.38: ``Percentiles`` omitted when empty)."""
        res: dict[str, Any] = {
            "Count": self.count,
            "Min": self.min,
            "Max": self.max,
            "Sum": self.sum,
            "Avg": self.avg,
            "StdDev": self.stddev,
            "Data": self.data() or None,
        }
        if percentiles and self.count > 0:
            res["Percentiles"] = [
                {"Percentile": p, "Value": calc_percentile(res, p)} for p in percentiles
            ]
        return res

    def to_state(self) -> dict[str, Any]:
        """Lossless form (bucket counts and raw sums) for merging across processes."""
        return {
            "offset": self.offset,
            "divider": self.divider,
            "counts": list(self.counts),
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "sum": self.sum,
            "sum_sq": self.sum_sq,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Histogram:
        h = cls(state["offset"], state["divider"])
        counts = list(state["counts"])
        if len(counts) != NUM_BUCKETS:
            raise ValueError(f"histogram state needs {NUM_BUCKETS} buckets, got {len(counts)}")
        h.counts = [int(c) for c in counts]
        h.count = int(state["count"])
        h.min = state["min"]
        h.max = state["max"]
        h.sum = float(state["sum"])
        h.sum_sq = float(state["sum_sq"])
        return h


def calc_percentile(hist: Mapping[str, Any], p: float) -> float:
    """Fortio's ``CalcPercentile`` on an exported ``HistogramData`` (spec section 2.4)."""
    data: Iterable[Mapping[str, Any]] = hist.get("Data") or []
    data = list(data)
    if not data:
        return 0.0
    if p >= 100:
        return hist["Max"]  # type: ignore[no-any-return]
    pp = 100.0 / hist["Count"]
    if p <= pp:
        return hist["Min"]  # type: ignore[no-any-return]
    for b in data:
        if p <= b["Percent"]:
            return b["Start"] + (p - pp) / (b["Percent"] - pp) * (b["End"] - b["Start"])  # type: ignore[no-any-return]
        pp = b["Percent"]
    return hist["Max"]  # type: ignore[no-any-return]


def parse_percentiles(text: str) -> list[float]:
    """Fortio's ``-p`` list: comma separated, each > 0 and < 100 (since 1.35.0)."""
    out: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            p = float(part)
        except ValueError:
            raise ValueError(f"percentile {part!r} is not a number") from None
        if not 0 < p < 100 or math.isnan(p):
            raise ValueError(f"percentile {part} must be > 0 and < 100")
        out.append(p)
    if not out:
        raise ValueError("no percentiles given")
    return out
