"""Supervision of the local platform's processes: start, wait until ready, stop for sure.

Every child runs in its own session (process group), so stopping it also stops whatever it
spawned; stopping is SIGTERM to the group, then SIGKILL after a timeout. Children started
from the main thread also get a parent-death signal, so even a SIGKILLed runner leaves no
Envoy behind. ``ProcessGroup`` keeps the list and is stopped by its owner's ``close()``, and
by an ``atexit`` hook as a last resort.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from meshperf.errors import PlatformError

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
_PR_SET_PDEATHSIG = 1


def free_port(host: str = LOOPBACK) -> int:
    """An ephemeral TCP port that was free a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# No proxy handler: an http_proxy in the environment must never see loopback traffic.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback URL; (status, body); status 0 when nothing answered."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"refusing a non-loopback URL: {url}")
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


@functools.cache
def _prctl() -> Any:
    """libc's prctl, looked up once (find_library runs a subprocess)."""
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name, use_errno=True).prctl


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when this process dies.

    The signal fires when the *thread* that forked exits, so it is only used from the main
    thread (whose end is the process's end). The libc function is resolved here, before the
    fork, so the child runs no Python import or allocation-heavy code.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl = _prctl()
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


# Envoy's log prefix "[time][pid][level][component] [source:line] ": noise in a one-line error.
ENVOY_LOG_PREFIX = re.compile(r"^\[[^]]*\]\[\d+\]\[\w+\]\[[\w.]+\] (\[[^]]*\] )?")


def _tail(path: Path | None, lines: int = 5, limit: int = 600) -> str:
    """The last lines of a log file, joined on one line for an error message."""
    if path is None:
        return ""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [ENVOY_LOG_PREFIX.sub("", ln.strip()) for ln in text.strip().splitlines()[-lines:]]
    return " | ".join(ln for ln in kept if ln)[-limit:]


class Proc:
    """One supervised child process with its stdout/stderr going to files."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._files: list[IO[bytes]] = []
        out = open(self.stdout_path, "wb")  # noqa: SIM115 (closed in stop())
        err = open(self.stderr_path, "wb")  # noqa: SIM115
        self._files = [out, err]
        try:
            self.popen = subprocess.Popen(  # noqa: S603 (argv list, no shell)
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509 (main thread only)
            )
        except OSError as e:
            self._close_files()
            raise PlatformError(f"cannot start {name} ({self.argv[0]}): {e.strerror or e}") from e

    @property
    def pid(self) -> int:
        return int(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_tail(self, lines: int = 5) -> str:
        return _tail(self.stderr_path, lines) or _tail(self.stdout_path, lines)

    def died_error(self, what: str = "exited") -> PlatformError:
        code = self.popen.poll()
        tail = self.stderr_tail()
        return PlatformError(
            f"{self.name} {what} (exit code {code})" + (f": {tail}" if tail else "")
        )

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout)
        # Grandchildren left in the group (the leader already gone) get the same treatment.
        self._signal_group(signal.SIGKILL)
        self._close_files()
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _close_files(self) -> None:
        for f in self._files:
            with contextlib.suppress(OSError):
                f.close()
        self._files = []


_LIVE_GROUPS: weakref.WeakSet[ProcessGroup] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    for group in list(_LIVE_GROUPS):
        group.stop_all()


class ProcessGroup:
    """The processes one platform started; stopped in reverse start order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[Proc] = []
        self._lock = threading.Lock()
        _LIVE_GROUPS.add(self)

    def start(self, name: str, argv: Sequence[str], **kwargs: Any) -> Proc:
        proc = Proc(name, argv, self.log_dir, **kwargs)
        with self._lock:
            self._procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs if p.alive()]

    def remove(self, proc: Proc) -> None:
        with self._lock:
            if proc in self._procs:
                self._procs.remove(proc)

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        with self._lock:
            procs, self._procs = self._procs, []
        # SIGTERM everyone first so they shut down in parallel, then collect.
        for p in reversed(procs):
            if p.alive():
                p._signal_group(signal.SIGTERM)
        for p in reversed(procs):
            p.stop(timeout)


# ---- work directories: made per run, removed at close, swept after a SIGKILL --------------

OWNER_FILE = "owner.pid"  # "<pid> <process start time>" of the run that made the directory
WORK_DIR_PREFIX = "meshperf-local-"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the
    pid it names one process, so a pid reused by another program does not count as the owner."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(text: str) -> bool:
    """Whether the ``owner.pid`` content names a process that still runs."""
    pid_text, _, started = text.strip().partition(" ")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return not started or _start_time(pid) in ("", started)


def make_work_dir(prefix: str = WORK_DIR_PREFIX) -> Path:
    """A private (0700) temp directory owned by this process, recorded in ``owner.pid``.

    First removes the directories of earlier runs whose owner is gone: a SIGKILLed runner
    cannot clean up, and its directory holds private keys.
    """
    sweep_stale_work_dirs(prefix)
    d = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(d, 0o700)
    (d / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n", encoding="ascii")
    return d


def sweep_stale_work_dirs(prefix: str = WORK_DIR_PREFIX, root: Path | None = None) -> list[Path]:
    """Remove ``root/<prefix>*`` directories of this user whose owner process is gone.

    A directory without an owner file is left alone (made by an older version, or still being
    set up by a run that is just starting); so is one that is not this user's.
    """
    base = Path(root if root is not None else tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = list(base.glob(f"{prefix}*"))
    except OSError:
        return removed
    for d in candidates:
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            owner = (d / OWNER_FILE).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        if owner_alive(owner):
            continue
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(d)
    return removed


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    proc: Proc | None = None,
    what: str = "ready",
    interval: float = 0.05,
) -> None:
    """Poll ``check`` until it is true; PlatformError on timeout or if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if proc is not None and not proc.alive():
            raise proc.died_error(f"exited before it was {what}")
        if time.monotonic() > deadline:
            name = proc.name if proc is not None else "process"
            tail = proc.stderr_tail() if proc is not None else ""
            raise PlatformError(
                f"{name} not {what} after {timeout:g} s" + (f": {tail}" if tail else "")
            )
        time.sleep(interval)
