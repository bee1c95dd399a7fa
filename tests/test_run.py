"""Executing a plan: a file per test as it ends, resume, failures recorded, Ctrl-C keeps results.

The platform here is small but real: ``start`` serves HTTP on 127.0.0.1, ``run_test`` sends real
requests for the test's duration, times them into fortio's ``Histogram`` and returns a fortio
result, exactly the contract LocalPlatform and KubernetesPlatform fulfil.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from meshperf import fortiojson
from meshperf.errors import ExitCode, PlatformError
from meshperf.histogram import Histogram
from meshperf.plan import Plan, build_plan
from meshperf.platform import RESULT_KEY
from meshperf.platform import TestSpec as Spec  # not collected as a test class
from meshperf.run import Progress, next_steps, run_matrix, summary_table


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        status = 503 if self.path.startswith("/fail") else 200
        body = b"x" * 64
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class EchoPlatform:
    """Serves HTTP on loopback and loads it for each test; fails on request, for the tests."""

    name = "local"

    def __init__(
        self,
        out_dir: Path,
        fail_modes: tuple[str, ...] = (),
        error_modes: tuple[str, ...] = (),
        on_test: Any = None,
    ) -> None:
        self.out_dir = out_dir
        self.fail_modes = fail_modes
        self.error_modes = error_modes
        self.on_test = on_test
        self.started: tuple[str, ...] | None = None
        self.ran: list[str] = []
        self.files_seen: list[int] = []
        self.closed = 0
        self.stopped = threading.Event()
        self.server: http.server.ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def start(self, modes: tuple[str, ...]) -> None:
        self.started = modes
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def run_test(self, spec: Spec) -> dict[str, Any]:
        assert self.server is not None
        self.ran.append(spec.labels)
        # Results of earlier tests must already be on disk when the next one starts.
        self.files_seen.append(len([p for p in self.out_dir.glob("*.json")
                                    if not p.name.startswith("run-")]))  # fmt: skip
        if self.on_test is not None:
            self.on_test(self, spec)
        if spec.mode in self.fail_modes:
            raise PlatformError(f"sidecar for {spec.mode} died")
        self.stopped.clear()
        port = self.server.server_address[1]
        path = "/fail" if spec.mode in self.error_modes else "/echo"
        hist, errs = Histogram(0, spec.resolution), Histogram(0, spec.resolution)
        codes: dict[str, int] = {}
        start = dt.datetime.now().astimezone()
        t0 = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        interval = 1.0 / spec.qps if spec.qps else 0.0
        n = 0
        try:
            while not self.stopped.is_set() and time.monotonic() - t0 < spec.duration:
                s = time.monotonic()
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                lat = time.monotonic() - s
                hist.record(lat)
                if resp.status != 200:
                    errs.record(lat)
                codes[str(resp.status)] = codes.get(str(resp.status), 0) + 1
                n += 1
                wait = t0 + n * interval - time.monotonic()
                if wait > 0:
                    self.stopped.wait(wait)
        finally:
            conn.close()
        elapsed = time.monotonic() - t0
        return {
            "RunType": "HTTP",
            "Labels": spec.labels,
            "StartTime": fortiojson.go_time(start),
            "RequestedQPS": f"{spec.qps:g}" if spec.qps else "max",
            "RequestedDuration": f"{spec.duration:g}s",
            "ActualQPS": hist.count / elapsed,
            "ActualDuration": int(elapsed * 1e9),
            "NumThreads": 1,
            "Version": "test",
            "DurationHistogram": hist.export(spec.percentiles),
            "ErrorsDurationHistogram": errs.export(spec.percentiles),
            "Exactly": 0,
            "Jitter": spec.jitter,
            "Uniform": spec.uniform,
            "NoCatchUp": spec.nocatchup,
            "RunID": 0,
            "AccessLoggerInfo": "",
            "ID": "",
            "RetCodes": codes,
            "URL": f"http://127.0.0.1:{port}{path}",
            RESULT_KEY: {"target": f"http://127.0.0.1:{port}{path}", "resources": {}},
        }

    def metadata(self) -> dict[str, Any]:
        return {"platform": self.name, "server": "http.server"}

    def stop_current(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        self.closed += 1
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _plan(run_id: str = "0badcafe", duration: float = 0.2, conns: tuple[int, ...] = (1, 2),
          modes: tuple[str, ...] = ("baseline", "both")) -> Plan:  # fmt: skip
    return build_plan(conns=list(conns), qpss=[200.0], duration=duration, modes=modes,
                      platform="local", mesh="istio", run_id=run_id)  # fmt: skip


def _results(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))
            if not p.name.startswith("run-")]  # fmt: skip


def test_each_result_written_when_its_test_ends(tmp_path: Path) -> None:
    out = tmp_path / "out"
    plat = EchoPlatform(out)
    stream = io.StringIO()
    report = run_matrix(plat, _plan(), out, command_line=["runner.py", "1,2"], stream=stream)
    assert report.exit_code == ExitCode.OK
    assert plat.started == ("baseline", "both")
    assert plat.files_seen == [0, 1, 2, 3]
    assert plat.closed == 1
    results = _results(out)
    assert len(results) == 4
    by_label = {r["Labels"]: r for r in results}
    assert set(by_label) == {t.labels for t in _plan().tests}
    for t in _plan().tests:
        r = by_label[t.labels]
        block = r[RESULT_KEY]
        assert (block["mode"], block["conn"], block["qps"], block["run_id"]) == (
            t.mode, t.conn, 200.0, "0badcafe")  # fmt: skip
        assert block["platform"] == "local" and block["mesh"] == "istio"
        assert block["target"].startswith("http://127.0.0.1:")  # the platform's own fact kept
        assert r["DurationHistogram"]["Count"] > 10
        # File name = fortio's ID rule on the test's StartTime and label, and ID matches it.
        # Our labels hold only [A-Za-z0-9_], which fortio's rule keeps as they are.
        start = dt.datetime.fromisoformat(r["StartTime"])
        assert r["ID"] == start.strftime("%Y-%m-%d-%H%M%S") + "_" + t.labels
        text = (out / f"{r['ID']}.json").read_text()
        assert json.loads(text) == r and text.endswith("}\n") and text.startswith('{\n  "')
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left

    run = json.loads((out / "run-0badcafe.json").read_text())
    assert run["status"] == "finished"
    assert run["command_line"] == ["runner.py", "1,2"]
    assert run["platform_metadata"] == {"platform": "local", "server": "http.server"}
    assert [t["status"] for t in run["tests"]] == ["ok"] * 4
    assert [t["label"] for t in run["plan"]] == [t.labels for t in _plan().tests]
    assert {t["file"] for t in run["tests"]} == {f"{r['ID']}.json" for r in results}
    # Plain progress (not a TTY): one line per test.
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("[1/4] baseline c=1 qps=200 0.2s: ok: ")


def test_failed_test_is_recorded_and_the_matrix_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    plat = EchoPlatform(out, fail_modes=("baseline",), error_modes=("both",))
    report = run_matrix(plat, _plan(conns=(1,)), out, stream=io.StringIO())
    assert report.exit_code == ExitCode.TESTS_FAILED
    assert [o.status for o in report.outcomes] == ["failed", "errors"]
    assert report.outcomes[0].reason == "PlatformError: sidecar for baseline died"
    assert report.outcomes[1].reason == "100.00% of requests failed"
    # The failed test has no file; the one with errors is kept, never dropped.
    results = _results(out)
    assert [r[RESULT_KEY]["mode"] for r in results] == ["both"]
    assert results[0]["RetCodes"].keys() == {"503"}
    run = json.loads((out / "run-0badcafe.json").read_text())
    assert [(t["status"], t["reason"]) for t in run["tests"]] == [
        ("failed", "PlatformError: sidecar for baseline died"),
        ("errors", "100.00% of requests failed"),
    ]
    table = summary_table(report)
    assert "test 1 (0badcafe_qps_200_c_1_1024_base) failed: PlatformError" in table
    assert "test 2 (0badcafe_qps_200_c_1_1024_both) errors: 100.00% of requests failed" in table
    row = table.splitlines()[2].split()
    assert row[1] == "both" and row[8] == "100.00" and row[9] == "errors"


def test_resume_skips_what_exists(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_matrix(EchoPlatform(out), _plan(), out, stream=io.StringIO())
    assert first.exit_code == ExitCode.OK
    files = sorted(p.name for p in out.glob("*.json") if not p.name.startswith("run-"))

    # A new run (new run id) of the same matrix: nothing to do, the platform is not even started.
    plat = EchoPlatform(out)
    again = run_matrix(plat, _plan(run_id="0000beef"), out, resume=True, stream=io.StringIO())
    assert again.exit_code == ExitCode.OK
    assert plat.ran == [] and plat.started is None and plat.closed == 1
    assert [o.status for o in again.outcomes] == ["skipped-resume"] * 4
    assert sorted(o.file for o in again.outcomes) == files
    assert all(o.stats["requests"] > 10 for o in again.outcomes)  # earlier numbers shown

    # Lose one result: only that test runs again; a different duration is a different test.
    victim = next(r for r in _results(out) if r[RESULT_KEY]["conn"] == 2
                  and r[RESULT_KEY]["mode"] == "both")  # fmt: skip
    (out / f"{victim['ID']}.json").unlink()
    plat = EchoPlatform(out)
    third = run_matrix(plat, _plan(run_id="0000cafe"), out, resume=True, stream=io.StringIO())
    assert plat.ran == ["0000cafe_qps_200_c_2_1024_both"]
    assert plat.started == ("both",)
    assert [o.status for o in third.outcomes] == ["skipped-resume"] * 3 + ["ok"]
    run = json.loads((out / "run-0000cafe.json").read_text())
    assert [t["status"] for t in run["tests"]] == ["skipped-resume"] * 3 + ["ok"]

    plat = EchoPlatform(out)
    run_matrix(plat, _plan(run_id="0000d00d", duration=0.1, conns=(1,)), out, resume=True,
               stream=io.StringIO())  # fmt: skip
    assert len(plat.ran) == 2


def _interrupt_during(signum: int, test_no: int, delay: float = 0.15) -> Any:
    def on_test(plat: EchoPlatform, spec: Spec) -> None:
        if len(plat.ran) == test_no:
            threading.Timer(delay, os.kill, (os.getpid(), signum)).start()

    return on_test


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_keeps_finished_results(tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out"
    plat = EchoPlatform(out, on_test=_interrupt_during(signum, 2))
    plan = _plan(duration=1.0, conns=(1,), modes=("baseline", "serversidecar", "both"))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    report = run_matrix(plat, plan, out, stream=io.StringIO())
    assert report.interrupted and report.exit_code == ExitCode.INTERRUPTED == 130
    assert report.signal_name == signal.Signals(signum).name
    # Test 2 was stopped, not run to its end (side by side with test 1, which ran its full
    # second), and test 3 never started.
    assert report.outcomes[1].wall_seconds < 0.6 * report.outcomes[0].wall_seconds
    assert len(plat.ran) == 2
    assert [o.status for o in report.outcomes] == ["ok", "interrupted", "not-run"]
    assert [r[RESULT_KEY]["mode"] for r in _results(out)] == ["baseline"]
    assert plat.closed == 1
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    run = json.loads((out / "run-0badcafe.json").read_text())
    assert run["status"] == "interrupted"
    assert [t["status"] for t in run["tests"]] == ["ok", "interrupted", "not-run"]
    assert run["tests"][2]["reason"] == f"run interrupted ({signal.Signals(signum).name})"


def test_start_failure_closes_platform_and_propagates(tmp_path: Path) -> None:
    class Broken(EchoPlatform):
        def start(self, modes: tuple[str, ...]) -> None:
            raise PlatformError("envoy exited with code 1")

    plat = Broken(tmp_path)
    with pytest.raises(PlatformError, match="envoy exited"):
        run_matrix(plat, _plan(), tmp_path / "out", stream=io.StringIO())
    assert plat.closed == 1
    assert not list((tmp_path / "out").glob("run-*.json"))


def test_result_names_never_collide(tmp_path: Path) -> None:
    # Two tests starting in the same second with the same label (sub-second repeats).
    out = tmp_path / "out"
    plan = build_plan(conns=[1], qpss=[100.0], duration=0.05, modes=("both",), platform="local",
                      mesh="istio", run_id="0badcafe", repeat=3)  # fmt: skip
    report = run_matrix(EchoPlatform(out), plan, out, stream=io.StringIO())
    assert report.exit_code == ExitCode.OK
    assert len({o.file for o in report.outcomes}) == 3
    assert sorted(r[RESULT_KEY]["repeat"] for r in _results(out)) == [0, 1, 2]


def test_progress_lines_quiet_mode(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stream = io.StringIO()
    run_matrix(EchoPlatform(out, fail_modes=("both",)), _plan(conns=(1,)), out,
               progress=lambda n, s: Progress(n, s), stream=stream)  # fmt: skip
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1] == "[2/2] both c=1 qps=200 0.2s: failed: PlatformError: sidecar for both died"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stream = _Terminal()
    run_matrix(EchoPlatform(out, fail_modes=("both",)), _plan(conns=(1,)), out, stream=stream)
    text = stream.getvalue()
    assert "2/2" in text and "ETA 0:00:0" in text and "baseline c=1 qps=200" in text
    # Only problems get their own line above the bar.
    assert "[2/2] both c=1 qps=200 0.2s: failed: PlatformError: sidecar for both died" in text
    assert "[1/2]" not in text


@pytest.mark.parametrize("where", ["inside", "elsewhere"])
def test_next_steps_run_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The printed commands work pasted as they are: from the results dir itself
    (``--output-dir .``, no name to build a summary name on) and from outside the repo."""
    results = tmp_path / "my results"
    fortio_data.write(results, fortio_data.istio_tools())
    if where == "inside":
        monkeypatch.chdir(results)
        text = next_steps(Path("."))
    else:
        monkeypatch.chdir(tmp_path)
        text = next_steps(Path("my results"))
    lines = text.splitlines()[1:]
    assert len(lines) == 2
    said: list[str] = []
    for line in lines:
        argv = shlex.split(line)
        values = [a for a in argv[2:] if a != "--output"]
        # The interpreter that ran (system python may lack pandas), as reachable from here.
        assert os.path.abspath(argv[0]) == os.path.abspath(sys.executable), line
        assert not any(a.startswith("-") for a in values), line
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=60,
            check=False, env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_URL"},
        )  # fmt: skip
        assert proc.returncode == 0, (line, proc.stderr)
        said.append(proc.stdout)
    assert "1 test read, 1 written" in said[0], said[0]
    (html,) = tmp_path.rglob("*summary*p99*.html")
    assert html.name in said[1], said[1]


def test_progress_is_plain_on_a_terminal_without_columns() -> None:
    """tqdm draws nothing on a 0-column pty; the plain lines must show there instead."""
    import fcntl
    import struct
    import termios

    from meshperf.run import BarProgress, _default_progress

    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert tty.isatty()
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 0, 0, 0))
            plain = _default_progress(2, tty)
            assert type(plain) is Progress
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
            bar = _default_progress(2, tty)
            assert isinstance(bar, BarProgress)
            bar.close()
    finally:
        os.close(slave)
        os.close(master)
