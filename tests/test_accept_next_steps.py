"""After the output dir refused writes, the printed "next:" line reads the kept dir too.

A run whose output dir failed mid-run has its results in two places: the tests before the
failure in the output dir, the rest in the kept dir. A fortio.py line naming only the output
dir would silently leave out what was kept.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import fortio_data
from meshperf.run import next_steps


def test_next_steps_read_the_kept_dir_too(tmp_path: Path) -> None:
    results, kept = tmp_path / "results", tmp_path / "meshperf-kept-abcd1234"
    fortio_data.write(results, fortio_data.http_result(labels="abcd1234_qps_1000_c_4_1024_base"))
    fortio_data.write(kept, fortio_data.http_result(labels="abcd1234_qps_1000_c_4_1024_both"))
    fortio_line = next_steps(results, kept).splitlines()[1]
    argv = shlex.split(fortio_line)
    assert str(results) in argv and str(kept) in argv, fortio_line
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_URL"},
    )  # fmt: skip
    assert proc.returncode == 0, (fortio_line, proc.stderr)
    assert "2 tests read, 2 written" in proc.stdout, proc.stdout


def test_next_steps_without_kept_dir_name_one_source(tmp_path: Path) -> None:
    argv = shlex.split(next_steps(tmp_path / "results").splitlines()[1])
    out = argv.index("--output")
    assert argv[out - 1] == str(tmp_path / "results")
    assert os.path.samefile(argv[0], sys.executable)
