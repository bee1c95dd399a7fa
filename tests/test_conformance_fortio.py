"""Conformance: fortio.py on other projects' published results (read in place, never copied).

- Nighthawk's fortio-format output (proto3 JSON: 64-bit counts are strings, Min/Max absent).
- The servicemesh corpus: 144 fortio 1.3.1 runs whose Labels are a setup name, no mode.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any

from conformance import require
from conftest import load_fortio_cli
from meshperf import collect as col
from meshperf.results import load_dir, load_file

UPSTREAM = require("upstream")
NIGHTHAWK = UPSTREAM / "nighthawk" / "small.json"
CORPUS = UPSTREAM / "corpus-servicemesh"

def test_nighthawk_fortio_output_is_read() -> None:
    raw = json.loads(NIGHTHAWK.read_text())
    assert raw["DurationHistogram"]["Count"] == "48"  # the file really is proto3 JSON
    r = load_file(NIGHTHAWK)
    assert r.count == 48
    assert r.error_count == 0  # RetCodes {"200": "60"}
    # p50: the bucket that ends at exactly 50 % ends at the median (fortio's rule, spec 2.4).
    at_50 = next(b for b in raw["DurationHistogram"]["Data"] if b["Percent"] == 50)
    row = col.result_row(r)
    assert row["p50"] == round(at_50["End"] * 1e6, 3)
    # Min and Max are absent: the first bucket's start and the last one's end stand in.
    assert row["min"] == round(raw["DurationHistogram"]["Data"][0]["Start"] * 1e6, 3)
    assert row["max"] == round(raw["DurationHistogram"]["Data"][-1]["End"] * 1e6, 3)


def test_corpus_gives_144_rows(tmp_path: Path, capsys: Any) -> None:
    assert len(list(CORPUS.glob("*.json"))) == 144
    rows = col.collect(load_dir(CORPUS)).rows
    assert len(rows) == 144
    assert Counter(r["Labels"] for r in rows) == {
        s: 24 for s in ("direct", "direct6", "envoy", "haproxy", "mesh", "mesh2")
    }
    assert {r["mode"] for r in rows} == {""}  # no mode suffix: none is guessed

    code = load_fortio_cli().main([str(CORPUS), "-o", str(tmp_path / "corpus")])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[-1] == "144 tests read, 144 written, 0 skipped"
    with open(tmp_path / "corpus.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 144
