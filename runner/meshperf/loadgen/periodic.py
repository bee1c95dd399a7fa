"""Fortio's periodic runner for one thread: when each call is due, and what a late or
stopped thread does (``periodic.runOne`` in fortio's periodic/periodic.go, v1.75.2).

``Caller`` is the protocol-independent part of a fortio "thread"; each protocol's client
(http1, h2, grpc, tcp) subclasses it and implements ``send`` (start one call now) and
``_drop``, then calls ``next_call(now)`` when a call ends, or ``_failed(now, why)`` when it
failed: a failure is recorded, noted and followed by the next call the same way for every
protocol (``_reset`` and ``_record_failure`` say what differs).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from meshperf.goduration import SECOND

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker


class Caller:
    """One fortio "thread": its schedule, its count, its state between calls."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        self.w = w
        self.tid = tid
        self.calls = calls  # planned calls, 0 = unbounded
        self.i = 0
        self.start_ns = 0
        self.end_ns = 0
        self.t0 = 0  # start of the call in flight, 0 when idle
        self.sockets = 0
        self.done = False
        self.warmup: asyncio.Future[tuple[int, str]] | None = None
        # Paced with a duration (even with -n): spread so the thread's last call lands at t.
        self.den = float(calls - 1) if w.plan.spread and calls > 1 else 0.0

    def send(self) -> None:
        """Start one call now (connecting first if needed)."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget the partial response of the call in flight (default: nothing kept)."""

    def _record_failure(self, ns: int, why: str) -> None:
        """Count one failed call (HTTP's RetCodes key -1; gRPC and TCP name theirs)."""
        self.w.record(ns, -1, 0, 0)

    def _failed(self, now: int, why: str) -> None:
        """The call in flight failed: drop the connection, then answer the warm-up, or
        record the error and go on to the next call (fortio counts it and carries on)."""
        t0 = self.t0
        self.t0 = 0
        self._reset()
        self._drop()
        if self.warmup is not None:
            if not self.warmup.done():
                self.warmup.set_result((-1, why))
            return
        if t0:
            self._record_failure(now - t0, why)
            self.w.note_error(why)
        self.next_call(now)

    def _drop(self) -> None:
        """Abandon the call in flight and the connection (stop, timeout)."""
        raise NotImplementedError

    def target_ns(self, i: int) -> int:
        """When call ``i`` is due after this thread's start (fortio's formula, float64 then
        truncated to integer nanoseconds)."""
        ptq = self.w.ptq
        if self.den:
            return int((i + i / self.den) / ptq * SECOND)
        return int(i / ptq * SECOND)

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
