"""Each mode takes the path it claims on a cluster, or is refused before anything is measured.

Against the wire-level fake API server (tests/fake_kube.py) with the hand-written pods of
tests/data/kube/, reshaped per mesh by ``FakeKube.use_mesh``; the same checks against the real
projects' objects are in tests/test_conformance_kube.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import test_kube_platform as tkp
from fake_kube import FakeKube, load
from meshperf import prom
from meshperf.errors import ClusterError, ConfigError
from meshperf.kube import paths
from meshperf.kube.perf import DEBUG_TTL
from meshperf.platform import RESULT_KEY

# The platform tests' fixtures and helpers.
fk = tkp.fk
kubeconfig = tkp.kubeconfig
opts_for, spec, started = tkp.opts_for, tkp.spec, tkp.started
SERVER_IP, SERVER_POD = tkp.SERVER_IP, tkp.SERVER_POD
REPO = Path(__file__).resolve().parents[1]
CLIENT_NODE = "gke-perf-default-pool-1a2b3c4d-0001"  # tests/data/kube/pod-*.json
SERVER_NODE = "gke-perf-default-pool-1a2b3c4d-0002"


def runner(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "runner" / "runner.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def client_init_arg(fk: FakeKube, flag: str, value: str) -> None:
    args = next(c for c in fk.pod("fortioclient")["spec"]["initContainers"]
                if c["name"] == "istio-init")["args"]  # fmt: skip
    args[args.index(flag) + 1] = value


# -- refused before the plan runs (items 5, 6) ----------------------------------------------


def test_ambient_baseline_is_refused_pointing_at_a_mesh_none_run() -> None:
    proc = runner("16", "1000", "120", "--baseline", "--mesh", "istio-ambient",
                  "--platform", "kubernetes", "--dry-run")  # fmt: skip
    assert proc.returncode == 1, proc.stdout
    assert proc.stdout == ""
    first = proc.stderr.splitlines()[0]
    assert first.startswith("runner.py: error: --mesh istio-ambient --baseline: ")
    assert "ztunnel to ztunnel, the same path as both" in first
    assert "MESH=none" in proc.stderr


@pytest.mark.parametrize("mode", ["serversidecar", "clientonly"])
def test_ambient_modes_without_a_bypass_are_refused(mode: str) -> None:
    proc = runner("16", "1000", "120", f"--{mode}", "--mesh", "istio-ambient",
                  "--platform", "kubernetes", "--dry-run")  # fmt: skip
    assert proc.returncode == 1
    assert f"--mesh istio-ambient --{mode}: under ambient" in proc.stderr


def test_linkerd_serversidecar_is_refused_and_says_why() -> None:
    proc = runner("16", "1000", "120", "--serversidecar", "--mesh", "linkerd",
                  "--platform", "kubernetes", "--dry-run")  # fmt: skip
    assert proc.returncode == 1
    assert "would cross both proxies" in proc.stderr and "--clientonly" in proc.stderr


def test_platform_refuses_them_too(fk: FakeKube, kubeconfig: Path) -> None:
    fk.use_mesh("istio-ambient")
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig, mesh="istio-ambient"))
    with pytest.raises(ConfigError, match="ztunnel to ztunnel"):
        p.start(("baseline", "both"))
    p.close()
    assert fk.calls("fortio") == []


# -- clientonly (the istio/tools mode) ------------------------------------------------------


@pytest.mark.parametrize("platform", ["kubernetes", "local"])
def test_clientonly_dry_run_plans_clientonly_tests(platform: str) -> None:
    proc = runner("16,64", "1000", "120", "--clientonly", "--no-clientsidecar",
                  "--platform", platform, "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [r for r in proc.stdout.splitlines() if "_clientonly" in r]
    assert len(rows) == 2 and all(r.split()[1] == "clientonly" for r in rows)
    assert "_qps_1000_c_64_1024_clientonly" in proc.stdout
    if platform == "kubernetes":
        assert "http://fortioserver:8074/echo?size=1024" in rows[0]
        assert paths.path("istio", "clientonly") in rows[0]
    else:
        assert "loadgen -> client sidecar -> app (no server sidecar)" in rows[0]


def test_clientonly_goes_to_the_service_port_led_to_the_uncaptured_server(
    fk: FakeKube, kubeconfig: Path
) -> None:
    p = started(opts_for(kubeconfig), ("clientonly",))
    try:
        result = p.run_test(spec("clientonly"))
    finally:
        p.close()
    (call,) = fk.calls("fortio")
    assert call.argv[-1] == "http://fortioserver:8074/echo?size=1024"
    block = result[RESULT_KEY]
    assert block["mode"] == "clientonly"
    assert block["capture"]["verified"] == [
        f"client pod {tkp.CLIENT_POD} has istio-proxy (container)",
        "client sidecar captures Service 10.56.7.120:8074 (istio-init arguments)",
        "server port 8077 not captured (istio-init arguments)",
    ]


def test_linkerd_clientonly_needs_the_server_to_skip_the_uncaptured_port(
    fk: FakeKube, kubeconfig: Path
) -> None:
    fk.use_mesh("linkerd")
    init = fk.pod("fortioserver")["spec"]["initContainers"][0]
    init["args"][init["args"].index("--inbound-ports-to-ignore") + 1] = "4190,4191"
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig, mesh="linkerd"))
    with pytest.raises(ClusterError, match="does not skip inbound port 8077"):
        p.start(("clientonly",))
    p.close()


# -- capture verified from the API before measuring (item 8) --------------------------------


def test_pod_ip_outside_the_excluded_ranges_refuses_baseline(
    fk: FakeKube, kubeconfig: Path
) -> None:
    # Calico or Cilium cluster-pool: pod IPs that are not in any node's spec.podCIDR.
    fk.pod("fortioserver")["status"]["podIP"] = "192.168.7.9"
    fk.pod("fortioserver")["status"]["podIPs"] = [{"ip": "192.168.7.9"}]
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError) as err:
        p.start(("serversidecar",))
    p.close()
    assert "server pod IP 192.168.7.9 is not in the client's excluded outbound ranges" in str(
        err.value
    )
    assert "10.52.0.0/14" in str(err.value) and "POD_CIDRS" in (err.value.hint or "")
    assert fk.calls("fortio") == []


def test_a_pod_changed_mid_run_fails_that_test_before_fortio_runs(
    fk: FakeKube, kubeconfig: Path
) -> None:
    p = started(opts_for(kubeconfig), ("baseline", "both"))
    try:
        p.run_test(spec("baseline"))
        client_init_arg(fk, "-x", "")  # the client was re-deployed without POD_CIDRS
        client_init_arg(fk, "-o", "80")
        with pytest.raises(ClusterError, match="would cross the client sidecar"):
            p.run_test(spec("baseline"))
        p.run_test(spec("both"))  # its path does not need the exclusion
    finally:
        p.close()
    assert len(fk.calls("fortio")) == 2


def test_what_was_verified_is_in_each_result(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("baseline", "serversidecar", "both"))
    try:
        base, server, both = (p.run_test(spec(m)) for m in ("baseline", "serversidecar", "both"))
    finally:
        p.close()
    assert base[RESULT_KEY]["capture"] == {
        "mesh": "istio",
        "mode": "baseline",
        "path": paths.path("istio", "baseline"),
        "client_capture_from": "istio-init arguments",
        "server_capture_from": "istio-init arguments",
        "verified": [
            f"client sidecar bypassed for {SERVER_IP}:8077 (istio-init arguments)",
            "server port 8077 not captured (istio-init arguments)",
        ],
    }
    assert server[RESULT_KEY]["capture"]["server_proxy"] == "native sidecar"
    assert both[RESULT_KEY]["capture"]["verified"][:2] == [
        f"client pod {tkp.CLIENT_POD} has istio-proxy (container)",
        f"server pod {SERVER_POD} has istio-proxy (native sidecar)",
    ]


def test_istio_cni_pods_are_judged_by_their_annotations(fk: FakeKube, kubeconfig: Path) -> None:
    for pod in fk.pods.values():  # istio-cni: no istio-init container
        pod["spec"]["initContainers"] = [
            c for c in pod["spec"]["initContainers"] if c["name"] != "istio-init"
        ]
    p = started(opts_for(kubeconfig), ("baseline",))
    try:
        block = p.run_test(spec("baseline"))[RESULT_KEY]["capture"]
    finally:
        p.close()
    assert block["client_capture_from"].startswith("traffic.sidecar.istio.io annotations")
    ann = fk.pod("fortioclient")["metadata"]["annotations"]
    ann["traffic.sidecar.istio.io/excludeOutboundIPRanges"] = "10.60.0.0/16"
    ann["traffic.sidecar.istio.io/excludeOutboundPorts"] = "80"
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError, match="10.60.0.0/16"):
        p.start(("baseline",))
    p.close()


def test_a_sidecar_mode_without_the_proxy_is_refused(fk: FakeKube, kubeconfig: Path) -> None:
    srv = fk.pod("fortioserver")["spec"]
    srv["initContainers"] = [c for c in srv["initContainers"] if c["name"] != "istio-proxy"]
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError, match=f"server pod {SERVER_POD} has no istio-proxy"):
        p.start(("serversidecar",))
    p.close()


def test_an_init_container_that_is_not_a_native_sidecar_is_not_a_proxy(
    fk: FakeKube, kubeconfig: Path
) -> None:
    for c in fk.pod("fortioserver")["spec"]["initContainers"]:
        c.pop("restartPolicy", None)  # an init container that ran and exited
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError, match="has no istio-proxy"):
        p.start(("both",))
    p.close()


def test_ambient_needs_both_pods_redirected(fk: FakeKube, kubeconfig: Path) -> None:
    fk.use_mesh("istio-ambient")
    del fk.pod("fortioserver")["metadata"]["annotations"]["ambient.istio.io/redirection"]
    p = tkp.KubernetesPlatform.from_options(opts_for(kubeconfig, mesh="istio-ambient"))
    with pytest.raises(ClusterError) as err:
        p.start(("both",))
    p.close()
    assert f"server pod {SERVER_POD} is not captured by ztunnel" in str(err.value)
    assert "istio.io/dataplane-mode=ambient" in (err.value.hint or "")


# -- proxy workers and ztunnels in the metadata (items 7, 10) --------------------------------


def test_proxy_workers_are_recorded(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("both",))
    try:
        istio = p.metadata()["proxy_workers"]
    finally:
        p.close()
    assert istio["client"] == {"istio-proxy": {"workers": 2, "from": "PROXY_CONFIG concurrency"}}
    fk.use_mesh("linkerd")
    p = started(opts_for(kubeconfig, mesh="linkerd"), ("both",))
    try:
        linkerd = p.metadata()["proxy_workers"]
    finally:
        p.close()
    assert linkerd == {
        role: {"linkerd-proxy": {"workers": 2, "from": "LINKERD2_PROXY_CORES"}}
        for role in ("client", "server")
    }


def _ztunnel_pod(name: str, node: str) -> dict[str, Any]:
    pod = copy.deepcopy(load("pod-fortioserver.json"))
    pod["metadata"].update(name=name, namespace="istio-system", labels={"app": "ztunnel"})
    pod["spec"]["nodeName"] = node
    return pod


def test_ztunnel_version_and_the_ztunnels_of_the_two_nodes(fk: FakeKube, kubeconfig: Path) -> None:
    fk.use_mesh("istio-ambient")
    fk.daemonsets.append(load("daemonset-ztunnel.json"))  # labelled as istioctl labels it
    fk.other_pods += [
        _ztunnel_pod("ztunnel-aaaaa", CLIENT_NODE),
        _ztunnel_pod("ztunnel-bbbbb", SERVER_NODE),
        _ztunnel_pod("ztunnel-idle1", "gke-perf-default-pool-1a2b3c4d-0003"),
    ]
    p = started(opts_for(kubeconfig, mesh="istio-ambient"), ("both",))
    try:
        meta = p.metadata()
        result = p.run_test(spec("both"))
    finally:
        p.close()
    assert meta["ztunnel_version"] == "1.24.2-distroless"
    assert meta["ztunnel_pods"] == ["ztunnel-aaaaa", "ztunnel-bbbbb"]
    assert result[RESULT_KEY]["ztunnel_pods"] == ["ztunnel-aaaaa", "ztunnel-bbbbb"]


def test_the_ztunnel_column_counts_only_the_ztunnels_of_the_test() -> None:
    t0 = dt.datetime(2026, 3, 4, 10, 0, tzinfo=dt.UTC).timestamp()

    def series(pod: str, value: float) -> dict[str, Any]:
        return {
            "metric": {"namespace": "istio-system", "pod": pod, "container": "istio-proxy"},
            "values": [[t0, str(value)], [t0 + 15, str(value)]],
        }

    data = [series("ztunnel-aaaaa", 0.2), series("ztunnel-bbbbb", 0.3),
            series("ztunnel-idle1", 0.05), series("ztunnel-idle2", 0.05)]  # fmt: skip
    every = prom.summarize(data, 1000.0)[prom.RESOURCE_ZTUNNEL]
    assert every["avg"] == pytest.approx(600.0)  # what the column said: idle nodes included
    two = prom.summarize(data, 1000.0, ztunnels=["ztunnel-aaaaa", "ztunnel-bbbbb"])
    assert two[prom.RESOURCE_ZTUNNEL]["avg"] == pytest.approx(500.0)


# -- --perf: the debug container lives as long as the run and starts before it (item 9) ------


def test_perf_debug_container_starts_at_start_and_outlives_an_hour(
    fk: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    fk.perf_script_output = tkp.PERF_SCRIPT
    opts = opts_for(kubeconfig, perf=True, perf_image="example/perf:1", output_dir=tmp_path)
    p = started(opts, ("serversidecar",))
    try:
        # Added and running before any test: its start-up is outside every recording window.
        (path, _, body) = fk.patches[0]
        assert path.endswith(f"/pods/{SERVER_POD}/ephemeralcontainers")
        assert fk.calls("fortio") == []
        (added,) = body["spec"]["ephemeralContainers"]
        assert added["command"] == ["sleep", str(DEBUG_TTL)]
        assert DEBUG_TTL >= 10 * 365 * 24 * 3600  # a matrix of any length, never 3600 s
        result = p.run_test(spec("serversidecar", duration=1))
    finally:
        p.close()
    assert "flamegraph" in result[RESULT_KEY]["perf"]
    assert len(fk.patches) == 1  # added once


def test_the_checked_ports_are_those_of_the_test_protocol(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("clientonly", "baseline"))
    try:
        grpc = p._verify("clientonly", "grpc")["verified"]
        tcp = p._verify("baseline", "tcp")["verified"]
    finally:
        p.close()
    assert "client sidecar captures Service 10.56.7.120:8073 (istio-init arguments)" in grpc
    assert "server port 8076 not captured (istio-init arguments)" in grpc
    assert "server port 8075 not captured (istio-init arguments)" in tcp


def test_perf_records_only_where_the_server_proxy_is_in_the_path(
    fk: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    fk.perf_script_output = tkp.PERF_SCRIPT
    opts = opts_for(kubeconfig, perf=True, perf_image="example/perf:1", output_dir=tmp_path)
    p = started(opts, ("clientonly", "serversidecar"))
    try:
        clientonly = p.run_test(spec("clientonly", duration=1))
        server = p.run_test(spec("serversidecar", duration=1))
    finally:
        p.close()
    assert "perf" not in clientonly[RESULT_KEY]
    assert "flamegraph" in server[RESULT_KEY]["perf"]
    records = [c for c in fk.exec_calls if c.argv[:2] == ["perf", "record"]]
    assert len(records) == 1


def test_ambient_ingress_plan_says_the_client_ztunnel_cannot_be_bypassed() -> None:
    proc = runner("16", "1000", "120", "--mesh", "istio-ambient", "--ingress", "gw.example",
                  "--platform", "kubernetes", "--dry-run")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = [r for r in proc.stdout.splitlines() if "_ingress" in r]
    assert "client ztunnel (it cannot be bypassed under ambient) -> ingress gateway" in row
    assert "; gateway gw.example" in row
