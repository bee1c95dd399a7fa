"""The built-in load generator: fortio's ``load`` semantics, scheduling and result format.

Used where fortio is not installed (the local platform runs ``python -m meshperf.loadgen
load`` exactly as it would run ``fortio load``). The result is a fortio >= 1.38 result dict
(docs/fortio-format.md) plus one extra top-level histogram, ``SendLagHistogram``: how late
(seconds) each request left against its schedule.

The package has fortio's shape, one module per responsibility, dependencies pointing down:

    cli      the command line (``runner/loadgen.py`` and ``python -m meshperf.loadgen``)
    load     run_load: options in, result out
    procs    one event loop in this process, or several worker processes
    worker   one loop's threads, their schedule (meshperf.clock) and their Stats
    http1    the HTTP/1.1 client connection
    h2, grpcload, tcp  the HTTP/2, gRPC and TCP clients (HTTP/2 itself: meshperf.h2wire)
    result   the merged fortio result and the human summary
    options  LoadOptions, Target and fortio's CallPlan (a leaf)

How it keeps time: every connection is an asyncio ``Protocol`` (uvloop when installed); sends
are paced by ``meshperf.clock.Scheduler`` (a Linux ``timerfd`` armed at the absolute
nanosecond of the next due call).

Scheduling is fortio's ``periodic.runOne``: planned calls ``floor(qps*t)`` split over the
threads (threads reduced when ``2*c`` exceeds that), call *i* of a thread due at
``(i + i/(calls-1)) / perThreadQPS`` seconds after its start, ``-uniform`` delays thread *k*
of *N* by ``k/N`` of its interval, ``-jitter`` adds +-10% to each positive sleep, late calls
fire at once (catch-up) unless ``-nocatchup`` skips them.

Several worker processes (``workers``) share the connections round-robin; their histograms are
merged exactly (bucket counts and raw sums) with ``Histogram.to_state/from_state/merge``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from meshperf.loadgen.http1 import build_request
from meshperf.loadgen.load import RunOutcome, run_load
from meshperf.loadgen.options import (
    MAX_PAYLOAD,
    USER_AGENT,
    VERSION,
    CallPlan,
    InterruptedRun,
    LoadOptions,
    Target,
    WarmupError,
    auto_workers,
    payload_bytes,
)
from meshperf.loadgen.result import merge_results

__all__ = [
    "MAX_PAYLOAD",
    "USER_AGENT",
    "VERSION",
    "CallPlan",
    "LIBRARY_DIR",
    "InterruptedRun",
    "LoadOptions",
    "RunOutcome",
    "Target",
    "WarmupError",
    "auto_workers",
    "build_request",
    "command",
    "merge_results",
    "payload_bytes",
    "run_load",
]

# runner/, the directory that holds the meshperf package: a child's PYTHONPATH.
LIBRARY_DIR = Path(__file__).resolve().parents[2]


def command() -> list[str]:
    """How a platform starts the generator or the echo server as a child process:
    ``python -m meshperf.loadgen`` with this interpreter, not the CLI file's path. The child
    needs ``LIBRARY_DIR`` on its ``PYTHONPATH`` (``local.envoy.process_env`` puts it there)."""
    return [sys.executable, "-m", "meshperf.loadgen"]
