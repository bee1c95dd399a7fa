"""trust.py's warnings on results the tests make, and the sampler's CPU pressure (real PSI)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from meshperf import trust
from meshperf.histogram import Histogram, calc_percentile
from meshperf.local.sampler import PSI_CPU, Sampler, read_cpu_pressure
from meshperf.results import FortioResult


def _result(**kw: Any) -> FortioResult:
    block = kw.pop("block", None)
    doc = fortio_data.http_result(**kw)
    if block is not None:
        doc["meshperf"] = block
    return FortioResult(doc, "test.json")


def _codes(r: FortioResult) -> list[str]:
    return [w.code for w in trust.assess(r)]


def test_sound_result_has_no_warning() -> None:
    r = _result(latencies=[0.0005] * 1000, duration_s=1.0, qps=1000)
    assert trust.assess(r) == []
    assert trust.text(trust.assess(r)) == ""


def test_generator_behind_on_achieved_rate() -> None:
    def achieved(qps: float, requested: float = 1000) -> FortioResult:
        return _result(latencies=[0.0005] * 1000, qps=requested, extra={"ActualQPS": qps})

    w = trust.assess(achieved(990.0))  # 99.0% < 99.5%
    assert [x.code for x in w] == ["behind"]
    assert w[0].detail == "achieved 990.0 of 1000 qps (99.0%)"
    # 99.6% is within the tolerance; "max" has no schedule to fall behind.
    assert _codes(achieved(996.0)) == []
    assert _codes(achieved(10.0, requested=0)) == []


def test_generator_behind_on_send_lag() -> None:
    lag = Histogram(0.0, 0.0001)
    for i in range(1000):
        lag.record(0.004 if i >= 980 else 0.0001)  # 2% of requests 4 ms late
    r = _result(latencies=[0.0005] * 1000, duration_s=1.0,
                extra={"SendLagHistogram": lag.export()})  # fmt: skip
    w = trust.assess(r)
    assert [x.code for x in w] == ["behind"]
    p99_ms = 1000 * calc_percentile(lag.export(), 99)
    assert p99_ms > 3  # most of the late 2% are near 4 ms
    assert w[0].detail == f"send lag p99 {p99_ms:.2f} ms > 1 ms"


def test_cpu_pressure_throttling_errors_and_samples() -> None:
    block = {
        "pressure": {"cpu_some": 0.42, "window_s": 4.0, "source": PSI_CPU},
        "throttled": {"fortioserver_deployment_proxy": {"throttled": 0.2, "periods": 400}},
        "resources": {
            "fortioserver_deployment_proxy": {"samples": [[0, 1, 2, 3]] * 3},
            "fortio_deployment_proxy": {"samples": [[0, 1, 2, 3]] * 8},
        },
    }
    r = _result(
        latencies=[0.0005] * 1000,
        error_latencies=[0.001] * 10,
        retcodes={"200": 1000, "503": 10},
        duration_s=1.01,
        block=block,
    )
    w = trust.assess(r, window_problem="test too short for CPU/memory: 30s < 92s")
    assert [x.code for x in w] == [
        "cpu-pressure", "throttled", "errors", "short-window", "few-samples",
    ]  # fmt: skip
    text = trust.text(w)
    assert "tasks waited for a CPU 42.0% of the test" in text
    assert "fortioserver_deployment_proxy CPU-throttled in 20.0% of periods" in text
    assert "0.99% of calls failed" in text
    assert "3 samples of fortioserver_deployment_proxy (< 5)" in text
    assert "fortio_deployment_proxy (" not in text  # 8 samples are enough
    assert trust.codes(text) == [x.code for x in w]


def test_low_pressure_and_throttling_are_not_warned() -> None:
    block = {
        "pressure": {"cpu_some": 0.05},
        "throttled": {"fortioserver_deployment_proxy": {"throttled": 0.0}},
    }
    assert _codes(_result(latencies=[0.0005] * 1000, duration_s=1.0, block=block)) == []


def test_pressure_share_from_two_readings() -> None:
    got = trust.pressure_share((100.0, 5_000_000.0), (104.0, 6_000_000.0))
    assert got == {"cpu_some": 0.25, "window_s": 4.0, "source": "/proc/pressure/cpu"}
    assert trust.pressure_share((100.0, 1.0), (100.0, 2.0)) is None


def test_sampler_pressure_brackets_the_window(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    psi.write_text(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert read_cpu_pressure(str(psi)) == 123456.0
    assert read_cpu_pressure(str(tmp_path / "absent")) is None
    s = Sampler({}, interval=0.5)
    # Readings every 0.5 s; 0.1 s of stall per second between t=10 and t=14.
    s.pressure_samples = [(10.0 + 0.5 * i, 1e6 + 50_000.0 * i) for i in range(11)]
    got = s.pressure((11.0, 13.0))
    assert got is not None
    assert got["window_s"] == 2.0 and got["cpu_some"] == pytest.approx(0.1)
    assert Sampler({}).pressure() is None  # no reading: no PSI, no claim


@pytest.mark.skipif(read_cpu_pressure() is None, reason="no Linux PSI (/proc/pressure/cpu)")
@pytest.mark.slow
def test_real_psi_sees_more_busy_processes_than_cores() -> None:
    """Twice as many spinning processes as cores: tasks must wait for a CPU most of the time."""
    n = 2 * (os.cpu_count() or 1)
    spin = "import time\nend = time.monotonic() + 2.5\nwhile time.monotonic() < end: pass\n"
    sampler = Sampler({}, interval=0.25)
    sampler.start()
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(n)]
    try:
        t0 = time.time()
        time.sleep(0.3)
        start = time.time()
        time.sleep(1.5)
        end = time.time()
    finally:
        for p in procs:
            p.wait(timeout=30)
        sampler.stop()
    assert t0 < start
    got = sampler.pressure((start, end))
    assert got is not None
    assert got["cpu_some"] > trust.CPU_PRESSURE_MAX, got


def test_fortio_py_csv_has_a_warnings_column(tmp_path: Path) -> None:
    import csv

    import fortio as fortio_cli  # runner/fortio.py

    results = tmp_path / "results"
    sound = fortio_data.http_result(labels="r1_qps_1000_c_4_1024_both", extra={"ActualQPS": 999.8})
    fortio_data.write(results, sound)
    behind = fortio_data.http_result(
        labels="r1_qps_1000_c_4_1024_serveronly", extra={"ActualQPS": 900.0}
    )
    fortio_data.write(results, behind)
    assert fortio_cli.main([str(results), "--output", str(tmp_path / "s")]) == 0
    with (tmp_path / "s.csv").open(newline="") as f:
        rows = {r["mode"]: r for r in csv.DictReader(f)}
    assert rows["both"]["warnings"] == ""
    assert rows["serversidecar"]["warnings"] == "behind: achieved 900.0 of 1000 qps (90.0%)"


def test_aggregate_keeps_every_repeats_warnings() -> None:
    from meshperf import collect as col

    rows = [
        {"mode": "both", "conn": 4, "p50": 1.0, "p99": 2.0, "warnings": w}
        for w in ("", "errors: 1.00% of calls failed", "errors: 1.00% of calls failed")
    ]
    (agg,) = col.aggregate(rows)
    assert agg["warnings"] == "errors: 1.00% of calls failed"


def test_proxy_workers_above_the_cpu_limit() -> None:
    meta = {
        "platform_metadata": {
            "proxy_workers": {
                "client": {"istio-proxy": {"workers": 2}},
                "server": {"istio-proxy": {"workers": 4}},
            },
            "proxy_resources": {
                "client": {"istio-proxy": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}},
                "server": {"istio-proxy": {"requests": {"cpu": "1"}, "limits": {"cpu": "1500m"}}},
            },
        }
    }
    r = _result(latencies=[0.0005] * 1000, extra={"ActualQPS": 1000.0}).with_run_metadata(meta)
    (w,) = trust.assess(r)
    assert str(w) == "workers: server istio-proxy runs 4 workers on a 1500m CPU limit"
    assert trust.cpu_cores("250m") == 0.25 and trust.cpu_cores("2") == 2.0
    assert trust.cpu_cores("lots") is None


def test_a_path_that_carried_another_protocol_is_warned() -> None:
    block = {"format": 1, "mode": "both", "protocol": "http", "h2": True,
             "path_mismatch": "the client proxy carried http1, not http2"}  # fmt: skip
    r = _result(latencies=[0.0005] * 1000, duration_s=1.0, qps=1000, block=block)
    (w,) = trust.assess(r)
    assert (w.code, w.detail) == ("path", "the client proxy carried http1, not http2")
