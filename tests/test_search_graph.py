"""graph.py on a ``--find-max`` run file: latency against offered load with the knees, and the
highest rate per mode; the chart model checked by value, the page in real headless Chromium."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

import fortio_data
import graph
from meshperf import search, searchcharts
from meshperf.errors import ExitCode
from meshperf.plan import build_plan
from meshperf.platform import RESULT_KEY
from meshperf.platform import TestSpec as Spec  # not collected as a test class
from meshperf.run import Progress, run_matrix
from test_graph_browser import browser, check_rendered, render  # noqa: F401 - the fixture

KNEES = {"baseline": 3000.0, "both": 1100.0}


class KneePlatform:
    """p99 grows with the offered rate and jumps past each mode's knee (a known answer)."""

    name = "local"

    def start(self, modes: tuple[str, ...]) -> None:
        pass

    def run_test(self, spec: Spec) -> dict[str, Any]:
        knee = KNEES[spec.mode]
        # 100 calls: 98 at 0.5 ms, 2 at the "tail" latency; p99 lies in the tail's bucket.
        tail = 0.001 if spec.qps <= knee else 0.006
        doc = fortio_data.http_result(
            [0.0005] * 98 + [tail] * 2, qps=spec.qps, labels=spec.labels, duration_s=1
        )
        doc["ActualQPS"] = spec.qps
        doc[RESULT_KEY] = {}
        return doc

    def metadata(self) -> dict[str, Any]:
        return {}

    def stop_current(self) -> None:
        pass

    def close(self) -> None:
        pass


def search_run(out: Path) -> Path:
    plan = build_plan(
        conns=[8], qpss=[100.0], duration=1, modes=["baseline", "both"], platform="local",
        mesh="istio", run_id="5ea4c400", extra_labels=search.step_labels(""),
    )  # fmt: skip
    sr = search.SearchRun(plan, search.parse_slo("p99=2ms"), 0.1, out)
    run_matrix(
        sr.wrap(KneePlatform()), plan, out, progress=lambda n, s: Progress(n, io.StringIO()),
        **sr.hooks(),
    )  # fmt: skip
    return out / "run-5ea4c400.json"


def test_gather_pairs_each_step_with_its_own_numbers(tmp_path: Path) -> None:
    run_file = search_run(tmp_path)
    docs = searchcharts.run_file_docs([run_file])
    assert docs is not None
    searches, notes = searchcharts.gather(docs, "p99")
    assert notes == []
    by = {s["name"]: s for s in searches}
    assert set(by) == {"baseline", "both"}
    for mode, knee in KNEES.items():
        s = by[mode]
        xs = [p["x"] for p in s["points"]]
        assert xs == sorted(xs)
        for p in s["points"]:
            # The tail is 1 ms below the knee and 6 ms above it: p99 tells them apart.
            assert (p["y"] < 2.0) == (p["x"] <= knee) == p["met"], (mode, p)
        assert s["knee"]["x"] == s["max_qps"] <= knee
        assert (knee - s["max_qps"]) / knee <= 0.1
        assert s["bound_ms"] == 2.0 and s["slo"] == "p99=2ms"
    # p50 comes from the step files (98 of 100 calls at 0.5 ms), not from the run file.
    p50, _ = searchcharts.gather(docs, "p50")
    assert all(p["y"] == pytest.approx(0.5, abs=0.05) for s in p50 for p in s["points"])


def test_gather_falls_back_to_the_run_file_when_step_files_are_gone(tmp_path: Path) -> None:
    run_file = search_run(tmp_path)
    for p in tmp_path.glob("*.json"):
        if not p.name.startswith("run-"):
            p.unlink()
    docs = searchcharts.run_file_docs([run_file])
    assert docs is not None
    searches, notes = searchcharts.gather(docs, "p99")
    assert all(s["points"] for s in searches)
    assert any("without their result file" in n for n in notes)
    with pytest.raises(Exception, match="no steps to draw"):
        searchcharts.gather(docs, "p50")  # only p99 is in the run file


def test_csvs_are_not_taken_for_run_files(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("x\n")
    assert searchcharts.run_file_docs([csv]) is None
    plain = tmp_path / "run-00000000.json"
    plain.write_text(json.dumps({"run_id": "00000000", "tests": []}))
    assert searchcharts.run_file_docs([plain]) is None


def test_graph_main_writes_the_search_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_file = search_run(tmp_path)
    assert graph.main([str(run_file), "p99"]) == ExitCode.OK
    out = capsys.readouterr().out.strip()
    assert out == str(tmp_path / "run-5ea4c400_search_p99.html")
    assert graph.main([str(run_file), "cpu"]) == ExitCode.ERROR
    assert "metric must be one of p50, p90, p99, p999" in capsys.readouterr().err


@pytest.mark.chromium
@pytest.mark.timeout(120)
def test_search_page_in_chromium(
    browser: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    run_file = search_run(tmp_path)
    html = tmp_path / "search.html"
    assert graph.main([str(run_file), "p99", "--output", str(html)]) == ExitCode.OK
    capsys.readouterr()
    page = render(browser, html)
    check_rendered(page, 2)
    assert page["legends"] == [["baseline", "both"]]
    assert "p99 latency vs offered load (SLO p99=2ms)" in page["titles"]
    assert "highest rate under the SLO (p99=2ms)" in page["titles"]
    texts = browser.execute_script(
        """const out = [];
        for (const m of Bokeh.documents[0].all_models) {
          if (m.type === 'Label') out.push(m.text);
          if (m.type === 'Span') out.push('span ' + m.location);
        }
        return out;"""
    )
    run = json.loads(run_file.read_text())
    for rec in run["slo_search"]:
        assert f"knee {rec['max_qps']:g}/s" in texts
    assert "span 2" in texts and "SLO p99 2 ms" in texts
