"""The built-in load generator (``runner/loadgen.py load``) against real servers on loopback.

Runs go through the CLI in a subprocess (argv exactly as the local platform passes it) except
where the test needs the library's raw samples. Timing checks are sanity bounds only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from conftest import EchoServer, free_port, start_echo_server
from meshperf import goduration
from meshperf.errors import ExitCode
from meshperf.goduration import MILLISECOND, MINUTE, SECOND, format_duration, parse_duration
from meshperf.histogram import Histogram
from meshperf.loadgen import CallPlan as Plan
from meshperf.loadgen import LoadOptions, RunOutcome, Target, build_request, cli, run_load

REPO = Path(__file__).resolve().parents[1]
LOADGEN = REPO / "runner" / "loadgen.py"

# Fortio's key order (spec sections 1.2 and 1.4, fortio >= 1.52) plus our one extra histogram.
FORTIO_HTTP_KEYS = [
    "RunType", "Labels", "StartTime", "RequestedQPS", "RequestedDuration", "ActualQPS",
    "ActualDuration", "NumThreads", "Version", "DurationHistogram", "ErrorsDurationHistogram",
    "Exactly", "Jitter", "Uniform", "NoCatchUp", "RunID", "AccessLoggerInfo", "ID",
    "RetCodes", "IPCountMap", "Insecure", "MTLS", "CACert", "Cert", "Key", "UnixDomainSocket",
    "URL", "NumConnections", "Compression", "DisableFastClient", "HTTP10", "H2",
    "DisableKeepAlive", "AllowHalfClose", "FollowRedirects", "Resolve", "HTTPReqTimeOut",
    "UserCredentials", "ContentType", "Payload", "MethodOverride", "LogErrors",
    "SequentialWarmup", "ConnReuseRange", "NoResolveEachConn", "Offset", "Resolution",
    "Sizes", "HeaderSizes", "Sockets", "SocketCount", "ConnectionStats", "AbortOn",
    "SendLagHistogram",
]  # fmt: skip


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    s = start_echo_server()
    yield s
    s.stop()


def load(
    *args: str, timeout: float = 60
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run ``loadgen.py load ... -json - URL``; return the parsed JSON and the process."""
    p = subprocess.run(
        [sys.executable, str(LOADGEN), "load", "-json", "-", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), p


def header_len(url: str) -> int:
    """Length of the response header block the server sends for the loadgen's request."""
    t = Target.parse(url)
    with socket.create_connection((t.host, t.port), timeout=5) as s:
        s.sendall(build_request(LoadOptions(url), t))
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
    return data.index(b"\r\n\r\n") + 4


def check_percentiles(h: dict[str, Any]) -> None:
    assert h["Percentiles"], h
    for p in h["Percentiles"]:
        expected = fortio_data.spec_percentile(h, p["Percentile"])
        assert p["Value"] == pytest.approx(expected, rel=1e-12)
    assert h["Data"][0]["Start"] == h["Min"] and h["Data"][-1]["End"] == h["Max"]
    assert sum(b["Count"] for b in h["Data"]) == h["Count"]


# --------------------------------------------------------------------------- load runs


def test_counts_codes_sizes_and_format(server: EchoServer) -> None:
    url = f"{server.base}/echo?size=1024"
    res, p = load("-c", "4", "-qps", "200", "-t", "1s", "-r", "0.0001", "-labels", "X Y", url)
    assert list(res) == FORTIO_HTTP_KEYS
    assert res["RunType"] == "HTTP" and res["URL"] == url
    assert res["RequestedQPS"] == "200" and res["RequestedDuration"] == "1s"
    assert res["NumThreads"] == 4 and res["Sockets"] == [1, 1, 1, 1]
    assert res["SocketCount"] == 4 and res["IPCountMap"] == {f"127.0.0.1:{server.port}": 4}
    assert res["DurationHistogram"]["Count"] == 200  # floor(200*1) / 4 threads * 4
    assert res["RetCodes"] == {"200": 200}
    assert res["ErrorsDurationHistogram"]["Count"] == 0
    assert res["ActualQPS"] == 200 / (res["ActualDuration"] / 1e9)
    assert res["Labels"] == "X Y" and res["ID"].endswith("_X_Y")
    assert res["HTTPReqTimeOut"] == 3 * SECOND and res["Resolution"] == 0.0001
    hl = header_len(url)
    assert res["HeaderSizes"]["Min"] == res["HeaderSizes"]["Max"] == hl
    assert res["Sizes"]["Min"] == res["Sizes"]["Max"] == hl + 1024
    assert "Percentiles" not in res["Sizes"]
    for key in ("DurationHistogram", "ConnectionStats", "SendLagHistogram"):
        check_percentiles(res[key])
    assert res["ConnectionStats"]["Count"] == 4
    assert res["SendLagHistogram"]["Count"] == 200
    assert "Successfully" not in p.stdout and "All done 200 calls" in p.stderr


def test_thread_reduction(server: EchoServer) -> None:
    res, p = load("-c", "8", "-qps", "10", "-t", "500ms", f"{server.base}/")
    # planned floor(10*0.5)=5 < 2*8: threads = 5//2 = 2, 2 calls each (remainder dropped)
    assert res["NumThreads"] == 2
    assert res["DurationHistogram"]["Count"] == 4
    assert "Lowering number of threads" in p.stderr


def test_exactly_n_without_warmup(server: EchoServer) -> None:
    res, _ = load("-c", "3", "-qps", "0", "-n", "10", f"{server.base}/")
    assert res["DurationHistogram"]["Count"] == 10
    assert res["Exactly"] == 10 and res["RequestedDuration"] == "exactly 10 calls"
    assert res["RequestedQPS"] == "max"
    assert res["SocketCount"] == 3


def test_max_mode_runs_back_to_back(server: EchoServer) -> None:
    res, _ = load("-c", "2", "-qps", "-1", "-t", "500ms", f"{server.base}/")
    assert res["RequestedQPS"] == "max"
    assert res["SendLagHistogram"]["Count"] == 0
    # Unpaced: many times what the paced default would make (8 qps -> 4 calls).
    assert res["DurationHistogram"]["Count"] > 10 * 4


def test_qps_is_roughly_achieved(server: EchoServer) -> None:
    res, _ = load("-c", "4", "-qps", "400", "-t", "1s", "-uniform", f"{server.base}/")
    assert res["DurationHistogram"]["Count"] == 400
    # Paced: never ahead of the schedule. How close a loaded machine gets to 400/s is a
    # benchmark's question (bench/bench_loadgen.py), not a test's.
    assert res["ActualQPS"] < 440
    assert res["ActualDuration"] >= 0.99e9  # the last of 100 calls per thread is due at 0.99 s
    assert res["Uniform"] is True


def test_weighted_status_counts_errors(server: EchoServer) -> None:
    res, _ = load("-c", "2", "-qps", "0", "-n", "400", f"{server.base}/?status=503:20,429:10")
    codes = res["RetCodes"]
    assert set(codes) <= {"200", "503", "429"}
    assert sum(codes.values()) == 400
    assert codes.get("503", 0) > 40 and codes.get("429", 0) > 15 and codes["200"] > 200
    errors = codes.get("503", 0) + codes.get("429", 0)
    assert res["ErrorsDurationHistogram"]["Count"] == errors
    check_percentiles(res["ErrorsDurationHistogram"])
    # fortio counts header bytes only for 2xx answers.
    assert res["HeaderSizes"]["Min"] == 0


def test_delay_shows_in_latency(server: EchoServer) -> None:
    res, _ = load(
        "-c", "2", "-qps", "100", "-t", "500ms", "-r", "0.0001", f"{server.base}/?delay=5ms"
    )
    p50 = res["DurationHistogram"]["Percentiles"][0]
    assert p50["Percentile"] == 50 and p50["Value"] >= 0.005
    assert res["DurationHistogram"]["Min"] >= 0.005


def test_payload_is_posted_and_echoed(server: EchoServer) -> None:
    url = f"{server.base}/echo"
    res, _ = load("-c", "1", "-n", "5", "-payload-size", "300", "-H", "X-Test: 1", url)
    assert len(base64.b64decode(res["Payload"])) == 300
    assert res["ContentType"] == "application/octet-stream"
    assert res["Sizes"]["Min"] == res["HeaderSizes"]["Min"] + 300


def test_nocatchup_skips_missed_slots(server: EchoServer) -> None:
    # 100 qps for 2 s with 10% of calls taking 50 ms (each one spans 5 slots). By default the
    # missed slots are fired back to back afterwards, so nearly all 200 planned calls happen;
    # with -nocatchup they are skipped: about 20 slow calls lose about 100 slots.
    url = f"{server.base}/?delay=50ms:10"
    catchup, _ = load("-c", "1", "-qps", "100", "-t", "2s", url)
    skip, _ = load("-c", "1", "-qps", "100", "-t", "2s", "-nocatchup", url)
    assert catchup["NoCatchUp"] is False and skip["NoCatchUp"] is True
    n_catchup = catchup["DurationHistogram"]["Count"]
    n_skip = skip["DurationHistogram"]["Count"]
    # Compared side by side: skipping must lose a good share of the slots catch-up fires.
    # The schedule itself bounds catch-up (200 slots, fortio never exceeds them); a machine too
    # loaded to fire even half of them says nothing about -nocatchup, so that much is required.
    assert 100 <= n_catchup <= 200
    assert n_skip < 0.9 * n_catchup


def test_timeout_counts_as_socket_error(server: EchoServer) -> None:
    res, _ = load("-c", "1", "-n", "3", "-timeout", "50ms", f"{server.base}/?delay=1s")
    assert res["RetCodes"] == {"-1": 3}
    assert res["HTTPReqTimeOut"] == 50_000_000
    assert res["DurationHistogram"]["Min"] >= 0.05
    assert res["SocketCount"] == 3  # each timed-out socket is dropped and replaced


def test_json_to_file_and_autosave(server: EchoServer, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    p = subprocess.run(
        [sys.executable, str(LOADGEN), "load", "-n", "4", "-json", str(out), f"{server.base}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0 and p.stdout == ""
    assert json.loads(out.read_text())["DurationHistogram"]["Count"] == 4
    p = subprocess.run(
        [sys.executable, str(LOADGEN), "load", "-n", "4", "-a", "-data-dir", str(tmp_path),
         "-labels", "auto save", "-runid", "7", f"{server.base}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    saved = [f for f in tmp_path.iterdir() if f.name != "r.json"]
    assert len(saved) == 1 and saved[0].name.endswith("_7_auto_save.json")
    res = json.loads(saved[0].read_text())
    assert saved[0].name == res["ID"] + ".json" and res["RunID"] == 7


def test_uniform_staggers_connections() -> None:
    """-uniform: thread k of N starts k/N of the per-thread interval late; default: together."""
    with ArrivalServer() as srv:
        load("-c", "4", "-qps", "40", "-t", "1s", "-uniform", srv.url)
        uniform = srv.phases_ms()
    with ArrivalServer() as srv:
        load("-c", "4", "-qps", "40", "-t", "1s", srv.url)
        together = srv.phases_ms()
    # per-thread qps 10 -> 100 ms interval -> offsets 0, 25, 50, 75 ms. Judged against the
    # schedule's own spacing, not a wall-clock margin: each connection is nearer its own slot
    # than any other (within half the 25 ms spacing), and the default start is far tighter
    # than the staggered one, side by side in this run.
    for got, want in zip(uniform, (0, 25, 50, 75), strict=True):
        assert abs(got - want) < 12.5, uniform
    assert max(together) - min(together) < (max(uniform) - min(uniform)) / 3, (together, uniform)


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
)
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until close"


@pytest.mark.parametrize("response", [CHUNKED, UNTIL_CLOSE], ids=["chunked", "until-close"])
def test_other_response_framings(response: bytes) -> None:
    with ArrivalServer(response) as srv:
        res, _ = load("-c", "2", "-n", "6", srv.url)
    assert res["RetCodes"] == {"200": 6}
    assert res["Sizes"]["Min"] == res["Sizes"]["Max"] == len(response)
    head = response.index(b"\r\n\r\n") + 4
    assert res["HeaderSizes"]["Max"] == head
    # Connection: close costs a socket per call; chunked keeps the connection.
    assert res["SocketCount"] == (6 if response is UNTIL_CLOSE else 2)


def test_jitter_keeps_the_planned_count(server: EchoServer) -> None:
    res, _ = load("-c", "2", "-qps", "40", "-t", "500ms", "-jitter", f"{server.base}/")
    assert res["Jitter"] is True
    assert res["DurationHistogram"]["Count"] == 20


def spawn_load(*flags: str, new_session: bool = False) -> subprocess.Popen[str]:
    """``loadgen.py load FLAGS`` as a child with stdout and stderr piped, for signal tests."""
    return subprocess.Popen(
        [sys.executable, str(LOADGEN), "load", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def test_server_killed_mid_run_counts_socket_errors(tmp_path: Path) -> None:
    srv = start_echo_server()
    out = tmp_path / "r.json"
    proc = spawn_load(
        "-c", "2", "-qps", "100", "-t", "4s",
        "-json", str(out), f"{srv.base}/"
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert "running at 100 queries" in proc.stderr.readline()  # warmup done, run on
        time.sleep(0.8)  # well inside the 4 s run, even on a loaded machine
        srv.proc.kill()
        srv.proc.wait(5)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.stop()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    res = json.loads(out.read_text())
    codes = res["RetCodes"]
    assert codes.get("200", 0) > 0 and codes.get("-1", 0) > 0
    assert res["ErrorsDurationHistogram"]["Count"] == codes["-1"]
    assert sum(codes.values()) == res["DurationHistogram"]["Count"]


def test_unreachable_with_allow_initial_errors() -> None:
    port = free_port()
    res, p = load("-c", "2", "-qps", "20", "-t", "300ms", "-allow-initial-errors",
                  f"http://127.0.0.1:{port}/")  # fmt: skip
    assert set(res["RetCodes"]) == {"-1"}
    assert res["ErrorsDurationHistogram"]["Count"] == res["DurationHistogram"]["Count"] > 0
    assert res["SocketCount"] == 0


@pytest.mark.parametrize(
    ("workers", "duration", "requested"), [("1", "60s", "1m0s"), ("2", "0", "until stop")]
)
def test_sigint_writes_what_ran(
    server: EchoServer, tmp_path: Path, workers: str, duration: str, requested: str
) -> None:
    out = tmp_path / "r.json"
    proc = spawn_load(
        "-c", "4", "-qps", "100", "-t", duration,
        "-workers", workers, "-json", str(out), f"{server.base}/"
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the banner: warmup is done, the run is on
        assert "running at 100 queries per second" in line
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    res = json.loads(out.read_text())
    assert res["DurationHistogram"]["Count"] > 0
    assert res["ActualDuration"] < 30 * SECOND
    assert res["RequestedDuration"] == requested


def test_repeated_sigint_writes_what_ran_without_traceback(
    server: EchoServer, tmp_path: Path
) -> None:
    """Ctrl-C pressed again while the run winds down (``timeout -s INT`` also signals twice)."""
    out = tmp_path / "r.json"
    proc = spawn_load(
        "-c", "4", "-qps", "100", "-t", "60s",
        "-workers", "1", "-json", str(out), f"{server.base}/"
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert "running at 100 queries per second" in proc.stderr.readline()
        time.sleep(0.3)
        # A burst until the result is there, so that some signals land while the event loop
        # closes and the result is written.
        for _ in range(200):
            if proc.poll() is not None or out.exists():
                break
            proc.send_signal(signal.SIGINT)
            time.sleep(0.001)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert json.loads(out.read_text())["DurationHistogram"]["Count"] > 0


def test_stop_signal_before_the_run_listens_stops_at_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM in the instant before run_load installs its own handler (the local platform
    stopping a test that is just starting) ends the process; it is not kept for later."""
    went_on: list[bool] = []

    def run_load_hit_at_start(opts: LoadOptions, log: Any = None, on_start: Any = None) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before the next line runs
        went_on.append(True)
        raise AssertionError("the run went on after SIGTERM")

    monkeypatch.setattr(cli, "run_load", run_load_hit_at_start)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["load", "-t", "1s", "http://127.0.0.1:1/"]) == ExitCode.INTERRUPTED
    assert not went_on
    assert capsys.readouterr().err.strip() == "loadgen: interrupted"
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_signal_after_the_run_still_writes_the_result(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A signal after run_load gave its handlers back (while the summary is computed and the
    result written) is remembered, not raised: the result of what ran is written, exit 130."""
    result = fortio_data.with_errors()

    def run_load_then_signal(opts: LoadOptions, log: Any = None, on_start: Any = None) -> Any:
        on_start()
        # run_load has restored the CLI's handler by the time it returns; the signal lands here.
        os.kill(os.getpid(), signal.SIGINT)
        return RunOutcome(result, False)

    monkeypatch.setattr(cli, "run_load", run_load_then_signal)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "r.json"
    rc = cli.main(["load", "-t", "1s", "-json", str(out), "http://127.0.0.1:1/"])
    assert rc == ExitCode.INTERRUPTED, capsys.readouterr().err
    assert json.loads(out.read_text())["DurationHistogram"] == result["DurationHistogram"]
    assert signal.getsignal(signal.SIGINT) is before


def test_sigterm_to_process_group_writes_what_ran(server: EchoServer, tmp_path: Path) -> None:
    """How the local platform stops a test: SIGTERM to the group, workers included."""
    out = tmp_path / "r.json"
    proc = spawn_load(
        "-c", "4", "-qps", "0", "-t", "60s",
        "-workers", "2", "-json", str(out), f"{server.base}/", new_session=True
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert "running at max queries per second" in proc.stderr.readline()
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    res = json.loads(out.read_text())
    assert res["DurationHistogram"]["Count"] > 0 and res["NumThreads"] == 4


def test_multi_worker_merge_is_exact(server: EchoServer) -> None:
    o = LoadOptions(
        url=f"{server.base}/?size=100",
        connections=4,
        qps=0,
        exactly=1200,
        resolution=0.0001,
        workers=2,
        keep_samples=True,
    )
    out = run_load(o, log=open(os.devnull, "w"))  # noqa: SIM115
    assert out.samples is not None and len(out.samples) == 1200
    h = Histogram(0.0, 0.0001)
    for s in out.samples:
        h.record(s)
    want = h.export(o.percentiles)
    got = out.result["DurationHistogram"]
    for key in ("Count", "Min", "Max", "Data", "Percentiles"):
        assert got[key] == want[key], key
    assert got["Sum"] == pytest.approx(want["Sum"], rel=1e-12)
    assert out.result["NumThreads"] == 4 and out.result["Sockets"] == [1, 1, 1, 1]


BAD_ARGS = [
    ["-c", "0", "http://127.0.0.1:1/"],
    ["-qps", "-5x", "http://127.0.0.1:1/"],
    ["-qps", "nan", "http://127.0.0.1:1/"],
    ["-t", "abc", "http://127.0.0.1:1/"],
    ["-t", "-1s", "http://127.0.0.1:1/"],
    ["-p", "100", "http://127.0.0.1:1/"],
    ["-r", "0", "http://127.0.0.1:1/"],
    ["-H", "no colon", "http://127.0.0.1:1/"],
    ["-H", "X-Price: 5€", "http://127.0.0.1:1/"],
    ["http://127.0.0.1:1/€"],
    ["http://127.0.0.1:1/\udcff"],  # an argv byte that is not UTF-8
    ["http://[zz/"],
    ["ftp://127.0.0.1/"],
    ["https://127.0.0.1:1/"],
    ["-bogus", "http://127.0.0.1:1/"],
    [],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=lambda a: " ".join(a) or "no-url")
def test_bad_flags_one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = cli.main(["load", *args])
    except SystemExit as e:
        rc = e.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith("loadgen: error: "), err


@pytest.mark.parametrize("kind", ["directory", "unwritable"])
def test_json_destination_checked_before_the_run(
    server: EchoServer, tmp_path: Path, kind: str
) -> None:
    """A -json that cannot be written fails at once, not after the run (losing it)."""
    # /proc/self/fdinfo: a directory nobody, root included, can create files in.
    dest = tmp_path if kind == "directory" else Path("/proc/self/fdinfo/r.json")
    p = subprocess.run(
        [sys.executable, str(LOADGEN), "load", "-c", "1", "-qps", "10", "-t", "30s",
         "-json", str(dest), f"{server.base}/"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    lines = p.stderr.strip().splitlines()
    assert p.returncode == ExitCode.ERROR
    assert len(lines) == 1 and lines[0].startswith(f"loadgen: error: cannot write -json {dest}")
    assert "running at" not in p.stderr  # refused before warmup, not after 30 s of load
    assert not tmp_path.with_name(tmp_path.name + ".tmp").exists()


def test_https_to_a_closed_port_fails_at_warmup(capsys: pytest.CaptureFixture[str]) -> None:
    # https:// is supported (TLS, -cacert: tests/test_loadgen_options.py); nothing listens here.
    assert cli.main(["load", "https://127.0.0.1:1/"]) != 0
    assert "warmup call failed" in capsys.readouterr().err


def test_unreachable_warmup_aborts_with_one_line() -> None:
    p = subprocess.run(
        [sys.executable, str(LOADGEN), "load", "-json", "-", f"http://127.0.0.1:{free_port()}/"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 1 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen: error: warmup"), lines


@pytest.mark.parametrize(
    ("flags", "shown"), [(["-qps", "-5x"], "'-5x'"), (["-t", "-1s"], "'-1s'"),
                         (["-c", "-json", "x.json"], "'-json'")],
)  # fmt: skip
def test_dash_value_is_the_flags_value_as_in_go(
    flags: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-qps -5x``: Go's flag package gives -qps the next argument; the error names it."""
    with pytest.raises(SystemExit) as e:
        cli.main(["load", *flags, "http://127.0.0.1:1/"])
    assert e.value.code == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"loadgen: error: argument {flags[0]}/") and shown in err, err
    assert "expected one argument" not in err


def test_dash_values_parse() -> None:
    argv = ["load", "-offset", "-1ms", "-qps", "-1", "-json", "-", "-uniform", "http://h/"]
    args = cli.build_parser().parse_args(cli.normalize_bools(argv))
    assert args.offset == -MILLISECOND and args.qps == -1 and args.json == "-" and args.uniform


def test_bool_flag_lists_match_the_parser() -> None:
    """normalize_bools must know every flag that takes no value, or it would eat the next."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, bools in (("load", cli.LOAD_BOOL_FLAGS), ("server", cli.SERVER_BOOL_FLAGS)):
        no_value = {
            opt.lstrip("-")
            for a in sub.choices[command]._actions
            if a.nargs == 0 and not isinstance(a, argparse._HelpAction)
            for opt in a.option_strings
        }
        assert no_value == set(bools), command


def test_bool_flags_accept_go_forms() -> None:
    assert cli.normalize_bools(["-uniform=true", "-jitter=false", "-c=4"]) == ["-uniform", "-c=4"]
    args = cli.build_parser().parse_args(
        cli.normalize_bools(["load", "--qps=5", "-uniform=1", "-t", "1m", "http://h/"])
    )
    assert args.qps == 5 and args.uniform and args.t == MINUTE


# --------------------------------------------------------------------------- pure logic


def test_plan_matches_fortio() -> None:
    p = Plan.make(LoadOptions("http://h/", connections=16, qps=1000, duration_ns=30 * SECOND))
    assert p.threads == 16 and p.calls == (1875,) * 16 and p.per_thread_qps == 62.5
    p = Plan.make(LoadOptions("http://h/", connections=16, qps=1000, duration_ns=SECOND))
    assert p.calls == (62,) * 16  # 1000 // 16, remainder dropped like fortio
    p = Plan.make(LoadOptions("http://h/", connections=4, qps=1, duration_ns=SECOND))
    assert p.threads == 1 and p.calls == (2,)  # fewer than 2 planned -> 2 calls on 1 thread
    p = Plan.make(LoadOptions("http://h/", connections=3, exactly=10))
    assert p.calls == (4, 3, 3)
    assert p.spread and not p.deadline  # -n keeps the -t spread but has no deadline
    p = Plan.make(LoadOptions("http://h/", connections=8, exactly=3))
    assert p.threads == 1 and p.calls == (3,)  # paced: at least 2 calls per thread
    p = Plan.make(LoadOptions("http://h/", connections=4, exactly=1))
    assert p.calls == (2,)  # fortio's minimum of 2 paced calls
    p = Plan.make(LoadOptions("http://h/", connections=8, qps=0, exactly=3))
    assert p.calls == (1, 1, 1)  # max speed: no more threads than calls
    p = Plan.make(LoadOptions("http://h/", connections=2, qps=0, duration_ns=SECOND))
    assert p.calls == (0, 0) and p.per_thread_qps == 0 and p.deadline and not p.spread
    p = Plan.make(LoadOptions("http://h/", connections=2, qps=10, duration_ns=0))
    assert p.calls == (0, 0) and not p.deadline and not p.spread


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("5s", 5 * SECOND),
        ("300ms", 300_000_000),
        ("-1.5h", -5400 * SECOND),
        ("2h45m", (2 * 60 + 45) * MINUTE),
        ("1.5us", 1500),
        ("1\u00b5s", 1000),
        ("100ns", 100),
        ("1d", 86400 * SECOND),
        (".5s", 500_000_000),
        ("1m30.5s", 90_500_000_000),
    ],
)
def test_parse_go_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "abc", "1", "1x", ".s", "--1s", "1s2", "s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("ns", "text"),
    [  # Go's own examples (time.Duration.String)
        (0, "0s"),
        (1, "1ns"),
        (1100, "1.1\u00b5s"),
        (2_200_000, "2.2ms"),
        (3_300_000_000, "3.3s"),
        (4 * MINUTE + 5 * SECOND, "4m5s"),
        (4 * MINUTE + 5001 * goduration.MILLISECOND, "4m5.001s"),
        (5 * goduration.HOUR + 6 * MINUTE + 7001 * goduration.MILLISECOND, "5h6m7.001s"),
        (8 * MINUTE + 1, "8m0.000000001s"),
        (60 * SECOND, "1m0s"),
        (-SECOND, "-1s"),
        (goduration.HOUR + 15 * MINUTE + 30_918_273_645, "1h15m30.918273645s"),
    ],
)
def test_format_go_duration(ns: int, text: str) -> None:
    assert format_duration(ns) == text
    assert parse_duration(text) == ns


# --------------------------------------------------------------------------- test servers


class ArrivalServer:
    """A tiny threaded HTTP server recording when each request arrives, per connection."""

    def __init__(self, response: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") -> None:
        self.response = response
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def __enter__(self) -> ArrivalServer:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c, n), daemon=True)
            t.start()
            n += 1

    def _serve(self, c: socket.socket, n: int) -> None:
        buf = b""
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    now = time.perf_counter()
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    with self.lock:
                        self.arrivals[n].append(now)
                    c.sendall(self.response)
                    if b"Connection: close" in self.response:
                        return

    def phases_ms(self) -> list[float]:
        """Median offset (ms) of each connection's timed calls against the earliest one."""
        with self.lock:
            runs = [v[1:] for v in self.arrivals.values()]  # [0] is the warmup call
        assert len(runs) == 4 and all(len(r) == 10 for r in runs), [len(r) for r in runs]
        ref = min(runs, key=lambda r: r[0])
        return sorted(
            statistics.median((a - b) * 1000 for a, b in zip(r, ref, strict=True)) for r in runs
        )


def test_istio_runner_style_flags(server: EchoServer) -> None:
    """Flags as istio/tools' runner writes them: Go-style booleans, -httpbufferkb, -quiet."""
    res, p = load("-jitter=True", "-uniform=true", "-nocatchup=false", "-httpbufferkb=128",
                  "-quiet", "-c", "2", "-qps", "20", "-t", "200ms", f"{server.base}/")  # fmt: skip
    assert res["Jitter"] is True and res["Uniform"] is True and res["NoCatchUp"] is False
    assert res["DurationHistogram"]["Count"] == 4
    assert p.stderr == ""


def test_version_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.strip().startswith("meshperf-")
