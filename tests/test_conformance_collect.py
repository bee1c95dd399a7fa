"""Conformance: fortio.py's rows and CSV from real fortio result files.

The golden lines are worked out in test_collect.py's helpers from the files themselves and
fortio's percentile rule transcribed there, never by the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

from conformance import require
from meshperf import collect as col
from meshperf.results import load_dir, parse_start_time
from test_collect import GOLDEN_COLUMNS, expected_line

FIXTURES = require("fixtures", "fortio")


def test_golden_csv_from_real_fortio_files() -> None:
    columns = col.parse_columns(GOLDEN_COLUMNS)
    rows = col.collect(load_dir(FIXTURES), extra_percentiles=col.extra_percentiles(columns)).rows
    text = col.csv_text(rows, columns)
    lines = sorted(
        (expected_line(p) for p in FIXTURES.glob("*.json")),
        key=lambda kv: parse_start_time(kv[0]),
    )
    assert len(lines) == 4
    assert text == GOLDEN_COLUMNS + "\r\n" + "".join(line + "\r\n" for _, line in lines)


def test_percentiles_from_data_match_the_ones_fortio_stored() -> None:
    rows = col.collect(load_dir(FIXTURES)).rows
    assert len(rows) == 4
    for row in rows:
        d = json.loads(Path(row["source"]).read_text())
        stored = {e["Percentile"]: e["Value"] for e in d["DurationHistogram"]["Percentiles"]}
        for column, p in (("p50", 50), ("p75", 75), ("p90", 90), ("p99", 99), ("p999", 99.9)):
            assert row[column] == round(stored[p] * 1e6, 3), (row["source"], column)


def test_old_file_without_percentiles_gets_fortios_values(tmp_path: Path) -> None:
    d = json.loads((FIXTURES / "http-istio-tools-1.3.1.json").read_text())
    del d["DurationHistogram"]["Percentiles"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    row = col.collect(load_dir(tmp_path)).rows[0]
    # The values fortio 1.3.1 itself stored for this run.
    assert row["p50"] == round(0.0011476273249692928 * 1e6, 3)
    assert row["p999"] == round(0.011919077635327636 * 1e6, 3)
