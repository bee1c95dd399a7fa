"""Upper (and lower) bounds of every count the CLIs accept, in one place.

A typo such as ``-workers 1000000`` or ``CONN 99999999`` must be a one-line error before
anything starts, not a machine brought to its knees. Static bounds are constants; the ones
that depend on the machine (cores, the file-descriptor limit, memory) are functions, so the
runner and the load generator / echo server CLIs check against the same numbers.

Each check raises ``BoundError`` (a ``ConfigError`` and an ``argparse.ArgumentTypeError``
at once) whose message names the bound and where it comes from, so an argparse ``type=``
converter and library code can use the same function. The bounds are documented in
docs/runner.md, "Limits and failures".
"""

from __future__ import annotations

import argparse
import os
import resource
from collections.abc import Sequence

from meshperf.errors import ConfigError

# --repeat: each repeat is a whole matrix; 1000 repeats of a 1 s single test are ~17 min.
MAX_REPEAT = 1000
# Tests in one run (repeats x conns x qps x modes). The plan, the run file and the summary
# hold one entry per test; 10000 tests are at least 2.8 h even at 1 s each.
MAX_TESTS = 10_000
# DURATION in seconds. A test shorter than 1 ms measures the generator's start, not the mesh;
# one above 30 days is a typo (and beyond a default Prometheus retention of 15 days).
MIN_DURATION = 0.001
MAX_DURATION = 30 * 24 * 3600.0
# Response payload: the echo server caps ?size= at fortio's -maxpayloadsizekb default of
# 256 KiB (fortio's fnet.MaxPayloadSize, the -maxpayloadsizekb flag in fortio_main.go), so
# a bigger --size would be cut silently; refuse it instead.
MAX_PAYLOAD_BYTES = 256 * 1024
# Connections, whatever the machine: fortio opens one socket per connection from one source
# address, and Linux's default ephemeral port range (32768-60999) holds 28232 of them.
MAX_CONNECTIONS = 28_232
# File descriptors a process needs besides its connections (logs, pipes, listeners, libs).
FD_RESERVE = 64
# On the local platform one connection costs a socket in the load generator, two in each
# Envoy on the path (downstream + upstream) and one in the echo app: the busiest process
# (an Envoy) needs two descriptors per connection.
FDS_PER_CONNECTION = 2
# Memory one connection costs along the local path (generator state, socket buffers in
# two Envoys and the app), measured order of magnitude; keeps a run well inside memory.
BYTES_PER_CONNECTION = 256 * 1024
# Worker processes of the echo server / load generator: more than a few per core only adds
# scheduling noise, and each costs ~30 MB.
WORKERS_PER_CORE = 4
BYTES_PER_WORKER = 64 * 1024 * 1024


class BoundError(ConfigError, argparse.ArgumentTypeError):
    """A value outside its documented bound; usable as an argparse ``type=`` error too."""


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def fd_limit() -> int:
    """The soft RLIMIT_NOFILE children inherit (what ``ulimit -n`` says)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def available_memory() -> int:
    """Bytes of memory available without swapping (/proc/meminfo MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 34  # unknown: do not let a missing /proc refuse runs


def max_local_connections() -> tuple[int, str]:
    """The most connections one local test may open, and which limit sets it."""
    by_fd = max(1, (fd_limit() - FD_RESERVE) // FDS_PER_CONNECTION)
    by_mem = max(1, available_memory() // BYTES_PER_CONNECTION)
    candidates = [
        (MAX_CONNECTIONS, "the ephemeral port range"),
        (
            by_fd,
            f"the file-descriptor limit: ulimit -n {fd_limit()}, minus {FD_RESERVE},"
            f" / {FDS_PER_CONNECTION} per connection",
        ),
        (
            by_mem,
            f"available memory: {available_memory() // (1 << 20)} MB"
            f" / {BYTES_PER_CONNECTION // 1024} KiB per connection",
        ),
    ]
    return min(candidates, key=lambda c: c[0])


def max_workers() -> tuple[int, str]:
    """The most worker processes of the echo server / load generator on this machine."""
    by_cores = WORKERS_PER_CORE * cores()
    by_mem = max(1, available_memory() // BYTES_PER_WORKER)
    if by_mem < by_cores:
        return by_mem, (
            f"available memory: {available_memory() // (1 << 20)} MB"
            f" / {BYTES_PER_WORKER >> 20} MB per worker"
        )
    return by_cores, f"{WORKERS_PER_CORE} x {cores()} cores"


def check_workers(n: int, flag: str = "-workers") -> int:
    top, why = max_workers()
    if n > top:
        raise BoundError(f"{flag} {n} is above the bound of {top} ({why})")
    return n


def check_connections(conns: Sequence[int], platform: str) -> None:
    """Connection counts against the bound of the platform that runs them.

    On kubernetes fortio runs in the client pod, whose limits this machine cannot see: only
    the port-range bound applies there.
    """
    top, why = (
        max_local_connections()
        if platform == "local"
        else (MAX_CONNECTIONS, "the ephemeral port range")
    )
    over = [c for c in conns if c > top]
    if over:
        raise BoundError(
            f"{max(over)} connections is above the bound of {top} on the {platform}"
            f" platform ({why})"
        )


def check_matrix(n_conns: int, n_qps: int, n_modes: int, repeat: int) -> int:
    """The number of tests, refused above ``MAX_TESTS`` before any plan is built."""
    n = n_conns * n_qps * n_modes * repeat
    if n > MAX_TESTS:
        raise BoundError(
            f"{n} tests ({n_conns} conn x {n_qps} qps x {n_modes} modes x {repeat} repeats)"
            f" is above the bound of {MAX_TESTS} tests per run"
        )
    return n


def check_repeat(n: int) -> int:
    if n > MAX_REPEAT:
        raise BoundError(f"{n} repeats is above the bound of {MAX_REPEAT}")
    return n


def check_duration(seconds: float) -> float:
    if not MIN_DURATION <= seconds <= MAX_DURATION:
        raise BoundError(
            f"duration {seconds:.15g} s is outside [{MIN_DURATION:g} s, {MAX_DURATION:.0f} s"
            " = 30 days]"
        )
    return seconds


def check_size(size: int) -> int:
    if size > MAX_PAYLOAD_BYTES:
        raise BoundError(
            f"size {size} is above the echo server's payload cap of {MAX_PAYLOAD_BYTES}"
            " bytes (256 KiB, fortio's -maxpayloadsizekb default): it would be cut silently"
        )
    return size


def effective_connections(conn: int, qps: float, duration: float) -> int:
    """The connections the load generator will really use for ``conn`` at ``qps`` for
    ``duration`` seconds: fortio makes at least 2 calls per connection (periodic.go
    runQPSSetup), so a short slow test runs fewer. The built-in generator's own call plan
    answers (``meshperf.loadgen.options.CallPlan``), so the rule lives in one place."""
    if qps <= 0:
        return conn
    from meshperf.goduration import SECOND
    from meshperf.loadgen.options import CallPlan, LoadOptions

    opts = LoadOptions(
        url="http://127.0.0.1:8080/", connections=conn, qps=qps, duration_ns=int(duration * SECOND)
    )
    return CallPlan.make(opts).threads
