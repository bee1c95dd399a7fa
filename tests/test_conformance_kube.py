"""The kubernetes platform against the objects Istio and Linkerd really write.

The fake API server (tests/fake_kube.py) serves pods made from the real projects' objects in
the conformance directory (``upstream/``, read in place, never copied): Istio's injector output
(sidecar, istio-cni and native-sidecar variants, the traffic annotations), istioctl's ztunnel
and istio-cni DaemonSets, and Linkerd's injected Deployment. Every container, label, argument
and annotation meshperf relies on is then the one those projects write.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance import require
from fake_kube import FakeKube, match_selector, pod_from
from meshperf.errors import ClusterError
from meshperf.kube import KubernetesPlatform, capture, paths
from meshperf.kube.platform import ZTUNNEL_DAEMONSET, ZTUNNEL_POD
from meshperf.platform import RunOptions

DIR = require("upstream", "istio")
LINKERD = require("upstream", "linkerd")
REPO = Path(__file__).resolve().parents[1]
CLIENT_IP, SERVER_IP = "10.96.0.7", "10.96.1.9"
CLIENT_NODE, SERVER_NODE = "node-a", "node-b"


def upstream(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind]
    return doc  # type: ignore[no-any-return]


@pytest.fixture
def fk() -> Iterator[FakeKube]:
    with FakeKube() as f:
        yield f


def with_pods(fk: FakeKube, client: dict[str, Any], server: dict[str, Any]) -> None:
    fk.set_pod(pod_from(client, name="fortioclient-1", app="fortioclient", ip=CLIENT_IP,
                        node=CLIENT_NODE))  # fmt: skip
    fk.set_pod(pod_from(server, name="fortioserver-1", app="fortioserver", ip=SERVER_IP,
                        node=SERVER_NODE))  # fmt: skip


def platform(fk: FakeKube, tmp_path: Path, mesh: str = "istio") -> KubernetesPlatform:
    kubeconfig = fk.kubeconfig(tmp_path / "kubeconfig")
    return KubernetesPlatform.from_options(
        RunOptions(platform="kubernetes", kubeconfig=str(kubeconfig), mesh=mesh, run_id="c0")
    )


def verify(fk: FakeKube, tmp_path: Path, mode: str, mesh: str = "istio") -> dict[str, Any]:
    """Start the platform on the fake's pods for ``mode`` and return what it verified."""
    p = platform(fk, tmp_path, mesh)
    try:
        p.start((mode,))
        return p._verify(mode)
    finally:
        p.close()


# -- Istio sidecars ------------------------------------------------------------------------


def test_injected_istio_proxy_is_found_as_a_native_sidecar(fk: FakeKube, tmp_path: Path) -> None:
    hello = upstream(DIR / "hello.yaml.injected", "Deployment")
    with_pods(fk, hello, hello)
    info = verify(fk, tmp_path, "both")
    assert info["client_proxy"] == info["server_proxy"] == "native sidecar"
    assert info["client_capture_from"] == "istio-init arguments"
    p = platform(fk, tmp_path)
    try:
        p.start(("both",))
        assert p.load_container == "hello"  # never the proxy
    finally:
        p.close()


def test_the_native_sidecar_pod_and_its_other_sidecar(fk: FakeKube, tmp_path: Path) -> None:
    pod = upstream(DIR / "native-sidecar.yaml.injected", "Pod")
    with_pods(fk, pod, pod)
    assert verify(fk, tmp_path, "both")["server_proxy"] == "native sidecar"
    made = pod_from(pod, name="x", app="x", ip=SERVER_IP, node=SERVER_NODE)
    restartable = [c["name"] for c in made["spec"]["initContainers"]
                   if c.get("restartPolicy") == "Always"]  # fmt: skip
    assert "other-sidecar" in restartable  # a native sidecar that is not the mesh's proxy
    assert "other-sidecar" not in paths.PROXY_CONTAINERS


def test_upstream_pods_without_our_exclusions_refuse_baseline(fk: FakeKube, tmp_path: Path) -> None:
    hello = upstream(DIR / "hello.yaml.injected", "Deployment")
    with_pods(fk, hello, hello)
    with pytest.raises(ClusterError, match="not in the client's excluded outbound ranges"):
        verify(fk, tmp_path, "baseline")


def test_istio_cni_pods_are_read_from_their_annotations(fk: FakeKube, tmp_path: Path) -> None:
    hello = upstream(DIR / "hello.yaml.cni.injected", "Deployment")
    init_names = [c["name"] for c in hello["spec"]["template"]["spec"].get("initContainers", [])]
    assert "istio-init" not in init_names  # what makes this the istio-cni variant
    with_pods(fk, hello, hello)
    info = verify(fk, tmp_path, "both")
    assert info["server_capture_from"].startswith("traffic.sidecar.istio.io annotations")
    assert f"server port {paths.CAPTURED_PORT} captured" in info["verified"][-1]


def test_traffic_annotations_as_istio_iptables_gets_them(fk: FakeKube, tmp_path: Path) -> None:
    traffic = upstream(DIR / "traffic-annotations.yaml.injected", "Deployment")
    ann = traffic["spec"]["template"]["metadata"]["annotations"]
    pod = pod_from(traffic, name="t", app="fortioclient", ip=CLIENT_IP, node=CLIENT_NODE)
    fk.set_pod(pod)
    made = fk.pod("t")
    info = capture.IstioCapture(_podinfo(fk, tmp_path, "fortioclient"))
    assert info.source == "istio-init arguments"
    # the injector turned each annotation into the istio-iptables flag the checks read
    wanted = ann["traffic.sidecar.istio.io/excludeOutboundIPRanges"].split(",")
    assert wanted == ["10.96.0.2/24", "10.96.0.3/24"]
    assert info.out_ranges == [ipaddress.ip_network(w, strict=False) for w in wanted]
    assert info.out_ports == {7, 8, 9}
    assert {4, 5, 6} <= info.in_excluded
    assert info.bypasses_outbound("10.96.0.200", 8080)  # in an excluded range
    assert info.bypasses_outbound("10.1.2.3", 8)  # an excluded port
    assert not info.bypasses_outbound("10.1.2.3", 8080)
    # includeInboundPorts 1,2,3: port 8080 is not captured, so serversidecar would be a lie
    assert not info.captures_inbound(8080) and info.captures_inbound(2)
    assert made["metadata"]["labels"]["app"] == "fortioclient"
    # a server inside the excluded ranges, so the client side holds and the server's is judged
    fk.set_pod(pod_from(traffic, name="fortioserver-1", app="fortioserver", ip="10.96.0.9",
                        node=SERVER_NODE))  # fmt: skip
    with pytest.raises(ClusterError, match="does not capture port 8080"):
        verify(fk, tmp_path, "serversidecar")


def _podinfo(fk: FakeKube, tmp_path: Path, app: str) -> Any:
    p = platform(fk, tmp_path)
    try:
        return p.cluster.find_pod(None, f"app={app}", app)
    finally:
        p.close()


# -- ambient: ztunnel and istio-cni as istioctl renders them --------------------------------


def test_ztunnel_is_found_by_the_labels_istioctl_gives_it(fk: FakeKube, tmp_path: Path) -> None:
    ds = upstream(DIR / "ztunnel.golden.yaml", "DaemonSet")
    # The bug this guards against: the DaemonSet itself has no app=ztunnel label.
    assert not match_selector(ds["metadata"]["labels"], "app=ztunnel")
    assert match_selector(ds["metadata"]["labels"], ZTUNNEL_DAEMONSET)
    assert match_selector(ds["spec"]["template"]["metadata"]["labels"], ZTUNNEL_POD)
    fk.use_mesh("istio-ambient")
    fk.daemonsets = [ds]
    for name, node in (("ztunnel-a", "gke-perf-default-pool-1a2b3c4d-0001"), ("ztunnel-z", "n9")):
        fk.other_pods.append(pod_from(ds["spec"]["template"] | {"kind": "Pod"}, name=name,
                                      app="ztunnel", ip="10.0.0.9", node=node,
                                      namespace="istio-system"))  # fmt: skip
    p = platform(fk, tmp_path, "istio-ambient")
    try:
        p.start(("both",))
        meta = p.metadata()
    finally:
        p.close()
    image = ds["spec"]["template"]["spec"]["containers"][0]["image"]
    assert meta["ztunnel_version"] == image.rsplit(":", 1)[1] == "latest-distroless"
    assert meta["ztunnel_pods"] == ["ztunnel-a"]  # the idle node's ztunnel is left out


def test_setup_istio_finds_istio_cni_by_the_chart_label() -> None:
    ds = upstream(DIR / "istio-cni.golden.yaml", "DaemonSet")
    script = (REPO / "istio-install" / "setup_istio.sh").read_text()
    (selector,) = set(re.findall(r"-l (k8s-app=[a-z-]+)", script))
    assert match_selector(ds["metadata"]["labels"], selector)
    assert f"daemonset/{ds['metadata']['name']}" in script


def test_ambient_capture_annotation_is_what_istio_cni_writes(fk: FakeKube, tmp_path: Path) -> None:
    hello = upstream(DIR / "hello.yaml.injected", "Deployment")
    tmpl = hello["spec"]["template"]
    tmpl["spec"]["initContainers"] = []  # ambient pods carry no sidecar
    tmpl["metadata"]["annotations"] = {capture.AMBIENT_REDIRECTION: "enabled"}
    with_pods(fk, hello, hello)
    info = verify(fk, tmp_path, "both", "istio-ambient")
    assert info["verified"][0] == f"client pod fortioclient-1 {capture.AMBIENT_REDIRECTION}=enabled"


# -- Linkerd -----------------------------------------------------------------------------


def linkerd_deployment() -> dict[str, Any]:
    return upstream(LINKERD / "inject_emojivoto_deployment.golden.yml", "Deployment")


def test_linkerd_proxy_and_its_workers(fk: FakeKube, tmp_path: Path) -> None:
    web = linkerd_deployment()
    with_pods(fk, web, web)
    info = verify(fk, tmp_path, "both", "linkerd")
    assert info["client_proxy"] == "native sidecar"
    p = platform(fk, tmp_path, "linkerd")
    try:
        p.start(("both",))
        workers = p.metadata()["proxy_workers"]
    finally:
        p.close()
    env = {e["name"]: e.get("value") for c in web["spec"]["template"]["spec"]["initContainers"]
           if c["name"] == "linkerd-proxy" for e in c.get("env", [])}  # fmt: skip
    assert workers["server"]["linkerd-proxy"] == {
        "workers": int(env["LINKERD2_PROXY_CORES"]),
        "from": "LINKERD2_PROXY_CORES",
    }


def test_linkerd_skips_are_read_from_linkerd_init(fk: FakeKube, tmp_path: Path) -> None:
    web = linkerd_deployment()
    with_pods(fk, web, web)
    skips = capture.LinkerdSkips(_podinfo(fk, tmp_path, "fortioserver"))
    assert skips.source == "linkerd-init arguments"
    assert skips.inbound == {4190, 4191, 4567, 4568} and skips.outbound == {4567, 4568}
    # emojivoto skips none of meshperf's ports: baseline cannot bypass its proxies
    with pytest.raises(ClusterError, match="does not skip outbound port 8077"):
        verify(fk, tmp_path, "baseline", "linkerd")
