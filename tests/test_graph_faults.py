"""graph.py on a disk it cannot write and on values no measurement can have (issue 16: 14, 17).

Every CSV here is written by the test itself.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import graph
from meshperf.errors import ExitCode
from meshperf.graphing import build_chart, load_csv

HEADER = (
    "Labels,mode,mesh,conn,RequestedQPS,ActualQPS,size,p50,p90,p99,"
    "cpu_mili_max_fortioserver_deployment_proxy"
)


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


GOOD = [
    "r_qps_1000_c_1_1024_baseline,baseline,istio,1,1000,1000,1024,70,90,300,3",
    "r_qps_1000_c_4_1024_baseline,baseline,istio,4,1000,1000,1024,75,95,310,4",
    "r_qps_1000_c_1_1024_both,both,istio,1,1000,1000,1024,480,500,750,220",
    "r_qps_1000_c_4_1024_both,both,istio,4,1000,1000,1024,490,510,860,230",
]


@pytest.fixture
def read_only_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A read-only filesystem: a real read-only tmpfs where the test may mount one, else the
    failing call simulated where every file is created (os.open, which mkstemp uses)."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = False
    if os.geteuid() == 0:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "meshperf-test", str(target)],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        mounted = proc.returncode == 0
    if not mounted:
        real_open = os.open

        def erofs_open(path: str | os.PathLike[str], flags: int, *args: int, **kw: int) -> int:
            if Path(path).parent == target and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kw)

        monkeypatch.setattr(os, "open", erofs_open)
    try:
        yield target
    finally:
        if mounted:
            subprocess.run(["umount", str(target)], timeout=10, check=True)


def test_output_on_read_only_filesystem_is_one_line(
    tmp_path: Path, read_only_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "r.csv", GOOD)
    out = read_only_dir / "chart.html"
    rc = graph.main([str(csv), "p99", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == ExitCode.ERROR
    assert captured.out == ""
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("graph.py: error:")]
    assert errors == [f"graph.py: error: {out}: cannot write (Read-only file system)"]
    assert "Traceback" not in captured.err
    assert list(read_only_dir.iterdir()) == []


def test_output_that_is_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "r.csv", GOOD)
    (tmp_path / "d.html").mkdir()
    rc = graph.main([str(csv), "p99", "-o", str(tmp_path / "d.html")])
    err = capsys.readouterr().err
    assert rc == ExitCode.ERROR
    target = tmp_path / "d.html"
    assert err.splitlines()[-1] == f"graph.py: error: {target}: cannot write (Is a directory)"
    # No temporary file is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.html", "r.csv"]


def test_infinite_and_negative_latency_rows_are_skipped_with_a_note(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "r.csv", [
        *GOOD,
        "r_qps_1000_c_16_1024_both,both,istio,16,1000,1000,1024,500,520,inf,240",
        "r_qps_1000_c_16_1024_baseline,baseline,istio,16,1000,1000,1024,-5,90,320,5",
    ])  # fmt: skip
    data = load_csv(csv)
    assert (
        "r.csv: 2 rows with impossible latency skipped (p50 negative in 1, p99 = inf in 1), "
        "e.g. 'r_qps_1000_c_16_1024_both'"
    ) in data.notes
    chart = build_chart([data], "p99")
    # The 16-connection rows are gone from every metric, not only from p99.
    assert {s.name: s.points() for s in chart.series} == {
        "baseline": [(1.0, 0.300), (4.0, 0.310)],
        "both": [(1.0, 0.750), (4.0, 0.860)],
    }
    assert {s.name: s.x for s in build_chart([data], "p50").series} == {
        "baseline": (1.0, 4.0), "both": (1.0, 4.0)}  # fmt: skip


def test_negative_cpu_drops_the_value_only(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "r.csv", [
        *GOOD[:3],
        "r_qps_1000_c_4_1024_both,both,istio,4,1000,1000,1024,490,510,860,-230",
    ])  # fmt: skip
    data = load_csv(csv)
    assert any(
        "1 negative or infinite cpu_server_max values dropped" in n for n in data.notes
    ), data.notes
    assert build_chart([data], "cpu").by_name()["both"].points() == [(1.0, 220.0)]
    assert build_chart([data], "p99").by_name()["both"].points() == [(1.0, 0.75), (4.0, 0.86)]


def test_only_impossible_rows_is_an_error_naming_the_cause(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "r.csv", [
        "r_qps_1000_c_16_1024_both,both,istio,16,1000,1000,1024,500,520,inf,240",
    ])  # fmt: skip
    rc = graph.main([str(csv), "p99", "-o", str(tmp_path / "x.html")])
    err = capsys.readouterr().err
    assert rc == ExitCode.ERROR
    assert err.splitlines()[-1] == (
        f"graph.py: error: {csv}: no usable rows (1 rows with impossible latency skipped "
        "(p99 = inf in 1), e.g. 'r_qps_1000_c_16_1024_both')"
    )
