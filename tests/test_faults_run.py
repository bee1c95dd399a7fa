"""Issue 16 items 7, 9, 10 (SIGHUP), 12, 13: faults during a run lose nothing and are recorded.

The platform is test_run's small real one (HTTP on 127.0.0.1, fortio histograms). The write
failures are real where the test runs as root (a tmpfs mounted for the test, filled or
remounted read-only during test 2); elsewhere the failing write is simulated at the
filesystem call.
"""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

import runner
from meshperf import run as run_mod
from meshperf.errors import ExitCode
from meshperf.platform import RESULT_KEY
from meshperf.platform import TestSpec as Spec
from meshperf.run import run_matrix, summary_table
from test_run import EchoPlatform, _plan, _results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The kept dir lives in the temp dir: this test's own, not the machine's /tmp."""
    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    monkeypatch.setattr(run_mod, "WRITE_RETRIES", (0.05, 0.05))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    return d


# ---- item 12: a second Ctrl-C during a test --------------------------------------------------


class _Unstoppable(EchoPlatform):
    """A test that does not stop on the first signal (a hung exec, a slow generator)."""

    def stop_current(self) -> None:
        pass


def test_double_sigint_records_the_running_test_as_interrupted(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def on_test(plat: EchoPlatform, spec: Spec) -> None:
        if len(plat.ran) == 2:
            for delay in (0.1, 0.3):
                threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()

    plat = _Unstoppable(out, on_test=on_test)
    plan = _plan(duration=3.0, conns=(1,), modes=("baseline", "serversidecar", "both"))
    report = run_matrix(plat, plan, out, stream=io.StringIO())
    assert report.exit_code == ExitCode.INTERRUPTED
    assert [o.status for o in report.outcomes] == ["ok", "interrupted", "not-run"]
    assert "aborted by a second signal" in report.outcomes[1].reason
    # Aborted, not run to its end (side by side with test 1, which ran its full 3 s).
    assert report.outcomes[1].wall_seconds < 0.7 * report.outcomes[0].wall_seconds
    run = json.loads((out / f"run-{plan.run_id}.json").read_text())
    assert [t["status"] for t in run["tests"]] == ["ok", "interrupted", "not-run"]
    assert plat.closed == 1


# ---- item 10: SIGHUP is handled like SIGTERM -------------------------------------------------

_HUP_SCRIPT = """
import io, json, os, signal, sys, threading
sys.path[:0] = [{tests!r}, {runner!r}]
from pathlib import Path
from test_run import EchoPlatform, _plan
from meshperf.run import run_matrix

def on_test(plat, spec):
    if len(plat.ran) == 2:
        threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGHUP)).start()

out = Path(sys.argv[1])
plat = EchoPlatform(out, on_test=on_test)
report = run_matrix(plat, _plan(duration=1.0, conns=(1,),
                    modes=("baseline", "serversidecar", "both")), out, stream=io.StringIO())
print(json.dumps([report.signal_name, plat.closed, [o.status for o in report.outcomes]]))
sys.exit(int(report.exit_code))
"""


def test_sighup_stops_the_run_cleanly_like_sigterm(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = _HUP_SCRIPT.format(tests=str(ROOT / "tests"), runner=str(ROOT / "runner"))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=60
    )
    # Today's default action for SIGHUP kills the process at once: rc -1 (129 from a shell).
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stderr
    assert json.loads(proc.stdout) == ["SIGHUP", 1, ["ok", "interrupted", "not-run"]]
    run = json.loads(next(out.glob("run-*.json")).read_text())
    assert run["status"] == "interrupted"
    assert run["tests"][2]["reason"] == "run interrupted (SIGHUP)"


# ---- item 9: the output dir fails during test 2 ----------------------------------------------


def _check_stopped_cleanly(report: run_mod.RunReport, out: Path, kept: Path) -> None:
    assert report.exit_code == ExitCode.OUTPUT_FAILED == 4
    assert [o.status for o in report.outcomes] == ["ok", "ok", "not-run", "not-run"]
    assert report.kept_dir == kept
    # Test 1 in the output dir; test 2, measured when the disk failed, in the kept dir.
    assert [r[RESULT_KEY]["mode"] for r in _results(out)] == ["baseline"]
    second = Path(report.outcomes[1].file)
    assert second.parent == kept
    doc = json.loads(second.read_text())
    assert doc["Labels"] == report.outcomes[1].spec.labels
    assert doc["DurationHistogram"]["Count"] > 10
    assert f"cannot write results to {out}" in report.outcomes[1].reason
    assert report.outcomes[1].stats["requests"] > 10  # and in memory, for the summary
    # The run file that says what happened is beside the kept result.
    run = json.loads((kept / f"run-{report.run_id}.json").read_text())
    assert run["status"] == "output-failed"
    assert run["output_error"].startswith(f"cannot write results to {out}")
    assert [t["status"] for t in run["tests"]] == ["ok", "ok", "not-run", "not-run"]
    assert run["tests"][2]["reason"].startswith(f"run stopped: cannot write results to {out}")
    table = summary_table(report)
    assert "test 2 (" in table and f"kept in {second}" in table


def test_write_failure_mid_run_keeps_the_result_and_stops_cleanly(
    tmp_path: Path, _private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated at the filesystem call: every write into the output dir fails with ENOSPC
    from test 2's result on (retries included)."""
    out = tmp_path / "out"
    real = run_mod.write_json_atomic
    broken = threading.Event()
    attempts: list[Path] = []

    def write(path: Path, obj: Any) -> None:
        if broken.is_set() and path.parent == out:
            attempts.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, obj)

    def on_test(plat: EchoPlatform, spec: Spec) -> None:
        if len(plat.ran) == 2:
            broken.set()

    monkeypatch.setattr(run_mod, "write_json_atomic", write)
    plat = EchoPlatform(out, on_test=on_test)
    report = run_matrix(plat, _plan(), out, stream=io.StringIO())
    _check_stopped_cleanly(report, out, _private_tmp / f"meshperf-kept-{report.run_id}")
    assert plat.closed == 1 and len(plat.ran) == 2
    assert len([p for p in attempts if p.name != f"run-{report.run_id}.json"]) == 3  # retried


def _mount_tmpfs(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the simulated case above runs everywhere)")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(path)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_real_disk_fault_mid_run_through_the_cli(
    tmp_path: Path,
    _private_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fault: str,
) -> None:
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt)
    out = mnt / "results"
    plats: list[EchoPlatform] = []

    def on_test(plat: EchoPlatform, spec: Spec) -> None:
        if len(plat.ran) != 2:
            return
        if fault == "read-only":
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, timeout=30)
        else:
            with open(mnt / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass

    def make(opts: Any) -> EchoPlatform:
        plats.append(EchoPlatform(out, on_test=on_test))
        return plats[-1]

    monkeypatch.setattr(runner, "make_platform", make)
    try:
        code = runner.main(
            ["1,2", "200", "0.2", "--baseline", "--platform", "local", "--run-id", "0badcafe",
             "--output-dir", str(out), "-q"]
        )  # fmt: skip
        captured = capsys.readouterr()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], timeout=30)
    kept = _private_tmp / "meshperf-kept-0badcafe"
    assert code == ExitCode.OUTPUT_FAILED, captured.err
    assert f"runner.py: error: cannot write results to {out}: " in captured.err
    assert f"the run stopped; what was measured is kept in {kept}" in captured.err
    assert "not-run" in captured.out  # the summary table is printed all the same
    docs = sorted(kept.glob("2*.json"))
    assert len(docs) == 1 and json.loads(docs[0].read_text())[RESULT_KEY]["mode"] == "both"
    run = json.loads((kept / "run-0badcafe.json").read_text())
    assert run["status"] == "output-failed"
    assert [t["status"] for t in run["tests"]] == ["ok", "ok", "not-run", "not-run"]
    assert plats[0].closed == 1


# ---- item 13: --resume after an interrupted or failing run -----------------------------------


def test_resume_completes_the_old_run_file_and_reruns_failed_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    modes = ("baseline", "serversidecar", "both")

    def stop_in_2(plat: EchoPlatform, spec: Spec) -> None:
        if len(plat.ran) == 2:
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()

    # Run 1: both fails every request (503), serversidecar is interrupted.
    first = run_matrix(
        EchoPlatform(out, error_modes=("both",), on_test=stop_in_2),
        _plan("0000aaaa", duration=0.5, conns=(1,), modes=modes), out, stream=io.StringIO(),
    )  # fmt: skip
    assert [o.status for o in first.outcomes] == ["ok", "interrupted", "not-run"]
    plat = EchoPlatform(out, error_modes=("both",))
    run_matrix(plat, _plan("0000aaab", duration=0.2, conns=(1,), modes=("both",)), out,
               stream=io.StringIO())  # fmt: skip
    assert plat.ran == ["0000aaab_qps_200_c_1_1024_both"]  # a result with 100% errors

    # Resume: the interrupted and never-run cells run, and so does the failed one by default.
    plat = EchoPlatform(out)
    third = run_matrix(plat, _plan("0000bbbb", duration=0.5, conns=(1,), modes=modes), out,
                       resume=True, stream=io.StringIO())  # fmt: skip
    assert plat.ran == ["0000bbbb_qps_200_c_1_1024_serveronly", "0000bbbb_qps_200_c_1_1024_both"]
    assert third.exit_code == ExitCode.OK
    old = json.loads((out / "run-0000aaaa.json").read_text())
    assert [t["status"] for t in old["tests"]] == ["ok", "resumed", "resumed"]
    assert [t["file"] for t in old["tests"][1:]] == [o.file for o in third.outcomes[1:]]
    assert old["tests"][1]["reason"] == "interrupted; run again by run 0000bbbb"

    # fortio.py reads the directory: nothing reported skipped any more.
    import fortio  # runner/fortio.py

    summary = tmp_path / "summary"
    code = fortio.main([str(out), "--output", str(summary)])
    assert code == ExitCode.OK


def test_resume_keep_failed_skips_a_failed_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_matrix(EchoPlatform(out, error_modes=("both",)),
               _plan("0000aaaa", conns=(1,)), out, stream=io.StringIO())  # fmt: skip
    plat = EchoPlatform(out)
    again = run_matrix(plat, _plan("0000bbbb", conns=(1,)), out, resume=True,
                       resume_keep_failed=True, stream=io.StringIO())  # fmt: skip
    assert plat.ran == []
    assert [o.status for o in again.outcomes] == ["skipped-resume"] * 2


def test_resume_keep_failed_needs_resume(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        runner.main(["1", "10", "1", "--resume-keep-failed", "--platform", "local", "--dry-run"])
    assert e.value.code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "runner.py: error: --resume-keep-failed needs --resume (see --help)\n"
    )


# ---- item 7: fewer connections than asked ---------------------------------------------------


def test_fewer_connections_than_asked_are_recorded_beside_the_request(tmp_path: Path) -> None:
    """The platform answers NumThreads 1 (as fortio does for 64 connections at 10 qps x 2 s:
    at least 2 calls per connection); the run must say so, not show conn 2 as if it ran."""
    out = tmp_path / "out"
    stream = io.StringIO()
    report = run_matrix(EchoPlatform(out), _plan(conns=(2,), modes=("baseline",)), out,
                        stream=stream)  # fmt: skip
    (doc,) = _results(out)
    assert doc["NumThreads"] == 1
    assert (doc[RESULT_KEY]["conn"], doc[RESULT_KEY]["effective_conn"]) == (2, 1)
    run = json.loads((out / f"run-{report.run_id}.json").read_text())
    assert (run["tests"][0]["conn"], run["tests"][0]["effective_conn"]) == (2, 1)
    assert "(ran 1 connections, not the 2 asked)" in stream.getvalue()
    assert "ran 1 connections, not the 2 asked" in summary_table(report)
