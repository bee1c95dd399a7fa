"""CPU and memory of the local workloads, sampled with psutil while a test runs.

The numbers land under the same names as the Prometheus path (``cpu_mili`` = millicores,
``mem_MB`` = RSS, the working-set-like figure), plus ``mem_uss_MB``: the memory a process
would free on exit, which for Envoy excludes the ~50 MB of shared binary pages that RSS
counts. A workload is a process and its descendants (e.g. a load generator's workers).

Beside the workloads, each tick reads the machine's CPU pressure (Linux PSI,
``/proc/pressure/cpu``): ``pressure(window)`` turns the growth of its ``some total`` over the
test window into the share of the window in which a task waited for a CPU
(``meshperf.trust`` warns on it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

import psutil

from meshperf import trust

INTERVAL = 0.5  # seconds between samples
_MB = 1024 * 1024
PSI_CPU = "/proc/pressure/cpu"


def read_cpu_pressure(path: str = PSI_CPU) -> float | None:
    """``some total`` of a PSI file in microseconds, or None without PSI (kernel < 4.20,
    ``psi=0``, macOS)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("some "):
                    for field in line.split()[1:]:
                        name, _, value = field.partition("=")
                        if name == "total":
                            return float(value)
    except (OSError, ValueError):
        return None
    return None


class _Workload:
    """One workload's process tree; cpu_percent() is primed per process on first sight."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._known: dict[int, psutil.Process] = {}

    def _tree(self) -> list[psutil.Process]:
        procs = [self.root]
        with contextlib.suppress(psutil.Error):
            procs += self.root.children(recursive=True)
        return procs

    def prime(self) -> None:
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
                self._known[p.pid] = p

    def sample(self) -> tuple[float, float, float] | None:
        """(cpu millicores since last call, RSS MB, USS MB), or None once the root is gone."""
        cpu = rss = uss = 0.0
        alive = False
        for p in self._tree():
            # Reuse the Process object that holds the previous cpu_percent() reading.
            known = self._known.setdefault(p.pid, p)
            try:
                cpu += known.cpu_percent(None) * 10.0  # 100 % of one core = 1000 millicores
                info = known.memory_full_info()
                rss += info.rss / _MB
                uss += info.uss / _MB
                alive = alive or known.pid == self.root.pid
            except psutil.Error:
                continue
        return (cpu, rss, uss) if alive else None


def summarize(samples: list[list[float]]) -> dict[str, Any]:
    """min/avg/max of each column of ``[[t, cpu, rss, uss], ...]`` in the platform.py shape."""

    def stats(col: int) -> dict[str, float]:
        values = [s[col] for s in samples]
        return {
            "min": round(min(values), 3),
            "avg": round(sum(values) / len(values), 3),
            "max": round(max(values), 3),
        }

    return {
        "cpu_mili": stats(1),
        "mem_MB": stats(2),
        "mem_uss_MB": stats(3),
        "samples": [
            [round(s[0], 3), round(s[1], 3), round(s[2], 3), round(s[3], 3)] for s in samples
        ],
    }


class Sampler:
    """Samples named workloads every ``interval`` seconds on a background thread."""

    def __init__(self, workloads: Mapping[str, int], interval: float = INTERVAL) -> None:
        self.interval = interval
        self._workloads: dict[str, _Workload] = {}
        for key, pid in workloads.items():
            with contextlib.suppress(psutil.Error):
                self._workloads[key] = _Workload(pid)
        self.samples: dict[str, list[list[float]]] = {key: [] for key in self._workloads}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pressure_samples: list[tuple[float, float]] = []
        self.psi_path = PSI_CPU

    def _read_pressure(self) -> None:
        total = read_cpu_pressure(self.psi_path)
        if total is not None:
            self.pressure_samples.append((time.time(), total))

    def add(self, key: str, pid: int) -> None:
        """Add a workload (e.g. the load generator once it has been started)."""
        with contextlib.suppress(psutil.Error):
            workload = _Workload(pid)
            workload.prime()
            self._workloads[key] = workload
            self.samples.setdefault(key, [])

    def start(self) -> None:
        for w in self._workloads.values():
            w.prime()
        self._read_pressure()
        self._thread = threading.Thread(target=self._run, name="meshperf-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval
            now = time.time()
            for key, workload in list(self._workloads.items()):
                value = workload.sample()
                if value is not None:
                    self.samples[key].append([now, *value])
            self._read_pressure()

    def stop(self) -> None:
        running = not self._stop.is_set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if running:
            self._read_pressure()  # the reading that closes the last test window

    def pressure(self, window: tuple[float, float] | None = None) -> dict[str, Any] | None:
        """``meshperf.pressure`` over ``window`` (unix start, end), or None without PSI.

        The readings that bracket the window are used: the last at or before its start and
        the first at or after its end, each give or take half a sampling interval, so the
        share is over the test to within that at each end.
        """
        readings = self.pressure_samples
        if len(readings) < 2:
            return None
        if window is None:
            return trust.pressure_share(readings[0], readings[-1])
        start, end = window
        slack = self.interval / 2
        before = [r for r in readings if r[0] <= start + slack]
        after = [r for r in readings if r[0] >= end - slack]
        first = before[-1] if before else readings[0]
        last = after[0] if after else readings[-1]
        return trust.pressure_share(first, last)

    def resources(self, window: tuple[float, float] | None = None) -> dict[str, Any]:
        """The ``resources`` block; samples restricted to ``window`` (unix start, end) if given.

        A sample at time t covers (t - interval, t], so the first one inside the window is the
        first whose whole interval is inside it.
        """
        out: dict[str, Any] = {}
        for key, samples in self.samples.items():
            chosen = samples
            if window is not None:
                start, end = window
                inside = [
                    s
                    for s in samples
                    if s[0] - self.interval >= start - 0.05 and s[0] <= end + 0.05
                ]
                # A test shorter than two intervals still reports what was seen.
                chosen = inside or samples
            if chosen:
                out[key] = summarize(chosen)
        return out
