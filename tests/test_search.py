"""The SLO search (``meshperf.search``): parsing, judging a step, the bracketing search against
fake systems with a known knee, and a whole run through ``run_matrix``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from meshperf import search
from meshperf.plan import build_plan
from meshperf.platform import RESULT_KEY
from meshperf.platform import TestSpec as Spec  # not collected as a test class
from meshperf.run import run_matrix

# ---- --slo and --find-max-resolution --------------------------------------------------------


def test_parse_slo_latency_and_errors() -> None:
    slo = search.parse_slo("p99=5ms,errors=0.1%")
    assert slo.latency == ((99.0, 0.005),)
    assert slo.errors_pct == 0.1
    assert slo.text == "p99=5ms,errors=0.1%"
    assert slo.describe() == "p99 5 ms, errors 0.1%"


def test_parse_slo_several_percentiles_sorted_and_units() -> None:
    slo = search.parse_slo("P99.9=1.5s, p50=500us")
    assert slo.latency == ((50.0, 0.0005), (99.9, 1.5))
    assert slo.errors_pct is None
    assert slo.text == "p50=500us,p99.9=1.5s"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty item"),
        ("p99", "expected pNN=DURATION"),
        ("p99=5", "with a unit"),
        ("p99=0ms", "duration > 0"),
        ("p99=fast", "duration > 0"),
        ("p100=5ms", "percentile"),
        ("latency=5ms", "neither a percentile"),
        ("errors=0.1", "a percentage"),
        ("errors=100%", ">= 0% and < 100%"),
        ("p99=5ms,,errors=1%", "empty item"),
    ],
)
def test_parse_slo_refuses(text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        search.parse_slo(text)


def test_resolution_is_a_percentage() -> None:
    assert search.resolution_text("5%") == pytest.approx(0.05)
    assert search.resolution_text("12.5%") == pytest.approx(0.125)
    for bad in ("5", "0%", "101%", "x%"):
        with pytest.raises(argparse.ArgumentTypeError):
            search.resolution_text(bad)


# ---- judging one step -----------------------------------------------------------------------

SLO_2MS = search.parse_slo("p99=2ms,errors=1%")


def _result(latencies: list[float], qps: float, **extra: Any) -> dict[str, Any]:
    doc = fortio_data.http_result(latencies, qps=qps, duration_s=1.0)
    doc["ActualQPS"] = extra.pop("achieved", qps)
    doc.update(extra)
    return doc


def test_judge_met_and_not_met_by_latency() -> None:
    fast = search.judge(SLO_2MS, _result([0.001] * 200, 200), 200)
    assert fast.met is True and fast.reason == ""
    assert fast.latency_ms["p99"] == pytest.approx(1.0, abs=0.1)  # every call took 1 ms
    slow = search.judge(SLO_2MS, _result([0.003] * 200, 200), 200)
    assert slow.met is False
    assert "p99" in slow.reason and "> 2 ms" in slow.reason


def test_judge_error_budget() -> None:
    # 200 good calls and 10 failures (503): 10/210 = 4.8% > 1%.
    doc = fortio_data.http_result(
        [0.001] * 200, error_latencies=[0.001] * 10, retcodes={"200": 200, "503": 10}, qps=210
    )
    doc["ActualQPS"] = 210.0
    step = search.judge(SLO_2MS, doc, 210)
    assert step.met is False
    assert step.errors_pct == pytest.approx(100 * 10 / 210)
    assert "errors 4.762% > 1%" in step.reason


def test_judge_cannot_judge_when_the_load_was_not_offered() -> None:
    short = search.judge(SLO_2MS, _result([0.001] * 200, 1000, achieved=990.0), 1000)
    assert short.met is None and "achieved 990.0 of 1000 qps" in short.reason
    ok = search.judge(SLO_2MS, _result([0.001] * 200, 1000, achieved=996.0), 1000)
    assert ok.met is True
    lag = fortio_data.histogram([0.002] * 100).export()  # every request left 2 ms late
    late = search.judge(SLO_2MS, _result([0.001] * 200, 200, SendLagHistogram=lag), 200)
    assert late.met is None and "send lag p99" in late.reason
    # Even a step that broke the SLO is not "not met" when the load was not offered.
    behind = search.judge(SLO_2MS, _result([0.009] * 200, 1000, achieved=500.0), 1000)
    assert behind.met is None


def test_judge_allows_for_what_the_schedule_itself_costs() -> None:
    # 8 connections at 100 req/s pace each call 80 ms apart: a 5 s uniform run that keeps its
    # schedule ends up to 80 ms late, so 100 * 5 / 5.08 = 98.4 req/s is all it can achieve.
    doc = _result([0.001] * 200, 100, achieved=98.6)
    assert search.judge(SLO_2MS, doc, 100).met is None  # against the plain 99.5% rule
    assert search.judge(SLO_2MS, doc, 100, conn=8, duration=5.0).met is True
    short = _result([0.001] * 200, 100, achieved=97.0)
    assert search.judge(SLO_2MS, short, 100, conn=8, duration=5.0).met is None
    # At 1000 req/s the allowance is 0.16%: 99.0% achieved is behind.
    fast = _result([0.001] * 200, 1000, achieved=990.0)
    assert search.judge(SLO_2MS, fast, 1000, conn=8, duration=5.0).met is None


def test_judge_no_request_completed() -> None:
    doc = fortio_data.http_result([], qps=100)
    step = search.judge(SLO_2MS, doc, 100)
    assert step.met is None and step.reason == "no request completed"


# ---- the search against systems with a known knee -------------------------------------------


def knee_system(knee: float, limit: float = float("inf")) -> Any:
    """Meets the SLO up to ``knee`` req/s; beyond ``limit`` the load cannot be offered."""

    def run_at(q: float) -> search.Step:
        if q > limit:
            return search.Step(qps=q, achieved=limit, reason="load not offered")
        return search.Step(qps=q, achieved=q, met=q <= knee, reason="" if q <= knee else "slow")

    return run_at


@pytest.mark.parametrize("knee", [1.0, 7.0, 150.0, 999.0, 1000.0, 3333.0, 12345.0, 700000.0])
@pytest.mark.parametrize("start", [100.0, 1000.0])
@pytest.mark.parametrize("resolution", [0.05, 0.01, 0.25])
def test_search_finds_the_knee_within_the_resolution(
    knee: float, start: float, resolution: float
) -> None:
    s = search.find_max(knee_system(knee), start, resolution)
    assert s.outcome == search.FOUND, s.reason
    assert not s.lower_bound
    assert s.max_qps <= knee  # a rate that met
    assert (knee - s.max_qps) / knee <= resolution
    # max_qps is a step that met, and the bracket's other end a step that did not.
    met = [st.qps for st in s.steps if st.met]
    failed = [st.qps for st in s.steps if st.met is False]
    assert max(met) == s.max_qps
    assert min(failed) > knee
    assert (min(failed) - s.max_qps) <= resolution * s.max_qps or min(failed) - s.max_qps <= 1
    assert len(s.steps) <= search.worst_case_steps(resolution, start_qps=start)


def test_search_ramp_doubles_then_bisects() -> None:
    s = search.find_max(knee_system(1000.0), 100.0, 0.05)
    qs = [st.qps for st in s.steps]
    assert qs[:5] == [100.0, 200.0, 400.0, 800.0, 1600.0]  # doubling until the first miss
    assert qs[5] == 1200.0  # then the middle of 800 (met) and 1600 (not met)
    # 1200 no, 1000 yes, 1100 no, 1050 no: 1000..1050 is within 5% of 1000.
    assert qs[6:] == [1000.0, 1100.0, 1050.0]
    assert s.max_qps == 1000.0 and s.hi == 1050.0


def test_search_never_met() -> None:
    s = search.find_max(knee_system(0.1), 100.0, 0.05)
    assert s.outcome == search.NEVER_MET
    assert s.max_qps == 0.0
    assert all(st.met is False for st in s.steps)
    assert min(st.qps for st in s.steps) >= search.MIN_QPS


def test_search_goes_no_lower_than_ten_calls_per_connection() -> None:
    assert search.min_rate(8, 3.0) == 27.0  # 80 calls in 3 s, rounded up to whole req/s
    assert search.min_rate(1, 60.0) == search.MIN_QPS
    s = search.find_max(knee_system(0.1), 100.0, 0.05, min_qps=search.min_rate(8, 3.0))
    assert s.outcome == search.NEVER_MET
    assert [st.qps for st in s.steps] == [100.0, 50.0, 27.0]


def test_search_stops_where_the_load_cannot_be_offered() -> None:
    s = search.find_max(knee_system(knee=10_000.0, limit=3000.0), 100.0, 0.05)
    assert s.outcome == search.LOAD_LIMIT
    assert s.lower_bound
    assert s.max_qps == 1600.0  # the last doubling below the limit that met
    # The step that could not judge was run once more before the search gave up.
    assert [(st.qps, st.met) for st in s.steps[-2:]] == [(3200.0, None), (3200.0, None)]
    assert "load not offered" in s.reason


def test_search_retries_a_step_that_could_not_judge_once() -> None:
    system = knee_system(1000.0)
    hiccups = {400.0}

    def run_at(q: float) -> search.Step:
        if q in hiccups:  # someone else's CPU burst, once
            hiccups.discard(q)
            return search.Step(qps=q, achieved=q * 0.9, reason="load not offered")
        return system(q)  # type: ignore[no-any-return]

    s = search.find_max(run_at, 100.0, 0.05)
    assert s.outcome == search.FOUND and s.max_qps == 1000.0
    assert [st.met for st in s.steps if st.qps == 400.0] == [None, True]


def test_search_ceiling_is_a_lower_bound() -> None:
    s = search.find_max(knee_system(float("inf")), 100.0, 0.05, max_ramp_steps=5)
    assert s.outcome == search.CEILING and s.lower_bound
    assert s.max_qps == 1600.0 and len(s.steps) == 5


def test_search_refuses_a_step_after_it_ended() -> None:
    s = search.find_max(knee_system(500.0), 100.0, 0.05)
    with pytest.raises(RuntimeError):
        s.add(search.Step(qps=1.0, met=True))


def test_shares_and_summary() -> None:
    recs = [
        {"mode": "baseline", "conn": 8, "max_qps": 10000.0, "lower_bound": False,
         "steps": [{}] * 9, "reason": "found"},
        {"mode": "both", "conn": 8, "max_qps": 4100.0, "lower_bound": False,
         "steps": [{}] * 11, "reason": "found"},
        {"mode": "serversidecar", "conn": 8, "max_qps": 6000.0, "lower_bound": True,
         "steps": [{}] * 7, "reason": "stopped"},
    ]  # fmt: skip
    text = search.summary_text(recs, search.parse_slo("p99=5ms"))
    assert "both sustains 41% of baseline's rate under p99 5 ms (8 connections)" in text
    assert "serversidecar sustains at least 60% of baseline's rate" in text
    assert ">= 6000" in text
    assert "CPU pressure" not in text
    recs[1]["steps"] = [{"warnings": "cpu-pressure: tasks waited for a CPU 30% of the test"}] * 3
    text = search.summary_text(recs, search.parse_slo("p99=5ms"))
    assert "trust: 3 of 19 steps ran under CPU pressure" in text


# ---- a whole run through run_matrix ---------------------------------------------------------


class KneePlatform:
    """A platform whose latency jumps past a knee per mode, answering with fortio results."""

    name = "local"

    def __init__(self, knees: dict[str, float]) -> None:
        self.knees = knees
        self.ran: list[Spec] = []
        self.closed = False

    def start(self, modes: tuple[str, ...]) -> None:
        pass

    def run_test(self, spec: Spec) -> dict[str, Any]:
        self.ran.append(spec)
        latency = 0.0005 if spec.qps <= self.knees[spec.mode] else 0.004
        doc = fortio_data.http_result(
            [latency] * 100, qps=spec.qps, labels=spec.labels, duration_s=spec.duration
        )
        doc["ActualQPS"] = spec.qps
        doc[RESULT_KEY] = {"target": f"fake {spec.mode}"}
        return doc

    def metadata(self) -> dict[str, Any]:
        return {"platform": "fake"}

    def stop_current(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_search_run_writes_steps_and_the_run_file(tmp_path: Path) -> None:
    plan = build_plan(
        conns=[8], qpss=[100.0], duration=0.5, modes=["baseline", "both"], platform="local",
        mesh="istio", run_id="0badcafe", extra_labels=search.step_labels(""),
    )  # fmt: skip
    slo = search.parse_slo("p99=2ms")
    sr = search.SearchRun(plan, slo, 0.05, tmp_path)
    fake = KneePlatform({"baseline": 5000.0, "both": 1500.0})
    report = run_matrix(
        sr.wrap(fake), plan, tmp_path, more=sr.more, run_fields=sr.run_fields,
        progress=lambda n, s: search_progress(n, s),
    )  # fmt: skip
    assert fake.closed and not report.interrupted
    run_doc = json.loads((tmp_path / "run-0badcafe.json").read_text())
    recs = {r["mode"]: r for r in run_doc["slo_search"]}
    assert set(recs) == {"baseline", "both"}
    for mode, knee in (("baseline", 5000.0), ("both", 1500.0)):
        r = recs[mode]
        assert r["conn"] == 8 and r["slo"] == "p99=2ms" and r["outcome"] == search.FOUND
        assert r["max_qps"] <= knee and (knee - r["max_qps"]) / knee <= 0.05
        assert all(set(s) >= {"qps", "achieved", "p99", "errors", "met"} for s in r["steps"])
        # Each step is a real result file, tagged as a search step.
        for n, st in enumerate(r["steps"], 1):
            doc = json.loads((tmp_path / st["file"]).read_text())
            block = doc[RESULT_KEY]
            assert block["search"] == {"slo": "p99=2ms", "step": n, "mode": mode, "conn": 8}
            assert block["qps"] == st["qps"] and block["mode"] == mode
            assert "_findmax_" in doc["Labels"]
            assert st["met"] == (st["qps"] <= knee)
    # The modes' searches interleave: they run side by side in time.
    assert [s.mode for s in fake.ran[:4]] == ["baseline", "both", "baseline", "both"]
    assert len(run_doc["tests"]) == len(fake.ran) == sum(len(r["steps"]) for r in recs.values())
    text = search.summary_text(run_doc["slo_search"], slo)
    share = 100 * recs["both"]["max_qps"] / recs["baseline"]["max_qps"]
    assert f"both sustains {share:.0f}% of baseline's rate under p99 2 ms" in text


def search_progress(total: int, stream: Any) -> Any:
    import io

    from meshperf.run import Progress

    return Progress(total, io.StringIO())


def test_dry_run_text_names_the_worst_case() -> None:
    plan = build_plan(
        conns=[8], qpss=[100.0], duration=3, modes=["baseline", "both"], platform="local",
        mesh="istio", run_id="0badcafe",
    )  # fmt: skip
    text = search.dry_run_text(plan, search.parse_slo("p99=2ms"), 0.05, 0.5, 2.0)
    worst = search.worst_case_steps(0.05)
    # 2^5 = 32 >= 1/0.05 halvings of the last doubling, and the retry of the last step
    assert worst == search.MAX_RAMP_STEPS + 5 + 1
    assert f"worst case {worst} steps per search" in text
    assert "first steps of 2 searches (baseline c=8, both c=8)" in text
    # 2 searches x 20 steps x 3.5 s + 2 s = 142 s
    assert "0:02:22" in text


def test_a_failed_step_ends_its_search(tmp_path: Path) -> None:
    class Flaky(KneePlatform):
        def run_test(self, spec: Spec) -> dict[str, Any]:
            if spec.qps >= 400:
                from meshperf.errors import PlatformError

                raise PlatformError("echo server died")
            return super().run_test(spec)

    plan = build_plan(
        conns=[4], qpss=[100.0], duration=0.2, modes=["baseline"], platform="local",
        mesh="istio", run_id="0badcafe",
    )  # fmt: skip
    sr = search.SearchRun(plan, search.parse_slo("p99=2ms"), 0.05, tmp_path)
    run_matrix(
        sr.wrap(Flaky({"baseline": 1e9})), plan, tmp_path, more=sr.more,
        run_fields=sr.run_fields, progress=search_progress,
    )  # fmt: skip
    (rec,) = json.loads((tmp_path / "run-0badcafe.json").read_text())["slo_search"]
    assert rec["outcome"] == search.STEP_FAILED and rec["lower_bound"]
    assert rec["max_qps"] == 200.0
    assert "echo server died" in rec["reason"]
    assert [s["met"] for s in rec["steps"]] == [True, True, None]
