"""``runner.py --clients 3`` against the wire-level fake API server: fortio runs in three client
pods at once, and one merged fortio result comes back whose Count is the sum of the pods' and
whose percentiles are those of one histogram of every call."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fortio_data
import runner
from fake_kube import ExecCall, ExecReply, FakeKube
from meshperf import fortiojson
from meshperf.errors import ExitCode
from meshperf.histogram import calc_percentile

FIRST = "fortioclient-6f7d8b9c54-x2k9p"  # tests/data/kube/pod-fortioclient.json
CLIENT_NODE = "gke-perf-default-pool-1a2b3c4d-0001"  # the server is on ...-0002
HOLD = 0.6  # seconds each fortio exec stays open: long enough to see them overlap


def add_client_pods(fk: FakeKube, n: int) -> list[str]:
    """``n - 1`` more client pods like the first (another replica of the Deployment)."""
    names = [FIRST]
    for i in range(1, n):
        pod = copy.deepcopy(fk.pods[FIRST])
        name = f"fortioclient-6f7d8b9c54-extra{i}"
        pod["metadata"]["name"] = name
        pod["metadata"]["uid"] = f"00000000-0000-0000-0000-00000000000{i}"
        pod["status"]["podIP"] = f"10.52.1.{40 + i}"
        pod["status"]["podIPs"] = [{"ip": pod["status"]["podIP"]}]
        fk.pods[name] = pod
        names.append(name)
    return names


def pod_latencies(pod: str) -> list[float]:
    rng = random.Random(pod)
    return [rng.lognormvariate(-7.2, 0.5) for _ in range(1500 + 100 * len(pod) % 700)]


class Fortio:
    """Answers ``fortio load`` in each pod with that pod's own result, after ``HOLD`` s."""

    def __init__(self, fk: FakeKube) -> None:
        self.fk = fk
        self.arrived: dict[str, float] = {}
        self.replied: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, call: ExecCall) -> ExecReply:
        if call.argv[:2] != ["fortio", "load"]:
            return self.fk.default_exec(call)
        with self.lock:
            self.arrived[call.pod] = time.monotonic()
        argv = call.argv
        qps = float(argv[argv.index("-qps") + 1])
        conn = int(argv[argv.index("-c") + 1])
        start = fortio_data.START.replace(microsecond=1000 * len(self.arrived))
        doc = fortio_data.http_result(
            pod_latencies(call.pod), qps=qps, threads=conn, duration_s=30, start=start,
            labels=argv[argv.index("-labels") + 1],
        )  # fmt: skip
        doc["Resolution"] = float(argv[argv.index("-r") + 1])
        time.sleep(HOLD)
        with self.lock:
            self.replied[call.pod] = time.monotonic()
        return ExecReply(stdout=fortiojson.dumps(doc).encode())


@pytest.fixture
def fk() -> Iterator[FakeKube]:
    with FakeKube() as f:
        yield f


def test_three_client_pods_one_merged_result(
    fk: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = add_client_pods(fk, 3)
    fortio = Fortio(fk)
    fk.exec_handler = fortio
    out = tmp_path / "results"
    code = runner.main([
        "16", "900", "30", "--baseline", "--no-clientsidecar", "--clients", "3",
        "--platform", "kubernetes", "--kubeconfig", str(fk.kubeconfig(tmp_path / "kc")),
        "--output-dir", str(out), "-q",
    ])  # fmt: skip
    assert code == ExitCode.OK, capsys.readouterr().err
    calls = fk.calls("fortio")
    assert sorted(c.pod for c in calls) == sorted(pods)
    # At once: every exec arrived before the first one answered.
    assert max(fortio.arrived.values()) < min(fortio.replied.values())
    shares = {c.pod: (c.argv[c.argv.index("-c") + 1], c.argv[c.argv.index("-qps") + 1])
              for c in calls}  # fmt: skip
    first, second, third = sorted(pods)  # the clients, in name order, take their shares
    assert shares == {first: ("6", "337.5"), second: ("5", "281.25"), third: ("5", "281.25")}

    (merged_file,) = [p for p in out.glob("*.json") if not p.name.startswith("run-")]
    merged = json.loads(merged_file.read_text())
    every = [v for p in pods for v in pod_latencies(p)]
    whole = fortio_data.histogram(every).export()  # the expectation, computed independently
    dh = merged["DurationHistogram"]
    assert dh["Count"] == len(every) == sum(len(pod_latencies(p)) for p in pods)
    assert dh["Data"] == whole["Data"]
    for p in dh["Percentiles"]:
        assert p["Value"] == calc_percentile(whole, p["Percentile"])
    assert merged["NumThreads"] == 16 and merged["RetCodes"] == {"200": len(every)}
    block = merged["meshperf"]
    assert block["mode"] == "baseline" and block["conn"] == 16 and block["qps"] == 900
    assert [c["name"] for c in block["clients"]] == sorted(pods)
    # Each client's own file is kept beside the merged one, as fortio wrote it.
    for c in block["clients"]:
        own = json.loads((out / c["file"]).read_text())
        assert own["DurationHistogram"]["Count"] == len(pod_latencies(c["name"])) == c["count"]
    assert "clients_warning" not in block  # started within ms of each other, off the server node


def test_too_few_client_pods_is_one_line(
    fk: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_client_pods(fk, 2)
    code = runner.main([
        "16", "900", "30", "--baseline", "--no-clientsidecar", "--clients", "3",
        "--platform", "kubernetes", "--kubeconfig", str(fk.kubeconfig(tmp_path / "kc")),
        "--output-dir", str(tmp_path / "out"), "-q",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == ExitCode.TESTS_FAILED
    assert "--clients 3 needs 3 ready client pods with label app=fortioclient" in out.out
    assert fk.calls("fortio") == []


def test_dry_run_names_the_client_pods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = runner.main(["16", "900", "30", "--clients", "3", "--platform", "kubernetes",
                        "--dry-run", "--kubeconfig", str(tmp_path / "none")])  # fmt: skip
    assert code == ExitCode.OK
    assert (
        "load from 3 client pods (label app=fortioclient) at once: c=6 qps=337.5,"
        " c=5 qps=281.25, c=5 qps=281.25" in capsys.readouterr().out
    )


def test_client_on_the_server_node_is_a_warning(
    fk: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pods = add_client_pods(fk, 2)
    fk.pods[pods[1]]["spec"]["nodeName"] = fk.pods["fortioserver-7c9d5f6b88-q7mzt"]["spec"][
        "nodeName"
    ]
    fk.exec_handler = Fortio(fk)
    out = tmp_path / "results"
    code = runner.main([
        "4", "100", "30", "--baseline", "--no-clientsidecar", "--clients", "2",
        "--platform", "kubernetes", "--kubeconfig", str(fk.kubeconfig(tmp_path / "kc")),
        "--output-dir", str(out), "-q",
    ])  # fmt: skip
    assert code == ExitCode.OK, capsys.readouterr().err
    (merged_file,) = [p for p in out.glob("*.json") if not p.name.startswith("run-")]
    warning = json.loads(merged_file.read_text())["meshperf"]["clients_warning"]
    assert f"client pod(s) {pods[1]} on the server's node" in warning
    assert CLIENT_NODE not in warning


def test_stop_reaches_fortio_in_every_client_pod(fk: FakeKube, tmp_path: Path) -> None:
    from meshperf.errors import ClusterError
    from meshperf.kube.platform import KubernetesPlatform
    from meshperf.platform import RunOptions
    from meshperf.platform import TestSpec as Spec

    pods = add_client_pods(fk, 3)
    fk.hold_fortio = 60.0  # each fortio runs until pkill releases it
    opts = RunOptions(platform="kubernetes", kubeconfig=str(fk.kubeconfig(tmp_path / "kc")),
                      run_id="5e1f00d2", clients=3, output_dir=tmp_path)  # fmt: skip
    p = KubernetesPlatform.from_options(opts)
    try:
        p.start(("baseline",))
        timer = threading.Timer(1.5, p.stop_current)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(ClusterError, match="was stopped"):
            p.run_test(Spec(mode="baseline", conn=6, qps=300, duration=60,
                            labels="5e1f00d2_qps_300_c_6_1024_base", run_id="5e1f00d2"))
        assert time.monotonic() - t0 < 20
    finally:
        p.close()
    assert sorted(c.pod for c in fk.calls("pkill")) == sorted(pods)
    assert sorted(c.pod for c in fk.calls("fortio")) == sorted(pods)
