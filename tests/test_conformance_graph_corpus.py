"""graph.py on results others published: the sargun/servicemesh corpus (144 fortio 1.3.1 runs).

Its Labels are the setup alone (direct, direct6, envoy, haproxy, mesh, mesh2), no mode suffix,
so each setup is a series (issue 12 item 2). The expected values are fortio's own: the p99
each run's JSON holds in DurationHistogram.Percentiles, not anything meshperf computed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from conformance import require

CORPUS = require("upstream", "corpus-servicemesh")

import fortio  # noqa: E402  (runner/fortio.py; after the module-level skip)
import graph  # noqa: E402
from meshperf.errors import ExitCode  # noqa: E402
from meshperf.graphing import build_chart, build_page, load_csv, overhead_chart  # noqa: E402

SETUPS = ["direct", "direct6", "envoy", "haproxy", "mesh", "mesh2"]


def fortio_p99_ms() -> dict[tuple[str, str, int], float]:
    """(setup, requested qps as fortio wrote it, connections) -> fortio's own p99 in ms."""
    out: dict[tuple[str, str, int], float] = {}
    for f in CORPUS.glob("*.json"):
        doc = json.loads(f.read_text())
        p99 = next(
            p["Value"] for p in doc["DurationHistogram"]["Percentiles"] if p["Percentile"] == 99
        )
        out[(doc["Labels"], str(doc["RequestedQPS"]), int(doc["NumThreads"]))] = p99 * 1000.0
    return out


@pytest.fixture(scope="module")
def corpus_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    assert fortio.main([str(CORPUS), "--output", str(out)]) == ExitCode.OK
    return out.with_suffix(".csv")


def test_corpus_gives_144_rows_and_six_series_per_qps(corpus_csv: Path) -> None:
    data = load_csv(corpus_csv)
    assert len(data.table) == 144
    assert any("144 of 144 rows have no mode" in n and "one series per Labels value" in n
               for n in data.notes)  # fmt: skip
    expected = fortio_p99_ms()
    for qps, fortio_qps in ((1000, "1000"), (0, "max")):
        chart = build_chart([data], "p99", qps=qps)
        assert [s.name for s in chart.series] == SETUPS
        for s in chart.series:
            assert s.x == (1, 4, 8, 12, 25, 50, 75, 100, 125, 150, 175, 200)
            want = [expected[(s.name, fortio_qps, int(x))] for x in s.x]
            # fortio.py recomputes percentiles from the histogram; fortio's agree to < 1 ns.
            assert list(s.y) == pytest.approx(want, abs=1e-6)
            assert s.runs == (1,) * 12


def test_corpus_without_qps_filter_keeps_the_two_rates_apart(corpus_csv: Path) -> None:
    chart = build_chart([load_csv(corpus_csv)], "p99")
    assert len(chart.series) == 12
    assert {s.name for s in chart.series} == {
        f"{setup} @ {q} qps" for setup in SETUPS for q in ("1000", "max")}  # fmt: skip
    assert any("mix qps (max, 1000)" in n for n in chart.notes)


def test_corpus_overhead_against_a_named_series(corpus_csv: Path) -> None:
    data = load_csv(corpus_csv)
    chart = build_chart([data], "p99", qps=1000)
    over = overhead_chart(chart, baseline_series="direct")
    assert [s.name for s in over.series] == SETUPS[1:]
    expected = fortio_p99_ms()
    envoy = over.by_name()["envoy"]
    assert envoy.baseline == "direct"
    assert envoy.y[0] == pytest.approx(
        expected[("envoy", "1000", 1)] - expected[("direct", "1000", 1)], abs=1e-6)  # fmt: skip
    # The all page: the overhead view drawn, and no note about missing baselines.
    _, charts, notes = build_page([data], "all", qps=1000, baseline_series="direct")
    assert "overhead-p99" in [c.metric for c in charts]
    assert not [n for n in notes if n.startswith("overhead")], notes


def test_corpus_p99_page_through_main(corpus_csv: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p99.html"
    rc = graph.main([str(corpus_csv), "p99", "--qps", "1000", "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == ExitCode.OK, err
    text = out.read_text()
    for setup in SETUPS:
        assert f'"{setup}"' in text
    # Nothing in these results says a mesh or platform: the title claims neither.
    assert "p99 latency vs connections at 1000 qps" in text
    assert "istio" not in text.lower().split("<script")[0]
    assert "graph.py: error" not in err


def test_every_setup_has_24_runs(corpus_csv: Path) -> None:
    counts: dict[str, int] = defaultdict(int)
    for setup in load_csv(corpus_csv).table["setup"]:
        counts[setup] += 1
    assert counts == {s: 24 for s in SETUPS}
