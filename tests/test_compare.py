"""compare.py on results the tests make: verdicts, intervals, calibration, JSON, gate, errors.

The Istio 2019 Mixer-on/Mixer-off runs are not among the conformance data, so the pair here
is synthetic and shaped like them: the 2019 runner's labels (``<run>_qps_1000_c_<n>_1024_both``
and ``..._nomixer_both``), 1 to 64 connections, single runs, Mixer on 7x slower at p50.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

import fortio_data
from meshperf import compare as cmp
from meshperf import stats
from meshperf.histogram import calc_percentile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "runner"))
import compare as cli  # noqa: E402  (runner/compare.py)

CONNS = (1, 2, 4, 8, 16, 32, 64)


def _lognormal(
    rng: np.random.Generator, median_s: float, n: int, sigma: float = 0.35
) -> list[float]:
    return [float(v) for v in rng.lognormal(math.log(median_s), sigma, n)]


def _mixer_pair(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(2019)
    dirs = {}
    i = 0
    for side, scale in (("mixer", 7.0), ("nomixer", 1.0)):
        d = tmp_path / side
        for c in CONNS:
            i += 1
            extra = "_nomixer" if side == "nomixer" else ""
            doc = fortio_data.http_result(
                _lognormal(rng, 0.0004 * scale * (1 + c / 32), 5000),
                labels=f"193ff770_qps_1000_c_{c}_1024{extra}_both",
                threads=c,
                duration_s=5.0,
                start=fortio_data.START + dt.timedelta(minutes=5 * i),
            )
            fortio_data.write(d, doc)
        dirs[side] = d
    return dirs["mixer"], dirs["nomixer"]


def _repeats(
    tmp_path: Path,
    name: str,
    medians_s: dict[str, float],
    *,
    repeats: int = 3,
    seed: int = 1,
    run_noise: float = 0.03,
) -> Path:
    """``repeats`` results per mode, each run's median moved by a lognormal run effect."""
    rng = np.random.default_rng(seed)
    d = tmp_path / name
    i = 0
    for rep in range(repeats):
        for mode, med in medians_s.items():
            i += 1
            run_med = med * math.exp(rng.normal(0.0, run_noise))
            doc = fortio_data.http_result(
                _lognormal(rng, run_med, 2000),
                labels=f"{name}_qps_1000_c_16_1024_{'base' if mode == 'baseline' else mode}",
                threads=16,
                duration_s=2.0,
                start=fortio_data.START + dt.timedelta(seconds=10 * i + 1000 * seed),
                extra={"meshperf": {"run_id": name, "mode": mode, "conn": 16, "qps": 1000.0,
                                    "size": 1024, "repeat": rep, "platform": "local"}},
            )  # fmt: skip
            fortio_data.write(d, doc)
    return d


def test_mixer_on_vs_off_every_latency_improved(tmp_path: Path) -> None:
    mixer, nomixer = _mixer_pair(tmp_path)
    out = tmp_path / "cmp.json"
    assert cli.main([str(mixer), str(nomixer), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    for metric in ("p50", "p90", "p99"):
        mine = [r for r in rows if r["metric"] == metric]
        assert sorted(r["conn"] for r in mine) == list(CONNS), metric
        for r in mine:
            assert r["verdict"] == "improved", r
            assert r["method"] == "within-run only, optimistic"
            # 7x faster is -85.7%; the interval brackets the estimate.
            assert -90 < r["change_pct"] < -80, r
            assert r["ci_low_pct"] <= r["change_pct"] <= r["ci_high_pct"]
    assert -90 < doc["geomean_change_pct"]["p50"] < -80


def test_json_rows_have_the_issue_keys(tmp_path: Path) -> None:
    mixer, nomixer = _mixer_pair(tmp_path)
    out = tmp_path / "cmp.json"
    assert cli.main([str(mixer), str(nomixer), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    for key in ("mode", "conn", "qps", "size", "protocol", "metric", "base", "new",
                "change_pct", "ci_low_pct", "ci_high_pct", "verdict", "method"):  # fmt: skip
        assert key in row, key
    assert (row["mode"], row["qps"], row["size"], row["protocol"]) == ("both", 1000, 1024, "http")


def test_table_is_benchstat_like(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixer, nomixer = _mixer_pair(tmp_path)
    assert cli.main([str(mixer), str(nomixer), "--metrics", "p50"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.startswith("p50 (ms)"))
    assert header.split() == ["p50", "(ms)", "base", "new", "change", "95%", "CI", "verdict",
                              "method"]  # fmt: skip
    assert sum(1 for ln in lines if ln.startswith("both c")) == len(CONNS)
    assert any(ln.startswith("geomean") and "-8" in ln for ln in lines)
    assert "within-run only, optimistic" in out
    assert "p99 (ms)" not in out  # --metrics kept p50 only


def test_shift_with_repeats_is_regressed_and_interval_covers_it(tmp_path: Path) -> None:
    base = _repeats(tmp_path, "aaaa1111", {"baseline": 0.0001, "both": 0.0005}, seed=1)
    new = _repeats(tmp_path, "bbbb2222", {"baseline": 0.0001, "both": 0.0006}, seed=2)
    comparison = cmp.compare(cmp.load_side("base", [str(base)]), cmp.load_side("new", [str(new)]))
    p50 = {c.key[0][1]: c for c in comparison.changes if c.metric == "p50"}
    both = p50["both"]
    assert both.method == "between-repeat (3 vs 3)"
    assert both.verdict == "regressed"
    assert both.ci_low_pct is not None and both.ci_high_pct is not None
    assert both.ci_low_pct < 20.0 < both.ci_high_pct
    # The baseline did not move: its 3-repeat interval must contain 0.
    assert p50["baseline"].verdict == "not significant", p50["baseline"]


def test_gate_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _repeats(tmp_path, "aaaa1111", {"both": 0.0005}, seed=1)
    new = _repeats(tmp_path, "bbbb2222", {"both": 0.0006}, seed=2)
    assert cli.main([str(base), str(new), "--fail-on", "regressed:p50>5%"]) == cli.EXIT_GATE
    err = capsys.readouterr().err
    assert "gate: regressed:p50>5%: both c16" in err
    # A threshold above the change does not trip; nor does a gate on improvements.
    assert cli.main([str(base), str(new), "--fail-on", "regressed:p50>60%"]) == 0
    assert cli.main([str(base), str(new), "--fail-on", "improved:p*"]) == 0
    capsys.readouterr()
    # A gate on a metric that was never compared is an error, never a silent pass.
    assert cli.main([str(base), str(new), "--fail-on", "regressed:p75"]) == 1
    assert "no metric p75 compared" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main([str(base), str(new), "--fail-on", "slower:p99"])
    assert e.value.code == 2


@pytest.mark.parametrize("sigma", [0.02, 0.10])
def test_welch_false_positive_rate_is_near_nominal(sigma: float) -> None:
    """Same distribution on both sides, 3 repeats each: ~5% of comparisons significant."""
    rng = np.random.default_rng(5)
    trials = 2000
    hits = 0
    for _ in range(trials):
        a = [float(v) for v in np.exp(rng.normal(0, sigma, 3))]
        b = [float(v) for v in np.exp(rng.normal(0, sigma, 3))]
        _, lo, hi = stats.welch_ratio(a, b)
        hits += not (lo <= 1.0 <= hi)
    rate = hits / trials
    # Welch's interval is slightly conservative for equal variances and n=3.
    assert 0.02 <= rate <= 0.07, rate


def test_histogram_bootstrap_false_positive_rate_without_run_effect() -> None:
    """Two runs drawn from one distribution (no run-to-run effect): ~5% significant."""
    rng = np.random.default_rng(9)
    gen = stats.rng(1)
    trials, hits = 120, 0
    for _ in range(trials):
        ha = fortio_data.http_result(_lognormal(rng, 0.0005, 3000))["DurationHistogram"]
        hb = fortio_data.http_result(_lognormal(rng, 0.0005, 3000))["DurationHistogram"]
        ra = stats.bootstrap_percentiles(ha, [50], gen, 500)[:, 0]
        rb = stats.bootstrap_percentiles(hb, [50], gen, 500)[:, 0]
        lo, hi = stats.ratio_interval_of(ra, rb)
        hits += not (lo <= 1.0 <= hi)
    assert hits / trials <= 0.12, hits


def test_t_quantiles_match_the_t_table() -> None:
    # Two-tailed 95% critical values as tabulated (pyperf/_utils.py's table).
    for df, want in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert stats.t_quantile(0.975, df) == pytest.approx(want, abs=5e-4)
    assert stats.t_quantile(0.975, 1e7) == pytest.approx(1.95996, abs=1e-4)
    assert stats.t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)


def test_vectorised_percentiles_follow_fortio_rule() -> None:
    rng = np.random.default_rng(3)
    doc = fortio_data.http_result(_lognormal(rng, 0.0007, 4000, 0.6))
    h = doc["DurationHistogram"]
    ps = [0.01, 10, 50, 75, 90, 99, 99.9, 100]
    starts, ends, counts = stats.bucket_counts(h)
    got = stats.percentiles_from_counts(starts, ends, counts, ps, h["Min"], h["Max"])[0]
    for p, v in zip(ps, got, strict=True):
        assert v == pytest.approx(calc_percentile(h, p), rel=1e-12), p


def test_fortio_csv_outputs_compare(tmp_path: Path) -> None:
    """fortio.py's own CSV of each side: repeats there give the between-repeat method."""
    import fortio as fortio_cli  # runner/fortio.py

    base = _repeats(tmp_path, "aaaa1111", {"baseline": 0.0001, "both": 0.0005}, seed=1)
    new = _repeats(tmp_path, "bbbb2222", {"baseline": 0.0001, "both": 0.00075}, seed=2)
    for d in (base, new):
        assert fortio_cli.main([str(d), "--output", str(tmp_path / d.name)]) in (0, 3)
    out = tmp_path / "c.json"
    args = [str(tmp_path / "aaaa1111.csv"), str(tmp_path / "bbbb2222.csv"), "--json", str(out)]
    assert cli.main(args) == 0
    rows = {(r["mode"], r["metric"]): r for r in json.loads(out.read_text())["rows"]}
    assert rows[("both", "p50")]["method"] == "between-repeat (3 vs 3)"
    assert rows[("both", "p50")]["verdict"] == "regressed"
    assert 40 < rows[("both", "p50")]["change_pct"] < 60


def test_2019_csv_is_read_through_its_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = REPO / "tests" / "data" / "graph" / "istio2019.csv"
    out = tmp_path / "c.json"
    assert cli.main([str(csv_path), str(csv_path), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["mode"] for r in rows} >= {"both", "serversidecar"}
    # One value per side and no histogram: no interval, never significant.
    assert {r["method"] for r in rows} == {"no interval"}
    assert {r["verdict"] for r in rows} == {"not significant"}


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _repeats(tmp_path, "aaaa1111", {"both": 0.0005}, repeats=1, seed=1)
    assert cli.main([str(base), str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NEW" in err and "no such file" in err
    other = tmp_path / "other"
    fortio_data.write(other, fortio_data.http_result(labels="x_qps_500_c_2_64_both"))
    assert cli.main([str(base), str(other)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matches" in err
    assert cli.main([str(base), str(base), "--match", "mode,colour"]) == 1
    assert "unknown column colour" in capsys.readouterr().err
    out = tmp_path / "exists.json"
    out.write_text("{}")
    assert cli.main([str(base), str(base), "--json", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert out.read_text() == "{}"


def test_rows_with_warnings_are_marked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    new = tmp_path / "new"
    rng = np.random.default_rng(4)
    fortio_data.write(base, fortio_data.http_result(_lognormal(rng, 0.0005, 2000),
                                                    labels="r1_qps_1000_c_4_1024_both",
                                                    duration_s=2.0))  # fmt: skip
    # 1800 calls in 2 s against 1000 requested: the generator fell behind.
    fortio_data.write(new, fortio_data.http_result(_lognormal(rng, 0.0005, 1800),
                                                   labels="r2_qps_1000_c_4_1024_both",
                                                   duration_s=2.0))  # fmt: skip
    out = tmp_path / "c.json"
    assert cli.main([str(base), str(new), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "both c4 q1000 1024B http !" in text
    footnote = text.split("! results with warnings")[1]
    assert "  both c4 q1000 1024B http: new 1/1 results (behind 1)\n" in footnote
    assert "base " not in footnote  # the sound side is not marked
    row = json.loads(out.read_text())["rows"][0]
    (w,) = row["warnings"]
    assert re.fullmatch(r"new \S+r2_qps\S+: behind: achieved 89\d\.\d of 1000 qps \(\d+\.\d%\)", w)


def test_fortio_server_urls_are_sources(tmp_path: Path) -> None:
    """The sources fortio.py reads include a fortio server's URL (its data listing)."""
    from fake_fortio_server import FakeFortio

    mixer, nomixer = _mixer_pair(tmp_path)
    out = tmp_path / "c.json"
    with FakeFortio.from_dir(mixer) as base, FakeFortio.from_dir(nomixer) as new:
        assert cli.main([base.url, new.url, "--json", str(out), "--metrics", "p50"]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == len(CONNS) and {r["verdict"] for r in rows} == {"improved"}


def test_http1_and_http2_runs_are_separate_cells(tmp_path: Path) -> None:
    """The same mode, conn and qps over HTTP/1.1 and over HTTP/2 are different tests."""
    rng = np.random.default_rng(11)
    for side in ("base", "new"):
        for h2, median in ((False, 0.0005), (True, 0.0009)):
            block = {"format": 1, "mode": "both", "conn": 4, "qps": 1000.0, "size": 1024,
                     "protocol": "http", "h2": h2}  # fmt: skip
            doc = fortio_data.http_result(
                _lognormal(rng, median, 2000), duration_s=2.0,
                labels=f"{side}_qps_1000_c_4_1024{'_h2' if h2 else ''}_both",
                extra={"meshperf": block},
            )  # fmt: skip
            fortio_data.write(tmp_path / side, doc)
    out = tmp_path / "c.json"
    assert cli.main([str(tmp_path / "base"), str(tmp_path / "new"), "--metrics", "p50",
                     "--json", str(out)]) == 0  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["protocol"] for r in rows) == ["http", "http2"]
    by_proto = {r["protocol"]: r for r in rows}
    # Averaged together the two would sit near 700 us; apart, each keeps its own median.
    assert by_proto["http"]["base"] == pytest.approx(500, rel=0.1)  # microseconds
    assert by_proto["http2"]["base"] == pytest.approx(900, rel=0.1)
