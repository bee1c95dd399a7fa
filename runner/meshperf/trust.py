"""Whether a result can be believed: the warnings that apply to one fortio result.

Each warning names a cause that makes the latency or the resource numbers of a test suspect:

- ``behind``: the generator fell behind its schedule. Achieved rate under 99.5 % of the
  requested one, or the send lag (how late requests left against their schedule) p99 above
  ``SENDLAG_P99_S``: the missing or late requests hide latency (coordinated omission).
- ``cpu-pressure``: the machine had runnable tasks waiting for a CPU during the test. Linux
  PSI (``/proc/pressure/cpu``, ``some`` line), the share of the test window in which at least
  one task waited, recorded by the local platform in ``meshperf.pressure``. On a 2-core host
  five processes (generator, two Envoys, echo server, sampler) share two cores, and the
  queueing shows up as tail latency that no mesh caused.
- ``throttled``: a proxy container's CFS quota ran out in some scheduling periods
  (kubernetes, ``container_cpu_cfs_throttled_periods_total`` over
  ``container_cpu_cfs_periods_total``), recorded in ``meshperf.throttled``.
- ``workers``: a proxy runs more worker threads than its CPU limit has cores (kubernetes,
  from the run's ``platform_metadata``: ``proxy_workers`` and ``proxy_resources``): the
  workers then share the quota and get throttled in turn.
- ``errors``: some calls failed; their latency is not the successful calls' latency.
- ``short-window``: the test is shorter than the Prometheus window its CPU/memory needs.
- ``few-samples``: fewer than ``MIN_RESOURCE_SAMPLES`` resource samples of a workload.

A leaf of the results model: it reads ``FortioResult`` and nothing that imports this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshperf.errors import MeshperfError

if TYPE_CHECKING:  # results imports requests; runner.py imports this before its checks
    from meshperf.results import FortioResult

ACHIEVED_MIN_FRACTION = 0.995
# The built-in generator's pacing thread keeps send lag at 0.15-0.25 ms on a quiet 2-core
# host (DESIGN.md); 1 ms late at p99 means it could not keep its schedule.
SENDLAG_P99_S = 0.001
# PSI "some": share of the window with at least one runnable task waiting for a CPU.
CPU_PRESSURE_MAX = 0.10
# Share of CFS periods in which a proxy was throttled.
THROTTLED_MAX = 0.01
MIN_RESOURCE_SAMPLES = 5

PRESSURE_KEY = "pressure"  # meshperf.pressure: {"cpu_some": share, "window_s": s, "source": ..}
THROTTLED_KEY = "throttled"  # meshperf.throttled: {workload: {"throttled": share, "periods": n}}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    achieved_min_fraction: float = ACHIEVED_MIN_FRACTION
    sendlag_p99_s: float = SENDLAG_P99_S
    cpu_pressure_max: float = CPU_PRESSURE_MAX
    throttled_max: float = THROTTLED_MAX
    min_resource_samples: int = MIN_RESOURCE_SAMPLES


DEFAULT = Thresholds()


@dataclasses.dataclass(frozen=True)
class TrustWarning:
    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def assess(
    r: FortioResult,
    *,
    thresholds: Thresholds = DEFAULT,
    window_problem: str | None = None,
    throttled: Mapping[str, Any] | None = None,
) -> list[TrustWarning]:
    """Every warning that applies to ``r`` (a usable result, ``r.problem is None``).

    ``window_problem`` is the Prometheus path's reason a test is too short for its window
    (``meshperf.prom.Timing.window``), when CPU/memory were asked for and could not be had;
    ``throttled`` the CFS throttling read from Prometheus (``meshperf.prom.throttling``), in
    place of the result's own ``meshperf.throttled``.
    """
    out: list[TrustWarning] = []
    requested = r.requested_qps
    if requested is not None and r.count > 0:
        share = r.actual_qps / requested
        if share < thresholds.achieved_min_fraction:
            out.append(
                TrustWarning(
                    "behind",
                    f"achieved {r.actual_qps:.1f} of {requested:g} qps ({100 * share:.1f}%)",
                )
            )
    lag = r.sendlag_histogram
    if lag and lag.get("Count"):
        p99 = r.percentile(99, lag)
        if p99 > thresholds.sendlag_p99_s:
            out.append(
                TrustWarning(
                    "behind",
                    f"send lag p99 {1000 * p99:.2f} ms > {1000 * thresholds.sendlag_p99_s:g} ms",
                )
            )
    pressure = r.meshperf.get(PRESSURE_KEY)
    if isinstance(pressure, Mapping):
        some = _number(pressure.get("cpu_some"))
        if some is not None and some > thresholds.cpu_pressure_max:
            out.append(
                TrustWarning(
                    "cpu-pressure",
                    f"tasks waited for a CPU {100 * some:.1f}% of the test "
                    f"(PSI some > {100 * thresholds.cpu_pressure_max:g}%)",
                )
            )
    if throttled is None:
        throttled = r.meshperf.get(THROTTLED_KEY)
    if isinstance(throttled, Mapping):
        for key, t in sorted(throttled.items()):
            share_t = _number(t.get("throttled")) if isinstance(t, Mapping) else None
            if share_t is not None and share_t > thresholds.throttled_max:
                out.append(
                    TrustWarning(
                        "throttled", f"{key} CPU-throttled in {100 * share_t:.1f}% of periods"
                    )
                )
    out += _workers_over_limit(r)
    mismatch = r.meshperf.get("path_mismatch")
    if mismatch:  # the proxies carried another protocol than the test claims (local platform)
        out.append(TrustWarning("path", str(mismatch)))
    if r.error_count > 0:
        out.append(TrustWarning("errors", f"{r.error_percent:.2f}% of calls failed"))
    if window_problem:
        out.append(TrustWarning("short-window", window_problem))
    for key, metrics in sorted(r.resources.items()):
        samples = metrics.get("samples") if isinstance(metrics, Mapping) else None
        if isinstance(samples, list) and len(samples) < thresholds.min_resource_samples:
            out.append(
                TrustWarning(
                    "few-samples",
                    f"{len(samples)} samples of {key} (< {thresholds.min_resource_samples})",
                )
            )
    return out


def cpu_cores(quantity: Any) -> float | None:
    """A Kubernetes CPU quantity (``2``, ``1.5``, ``500m``) in cores, None if it is not one."""
    text = str(quantity).strip()
    try:
        return float(text[:-1]) / 1000.0 if text.endswith("m") else float(text)
    except ValueError:
        return None


def _workers_over_limit(r: FortioResult) -> list[TrustWarning]:
    meta = (r.run_metadata or {}).get("platform_metadata")
    if not isinstance(meta, Mapping):
        return []
    workers, resources = meta.get("proxy_workers"), meta.get("proxy_resources")
    if not isinstance(workers, Mapping) or not isinstance(resources, Mapping):
        return []
    out: list[TrustWarning] = []
    for role, containers in sorted(workers.items()):
        if not isinstance(containers, Mapping):
            continue
        for name, info in sorted(containers.items()):
            n = info.get("workers") if isinstance(info, Mapping) else None
            limits = ((resources.get(role) or {}).get(name) or {}).get("limits") or {}
            cores = cpu_cores(limits.get("cpu")) if "cpu" in limits else None
            if isinstance(n, int) and cores is not None and n > cores:
                out.append(
                    TrustWarning(
                        "workers",
                        f"{role} {name} runs {n} workers on a {limits['cpu']} CPU limit",
                    )
                )
    return out


def text(warnings: Sequence[TrustWarning]) -> str:
    """The ``warnings`` column: each cause, ``; ``-separated ("" when the result is sound)."""
    return "; ".join(str(w) for w in warnings)


def codes(cell: str) -> list[str]:
    """The causes named in a ``warnings`` cell written by ``text``."""
    return [part.split(":", 1)[0].strip() for part in cell.split(";") if part.strip()]


def pressure_share(start: tuple[float, float], end: tuple[float, float]) -> dict[str, Any] | None:
    """``meshperf.pressure`` from two PSI readings ``(unix time, some total µs)``."""
    elapsed = end[0] - start[0]
    if not elapsed > 0:
        return None
    stalled = max(0.0, end[1] - start[1]) / 1e6
    return {
        "cpu_some": round(min(1.0, stalled / elapsed), 4),
        "window_s": round(elapsed, 3),
        "source": "/proc/pressure/cpu",
    }


def of_file(path: str | Path) -> str:
    """The ``warnings`` text of one result file ("" when it cannot be read: nothing to say)."""
    from meshperf.results import load_file

    try:
        r = load_file(path)
    except MeshperfError:
        return ""
    return text(assess(r)) if r.problem is None else ""
