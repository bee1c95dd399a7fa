"""Issue 16 items 1, 2, 5, 6: every count has a bound, checked before anything starts.

Each case goes through the real CLI (``runner.main`` or the script in a subprocess) and
expects the one-line error that names the bound, quickly, with nothing created.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_runner as run
from meshperf import limits
from meshperf.errors import ExitCode
from meshperf.goduration import parse_seconds

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))


def one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    assert err.startswith("runner.py: error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        # item 1: a connection count no machine can open
        (["99999999", "0", "2", "--mesh", "none"], ExitCode.USAGE,
         "invalid connection count 99999999 in '99999999': above the bound of 28232"),
        # item 2: the plan would need 99999999 entries
        (["16", "1000", "30", "--repeat", "99999999"], ExitCode.USAGE,
         "argument --repeat: 99999999 repeats is above the bound of 1000"),
        # item 5: durations that cannot run
        (["16", "1000", "1e-07"], ExitCode.USAGE,
         "argument DURATION: duration 1e-07 s is outside [0.001 s, 2592000 s = 30 days]"),
        (["16", "1000", "99999999999"], ExitCode.USAGE,
         "argument DURATION: duration 99999999999 s is outside [0.001 s, 2592000 s"),
        # item 6: above the echo server's payload cap
        (["16", "1000", "3", "--size", "10000000"], ExitCode.USAGE,
         "argument --size: size 10000000 is above the echo server's payload cap of 262144"),
        # matrix size, every factor within its own bound
        (["1,2,3,4,5,6,7,8,9,10", "1,2,3,4,5,6,7,8,9,10", "1", "--baseline", "--repeat", "51"],
         ExitCode.ERROR,
         "10200 tests (10 conn x 10 qps x 2 modes x 51 repeats) is above the bound of 10000"),
    ],
)  # fmt: skip
def test_out_of_bound_values_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], code: int, needle: str
) -> None:
    out_dir = tmp_path / "results"
    t0 = time.monotonic()
    # --dry-run too: item 2 hung building the plan, before any platform existed.
    for extra in ([], ["--dry-run"]):
        got, out, err = run(
            capsys, *argv, "--platform", "local", "--output-dir", str(out_dir), *extra
        )
        assert got == code, err
        assert needle in one_line(err), err
        assert out == ""
    assert time.monotonic() - t0 < 10  # a refusal, not a plan of 10^8 tests being built
    assert not out_dir.exists()


def test_values_at_the_bounds_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "1", "0", "0.001", "--size", "262144", "--repeat", "2", "--platform", "local",
        "--mesh", "none", "--dry-run",
    )  # fmt: skip
    assert code == 0, err
    assert "plan: 2 tests on local" in out
    code, out, err = run(capsys, "1", "10", "2592000", "--platform", "local", "--dry-run")
    assert code == 0, err
    assert "2592000s" in out


def test_durations_are_read_by_one_parser_exactly() -> None:
    assert parse_seconds("30") == 30.0
    assert parse_seconds("2.5") == 2.5
    assert parse_seconds("1m30s") == 90.0
    assert parse_seconds("1e3") == 1000.0
    assert parse_seconds("0.0000000019") == 1e-9  # truncated to whole ns, as Go does
    with pytest.raises(ValueError, match="expected seconds"):
        parse_seconds("1e-07x")


def test_go_duration_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "4", "100", "1m30s", "--platform", "local", "--dry-run")
    assert code == 0, err
    assert " 90s " in out


def _limited_nofile(soft: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_local_connection_bound_follows_the_file_descriptor_limit(tmp_path: Path) -> None:
    """ulimit -n 256: (256 - 64) / 2 = 96 connections at most on the local platform."""
    expected = (256 - limits.FD_RESERVE) // limits.FDS_PER_CONNECTION
    env = {"KUBECONFIG": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}

    def cli(conn: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "runner" / "runner.py"), str(conn), "100", "1",
             "--platform", "local", "--dry-run"],
            capture_output=True, text=True, timeout=60, env=env,
            preexec_fn=lambda: _limited_nofile(256),
        )  # fmt: skip

    over = cli(expected + 1)
    assert over.returncode == ExitCode.ERROR
    assert over.stderr == (
        f"runner.py: error: {expected + 1} connections is above the bound of {expected} on"
        " the local platform (the file-descriptor limit: ulimit -n 256, minus 64, / 2 per"
        " connection)\n"
    )
    at = cli(expected)
    assert at.returncode == 0, at.stderr
    # On kubernetes fortio runs in the pod: this machine's descriptors are not the bound.
    kube = subprocess.run(
        [sys.executable, str(ROOT / "runner" / "runner.py"), str(expected + 1), "100", "1",
         "--platform", "kubernetes", "--dry-run"],
        capture_output=True, text=True, timeout=60, env=env,
        preexec_fn=lambda: _limited_nofile(256),
    )  # fmt: skip
    assert kube.returncode == 0, kube.stderr


def test_config_file_values_meet_the_same_bounds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("conn: 4\nqps: 10\nduration: 1\nrepeat: 5000\n")
    code, out, err = run(capsys, "--config", str(cfg), "--platform", "local", "--dry-run")
    assert code == ExitCode.ERROR
    assert "repeat: 5000 repeats is above the bound of 1000" in one_line(err)


def test_fewer_connections_than_asked_are_announced_before_the_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Item 7: 64 connections at 10 qps for 2 s are 20 calls; at least 2 per connection means
    10 connections. Said in one line before anything runs (and recorded after each test)."""
    code, out, err = run(capsys, "64,4", "10", "2", "--platform", "local", "--mesh", "none",
                         "--dry-run")  # fmt: skip
    assert code == 0
    assert err == (
        "runner.py: warning: 64 connections at 10 qps for 2 s run as 10: the load generator"
        " makes at least 2 calls per connection\n"
    )
    assert "plan: 2 tests" in out
