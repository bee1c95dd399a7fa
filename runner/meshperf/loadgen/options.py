"""What ``fortio load`` is told (``LoadOptions``, ``Target``) and fortio's call plan
(``CallPlan``: how many threads make how many calls at what per-thread rate).

Leaf of the generator: no sockets, no event loop.
"""

from __future__ import annotations

import dataclasses
import os
import random
from urllib.parse import urlsplit

from meshperf import __version__, loadcmd
from meshperf.errors import ConfigError, MeshperfError
from meshperf.goduration import SECOND, format_duration
from meshperf.histogram import DEFAULT_PERCENTILES

VERSION = f"meshperf-{__version__}"
USER_AGENT = f"fortio.org/fortio-{VERSION}"
MAX_PAYLOAD = 256 * 1024  # fortio's -maxpayloadsizekb default
# Auto worker rule: one event loop holds this rate with sub-0.3 ms send lag on a slow core.
ONE_LOOP_MAX_QPS = 4000.0
# -s: gRPC streams per connection. HTTP/2's default SETTINGS_MAX_CONCURRENT_STREAMS of common
# servers is 100 (Go's grpc-go and Envoy's default are higher); more is a typo here.
MAX_STREAMS = 1000
# Threads of one run (c x s for gRPC): each is a scheduled caller in memory; more than the
# connections one machine can open (limits.MAX_CONNECTIONS) is a typo.
MAX_THREADS = 28_232


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

    tls: bool = False

    @classmethod
    def parse(cls, url: str, grpc: bool = False) -> Target:
        """fortio's target forms: ``http[s]://host[:port]/path``, ``tcp://host:port`` and, with
        ``-grpc``, ``host[:port]`` or ``http[s]://host[:port]`` (fgrpc.grpcDestination:
        default port 8079 bare, 80/443 with a scheme; https means TLS)."""
        if grpc:
            return cls._grpc(url)
        if "://" not in url:
            url = "http://" + url  # fortio adds the scheme when missing
        try:
            parts = urlsplit(url)
        except ValueError as e:
            raise ConfigError(f"malformed URL {url!r}: {e}") from None
        if parts.scheme not in ("http", "https", "tcp"):
            raise ConfigError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
        default_port = {"http": 80, "https": 443, "tcp": 0}[parts.scheme]
        try:
            host = parts.hostname
            port = parts.port or default_port
        except ValueError as e:
            raise ConfigError(f"malformed URL {url!r}: {e}") from None
        if not host:
            raise ConfigError(f"malformed URL {url!r}: no host")
        if any(ch in url for ch in " \r\n\t"):
            raise ConfigError(f"malformed URL {url!r}: contains whitespace")
        if not _latin1(url):  # the request line is sent as Latin-1 bytes
            raise ConfigError(f"malformed URL {url!r}: percent-encode non-Latin-1 characters")
        if parts.scheme == "tcp" and not port:
            raise ConfigError(f"malformed URL {url!r}: tcp:// needs a port")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(url, host, port, parts.netloc.rpartition("@")[2], path, parts.scheme == "https")

    @property
    def scheme(self) -> str:
        return self.url.partition("://")[0]

    @classmethod
    def _grpc(cls, dest: str) -> Target:
        tls = dest.startswith("https://")
        bare = dest
        port = 8079  # fnet.DefaultGRPCPort
        for prefix, p in (("http://", 80), ("https://", 443)):
            if dest.startswith(prefix):
                bare, port = dest[len(prefix) :].rstrip("/"), p
        try:
            parts = urlsplit("//" + bare)
            host = parts.hostname
            port = parts.port or port
        except ValueError as e:
            raise ConfigError(f"malformed gRPC destination {dest!r}: {e}") from None
        if not host or parts.path or parts.query:
            raise ConfigError(f"malformed gRPC destination {dest!r}: expected host:port")
        shown = f"[{host}]" if ":" in host else host
        return cls(dest, host, port, f"{shown}:{port}", "", tls)


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
    # Protocols and connection handling (fortio's flags of the same names).
    h2: bool = False  # -h2: HTTP/2 (h2c prior knowledge on http://)
    grpc: bool = False  # -grpc: gRPC health check, or fgrpc.PingServer/Ping with -ping
    ping: bool = False
    streams: int = 1  # -s: gRPC streams (fortio threads) per connection
    health_service: str = ""  # -healthservice
    grpc_ping_delay_ns: int = 0  # -grpc-ping-delay
    payload: str = ""  # -payload: a fixed payload text (TCP: what is echoed)
    keepalive: bool = True  # -keepalive=false: a new connection per call (HTTP/1.1)
    connection_reuse: tuple[int, int] | None = None  # -connection-reuse MIN:MAX
    cacert: str = ""  # -cacert: CA bundle for https:// (and gRPC over TLS)

    def body(self) -> bytes:
        """What each call sends: ``-payload-size`` random bytes, else ``-payload`` as UTF-8
        (fortio's PayloadUTF8), else nothing."""
        return payload_bytes(self.payload_size) if self.payload_size else self.payload.encode()

    def text_payload(self) -> str:
        """The payload as the string a gRPC PingMessage carries: fortio's PayloadUTF8 (invalid
        UTF-8 dropped from ``-payload-size``'s random bytes, then ``X`` up to the same byte
        length; fhttp/http_client.go)."""
        raw = self.body()
        text = raw.decode("utf-8", errors="ignore")
        return text + "X" * (len(raw) - len(text.encode()))

    @property
    def protocol(self) -> str:
        """``grpc``, ``tcp`` or ``http`` (HTTP/1.1 or, with ``h2``, HTTP/2)."""
        if self.grpc:
            return "grpc"
        return "tcp" if self.url.startswith("tcp://") else "http"

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
            try:
                loadcmd.parse_header(h)  # the one rule for a header, shared with runner.py
            except ValueError as e:
                raise ConfigError(f"-H: {e}") from None
            if not _latin1(h):
                raise ConfigError(f"bad -H {h!r}: header values are sent as Latin-1 bytes")
        if self.grpc and self.url.startswith("tcp://"):
            raise ConfigError("-grpc with a tcp:// target: use one or the other")
        target = Target.parse(self.url, self.grpc)
        self._check_protocol(target)

    def _check_protocol(self, target: Target) -> None:
        """Flags that make no sense together are refused before anything starts (fortio
        ignores most of them silently; a benchmark would then measure something else)."""
        proto = self.protocol
        if not self.grpc:
            for flag, used in (
                ("-ping", self.ping),
                ("-s", self.streams != 1),
                ("-healthservice", bool(self.health_service)),
                ("-grpc-ping-delay", bool(self.grpc_ping_delay_ns)),
            ):
                if used:
                    raise ConfigError(f"{flag} applies to -grpc load tests only")
        elif not self.ping and self.grpc_ping_delay_ns:
            raise ConfigError("-grpc-ping-delay applies to -ping only")
        if not 1 <= self.streams <= MAX_STREAMS:
            raise ConfigError(f"-s must be in [1, {MAX_STREAMS}], got {self.streams}")
        if self.connections * self.streams > MAX_THREADS:
            raise ConfigError(
                f"-c {self.connections} x -s {self.streams} is "
                f"{self.connections * self.streams} threads, above the bound of {MAX_THREADS}"
            )
        if self.grpc_ping_delay_ns < 0:
            raise ConfigError("-grpc-ping-delay must be >= 0")
        if proto == "tcp":
            for flag, used in (("-h2", self.h2), ("-H", bool(self.headers))):
                if used:
                    raise ConfigError(f"{flag} is HTTP; a tcp:// target carries no HTTP")
        if self.h2 and self.grpc:
            raise ConfigError("-h2 with -grpc: gRPC always runs over HTTP/2")
        http1 = proto == "http" and not self.h2
        if not self.keepalive and not http1:
            raise ConfigError("-keepalive=false applies to HTTP/1.1 only (fortio's fast client)")
        if self.connection_reuse is not None:
            low, high = self.connection_reuse
            if not http1:
                raise ConfigError("-connection-reuse applies to HTTP/1.1 only")
            if not 1 <= low <= high:
                raise ConfigError(f"-connection-reuse {low}:{high}: expected 1 <= MIN <= MAX")
        if self.cacert:
            if proto == "tcp":
                raise ConfigError("-cacert: a tcp:// target has no TLS")
            if proto == "http" and not target.tls:
                raise ConfigError(f"-cacert needs an https:// target, got {self.url}")
            try:
                loadcmd.check_cacert(self.cacert)
            except ValueError as e:
                raise ConfigError(f"-{e}") from None
        if proto == "http" and self.payload and self.payload_size:
            raise ConfigError("-payload and -payload-size: give one")


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
        # fortio's gRPC runner: NumThreads *= Streams before the periodic runner sees it.
        threads = o.connections * (o.streams if o.grpc else 1)
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
