"""A real Prometheus with known cAdvisor-style series, for tests.

``Container`` describes one container's CPU counter and working-set gauge (piecewise constant
rates and levels, a sample phase, a late start, a label scheme). ``Dataset.write_openmetrics``
turns a set of them into an OpenMetrics file; ``running_prometheus`` backfills it with
``promtool tsdb create-blocks-from openmetrics`` and serves it from ``prometheus`` on a free
127.0.0.1 port until the ``with`` block ends (on every exit path).

The ``expected_*`` helpers say what Prometheus must answer for these series: a gauge's last
sample at or before t, and rate() as Prometheus 2.x computes it (samples in [t-range, t],
extrapolated to the range's ends unless a gap is more than 1.1 average intervals). Tests
compare meshperf's aggregation of real answers with sums of these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import requests

from conftest import free_port

PROMETHEUS = "prometheus"
PROMTOOL = "promtool"
LOOKBACK_S = 300.0  # Prometheus' default query lookback delta (5m)
CPU_METRIC = "container_cpu_usage_seconds_total"
MEM_METRIC = "container_memory_working_set_bytes"
MB = 1024 * 1024


def have_prometheus() -> bool:
    return shutil.which(PROMETHEUS) is not None and shutil.which(PROMTOOL) is not None


@dataclasses.dataclass(frozen=True)
class Container:
    """One container's series. Times are seconds relative to the dataset's start."""

    pod: str
    container: str
    cores: tuple[tuple[float, float], ...] = ((0.0, 0.0),)  # (from_s, cores), ascending
    mem_mb: tuple[tuple[float, float], ...] = ((0.0, 0.0),)  # (from_s, MB), ascending
    namespace: str = "twopods"
    job: str = "kubernetes-cadvisor"
    scheme: str = "new"  # "new": pod/container, "old": pod_name/container_name, "both"
    phase_s: float = 0.0  # offset of this target's scrapes from the dataset's grid
    first_s: float = 0.0  # no samples before this: a pod that appears late
    metrics: tuple[str, ...] = (CPU_METRIC, MEM_METRIC)
    extra_labels: tuple[tuple[str, str], ...] = ()
    cpu_base: float = 5000.0  # large, so rate() never extrapolates the counter to zero
    # What the test expects: the resource key it counts towards, None if it must not count.
    expect_key: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("new", "old", "both"):
            raise ValueError(f"unknown scheme {self.scheme!r}")

    def labels(self) -> dict[str, str]:
        out = {"namespace": self.namespace, "job": self.job}
        if self.scheme in ("new", "both"):
            out |= {"pod": self.pod, "container": self.container}
        if self.scheme in ("old", "both"):
            out |= {"pod_name": self.pod, "container_name": self.container}
        out |= dict(self.extra_labels)
        return out

    def cpu_seconds(self, t: float) -> float:
        """The counter at t: base plus the integral of the piecewise-constant core count."""
        total = self.cpu_base
        for i, (frm, cores) in enumerate(self.cores):
            to = self.cores[i + 1][0] if i + 1 < len(self.cores) else math.inf
            if t > frm:
                total += cores * (min(t, to) - frm)
        return total

    def mem_bytes(self, t: float) -> float:
        level = 0.0
        for frm, mb in self.mem_mb:
            if t >= frm:
                level = mb
        return level * MB

    def sample_times(self, duration_s: float, interval_s: float) -> list[float]:
        out: list[float] = []
        k = 0
        while True:
            t = self.phase_s + k * interval_s
            if t > duration_s:
                return out
            if t >= self.first_s:
                out.append(t)
            k += 1


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Containers sampled every ``interval_s`` from ``t0`` (unix s) for ``duration_s``."""

    t0: int
    duration_s: float
    interval_s: float
    containers: tuple[Container, ...]

    def times(self, c: Container) -> list[float]:
        return c.sample_times(self.duration_s, self.interval_s)

    def write_openmetrics(self, path: Path) -> None:
        lines: list[str] = []
        # A metric's series stay together, each in time order, as the format requires.
        for metric in (CPU_METRIC, MEM_METRIC):
            for c in self.containers:
                if metric not in c.metrics:
                    continue
                labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(c.labels().items()))
                for t in self.times(c):
                    v = c.cpu_seconds(t) if metric == CPU_METRIC else c.mem_bytes(t)
                    lines.append(f"{metric}{{{labels}}} {v!r} {self.t0 + t:.3f}")
        lines.append("# EOF")
        path.write_text("\n".join(lines) + "\n")

    def expected_gauge(self, c: Container, t: float) -> float | None:
        """The working set Prometheus reports at t (relative): the last sample within lookback."""
        if MEM_METRIC not in c.metrics:
            return None
        before = [s for s in self.times(c) if t - LOOKBACK_S < s <= t]
        return c.mem_bytes(before[-1]) if before else None

    def expected_rate(self, c: Container, t: float, range_s: float) -> float | None:
        """rate(counter[range_s]) at t (relative), as Prometheus 2.x computes it."""
        if CPU_METRIC not in c.metrics:
            return None
        pts = [(s, c.cpu_seconds(s)) for s in self.times(c) if t - range_s <= s <= t]
        if len(pts) < 2:
            return None
        delta = pts[-1][1] - pts[0][1]  # the counters here never reset
        to_start = pts[0][0] - (t - range_s)
        to_end = t - pts[-1][0]
        sampled = pts[-1][0] - pts[0][0]
        avg = sampled / (len(pts) - 1)
        if delta > 0 and pts[0][1] >= 0:
            to_start = min(to_start, sampled * (pts[0][1] / delta))
        threshold = avg * 1.1
        interval = sampled
        interval += to_start if to_start < threshold else avg / 2
        interval += to_end if to_end < threshold else avg / 2
        return delta * (interval / sampled) / range_s


def config_yaml(scrape_interval: str | None, job_intervals: Mapping[str, str]) -> str:
    """A config that scrapes nothing: jobs exist only so their intervals show in the config API."""
    lines: list[str] = []
    if scrape_interval is not None:
        lines += ["global:", f"  scrape_interval: {scrape_interval}"]
    lines.append("scrape_configs:" if job_intervals else "scrape_configs: []")
    for job, interval in job_intervals.items():
        lines += [f"  - job_name: {json.dumps(job)}", f"    scrape_interval: {interval}",
                  "    static_configs: []"]
    return "\n".join(lines) + "\n"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextlib.contextmanager
def running_prometheus(
    workdir: Path,
    dataset: Dataset,
    *,
    scrape_interval: str | None = "15s",
    job_intervals: Mapping[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[str]:
    """Backfill ``dataset`` and serve it; yields the base URL (``http://127.0.0.1:<port>``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    om = workdir / "series.om"
    dataset.write_openmetrics(om)
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)],
        check=True, capture_output=True, timeout=60,
    )
    config = workdir / "prometheus.yml"
    config.write_text(config_yaml(scrape_interval, job_intervals or {}))
    log_path = workdir / "prometheus.log"
    last_error = ""
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{port}",
                 # the backfilled blocks are hours old: keep them
                 "--storage.tsdb.retention.time=10y"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + ready_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.05)
            else:
                last_error = log_path.read_text(errors="replace")[-2000:]
                _stop(proc)
                continue
            yield url
            return
        finally:
            _stop(proc)
    raise RuntimeError(f"prometheus did not become ready:\n{last_error}")
