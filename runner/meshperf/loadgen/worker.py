"""One event loop's share of a run: the threads' connections, their schedule and their
measurements (``Stats``, mergeable across processes)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from bisect import bisect_right
from collections import Counter
from collections.abc import Sequence
from typing import Any

from meshperf.clock import Scheduler
from meshperf.clock import now_ns as _now
from meshperf.errors import ConfigError
from meshperf.goduration import SECOND, format_duration
from meshperf.histogram import BUCKETS, NUM_VALUES, Histogram
from meshperf.loadgen.http1 import Conn, build_request
from meshperf.loadgen.options import CallPlan, LoadOptions, Target
from meshperf.loadgen.periodic import Caller

_LAST_EDGE = BUCKETS[-1]


def client_tls(o: LoadOptions, target: Target) -> ssl.SSLContext | None:
    """The TLS context of an https:// target: -cacert's CAs, else the system's (as fortio)."""
    # fortio's gRPC dial: TLS for https:// or whenever -cacert is given (fgrpc.Dial).
    if not (target.tls or (o.grpc and o.cacert)) or o.protocol == "tcp":
        return None
    try:
        ctx = ssl.create_default_context(cafile=o.cacert or None)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"-cacert {o.cacert}: {e}") from None
    if o.h2 or o.grpc:
        ctx.set_alpn_protocols(["h2"])
    return ctx


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
        self.outcomes: dict[tuple[int | str, int, int], int] = {}
        self.samples: list[float] | None = [] if o.keep_samples else None

    def state(self) -> dict[str, Any]:
        sizes: Counter[int] = Counter()
        header_sizes: Counter[int] = Counter()
        codes: Counter[int | str] = Counter()
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


class Worker:
    """Runs a subset of the threads in one event loop (one process)."""

    def __init__(self, o: LoadOptions, plan: CallPlan, tids: Sequence[int]) -> None:
        self.o = o
        self.plan = plan
        self.target = Target.parse(o.url, o.grpc)
        self.request = build_request(o, self.target) if o.protocol == "http" else b""
        self.tls = client_tls(o, self.target)
        self.stats = Stats(o)
        self.ptq = plan.per_thread_qps
        self.deadline = plan.deadline
        self.jitter = o.jitter
        self.nocatchup = o.nocatchup
        self.stopping = False
        self.conns = self._callers(tids)
        self.active = 0
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.addr: tuple[str, int] = ("", 0)
        self.all_done: asyncio.Future[None] | None = None
        self.sched: Scheduler | None = None
        self.error_samples: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.start_ns = 0
        self.end_ns = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def _callers(self, tids: Sequence[int]) -> list[Caller]:
        """The threads of this worker, each the client of the run's protocol."""
        o, calls = self.o, self.plan.calls
        if o.protocol == "tcp":
            from meshperf.loadgen.tcp import TcpConn

            return [TcpConn(self, k, calls[k]) for k in tids]
        if o.protocol == "grpc":
            from meshperf.loadgen.grpcload import GrpcCaller

            return [GrpcCaller(self, k, calls[k]) for k in tids]
        if o.h2:
            from meshperf.loadgen.h2 import H2Caller

            return [H2Caller(self, k, calls[k]) for k in tids]
        return [Conn(self, k, calls[k]) for k in tids]

    # -- schedule

    def schedule(self, due: int, conn: Caller) -> None:
        assert self.sched is not None
        self.sched.call_at(due, self._due, conn)

    @staticmethod
    def _due(due: int, conn: Caller) -> None:
        conn.fire(due, _now())

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

    def record_named(self, ns: int, code: str, ok: bool, size: int = 0) -> None:
        """Count one gRPC or TCP call: fortio's RetCodes are strings there ("SERVING", "OK",
        or the error text), and there are no HTTP sizes."""
        s = self.stats
        sec = ns / SECOND
        s.durations.record(sec)
        key = (code, size, 0)
        s.outcomes[key] = s.outcomes.get(key, 0) + 1
        if not ok:
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
        if self.sched is None:
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
        self.sched = Scheduler(self.loop)

    async def run(self, start_ns: int) -> None:
        """Run every thread from ``start_ns`` (perf_counter clock) until done or stopped."""
        if self.sched is None:
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
        if self.sched is not None:
            self.sched.clear()
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
        if self.sched is not None:
            self.sched.close()
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
            "bytes_sent": sum(getattr(c, "sent", 0) for c in self.conns),
            "bytes_received": sum(getattr(c, "received", 0) for c in self.conns),
        }
