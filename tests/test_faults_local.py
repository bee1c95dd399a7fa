"""Issue 16 items 10 (stale work dirs after SIGKILL) and 11 (a dead component fails only the
modes that need it) on the real local platform: real Envoys, the built-in echo server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from meshperf.errors import PlatformError
from meshperf.local import procs
from meshperf.local.platform import LocalPlatform
from meshperf.platform import RESULT_KEY, RunOptions
from meshperf.platform import TestSpec as Spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tmp_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Work dirs go to this test's own temp dir, never the machine's /tmp."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])  # noqa: S607
    p.wait()
    return p.pid


def test_sweep_removes_only_dirs_whose_owner_is_gone(tmp_root: Path) -> None:
    mine = procs.make_work_dir()  # this process: alive
    dead = tmp_root / "meshperf-local-dead"
    dead.mkdir()
    (dead / "server.key").write_text("secret")
    (dead / procs.OWNER_FILE).write_text(f"{_dead_pid()} 1\n")
    ownerless = tmp_root / "meshperf-local-starting"  # no owner file yet: left alone
    ownerless.mkdir()
    reused = tmp_root / "meshperf-local-reused"  # a live pid, but another process's start
    reused.mkdir()
    (reused / procs.OWNER_FILE).write_text(f"{os.getpid()} 1\n")
    other = tmp_root / "other-dead"
    other.mkdir()
    (other / procs.OWNER_FILE).write_text(f"{_dead_pid()} 1\n")

    removed = procs.sweep_stale_work_dirs()
    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert mine.is_dir() and ownerless.is_dir() and other.is_dir()
    assert oct(mine.stat().st_mode & 0o777) == "0o700"


_KILLED_RUN = """
import sys, time
sys.path.insert(0, {runner!r})
import tempfile
tempfile.tempdir = sys.argv[1]
from meshperf.local.platform import LocalPlatform
from meshperf.platform import RunOptions
p = LocalPlatform.from_options(RunOptions(proxy_concurrency=1))
p.start(("serversidecar",))
print(p.work_dir, flush=True)
time.sleep(600)
"""


@pytest.mark.envoy
def test_the_next_run_removes_the_keys_a_sigkilled_run_left(tmp_root: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN.format(runner=str(ROOT / "runner")), str(tmp_root)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        work = Path(proc.stdout.readline().strip())
        assert work.is_dir() and list(work.glob("*.key")), work
    finally:
        proc.kill()  # SIGKILL: no handler, no atexit, nothing cleans up
        proc.wait(timeout=30)
    assert list(work.glob("*.key"))  # the private keys are still there

    with LocalPlatform.from_options(RunOptions(mesh="none")) as p:
        p.start(("baseline",))
        assert p.work_dir is not None and p.work_dir != work
        assert not work.exists()  # swept: its owner pid is gone


def _spec(mode: str) -> Spec:
    return Spec(mode=mode, conn=1, qps=100, duration=0.5, labels=f"t_{mode}", uniform=True)


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@pytest.mark.envoy
def test_a_dead_server_sidecar_fails_only_the_modes_that_use_it(tmp_root: Path) -> None:
    with LocalPlatform.from_options(RunOptions(proxy_concurrency=1)) as p:
        p.start(("baseline", "serversidecar"))
        assert p.run_test(_spec("serversidecar"))["DurationHistogram"]["Count"] > 10
        server = p.proxies["server"]
        _kill(server.pid)
        server.proc.wait(5)
        # Baseline does not go through the sidecar: it still runs.
        result = p.run_test(_spec("baseline"))
        assert result["DurationHistogram"]["Count"] > 10
        with pytest.raises(PlatformError, match=r"^server .*died"):
            p.run_test(_spec("serversidecar"))


@pytest.mark.envoy
def test_a_dead_app_is_started_again_on_its_port(tmp_root: Path) -> None:
    with LocalPlatform.from_options(RunOptions(proxy_concurrency=1)) as p:
        p.start(("baseline", "serversidecar"))
        assert p.app is not None
        port, first = p.app_port, p.app.pid
        _kill(first)
        p.app.wait(5)
        result = p.run_test(_spec("baseline"))
        assert p.app.pid != first and p.app_port == port
        assert result["DurationHistogram"]["Count"] > 10
        assert result[RESULT_KEY]["restarted"][0].startswith("app: app died")
        # The server sidecar's upstream is the same port: its path works too.
        after = p.run_test(_spec("serversidecar"))
        assert after["DurationHistogram"]["Count"] > 10
        assert "restarted" not in after[RESULT_KEY]
