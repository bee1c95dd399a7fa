"""``--find-max`` on the kubernetes platform, against the wire-level fake API server: each step
is a ``fortio load`` exec in the client pod at the step's rate, and the search finds the knee
of a fortio that answers slowly past it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fortio_data
import runner
from fake_kube import ExecCall, ExecReply, FakeKube
from meshperf import fortiojson
from meshperf.errors import ExitCode

KNEE = 2500.0  # req/s: fortio's p99 jumps from 1 ms to 6 ms past it


@pytest.fixture
def fk() -> Iterator[FakeKube]:
    with FakeKube() as f:
        yield f


def knee_fortio(fk: FakeKube, pods: int) -> Callable[[ExecCall], ExecReply]:
    """A fake ``fortio load`` in each of ``pods`` client pods (16 connections in all): p99
    1 ms while the step's total rate is at most KNEE, 6 ms above it; every rate achieved."""

    def fortio(call: ExecCall) -> ExecReply:
        if call.argv[:2] != ["fortio", "load"]:
            return fk.default_exec(call)
        argv = call.argv
        qps = float(argv[argv.index("-qps") + 1])  # this pod's share of the step's rate
        tail = 0.001 if pods * qps <= KNEE else 0.006
        doc = fortio_data.http_result(
            [0.0005] * 98 + [tail] * 2, qps=qps, threads=16 // pods, duration_s=100,
            labels=argv[argv.index("-labels") + 1],
        )  # fmt: skip
        doc["ActualQPS"] = qps
        return ExecReply(stdout=fortiojson.dumps(doc).encode())

    return fortio


def test_find_max_in_the_client_pod(
    fk: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fk.exec_handler = knee_fortio(fk, pods=1)
    out = tmp_path / "results"
    code = runner.main([
        "16", "0", "100", "--baseline", "--no-clientsidecar", "--find-max", "--slo",
        "p99=2ms", "--find-max-resolution", "10%", "--platform", "kubernetes",
        "--kubeconfig", str(fk.kubeconfig(tmp_path / "kc")), "--output-dir", str(out), "-q",
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert code == ExitCode.OK, text
    rates = [float(c.argv[c.argv.index("-qps") + 1]) for c in fk.calls("fortio")]
    assert rates[:2] == [1600, 3200]  # QPS 0: 100 req/s for each of the 16 connections
    (run_file,) = out.glob("run-*.json")
    (rec,) = json.loads(run_file.read_text())["slo_search"]
    assert rec["outcome"] == "found" and not rec["lower_bound"]
    assert rec["max_qps"] <= KNEE and (KNEE - rec["max_qps"]) / KNEE <= 0.10
    assert [s["qps"] for s in rec["steps"]] == rates
    row = next(ln for ln in text.splitlines() if ln.startswith("baseline ") and "between" in ln)
    assert row.split()[:3] == ["baseline", "16", f"{rec['max_qps']:g}"]


def test_find_max_from_two_client_pods(
    fk: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_clients_kube import add_client_pods

    pods = add_client_pods(fk, 2)

    fk.exec_handler = knee_fortio(fk, pods=2)
    out = tmp_path / "results"
    code = runner.main([
        "16", "0", "100", "--baseline", "--no-clientsidecar", "--find-max", "--slo",
        "p99=2ms", "--find-max-resolution", "10%", "--clients", "2", "--platform",
        "kubernetes", "--kubeconfig", str(fk.kubeconfig(tmp_path / "kc")), "--output-dir",
        str(out), "-q",
    ])  # fmt: skip
    assert code == ExitCode.OK, capsys.readouterr().out
    (run_file,) = out.glob("run-*.json")
    (rec,) = json.loads(run_file.read_text())["slo_search"]
    assert rec["outcome"] == "found"
    assert rec["max_qps"] <= KNEE and (KNEE - rec["max_qps"]) / KNEE <= 0.10
    # Every step ran in both pods, each with half the rate; the merged step is the sum.
    calls = fk.calls("fortio")
    assert len(calls) == 2 * len(rec["steps"])
    assert {c.pod for c in calls} == set(pods)
    for st in rec["steps"]:
        merged = json.loads((out / st["file"]).read_text())
        assert merged["RequestedQPS"] == f"{st['qps']:g}"
        assert len(merged["meshperf"]["clients"]) == 2
