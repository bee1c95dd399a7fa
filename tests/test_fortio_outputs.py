"""fortio.py's outputs: a full disk, file permissions, and what an unreachable Prometheus leaves."""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from conftest import load_fortio_cli
from meshperf import atomic
from meshperf.errors import ExitCode

cli = load_fortio_cli()


@pytest.fixture(autouse=True)
def _no_prometheus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_URL", raising=False)


def _results(tmp_path: Path) -> Path:
    d = tmp_path / "results"
    d.mkdir()
    block = {
        "format": 1,
        "mode": "both",
        "platform": "local",
        "resources": {
            "fortioserver_deployment_proxy": {
                "cpu_mili": {"min": 1.0, "avg": 2.0, "max": 3.0},
                "mem_MB": {"min": 10.0, "avg": 11.0, "max": 12.0},
            }
        },
    }
    label = "ab12_qps_1000_c_1_1024_both"
    fortio_data.write(d, fortio_data.http_result(labels=label, extra={"meshperf": block}), "a.json")
    later = fortio_data.START.replace(hour=11)
    fortio_data.write(d, fortio_data.http_result(labels="plain", start=later), "b.json")
    return d


@contextlib.contextmanager
def _full_tmpfs(where: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs, filled up; needs root (mount)."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root; the simulated full disk test runs")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        with contextlib.suppress(OSError), open(where / "fill", "wb") as f:
            f.write(b"\0" * 65536)
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, timeout=10)


def test_full_disk_is_one_line(tmp_path: Path, capsys: Any) -> None:
    d = _results(tmp_path)
    with _full_tmpfs(tmp_path / "full") as full:
        code = cli.main([str(d), "-o", str(full / "out")])
        left = sorted(p.name for p in full.iterdir())
    _, err = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert err == f"fortio.py: error: {full}/out.json: cannot write (No space left on device)\n"
    assert left == ["fill"]  # no temp file, no half file


def test_full_disk_simulated_after_the_json(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = _results(tmp_path)
    real_fsync = os.fsync
    calls = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the CSV, after the JSON went through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    out = tmp_path / "o"
    code = cli.main([str(d), "-o", str(out)])
    _, err = capsys.readouterr()
    assert code == ExitCode.ERROR
    assert err == (
        f"fortio.py: error: {out}.csv: cannot write (No space left on device);"
        f" the rows are in {out}.json\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "results"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    d = _results(tmp_path)
    old = os.umask(umask)
    try:
        assert cli.main([str(d), "-o", str(tmp_path / "o")]) == ExitCode.OK
    finally:
        os.umask(old)
    for name in ("o.json", "o.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_unreachable_prometheus_says_what_was_used(tmp_path: Path, capsys: Any) -> None:
    d = _results(tmp_path)
    out = tmp_path / "o"
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    code = cli.main([str(d), "--prometheus", "http://127.0.0.1:9", "-o", str(out)])
    stdout, err = capsys.readouterr()
    assert code == ExitCode.TESTS_FAILED  # Prometheus was asked for and gave nothing
    lines = err.splitlines()
    assert lines[0].startswith(
        "fortio.py: ab12_qps_1000_c_1_1024_both: CPU/memory from the result's own samples,"
        " not Prometheus (Prometheus: cannot reach Prometheus at http://127.0.0.1:9"
    )
    assert lines[1].startswith("fortio.py: plain: kept with latency only (Prometheus: ")
    assert stdout.splitlines()[-1] == (
        "2 tests read, 2 written, 0 skipped, 1 without CPU/memory,"
        " 1 with their own CPU/memory samples, not Prometheus's"
    )
    with open(f"{out}.csv", newline="") as f:
        rows = {r["Labels"]: r for r in csv.DictReader(f)}
    # The CSV matches the words: the local samples are there, the other row has none.
    assert rows["ab12_qps_1000_c_1_1024_both"]["cpu_mili_avg_fortioserver_deployment_proxy"] == "2"
    assert rows["plain"]["cpu_mili_avg_fortioserver_deployment_proxy"] == ""

    code = cli.main(
        [str(d), "--prometheus", "http://127.0.0.1:9", "--csv", "Labels,resources_from",
         "-o", str(tmp_path / "p")]
    )  # fmt: skip
    capsys.readouterr()
    with open(tmp_path / "p.csv", newline="") as f:
        assert [(r["Labels"], r["resources_from"]) for r in csv.DictReader(f)] == [
            ("ab12_qps_1000_c_1_1024_both", "samples"),
            ("plain", ""),
        ]
