"""Conformance: real fortio result files collected by fortio.py and drawn by graph.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance import require
from meshperf.errors import ExitCode
from meshperf.graphing import FORMAT_MESHPERF, build_chart, load_csv
from test_graph import points

FIXTURES = require("fixtures", "fortio")


def test_csv_written_by_fortio_py_from_real_fortio_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import fortio  # runner/fortio.py

    assert fortio.main([str(FIXTURES), "--output", str(tmp_path / "summary")]) == ExitCode.OK
    capsys.readouterr()
    data = load_csv(tmp_path / "summary.csv")
    assert data.format == FORMAT_MESHPERF
    # The plain fortio runs beside it are series of their own (per Labels value) at other
    # rates: hold the 2019 run's 1000 qps.
    chart = build_chart([data], "p50", qps=1000)
    # fortio 1.3.1 stored this run's p50 as 0.0011476273 s.
    assert points(chart)["both"] == [(1.0, pytest.approx(1.1476273, abs=1e-6))]
