"""The built-in HTTP load generator: fortio's ``load`` semantics, scheduling and result format.

Used where fortio is not installed (the local platform runs ``runner/loadgen.py load`` exactly
as it would run ``fortio load``). The result is a fortio >= 1.38 HTTP result dict (spec
``fortio-format.md`` sections 1.2-1.4) plus one extra top-level histogram,
``SendLagHistogram``: how late (seconds) each request left against its schedule.

How it keeps time: every connection is an asyncio ``Protocol`` (uvloop when installed);
latency is ``perf_counter_ns`` from just before the request is written to the moment the
last byte of the response is parsed. Asyncio timers are about 1 ms coarse, so sends are paced
by a Linux ``timerfd`` armed at the absolute nanosecond of the next due call (with the
thread's timer slack lowered to 1 ns); the event loop wakes on it like on any socket. Where
``timerfd`` is missing, a coarse ``call_later`` plus a short spin does the same job.

Scheduling is fortio's ``periodic.runOne``: planned calls ``floor(qps*t)`` split over the
threads (threads reduced when ``2*c`` exceeds that), call *i* of a thread due at
``(i + i/(calls-1)) / perThreadQPS`` seconds after its start, ``-uniform`` delays thread *k*
of *N* by ``k/N`` of its interval, ``-jitter`` adds +-10% to each positive sleep, late calls
fire at once (catch-up) unless ``-nocatchup`` skips them.

Several worker processes (``workers``) share the connections round-robin; their histograms are
merged exactly (bucket counts and raw sums) with ``Histogram.to_state/from_state/merge``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import heapq
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import socket
import sys
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from meshperf import __version__, fortiojson
from meshperf.echo import SpinTimer, TimerFd, libc, new_event_loop
from meshperf.errors import ConfigError, MeshperfError
from meshperf.goduration import SECOND, format_duration
from meshperf.histogram import BUCKETS, DEFAULT_PERCENTILES, NUM_VALUES, Histogram

VERSION = f"meshperf-{__version__}"
USER_AGENT = f"fortio.org/fortio-{VERSION}"
MAX_PAYLOAD = 256 * 1024  # fortio's -maxpayloadsizekb default
# Auto worker rule: one event loop holds this rate with sub-0.3 ms send lag on a slow core.
ONE_LOOP_MAX_QPS = 4000.0
_now = time.perf_counter_ns
_LAST_EDGE = BUCKETS[-1]


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
class Plan:
    """Fortio's call plan: threads actually used and calls per thread (0 = unbounded)."""

    threads: int
    calls: tuple[int, ...]
    per_thread_qps: float  # 0 = max speed
    deadline: bool  # threads stop at start + duration (not with -n)
    spread: bool  # paced with a duration: call i due at (i + i/(calls-1)) / perThreadQPS
    duration_ns: int
    interval_ns: int  # per-thread interval (qps mode), for -uniform

    @classmethod
    def make(cls, o: LoadOptions) -> Plan:
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


# --------------------------------------------------------------------------- the worker


def _chunked_end(data: bytes | bytearray, pos: int) -> int:
    """End offset of a complete chunked body starting at ``pos``, or -1 if incomplete."""
    n = len(data)
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError("bad chunk size") from None
        pos = eol + 2
        if size == 0:
            # Trailers (usually none) end with an empty line.
            end = data.find(b"\r\n\r\n", pos - 2)
            return -1 if end < 0 else end + 4
        pos += size + 2
        if pos > n:
            return -1


class Stats:
    """One worker's measurements, mergeable across processes."""

    def __init__(self, o: LoadOptions) -> None:
        off = o.offset_ns / SECOND
        self.durations = Histogram(off, o.resolution)
        self.errors = Histogram(off, o.resolution)
        self.send_lag = Histogram(0.0, o.resolution)
        self.connect = Histogram(off, o.resolution)
        # (code, bytes read, header bytes) -> calls: one dict update per call instead of three
        # histogram records; Sizes/HeaderSizes are built from it at the end (integers, exact).
        self.outcomes: dict[tuple[int, int, int], int] = {}
        self.samples: list[float] | None = [] if o.keep_samples else None

    def state(self) -> dict[str, Any]:
        sizes: Counter[int] = Counter()
        header_sizes: Counter[int] = Counter()
        codes: Counter[int] = Counter()
        for (code, size, head), n in self.outcomes.items():
            codes[code] += n
            sizes[size] += n
            header_sizes[head] += n
        return {
            "durations": self.durations.to_state(),
            "errors": self.errors.to_state(),
            "send_lag": self.send_lag.to_state(),
            "connect": self.connect.to_state(),
            "sizes": dict(sizes),
            "header_sizes": dict(header_sizes),
            "codes": dict(codes),
            "samples": self.samples,
        }


class _Detached(asyncio.Protocol):
    """Protocol of a socket being torn down: ignores whatever it still reports."""


class Conn(asyncio.Protocol):
    """One fortio "thread": one keep-alive connection making calls on its own schedule."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        self.w = w
        self.tid = tid
        self.calls = calls  # planned calls, 0 = unbounded
        self.i = 0
        self.start_ns = 0
        self.end_ns = 0
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[Any] | None = None
        self.buf = bytearray()
        self.t0 = 0  # start of the call in flight, 0 when idle
        self.head_len = -1  # parsed header length of the response being read, -1 = not yet
        self.body_end = 0  # total response length when known
        self.chunked = False
        self.until_close = False
        self.code = 0
        self.close_after = False
        self.sockets = 0
        self.done = False
        self.warmup: asyncio.Future[tuple[int, str]] | None = None
        # Paced with a duration (even with -n): spread so the thread's last call lands at t.
        self.den = float(calls - 1) if w.plan.spread and calls > 1 else 0.0
        self.last_head = b""  # header block (with CRLFCRLF) of the last fast-path response
        self.last_total = -1
        self.last_code = 0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.t0:
            if self.until_close and self.head_len >= 0:
                self._complete(_now(), len(self.buf))
            else:
                self._failed(_now(), f"connection lost: {exc or 'closed by peer'}")

    def data_received(self, data: bytes) -> None:
        now = _now()
        if self.head_len < 0 and self.warmup is None and self.t0 and not self.buf:
            # Fast path (nearly every response): one chunk holding a complete keep-alive
            # HTTP/1.1 answer with Content-Length. Anything else takes the general path.
            # Servers repeat the same header block (it changes with Date once a second):
            # a prefix compare then replaces the parse.
            lh = self.last_head
            if len(data) == self.last_total and lh and data.startswith(lh):
                t0 = self.t0
                self.t0 = 0
                # Next request first: the server works on it while this one is recorded.
                self.next_call(now)
                self.w.record(now - t0, self.last_code, self.last_total, len(lh))
                return
            end = data.find(b"\r\n\r\n")
            if end > 12:
                lower = data[:end].lower()
                i = lower.find(b"\r\ncontent-length:")
                if (
                    i > 0
                    and lower.startswith(b"http/1.1 ")
                    and b"\r\nconnection: close" not in lower
                    and b"\r\ntransfer-encoding:" not in lower
                ):
                    j = lower.find(b"\r\n", i + 17)
                    try:
                        body = int(lower[i + 17 : j] if j > 0 else lower[i + 17 :])
                        code = int(data[9:12])
                    except ValueError:
                        body = code = -1
                    if len(data) == end + 4 + body and code >= 200 and code not in (204, 304):
                        self.last_head = data[: end + 4]
                        self.last_total = len(data)
                        self.last_code = code
                        t0 = self.t0
                        self.t0 = 0
                        self.next_call(now)
                        self.w.record(now - t0, code, len(data), end + 4)
                        return
        self._data_slow(data, now)

    def _data_slow(self, data: bytes, now: int) -> None:
        if not self.t0:
            return  # nothing asked: stray bytes from a misbehaving server
        buf = self.buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        if self.head_len < 0:
            end = view.find(b"\r\n\r\n")
            if end < 0:
                if not buf:
                    buf += data
                return
            try:
                self._parse_head(bytes(view[:end]))
            except ValueError as e:
                self._failed(now, f"bad response: {e}")
                return
            self.head_len = end + 4
            if not self.chunked and not self.until_close:
                self.body_end += self.head_len
        if self.chunked:
            try:
                total = _chunked_end(view, self.head_len)
            except ValueError as e:
                self._failed(now, f"bad response: {e}")
                return
            if total < 0:
                if not buf:
                    buf += data
                return
            self.body_end = total
        elif self.until_close:
            if not buf:
                buf += data
            return
        elif len(view) < self.body_end:
            if not buf:
                buf += data
            return
        self._complete(now, self.body_end)

    def _parse_head(self, head: bytes) -> None:
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise ValueError("not an HTTP/1.x status line")
        self.code = int(head[9:12])
        lower = head.lower()
        self.close_after = b"\r\nconnection: close" in lower or head.startswith(b"HTTP/1.0")
        if self.code < 200 or self.code in (204, 304):
            self.body_end = 0
            return
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.find(b"\r\n", i + 17)
            self.body_end = int(lower[i + 17 : j if j >= 0 else None])
        elif b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
            self.chunked = True
        else:
            self.until_close = True

    def _reset_response(self) -> None:
        if self.buf:
            self.buf = bytearray()
        self.head_len = -1
        self.body_end = 0
        self.chunked = False
        self.until_close = False

    def _complete(self, now: int, size: int) -> None:
        code = self.code
        head_len = self.head_len
        t0 = self.t0
        self.t0 = 0
        self._reset_response()
        if self.close_after or self.until_close:
            self._drop()
        if self.warmup is not None:
            ok = 200 <= code < 300 or code == 418
            self.warmup.set_result((code, "" if ok else f"HTTP status {code}"))
            return
        self.w.record(now - t0, code, size, head_len)
        self.next_call(now)

    def _failed(self, now: int, why: str) -> None:
        t0 = self.t0
        self.t0 = 0
        self._reset_response()
        self._drop()
        if self.warmup is not None:
            if not self.warmup.done():
                self.warmup.set_result((-1, why))
            return
        if t0:
            self.w.record(now - t0, -1, 0, 0)
            self.w.note_error(why)
        self.next_call(now)

    def _drop(self) -> None:
        t = self.transport
        self.transport = None
        if t is not None:
            # The same Conn is the protocol of its next socket: detach the old one so its
            # late connection_lost cannot fail the next call.
            t.set_protocol(_Detached())
            t.abort()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None

    # -- calls
    def target_ns(self, i: int) -> int:
        """When call ``i`` is due after this thread's start (fortio's formula, float64 then
        truncated to integer nanoseconds)."""
        ptq = self.w.ptq
        if self.den:
            return int((i + i / self.den) / ptq * SECOND)
        return int(i / ptq * SECOND)

    def send(self) -> None:
        """Start one call now (connecting first if needed)."""
        self.t0 = _now()
        t = self.transport
        if t is not None:
            if not t.is_closing():
                t.write(self.w.request)
                return
            self._drop()  # the server closed it while idle: reconnect, as fortio does
        self.connecting = asyncio.ensure_future(self._connect(self.t0))

    async def _connect(self, t0: int) -> None:
        w = self.w
        try:
            await w.loop.create_connection(lambda: self, w.addr[0], w.addr[1])
        except asyncio.CancelledError:
            return
        except OSError as e:
            self.connecting = None
            self._failed(_now(), e.strerror or str(e))
            return
        self.connecting = None
        self.sockets += 1
        w.stats.connect.record((_now() - t0) / SECOND)
        if self.transport is not None and self.t0 == t0:
            self.transport.write(w.request)

    def next_call(self, now: int) -> None:
        """Fortio's ``runOne`` loop tail: count the call, then sleep, skip, or fire."""
        w = self.w
        self.i += 1
        if w.stopping or (self.calls and self.i >= self.calls):
            self._finish()
            return
        if w.ptq <= 0:  # max speed
            if w.deadline and now > self.end_ns:
                self._finish()
                return
            self.send()
            return
        while True:
            target = self.start_ns + self.target_ns(self.i)
            sleep = target - now
            if w.nocatchup and sleep < 0:
                self.i += 1
                if self.calls and self.i >= self.calls:
                    self._finish()
                    return
                continue
            if sleep > 0:
                if w.jitter:
                    j = (sleep + 5) // 10  # +-10% of the sleep, rounded like fortio
                    target += random.randint(-j, j)
                w.schedule(target, self)
            else:
                self.fire(target, now)
            return

    def fire(self, due: int, now: int) -> None:
        """A scheduled call is due: check fortio's deadline rule, then send."""
        w = self.w
        if self.done or w.stopping:
            self._finish()
            return
        if w.deadline and now > self.end_ns and self.i >= 2 and self.i != self.calls - 1:
            if self.calls:
                w.warn(f"T{self.tid:03d} warning only did {self.i} out of {self.calls} calls")
            self._finish()
            return
        self.send()
        if w.ptq > 0:  # a paced call: how late did it leave?
            lag = self.t0 - due
            w.stats.send_lag.record((lag if lag > 0 else 0) / SECOND)

    def _finish(self) -> None:
        if not self.done:
            self.done = True
            self.w.thread_done()


class Worker:
    """Runs a subset of the threads in one event loop (one process)."""

    def __init__(self, o: LoadOptions, plan: Plan, tids: Sequence[int]) -> None:
        self.o = o
        self.plan = plan
        self.target = Target.parse(o.url)
        self.request = build_request(o, self.target)
        self.stats = Stats(o)
        self.ptq = plan.per_thread_qps
        self.deadline = plan.deadline
        self.jitter = o.jitter
        self.nocatchup = o.nocatchup
        self.stopping = False
        self.conns = [Conn(self, k, plan.calls[k]) for k in tids]
        self.active = 0
        self.heap: list[tuple[int, int, Conn]] = []
        self.armed = 0
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.addr: tuple[str, int] = ("", 0)
        self.all_done: asyncio.Future[None] | None = None
        self.timer: TimerFd | SpinTimer | None = None
        self.error_samples: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.start_ns = 0
        self.end_ns = 0
        self._sweeper: asyncio.TimerHandle | None = None

    # -- schedule

    def schedule(self, due: int, conn: Conn) -> None:
        heapq.heappush(self.heap, (due, conn.tid, conn))
        if not self.armed or due < self.armed:
            self.armed = due
            assert self.timer is not None
            self.timer.arm(due)

    def _on_timer(self) -> None:
        self.armed = 0
        heap = self.heap
        now = _now()
        while heap and heap[0][0] <= now:
            due, _, conn = heapq.heappop(heap)
            conn.fire(due, now)
            now = _now()
        if heap and not self.armed:
            self.armed = heap[0][0]
            assert self.timer is not None
            self.timer.arm(self.armed)

    # -- bookkeeping
    def record(self, ns: int, code: int, size: int, head_len: int) -> None:
        """Count one call. The duration histogram update is ``Histogram.record`` inlined
        (same arithmetic, same bucket rule) because it runs once per call at up to ~100k/s;
        the multi-worker merge test checks it against ``Histogram.record``."""
        s = self.stats
        sec = ns / SECOND
        h = s.durations
        if h.count == 0:
            h.min = sec
            h.max = sec
        elif sec < h.min:
            h.min = sec
        elif sec > h.max:
            h.max = sec
        h.count += 1
        h.sum += sec
        h.sum_sq += sec * sec
        scaled = (sec - h.offset) / h.divider
        if scaled <= 0:
            idx = 0
        elif scaled > _LAST_EDGE:
            idx = NUM_VALUES
        else:
            k = int(scaled)
            if scaled - k < 1e-12:
                k -= 1
            idx = bisect_right(BUCKETS, k)
        h.counts[idx] += 1
        ok = 200 <= code < 300
        key = (code, size, head_len if ok else 0)  # fortio: header bytes only for 2xx
        out = s.outcomes
        out[key] = out.get(key, 0) + 1
        if not ok and code != 418:
            s.errors.record(sec)
        if s.samples is not None:
            s.samples.append(sec)

    def note_error(self, why: str) -> None:
        self.error_samples[why] += 1

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def thread_done(self) -> None:
        self.active -= 1
        if self.active <= 0 and self.all_done is not None and not self.all_done.done():
            self.end_ns = _now()
            self.all_done.set_result(None)

    def _sweep(self) -> None:
        """Abort calls older than -timeout (connect included)."""
        limit = _now() - self.o.timeout_ns
        for c in self.conns:
            if c.t0 and c.t0 < limit:
                c._failed(_now(), f"timeout after {format_duration(self.o.timeout_ns)}")
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)

    @property
    def _sweep_every(self) -> float:
        return min(0.1, self.o.timeout_ns / SECOND / 4)

    # -- phases
    async def resolve(self) -> None:
        t = self.target
        try:
            infos = await self.loop.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ConfigError(f"cannot resolve {t.host!r}: {e}") from None
        # Prefer IPv4 like fortio's default resolution of "localhost".
        infos.sort(key=lambda i: i[0] != socket.AF_INET)
        self.addr = (str(infos[0][4][0]), int(infos[0][4][1]))

    async def do_warmup(self) -> list[str]:
        """One un-timed call per connection, in parallel; returns failures (one per conn)."""
        if self.timer is None:
            self._make_timer()
        self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        futs = []
        for c in self.conns:
            c.warmup = self.loop.create_future()
            futs.append(c.warmup)
            c.send()
        results = await asyncio.gather(*futs)
        for c in self.conns:
            c.warmup = None
        return [why for code, why in results if why]

    def _make_timer(self) -> None:
        try:
            self.timer = TimerFd(self.loop, self._on_timer)
        except OSError:
            self.timer = SpinTimer(self.loop, self._on_timer)

    async def run(self, start_ns: int) -> None:
        """Run every thread from ``start_ns`` (perf_counter clock) until done or stopped."""
        if self.timer is None:
            self._make_timer()
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_every, self._sweep)
        self.all_done = self.loop.create_future()
        self.start_ns = start_ns
        plan = self.plan
        self.active = len(self.conns)
        if not self.conns:
            self.end_ns = _now()
            return
        for c in self.conns:
            offset = 0
            if self.o.uniform and plan.interval_ns:
                offset = plan.interval_ns * c.tid // plan.threads
            c.start_ns = start_ns + offset
            c.end_ns = start_ns + plan.duration_ns  # fortio: the deadline does not move
            self.schedule(c.start_ns, c)
        await self.all_done

    def stop(self) -> None:
        """Stop scheduling; calls in flight are dropped (not recorded)."""
        if self.stopping:
            return
        self.stopping = True
        self.heap.clear()
        for c in self.conns:
            c.t0 = 0
            c._drop()
            c._finish()
        if self.all_done is not None and not self.all_done.done():
            self.end_ns = _now()
            self.all_done.set_result(None)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.timer is not None:
            self.timer.close()
        for c in self.conns:
            c.t0 = 0
            c._drop()

    def result(self) -> dict[str, Any]:
        return {
            "stats": self.stats.state(),
            "sockets": {c.tid: c.sockets for c in self.conns},
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "errors": dict(self.error_samples),
            "warnings": self.warnings,
            "addr": list(self.addr),
        }


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def build_request(o: LoadOptions, t: Target) -> bytes:
    """The exact bytes of one request (fortio's fast client shape), built once."""
    method = "POST" if o.payload_size else "GET"
    lines = [f"{method} {t.request_target} HTTP/1.1"]
    names = {h.partition(":")[0].strip().lower() for h in o.headers}
    if "host" not in names:
        lines.append(f"Host: {t.host_header}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    for h in o.headers:
        name, _, value = h.partition(":")
        lines.append(f"{name.strip()}: {value.strip()}")
    body = b""
    if o.payload_size:
        body = payload_bytes(o.payload_size)
        if "content-type" not in names:
            lines.append("Content-Type: application/octet-stream")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def payload_bytes(n: int) -> bytes:
    """``-payload-size``: incompressible, reproducible bytes."""
    return random.Random(n).randbytes(n)


# --------------------------------------------------------------------------- processes


async def _worker_async(
    o: LoadOptions,
    plan: Plan,
    tids: Sequence[int],
    control: Callable[[str, Any], None],
    wait_go: Callable[[Worker], asyncio.Future[int | None]],
) -> dict[str, Any]:
    w = Worker(o, plan, tids)
    try:
        await w.resolve()
        failures = [] if o.exactly else await w.do_warmup()
        control("ready", {"failures": failures[:1], "count": len(failures)})
        start = await wait_go(w)
        if start is None:
            return w.result()
        await w.run(start)
        return w.result()
    finally:
        w.close()


def _child_main(
    o: LoadOptions, plan: Plan, tids: list[int], conn: multiprocessing.connection.Connection
) -> None:
    """A worker process: warm up, report ready, wait for the common start, run, send results."""
    with contextlib.suppress(Exception):
        libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the parent
    # Ctrl-C, and a SIGTERM sent to the whole process group, reach the workers too; only the
    # parent decides: it sends "stop", and the workers hand back what they measured.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    state: dict[str, Any] = {"worker": None, "go": None, "stopped": False}

    def on_msg() -> None:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            msg = ("stop", None)
        kind = msg[0]
        if kind == "go" and state["go"] is not None and not state["go"].done():
            state["go"].set_result(msg[1])
        elif kind == "stop":
            state["stopped"] = True
            if state["go"] is not None and not state["go"].done():
                state["go"].set_result(None)
            if state["worker"] is not None:
                state["worker"].stop()

    def wait_go(w: Worker) -> asyncio.Future[int | None]:
        state["worker"] = w
        fut: asyncio.Future[int | None] = loop.create_future()
        state["go"] = fut
        if state["stopped"]:
            fut.set_result(None)
        return fut

    def control(kind: str, payload: Any) -> None:
        conn.send((kind, payload))

    loop.add_reader(conn.fileno(), on_msg)
    try:
        res = loop.run_until_complete(_worker_async(o, plan, tids, control, wait_go))
        conn.send(("result", res))
    except MeshperfError as e:
        conn.send(("error", str(e)))
    except BaseException as e:  # a worker must always answer, or the parent waits forever
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(conn.fileno())
        loop.close()
        conn.close()


@dataclasses.dataclass
class RunOutcome:
    """What ``run_load`` returns: the fortio result and how the run ended."""

    result: dict[str, Any]
    interrupted: bool
    samples: list[float] | None = None


class _Interrupt:
    """SIGINT/SIGTERM while a run is in flight: remember it, let the run wind down."""

    def __init__(self) -> None:
        self.hit = False
        self.callbacks: list[Callable[[], None]] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.hit = True
        for cb in list(self.callbacks):
            cb()


def run_load(
    o: LoadOptions, log: TextIO | None = None, on_start: Callable[[], None] | None = None
) -> RunOutcome:
    """Run a load test as ``fortio load`` would; Ctrl-C/SIGTERM end it early (result kept).

    ``on_start`` is called once this function's own SIGINT/SIGTERM handling is in place: from
    then on a signal ends the run early and its result is still returned.

    Raises ``WarmupError`` when warmup fails (unless ``allow_initial_errors``),
    ``ConfigError`` for bad options, ``InterruptedRun`` if stopped before the start.
    """
    log = log if log is not None else sys.stderr
    plan = Plan.make(o)
    workers = o.workers or auto_workers(o, plan.threads)
    workers = max(1, min(workers, plan.threads))
    target = Target.parse(o.url)
    labels = o.labels if o.labels is not None else default_labels(target.url)
    id_time = dt.datetime.now().astimezone()
    qps_text = "max" if o.qps <= 0 else f"{o.qps:.9g}"

    def banner() -> None:
        # Printed once warmup passed, so a failed warmup is a single error line.
        print(
            f"Fortio-compatible {VERSION} running at {qps_text} queries per second, "
            f"{plan.threads} connections, {workers} worker process(es), "
            f"for {describe_duration(o)}: {target.url}",
            file=log,
            flush=True,
        )
        if plan.threads < o.connections:
            print(
                f"Lowering number of threads - total call {sum(plan.calls)} -> lowering from "
                f"{o.connections} to {plan.threads} threads",
                file=log,
            )

    intr = _Interrupt()
    old = {s: signal.signal(s, intr) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_start is not None:
            on_start()
        if workers == 1:
            res_list, start_ns, wall = _run_inprocess(o, plan, intr, log, banner)
        else:
            res_list, start_ns, wall = _run_processes(o, plan, workers, intr, log, banner)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    result, samples = merge_results(o, plan, res_list, start_ns, wall, labels, id_time, intr.hit)
    for r in res_list:
        for msg in r["warnings"][:5]:
            print(msg, file=log)
        for why, n in sorted(r["errors"].items(), key=lambda kv: -kv[1])[:3]:
            print(f"{n} socket error(s): {why}", file=log)
    print_summary(result, o, log)
    return RunOutcome(result, intr.hit, samples)


def _warmup_check(
    o: LoadOptions, ready: Sequence[dict[str, Any]], log: TextIO, banner: Callable[[], None]
) -> None:
    n = sum(r["count"] for r in ready)
    if not n:
        banner()
        return
    first = next(r["failures"][0] for r in ready if r["failures"])
    if not o.allow_initial_errors:
        raise WarmupError(
            f"warmup call failed on {n} connection(s): {first} for {o.url}",
            hint="use -allow-initial-errors to run anyway",
        )
    banner()
    print(f"warmup: {n} connection(s) failed ({first}); going on (-allow-initial-errors)", file=log)


def _run_inprocess(
    o: LoadOptions, plan: Plan, intr: _Interrupt, log: TextIO, banner: Callable[[], None]
) -> tuple[list[dict[str, Any]], int, dt.datetime]:
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    holder: dict[str, Any] = {"start": 0, "wall": None}

    def control(kind: str, payload: Any) -> None:
        if kind == "ready":
            _warmup_check(o, [payload], log, banner)

    def wait_go(w: Worker) -> asyncio.Future[int | None]:
        fut: asyncio.Future[int | None] = loop.create_future()
        if intr.hit:
            fut.set_result(None)
            return fut

        def stop_soon() -> None:
            # A repeated Ctrl-C may come while the loop is already closing: the run is over.
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(w.stop)

        intr.callbacks.append(stop_soon)
        holder["wall"] = dt.datetime.now().astimezone()
        holder["start"] = _now()
        fut.set_result(holder["start"])
        return fut

    try:
        res = loop.run_until_complete(
            _worker_async(o, plan, list(range(plan.threads)), control, wait_go)
        )
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    if holder["wall"] is None:
        raise InterruptedRun("interrupted before the run started")
    return [res], holder["start"], holder["wall"]


def _run_processes(
    o: LoadOptions,
    plan: Plan,
    workers: int,
    intr: _Interrupt,
    log: TextIO,
    banner: Callable[[], None],
) -> tuple[list[dict[str, Any]], int, dt.datetime]:
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    procs: list[Any] = []
    pipes: list[multiprocessing.connection.Connection] = []
    try:
        for k in range(workers):
            tids = list(range(k, plan.threads, workers))
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=_child_main, args=(o, plan, tids, child_end), daemon=True)
            p.start()
            child_end.close()
            procs.append(p)
            pipes.append(parent_end)

        def collect(kind: str, deadline: float | None) -> list[Any]:
            out: list[Any] = [None] * len(pipes)
            waiting = set(range(len(pipes)))
            while waiting:
                if deadline is not None and time.monotonic() > deadline:
                    raise ConfigError(f"load generator workers did not report {kind!r} in time")
                ready = multiprocessing.connection.wait([pipes[k] for k in waiting], timeout=0.2)
                for r in ready:
                    k = pipes.index(r)  # type: ignore[arg-type]
                    try:
                        msg = pipes[k].recv()
                    except (EOFError, OSError):
                        if kind != "result":
                            raise ConfigError(f"load generator worker {k} died") from None
                        # Mid-run: keep what the other workers measured.
                        print(f"load generator worker {k} died; its calls are lost", file=log)
                        waiting.discard(k)
                        continue
                    if msg[0] == "error":
                        raise ConfigError(msg[1])
                    if msg[0] == kind:
                        out[k] = msg[1]
                        waiting.discard(k)
                if intr.hit and kind == "ready":
                    raise InterruptedRun("interrupted before the run started")
            return out

        warm_limit = time.monotonic() + o.timeout_ns / SECOND + 30
        ready = collect("ready", warm_limit)
        _warmup_check(o, ready, log, banner)
        # A common start a little ahead, so every worker begins on the same schedule.
        start_ns = _now() + 20 * 1000 * 1000
        wall = dt.datetime.now().astimezone() + dt.timedelta(milliseconds=20)
        for pipe in pipes:
            pipe.send(("go", start_ns))

        def stop_all() -> None:
            for pipe in pipes:
                with contextlib.suppress(OSError):
                    pipe.send(("stop", None))

        intr.callbacks.append(stop_all)
        if intr.hit:
            stop_all()
        results = [r for r in collect("result", None) if r is not None]
        if not results:
            raise ConfigError("every load generator worker died during the run")
        return results, start_ns, wall
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def merge_results(
    o: LoadOptions,
    plan: Plan,
    parts: Sequence[dict[str, Any]],
    start_ns: int,
    wall: dt.datetime,
    labels: str,
    id_time: dt.datetime,
    interrupted: bool,
) -> tuple[dict[str, Any], list[float] | None]:
    """Merge the workers' results into one fortio HTTP result dict (fortio's key order)."""
    off = o.offset_ns / SECOND
    durations = Histogram(off, o.resolution)
    errors = Histogram(off, o.resolution)
    send_lag = Histogram(0.0, o.resolution)
    connect = Histogram(off, o.resolution)
    sizes = Histogram(0.0, 100)
    header_sizes = Histogram(0.0, 5)
    codes: Counter[int] = Counter()
    size_counts: Counter[int] = Counter()
    header_counts: Counter[int] = Counter()
    sockets: dict[int, int] = {}
    samples: list[float] | None = [] if o.keep_samples else None
    end_ns = start_ns
    addr = ""
    for p in parts:
        s = p["stats"]
        durations.merge(Histogram.from_state(s["durations"]))
        errors.merge(Histogram.from_state(s["errors"]))
        send_lag.merge(Histogram.from_state(s["send_lag"]))
        connect.merge(Histogram.from_state(s["connect"]))
        codes.update({int(k): v for k, v in s["codes"].items()})
        size_counts.update({int(k): v for k, v in s["sizes"].items()})
        header_counts.update({int(k): v for k, v in s["header_sizes"].items()})
        sockets.update({int(k): v for k, v in p["sockets"].items()})
        if samples is not None and s["samples"] is not None:
            samples.extend(s["samples"])
        end_ns = max(end_ns, p["end_ns"])
        addr = f"{p['addr'][0]}:{p['addr'][1]}" if p["addr"][0] else addr
    for v, n in sorted(size_counts.items()):
        sizes.record_n(v, n)
    for v, n in sorted(header_counts.items()):
        header_sizes.record_n(v, n)
    elapsed = max(end_ns - start_ns, 1)
    pcts = list(o.percentiles)
    socket_list = [sockets.get(k, 0) for k in range(plan.threads)]
    total_sockets = sum(socket_list)
    if o.exactly:
        req_dur = f"exactly {o.exactly} calls"
        if interrupted:
            req_dur += f", interrupted after {durations.count}"
    elif o.duration_ns > 0:
        req_dur = format_duration(o.duration_ns)
    else:
        req_dur = "until stop" if o.qps > 0 else ""
    payload = payload_bytes(o.payload_size) if o.payload_size else b""
    content_type = ""
    if o.payload_size:
        content_type = "application/octet-stream"
    for h in o.headers:
        name, _, value = h.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    result: dict[str, Any] = {
        "RunType": "HTTP",
        "Labels": labels,
        "StartTime": fortiojson.go_time(_zulu(wall)),
        "RequestedQPS": "max" if o.qps <= 0 else f"{o.qps:.9g}",
        "RequestedDuration": req_dur,
        "ActualQPS": durations.count / (elapsed / SECOND),
        "ActualDuration": elapsed,
        "NumThreads": plan.threads,
        "Version": VERSION,
        "DurationHistogram": durations.export(pcts),
        "ErrorsDurationHistogram": errors.export(pcts),
        "Exactly": o.exactly,
        "Jitter": o.jitter,
        "Uniform": o.uniform,
        "NoCatchUp": o.nocatchup,
        "RunID": o.run_id,
        "AccessLoggerInfo": "",
        "ID": fortiojson.gen_id(id_time, labels, o.run_id),
        "RetCodes": {str(k): codes[k] for k in sorted(codes)},
        "IPCountMap": {addr: total_sockets} if addr and total_sockets else {},
        "Insecure": False,
        "MTLS": False,
        "CACert": "",
        "Cert": "",
        "Key": "",
        "UnixDomainSocket": "",
        "URL": Target.parse(o.url).url,
        "NumConnections": 1,
        "Compression": False,
        "DisableFastClient": False,
        "HTTP10": False,
        "H2": False,
        "DisableKeepAlive": False,
        "AllowHalfClose": False,
        "FollowRedirects": False,
        "Resolve": "",
        "HTTPReqTimeOut": o.timeout_ns,
        "UserCredentials": "",
        "ContentType": content_type,
        "Payload": base64.b64encode(payload).decode() if payload else "",
        "MethodOverride": "",
        "LogErrors": False,
        "SequentialWarmup": False,
        "ConnReuseRange": [0, 0],
        "NoResolveEachConn": False,
        "Offset": o.offset_ns,
        "Resolution": o.resolution,
        "Sizes": sizes.export(None),
        "HeaderSizes": header_sizes.export(None),
        "Sockets": socket_list,
        "SocketCount": total_sockets,
        "ConnectionStats": connect.export(pcts),
        "AbortOn": 0,
        "SendLagHistogram": send_lag.export(pcts),
    }
    return result, samples


# --------------------------------------------------------------------------- text output


def _zulu(t: dt.datetime) -> dt.datetime:
    """Go writes ``Z`` for any zero UTC offset; ``go_time`` does so only for ``timezone.utc``."""
    return t.astimezone(dt.UTC) if t.utcoffset() == dt.timedelta(0) else t


def default_labels(url: str) -> str:
    """Fortio's CLI default: ``"<url minus http(s)://> , <short hostname>"``."""
    short = socket.gethostname().split(".")[0]
    bare = url.split("://", 1)[1] if "://" in url else url
    return f"{bare} , {short}"


def describe_duration(o: LoadOptions) -> str:
    if o.exactly:
        return f"exactly {o.exactly} calls"
    if o.duration_ns > 0:
        return format_duration(o.duration_ns)
    return "until interrupted"


def print_summary(res: dict[str, Any], o: LoadOptions, log: TextIO) -> None:
    """Fortio-like human summary (stderr), so a person can read the run without the JSON."""
    h = res["DurationHistogram"]
    secs = res["ActualDuration"] / SECOND
    print(f"Ended after {secs:.6g}s : {h['Count']} calls. qps={res['ActualQPS']:.5g}", file=log)
    print(
        f"Aggregated Function Time : count {h['Count']} avg {h['Avg']:.9g} "
        f"+/- {h['StdDev']:.4g} min {h['Min']:.9g} max {h['Max']:.9g} sum {h['Sum']:.9g}",
        file=log,
    )
    for p in h.get("Percentiles") or []:
        print(f"# target {p['Percentile']:g}% {p['Value']:.6g}", file=log)
    lag = res["SendLagHistogram"]
    if lag["Count"]:
        parts = [f"avg {lag['Avg'] * 1000:.3f}"]
        parts += [f"p{p['Percentile']:g} {p['Value'] * 1000:.3f}" for p in lag["Percentiles"]]
        parts.append(f"max {lag['Max'] * 1000:.3f}")
        print(f"Send lag (ms, how late calls left): {', '.join(parts)}", file=log)
    print(
        f"Sockets used: {res['SocketCount']} (for perfect keepalive, would be {res['NumThreads']})",
        file=log,
    )
    total = max(h["Count"], 1)
    for code, n in res["RetCodes"].items():
        print(f"Code {code:>3} : {n} ({100.0 * n / total:.1f} %)", file=log)
    print(
        f"All done {h['Count']} calls (plus {0 if o.exactly else res['NumThreads']} warmup) "
        f"{h['Avg'] * 1000:.3f} ms avg, {res['ActualQPS']:.1f} qps",
        file=log,
        flush=True,
    )
