"""Timers to the microsecond on an asyncio loop: a leaf module (imports nothing of meshperf
but the duration units).

Asyncio's own timers are about 1 ms coarse and may fire early, which is too coarse both to pace
a load generator's sends and to hold an echo server's ``delay=`` to fortio's accuracy. A Linux
``timerfd`` armed at the absolute ``perf_counter_ns`` instant (CLOCK_MONOTONIC) wakes the loop
like any socket; where it is missing, a coarse ``call_later`` plus a short spin does the job.
``Scheduler`` keeps a heap of callbacks on one such timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import os
import time
from collections.abc import Callable
from typing import Any

from meshperf.goduration import SECOND

now_ns = time.perf_counter_ns
_now = now_ns


def libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerFd:
    """A Linux timerfd on CLOCK_MONOTONIC (= ``perf_counter_ns``) armed at absolute ns."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        lib = libc()
        if (
            lib is None
            or not hasattr(lib, "timerfd_create")
            or time.get_clock_info("perf_counter").implementation
            != "clock_gettime(CLOCK_MONOTONIC)"
        ):
            raise OSError("timerfd unavailable")
        self._settime = lib.timerfd_settime
        fd = lib.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd: int = fd
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)
        self._loop = loop
        self._callback = callback
        # Default timer slack (50 us) would delay every wakeup; 1 ns keeps sends on time.
        with contextlib.suppress(Exception):
            lib.prctl(29, 1)  # PR_SET_TIMERSLACK
        loop.add_reader(fd, self._fire)

    def arm(self, due_ns: int) -> None:
        v = self._spec.it_value
        v.tv_sec, v.tv_nsec = divmod(max(due_ns, 1), SECOND)
        self._settime(self.fd, 1, self._ref, None)  # TFD_TIMER_ABSTIME

    def _fire(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self.fd, 8)
        self._callback()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.fd)
        with contextlib.suppress(OSError):
            os.close(self.fd)


class SpinTimer:
    """Portable fallback: a loop timer 1 ms early, then a spin to the exact nanosecond."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0

    def arm(self, due_ns: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._due = due_ns
        early = (due_ns - _now()) / SECOND - 0.0012
        self._handle = self._loop.call_later(max(0.0, early), self._fire)

    def _fire(self) -> None:
        self._handle = None
        while _now() < self._due:
            pass
        self._callback()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class Scheduler:
    """Callbacks at absolute ``perf_counter_ns`` instants, to the microsecond, on one loop.

    ``early=True`` (the echo server's ``delay=``) also learns how late the timer's wakeups
    are on this machine and arms that much early, then spins the remainder, at most
    ``MAX_SPIN_NS``: a callback is never run before its instant, and on a loaded machine the
    median reply leaves on time instead of one wakeup latency late. The lead is a running
    median (moved by ``LEAD_STEP_NS`` per wakeup), so about half of the wakeups spin a little.
    The load generator does not use it: a spinning loop would time the responses that arrive
    meanwhile late.
    """

    MAX_SPIN_NS = 200_000
    MAX_LEAD_NS = 1_000_000
    LEAD_STEP_NS = 5_000

    def __init__(self, loop: asyncio.AbstractEventLoop, early: bool = False) -> None:
        self._heap: list[tuple[int, int, Callable[[int, Any], None], Any]] = []
        self._seq = 0
        self._armed = 0  # the instant the timer is set for, 0 = not armed
        self._early = early
        self._learn = False  # the armed wakeup measures the timer's lateness
        self.lead = 50_000 if early else 0  # ns the timer is armed ahead of the due instant
        self.timer: TimerFd | SpinTimer
        try:
            self.timer = TimerFd(loop, self._on_timer)
        except OSError:
            self.timer = SpinTimer(loop, self._on_timer)

    def call_at(self, due_ns: int, fn: Callable[[int, Any], None], arg: Any) -> None:
        """Call ``fn(due_ns, arg)`` at ``due_ns``; equal instants run in the order asked."""
        self._seq += 1
        heapq.heappush(self._heap, (due_ns, self._seq, fn, arg))
        if not self._armed or due_ns - self.lead < self._armed:
            self._arm(due_ns)

    def _arm(self, due_ns: int) -> None:
        at = due_ns - self.lead
        now = _now()
        # Only a wakeup asked for the future says how late wakeups are.
        self._learn = self._early and at > now
        self._armed = at if at > now else due_ns
        self.timer.arm(self._armed)

    def _on_timer(self) -> None:
        now = _now()
        if self._learn and self._armed:
            # Track the median wakeup latency: one step towards what this wakeup showed.
            late = now - self._armed
            lead = self.lead + (self.LEAD_STEP_NS if late > self.lead else -self.LEAD_STEP_NS)
            self.lead = min(max(lead, 0), self.MAX_LEAD_NS)
        self._armed = 0
        heap = self._heap
        spin = self.MAX_SPIN_NS if self._early else 0
        while heap:
            due = heap[0][0]
            if due > now:
                if due - now > spin:
                    break
                while _now() < due:  # the last few microseconds, never early
                    pass
            due, _, fn, arg = heapq.heappop(heap)
            fn(due, arg)
            now = _now()
        if heap and not self._armed:
            self._arm(heap[0][0])

    def clear(self) -> None:
        """Forget every pending callback (the timer may still fire once, to no effect)."""
        self._heap.clear()

    def close(self) -> None:
        self._heap.clear()
        self.timer.close()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (2-3x the throughput), else the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]
