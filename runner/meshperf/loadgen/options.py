"""What ``fortio load`` is told (``LoadOptions``, ``Target``) and fortio's call plan
(``CallPlan``: how many threads make how many calls at what per-thread rate).

Leaf of the generator: no sockets, no event loop.
"""

from __future__ import annotations

import dataclasses
import os
import random
from urllib.parse import urlsplit

from meshperf import __version__
from meshperf.errors import ConfigError, MeshperfError
from meshperf.goduration import SECOND, format_duration
from meshperf.histogram import DEFAULT_PERCENTILES

VERSION = f"meshperf-{__version__}"
USER_AGENT = f"fortio.org/fortio-{VERSION}"
MAX_PAYLOAD = 256 * 1024  # fortio's -maxpayloadsizekb default
# Auto worker rule: one event loop holds this rate with sub-0.3 ms send lag on a slow core.
ONE_LOOP_MAX_QPS = 4000.0


class InterruptedRun(MeshperfError):
    """Raised inside a worker to abort warmup on Ctrl-C/SIGTERM."""


class WarmupError(MeshperfError):
    """A warmup call failed (socket error or non-2xx code) and initial errors are not allowed."""


@dataclasses.dataclass(frozen=True)
class Target:
    """A parsed ``http://`` URL: where to connect and what to send."""

    url: str
    host: str
    port: int
    host_header: str
    request_target: str

    @classmethod
    def parse(cls, url: str) -> Target:
        if "://" not in url:
            url = "http://" + url  # fortio adds the scheme when missing
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise ConfigError(f"malformed URL {url!r}: {e}") from None
        if parts.scheme == "https":
            raise ConfigError(
                "https URLs are not supported by the built-in load generator; "
                "use http:// or a real fortio binary"
            )
        if parts.scheme != "http":
            raise ConfigError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
        try:
            host = parts.hostname
            port = parts.port or 80
        except ValueError as e:
            raise ConfigError(f"malformed URL {url!r}: {e}") from None
        if not host:
            raise ConfigError(f"malformed URL {url!r}: no host")
        if any(ch in url for ch in " \r\n\t"):
            raise ConfigError(f"malformed URL {url!r}: contains whitespace")
        if not _latin1(url):  # the request line is sent as Latin-1 bytes
            raise ConfigError(f"malformed URL {url!r}: percent-encode non-Latin-1 characters")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(url, host, port, parts.netloc.rpartition("@")[2], path)


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """Everything ``fortio load`` is told, with fortio's defaults."""

    url: str
    connections: int = 4
    qps: float = 8.0  # total across connections; <= 0 = as fast as possible
    duration_ns: int = 5 * SECOND  # 0 = until interrupted
    exactly: int = 0  # -n
    resolution: float = 0.001
    offset_ns: int = 0
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    uniform: bool = False
    jitter: bool = False
    nocatchup: bool = False
    labels: str | None = None  # None = fortio's default "<url minus scheme> , <hostname>"
    headers: tuple[str, ...] = ()
    payload_size: int = 0
    timeout_ns: int = 3 * SECOND
    allow_initial_errors: bool = False
    run_id: int = 0
    workers: int = 0  # 0 = automatic (see auto_workers)
    keep_samples: bool = False  # keep raw latencies (tests of the merge)

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ConfigError(f"-c must be >= 1, got {self.connections}")
        if self.duration_ns < 0:
            raise ConfigError(f"-t must be >= 0, got {format_duration(self.duration_ns)}")
        if self.exactly < 0:
            raise ConfigError(f"-n must be >= 0, got {self.exactly}")
        if not self.resolution > 0:
            raise ConfigError(f"-r must be > 0, got {self.resolution}")
        if not 0 <= self.payload_size <= MAX_PAYLOAD:
            raise ConfigError(
                f"-payload-size must be in [0, {MAX_PAYLOAD}], got {self.payload_size}"
            )
        if self.timeout_ns <= 0:
            raise ConfigError("-timeout must be > 0")
        if self.workers < 0:
            raise ConfigError(f"-workers must be >= 0, got {self.workers}")
        if self.qps != self.qps or self.qps in (float("inf"), float("-inf")):
            raise ConfigError(f"-qps must be a finite number, got {self.qps}")
        for h in self.headers:
            name, sep, _ = h.partition(":")
            if not sep or not name.strip() or any(c in h for c in "\r\n"):
                raise ConfigError(f"bad -H {h!r}: expected 'Name: value'")
            if not _latin1(h):
                raise ConfigError(f"bad -H {h!r}: header values are sent as Latin-1 bytes")
        Target.parse(self.url)


@dataclasses.dataclass(frozen=True)
class CallPlan:
    """Fortio's call plan (``periodic.runQPSSetup``): threads actually used and calls per
    thread (0 = unbounded). Not ``meshperf.plan.Plan``, the runner's matrix of tests."""

    threads: int
    calls: tuple[int, ...]
    per_thread_qps: float  # 0 = max speed
    deadline: bool  # threads stop at start + duration (not with -n)
    spread: bool  # paced with a duration: call i due at (i + i/(calls-1)) / perThreadQPS
    duration_ns: int
    interval_ns: int  # per-thread interval (qps mode), for -uniform

    @classmethod
    def make(cls, o: LoadOptions) -> CallPlan:
        threads = o.connections
        use_qps = o.qps > 0
        has_duration = o.duration_ns > 0
        if use_qps and (o.exactly > 0 or has_duration):
            # fortio's runQPSSetup: at least 2 calls, at least 2 calls per thread; with -n the
            # remainder goes to thread 0, with a duration it is dropped.
            planned = o.exactly or int(o.qps * o.duration_ns / SECOND)
            if planned < 2:
                planned, threads = 2, 1
            if 2 * threads > planned:
                threads = planned // 2
            per = planned // threads
            extra = max(0, o.exactly - per * threads) if o.exactly else 0
            calls = tuple(per + (extra if k == 0 else 0) for k in range(threads))
        elif o.exactly > 0:
            # Max speed: N/c each, remainder to thread 0; never more threads than calls
            # (fortio would let a thread with no share make one call anyway).
            threads = min(threads, o.exactly)
            per, rem = divmod(o.exactly, threads)
            calls = tuple(per + (rem if k == 0 else 0) for k in range(threads))
        else:
            calls = (0,) * threads
        ptq = o.qps / threads if use_qps else 0.0
        interval = int(SECOND / ptq) if ptq > 0 else 0
        deadline = has_duration and not o.exactly
        return cls(threads, calls, ptq, deadline, use_qps and has_duration, o.duration_ns, interval)


def auto_workers(o: LoadOptions, threads: int) -> int:
    """Worker processes when not given: 1 for paced runs one loop holds, else one per core.

    A paced run up to ``ONE_LOOP_MAX_QPS`` stays in one process (one clock, no IPC, the
    lowest send lag); max-speed and faster runs use every core, never more than the threads.
    """
    if 0 < o.qps <= ONE_LOOP_MAX_QPS:
        return 1
    return max(1, min(os.cpu_count() or 1, threads))


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def payload_bytes(n: int) -> bytes:
    """``-payload-size``: incompressible, reproducible bytes."""
    return random.Random(n).randbytes(n)
