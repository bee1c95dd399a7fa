"""graph.py's overhead view with repeats: whiskers are the overhead's 95% interval; points
whose rows carry warnings (fortio.py's warnings column) are marked."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from meshperf.graphing import build_chart, load_csv, overhead_chart
from meshperf.graphing.render import make_figure

HEADER = "StartTime,Labels,mode,mesh,platform,conn,RequestedQPS,ActualQPS,size,repeat,p50,warnings"


def _csv(tmp_path: Path) -> Path:
    # p50 in us: baseline 1, 2, 3 ms; both 4, 5, 6 ms at 16 connections; one run at 4.
    lines = [HEADER]
    for mode, values in (("baseline", (1000, 2000, 3000)), ("both", (4000, 5000, 6000))):
        for rep, v in enumerate(values):
            warn = "cpu-pressure: tasks waited for a CPU 40% of the test" if rep == 2 else ""
            lines.append(f"2026-11-20T10:0{rep}:00Z,r_qps_1000_c_16_1024_{mode},{mode},istio,"
                         f"local,16,1000,999.9,1024,{rep},{v},{warn}")  # fmt: skip
    lines.append("2026-11-20T11:00:00Z,r_qps_1000_c_4_1024_baseline,baseline,istio,local,4,1000,"
                 "999.9,1024,0,900,")  # fmt: skip
    lines.append("2026-11-20T11:01:00Z,r_qps_1000_c_4_1024_both,both,istio,local,4,1000,"
                 "999.9,1024,0,2900,")  # fmt: skip
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_overhead_whiskers_are_the_interval(tmp_path: Path) -> None:
    chart = overhead_chart(build_chart([load_csv(_csv(tmp_path))], "p50"))
    (both,) = chart.series
    assert both.interval
    at = {x: i for i, x in enumerate(both.x)}
    i16 = at[16.0]
    # Welch with variances 1 and 1 (ms^2), 3 values each: df 4, t 2.776, se sqrt(2/3).
    half = 2.7764451 * math.sqrt(2 / 3)
    assert both.y[i16] == pytest.approx(3.0)
    assert both.y_min[i16] == pytest.approx(3.0 - half, abs=1e-6)
    assert both.y_max[i16] == pytest.approx(3.0 + half, abs=1e-6)
    # One run each at 4 connections: no interval, the whisker collapses onto the point.
    i4 = at[4.0]
    assert both.y_min[i4] == both.y_max[i4] == pytest.approx(2.0)


def test_points_with_warnings_are_marked(tmp_path: Path) -> None:
    chart = build_chart([load_csv(_csv(tmp_path))], "p50")
    both = next(s for s in chart.series if s.mode == "both")
    at = {x: i for i, x in enumerate(both.x)}
    assert both.warnings[at[16.0]] == "cpu-pressure: tasks waited for a CPU 40% of the test"
    assert both.warnings[at[4.0]] == ""
    fig = make_figure(chart)
    rings = [r for r in fig.renderers if r.name == "both warnings"]
    assert len(rings) == 1
    assert list(rings[0].view.filter.indices) == [at[16.0]]
    over = overhead_chart(chart)
    assert "cpu-pressure" in over.series[0].warnings[at[16.0]]
