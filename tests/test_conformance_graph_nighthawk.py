"""graph.py on Nighthawk's fortio-format output (envoyproxy/nighthawk samples/fortio_data).

Proto3 JSON: its counts are strings, its Labels free text, no mode. runner/fortio.py turns it
into our CSV; graph.py draws it as a series named by its Labels value. The expected latency
is fortio's percentile rule applied to the file's own histogram by tests/fortio_data.py's
independent transcription (spec_percentile), not by meshperf.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import require

NIGHTHAWK = require("upstream", "nighthawk")

import fortio  # noqa: E402  (runner/fortio.py; after the module-level skip)
import fortio_data  # noqa: E402
from meshperf.errors import ExitCode  # noqa: E402
from meshperf.graphing import build_chart, load_csv  # noqa: E402


def test_nighthawk_sample_is_one_series_named_by_its_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = NIGHTHAWK / "small.json"
    out = tmp_path / "nh"
    assert fortio.main([str(sample), "--output", str(out)]) == ExitCode.OK
    capsys.readouterr()
    doc = json.loads(sample.read_text())
    hist = doc["DurationHistogram"]
    numeric = {"Count": int(hist["Count"]),
               "Data": [{**b, "Count": int(b["Count"])} for b in hist["Data"]]}  # fmt: skip
    data = load_csv(out.with_suffix(".csv"))
    for metric, p in (("p50", 50), ("p90", 90), ("p99", 99)):
        chart = build_chart([data], metric)
        assert [s.name for s in chart.series] == [doc["Labels"]]
        (x, y), = chart.series[0].points()
        assert x == doc["NumThreads"]
        assert y == pytest.approx(fortio_data.spec_percentile(numeric, p) * 1000.0, abs=1e-6)
        # Nighthawk records neither mesh nor platform: the title claims none.
        assert chart.title.startswith(f"{metric} latency vs connections")
