"""End to end: ``runner.py 8 0 3 --baseline --find-max --slo p99=10ms`` on the local platform,
real Envoy sidecars, real load: the baseline sustains more than both sidecars, both more than
nothing, and every step is a result file the run file's ``slo_search`` points to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "runner" / "runner.py"


@pytest.mark.envoy
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_find_max_locally(tmp_path: Path) -> None:
    out = tmp_path / "results"
    mark = tmp_path / f"tmp-{uuid.uuid4().hex[:8]}"
    mark.mkdir()
    env = dict(os.environ, TMPDIR=str(mark), KUBECONFIG=str(tmp_path / "none"))
    env.pop("ENVOY_BIN", None)
    # p99 10 ms, not the 2 ms of the example: through two Envoys at 8 connections a
    # 2-core machine running this suite gives p99 3-6 ms at every rate from 100 to 800 req/s
    # (measured), so a 2 ms search finds "both" at 0 there; BENCHMARKS.md has the 2 ms and
    # 5 ms figures (bench/bench_search.py). The claim tested is the same: baseline sustains
    # more than both sidecars, and both more than nothing.
    # 20%: a few bisection steps fewer than the default 5%, the same search. --uniform: with
    # the 8 connections firing together (fortio's default) every call waits behind a burst of
    # 8 through two Envoys, which alone puts both's p50 near 2 ms on a 2-core machine at any
    # rate (DESIGN.md: the arrival pattern changes the answer several-fold).
    cmd = [sys.executable, str(RUNNER), "8", "0", "3", "--baseline", "--find-max",
           "--slo", "p99=10ms", "--find-max-resolution", "20%", "--uniform",
           "--platform", "local", "-q"]  # fmt: skip

    def search(out: Path) -> tuple[subprocess.CompletedProcess[str], dict, dict]:
        argv = [*cmd, "--output-dir", str(out)]
        proc = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=270, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        (run_file,) = out.glob("run-*.json")
        run = json.loads(run_file.read_text())
        return proc, run, {r["mode"]: r for r in run["slo_search"]}

    proc, run, recs = search(out)
    assert set(recs) == {"baseline", "both"}
    base, both = recs["baseline"]["max_qps"], recs["both"]["max_qps"]
    if not base > both > 0 and any(s.get("warnings") for s in recs["both"]["steps"]):
        # The steps themselves say the machine could not be trusted (CPU pressure, the
        # generator behind): such a search proves nothing either way, so it runs once more.
        out = tmp_path / "results-again"
        proc, run, recs = search(out)
        base, both = recs["baseline"]["max_qps"], recs["both"]["max_qps"]
    assert base > both > 0, proc.stdout
    for mode, r in recs.items():
        assert r["slo"] == "p99=10ms" and r["conn"] == 8
        steps = r["steps"]
        assert steps and steps[0]["qps"] == 800.0  # QPS 0: 100 req/s per connection
        met = [s["qps"] for s in steps if s["met"]]
        assert max(met) == r["max_qps"]
        for n, s in enumerate(steps, 1):
            doc = json.loads((out / s["file"]).read_text())
            block = doc["meshperf"]
            assert block["search"]["step"] == n and block["mode"] == mode
            assert block["qps"] == s["qps"] and "_findmax_" in doc["Labels"]
            # The step's verdict is the SLO applied to the file's own numbers.
            p99_ms = next(
                p["Value"] * 1000
                for p in doc["DurationHistogram"]["Percentiles"]
                if p["Percentile"] == 99
            )
            assert s["p99"] == pytest.approx(p99_ms, abs=1e-3)
            if s["met"] is not None:
                assert s["met"] == (p99_ms <= 10.0)
    assert len(run["tests"]) == sum(len(r["steps"]) for r in recs.values())
    assert "SLO search (p99 10 ms)" in proc.stdout
    if recs["baseline"].get("lower_bound") and recs["both"].get("lower_bound"):
        # Two lower bounds say nothing about the share: it is left out, never made up.
        assert "both sustains" not in proc.stdout
        assert ">= " in proc.stdout and "a lower bound" in proc.stdout
    else:
        assert "both sustains" in proc.stdout
        assert "of baseline's rate under p99 10 ms" in proc.stdout
