"""--shuffle: each repeat's tests in a seeded random order, recorded in the run file; the
runner summary's warnings column and overhead block on a real (small) run."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

from meshperf.plan import build_plan, shuffle_seed_of, shuffled
from meshperf.run import run_matrix, summary_table
from test_run import EchoPlatform

MODES = ("baseline", "serversidecar", "both")


def _plan(repeat: int = 3, duration: float = 0.05):  # type: ignore[no-untyped-def]
    return build_plan(conns=[1, 4], qpss=[100.0], duration=duration, modes=MODES,
                      platform="local", mesh="istio", run_id="0badcafe", repeat=repeat)  # fmt: skip


def _cells(tests):  # type: ignore[no-untyped-def]
    return [(t.repeat, t.mode, t.conn) for t in tests]


def test_shuffle_keeps_every_test_and_each_repeat_together() -> None:
    plan = _plan()
    mixed = shuffled(plan, 7)
    assert Counter(_cells(mixed.tests)) == Counter(_cells(plan.tests))
    repeats = [t.repeat for t in mixed.tests]
    assert repeats == sorted(repeats)  # repeat 0's six tests, then repeat 1's, ...
    assert _cells(mixed.tests) != _cells(plan.tests)
    assert mixed.shuffle_seed == 7
    # Seeded: the same seed, the same order; another seed, another order.
    assert _cells(shuffled(plan, 7).tests) == _cells(mixed.tests)
    assert _cells(shuffled(plan, 8).tests) != _cells(mixed.tests)
    # The default seed comes from the run id, so a run's order can be made again.
    assert shuffle_seed_of("0badcafe") == shuffle_seed_of("0badcafe")
    assert shuffle_seed_of("0badcafe") != shuffle_seed_of("0badcafd")


def test_run_file_records_seed_and_order(tmp_path: Path) -> None:
    out = tmp_path / "results"
    plan = shuffled(_plan(), 11)
    report = run_matrix(EchoPlatform(out), plan, out, stream=io.StringIO())
    run = json.loads(next(out.glob("run-*.json")).read_text())
    assert run["shuffle_seed"] == 11
    recorded = [(t["repeat"], t["mode"], t["conn"]) for t in run["plan"]]
    assert recorded == _cells(plan.tests)
    ran = [(t["repeat"], t["mode"], t["conn"]) for t in run["tests"]]
    assert ran == recorded
    # The summary: a warnings column, and the overhead of each mode with its interval.
    table = summary_table(report)
    header = table.splitlines()[0].split()
    assert header[-1] == "warnings"
    lines = table.splitlines()
    start = lines.index("overhead over baseline, mean and 95% interval:")
    block = lines[start + 1 :]
    for mode in ("serversidecar", "both"):
        for conn in (1, 4):
            line = next(ln for ln in block if ln.startswith(f"  {mode} c{conn} q100 1024B:"))
            assert line.endswith("(paired, 3 repeats)")
            assert " ms [" in line
    # The echo platform's 100 qps for 0.05 s is 5 calls: too few to pass as sound.
    rows = lines[1 : 1 + len(plan.tests)]
    assert all(r.split()[-1] for r in rows)
