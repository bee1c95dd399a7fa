"""The statistics behind compare.py's verdicts: Welch intervals, histogram bootstrap, geomean.

A leaf module (numpy, and meshperf.histogram's bucket rule only). Two ways to put an
interval on the change of a metric between two sides:

- ``welch_change``: with several repeats per side, from the variation *between* repeats,
  which is the dominant variance of a benchmark (placement, warm-up, the neighbours on the
  machine). Welch's two-sample t interval of the difference of the means of log(value), so
  the interval is one of the ratio new/base and is symmetric in "faster" and "slower".
  pyperf's ``is_significant`` (pyperf/_utils.py) is the model: a two-sample, two-tailed
  t-test at 95%. Welch's form is used instead of pyperf's pooled variance because a side's
  spread need not equal the other's (a regression often adds jitter). benchstat
  (golang.org/x/perf/benchmath/anone.go) uses the Mann-Whitney U test, whose smallest
  possible p with 3 values per side is 0.1 (its ``uTestMinP[3]``): it could never call a
  3-repeat run different at alpha 0.05, hence the t interval here.
- ``bootstrap_percentiles``: with a single run per side, a bootstrap of the run's own
  histogram (multinomial resampling of the bucket counts, then fortio's percentile rule).
  It sees only the sampling noise inside one run, treats calls as independent, and knows
  nothing of run-to-run variation: "within-run only, optimistic".

Every random draw comes from a generator seeded with ``SEED`` so a comparison is repeatable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SEED = 20260314
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


# -- Student's t quantile (no scipy in the environment) ---------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (possibly fractional) degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (bisection on ``t_cdf``; 1e-10 is plenty here)."""
    if not 0.0 < q < 1.0 or not df > 0:
        raise ValueError(f"t quantile needs 0 < q < 1 and df > 0, got q={q}, df={df}")
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-10:
            break
    return (lo + hi) / 2.0


# -- intervals of a change ------------------------------------------------------------------


def geomean(values: Sequence[float]) -> float:
    """Geometric mean of positive values (benchstat's and pyperf's summary of ratios)."""
    if not values or any(not v > 0 for v in values):
        raise ValueError("geometric mean needs positive values")
    return math.exp(math.fsum(math.log(v) for v in values) / len(values))


def welch(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean(b) - mean(a), low, high): Welch's t interval of the difference of means."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError("Welch's interval needs at least 2 values per side")
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    va = math.fsum((x - ma) ** 2 for x in a) / (na - 1)
    vb = math.fsum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    diff = mb - ma
    if se2 <= 0.0:
        # Identical values on both sides: no spread, so the interval is the point.
        return diff, diff, diff
    # Welch-Satterthwaite degrees of freedom.
    den = (va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1)
    df = se2**2 / den if den > 0 else float(na + nb - 2)
    half = t_quantile(0.5 + confidence / 2.0, df) * math.sqrt(se2)
    return diff, diff - half, diff + half


def welch_ratio(
    base: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(ratio, low, high) of new/base from Welch's interval on log values (all > 0)."""
    la = [math.log(v) for v in base]
    lb = [math.log(v) for v in new]
    d, lo, hi = welch(la, lb, confidence)
    return math.exp(d), math.exp(lo), math.exp(hi)


# -- fortio histograms ------------------------------------------------------------------------


def bucket_counts(hist: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(starts, ends, counts) of an exported fortio ``HistogramData``.

    ``Count`` per bucket is in fortio >= 1.x exports; older ones only have the cumulative
    ``Percent``, from which the counts are recovered.
    """
    data = list(hist.get("Data") or [])
    total = int(hist.get("Count") or 0)
    starts = np.array([float(b["Start"]) for b in data])
    ends = np.array([float(b["End"]) for b in data])
    if data and all("Count" in b for b in data):
        counts = np.array([int(b["Count"]) for b in data], dtype=np.int64)
    else:
        cum = np.rint(np.array([float(b["Percent"]) for b in data]) * total / 100.0)
        counts = np.diff(np.concatenate([[0.0], cum])).astype(np.int64)
    return starts, ends, counts


def percentiles_from_counts(
    starts: np.ndarray,
    ends: np.ndarray,
    counts: np.ndarray,
    ps: Sequence[float],
    vmin: float,
    vmax: float,
) -> np.ndarray:
    """Fortio's ``CalcPercentile`` (meshperf.histogram.calc_percentile), vectorised.

    ``counts`` is (resamples, buckets); returns (resamples, len(ps)). The rule: p at or below
    one call's share is the minimum, at 100 the maximum, else a linear interpolation inside
    the first bucket whose cumulative percent reaches p, from the previous cumulative percent
    (the first one's being one call's share).
    """
    counts = np.atleast_2d(counts)
    n = counts.sum(axis=1, keepdims=True).astype(float)
    cum = np.cumsum(counts, axis=1) * 100.0 / n
    first = 100.0 / n[:, 0]
    out = np.empty((counts.shape[0], len(ps)))
    rows = np.arange(counts.shape[0])
    k = counts.shape[1]
    for j, p in enumerate(ps):
        if p >= 100.0:
            out[:, j] = vmax
            continue
        idx = np.minimum((cum < p).sum(axis=1), k - 1)
        prev = np.where(idx > 0, cum[rows, np.maximum(idx - 1, 0)], first)
        cur = cum[rows, idx]
        width = np.where(cur > prev, cur - prev, 1.0)
        value = starts[idx] + (p - prev) / width * (ends[idx] - starts[idx])
        out[:, j] = np.where(p <= first, vmin, value)
    return out


def bootstrap_percentiles(
    hist: Mapping[str, Any],
    ps: Sequence[float],
    rng: np.random.Generator,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> np.ndarray:
    """(resamples, len(ps)) percentiles, in the histogram's unit, of multinomial resamples."""
    starts, ends, counts = bucket_counts(hist)
    total = int(counts.sum())
    if total <= 0:
        raise ValueError("an empty histogram has no percentiles to resample")
    draws = rng.multinomial(total, counts / total, size=resamples)
    return percentiles_from_counts(starts, ends, draws, ps, float(hist["Min"]), float(hist["Max"]))


def bootstrap_proportion(
    successes: int, total: int, rng: np.random.Generator, resamples: int = BOOTSTRAP_RESAMPLES
) -> np.ndarray:
    """Resampled percentages of a count out of ``total`` (the error share of one run)."""
    if total <= 0:
        raise ValueError("a proportion needs a total > 0")
    return 100.0 * rng.binomial(total, successes / total, size=resamples) / total


def bootstrap_mean(
    values: Sequence[float], rng: np.random.Generator, resamples: int = BOOTSTRAP_RESAMPLES
) -> np.ndarray:
    """Resampled means of ``values`` (a run's CPU or memory samples)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("no values to resample")
    picks = rng.integers(0, arr.size, size=(resamples, arr.size))
    return np.asarray(arr[picks].mean(axis=1))


def interval_of(
    base: np.ndarray, new: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile-bootstrap interval of new - base (both arrays of resampled values)."""
    diff = np.asarray(new) - np.asarray(base)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(diff, [tail, 1.0 - tail])
    return float(lo), float(hi)


def ratio_interval_of(
    base: np.ndarray, new: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile-bootstrap interval of new / base (base resamples all > 0)."""
    ratio = np.asarray(new) / np.asarray(base)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratio, [tail, 1.0 - tail])
    return float(lo), float(hi)


def rng(seed: int = SEED) -> np.random.Generator:
    return np.random.default_rng(seed)


def mean_interval(
    values: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean, low, high): Student's t interval of the mean (paired differences, say)."""
    n = len(values)
    if n < 2:
        raise ValueError("an interval of the mean needs at least 2 values")
    m = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - m) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return m, m - half, m + half
