"""Protocols on the kubernetes platform: the fortio command and target for gRPC, TCP, HTTP/2 and
an https:// ingress (against the fake API server at the wire, as test_kube_platform.py does),
and the rendered manifests' ports, names and exclusions for each protocol.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import test_kube_platform
import test_setup_scripts
from fake_kube import FakeKube
from meshperf.loadcmd import KUBE_PORTS
from meshperf.platform import RESULT_KEY
from test_kube_platform import SERVER_IP, opts_for, spec, started
from test_setup_scripts import Stubs, load_docs, pod_template, render_for

fk = test_kube_platform.fk
kubeconfig = test_kube_platform.kubeconfig
sysbin = test_setup_scripts.sysbin
stubs = test_setup_scripts.stubs


@pytest.mark.parametrize(
    ("mode", "protocol", "h2", "flags", "url"),
    [
        ("baseline", "grpc", False, ["-grpc", "-ping", "-payload-size", "1024"],
         f"{SERVER_IP}:8076"),
        ("serversidecar", "grpc", False, ["-grpc", "-ping", "-payload-size", "1024"],
         f"{SERVER_IP}:8079"),
        ("both", "grpc", False, ["-grpc", "-ping", "-payload-size", "1024"], "fortioserver:8079"),
        ("baseline", "tcp", False, ["-payload-size", "1024"], f"tcp://{SERVER_IP}:8075"),
        ("serversidecar", "tcp", False, ["-payload-size", "1024"], f"tcp://{SERVER_IP}:8078"),
        ("both", "tcp", False, ["-payload-size", "1024"], "tcp://fortioserver:8078"),
        ("both", "http", True, ["-h2"], "http://fortioserver:8080/echo?size=1024"),
    ],
)  # fmt: skip
def test_fortio_gets_the_protocols_flags_and_port(
    fk: FakeKube,
    kubeconfig: Path,
    mode: str,
    protocol: str,
    h2: bool,
    flags: list[str],
    url: str,
) -> None:
    p = started(opts_for(kubeconfig), (mode,))
    try:
        result = p.run_test(spec(mode, protocol=protocol, h2=h2))
    finally:
        p.close()
    (call,) = fk.calls("fortio")
    label = f"5e1f00d2_qps_1000_c_16_1024_{mode}"
    assert call.argv == [
        "fortio", "load", "-c", "16", "-qps", "1000", "-t", "30s", "-r", "0.0001",
        "-p", "50,75,90,99,99.9", *flags, "-labels", label,
        "-httpbufferkb", "128", "-a", "-json", "-", url,
    ]  # fmt: skip
    block = result[RESULT_KEY]
    expected = (protocol, h2 or protocol == "grpc", url)
    assert (block["protocol"], block["h2"], block["target"]) == expected


def test_https_ingress_loads_over_tls_with_the_ca(fk: FakeKube, kubeconfig: Path) -> None:
    fk.exclude_outbound_ports("80,443,8075,8076,8077")  # the client bypasses the gateway's port
    p = started(opts_for(kubeconfig, ingress="https://gw.perf.example"), ("ingress",))
    try:
        p.run_test(spec("ingress", cacert="/etc/meshperf/ca.pem", h2=True))
    finally:
        p.close()
    (call,) = fk.calls("fortio")
    assert call.argv[-1] == "https://gw.perf.example:443/echo?size=1024"
    assert call.argv[call.argv.index("-cacert") + 1] == "/etc/meshperf/ca.pem"
    assert "-h2" in call.argv


# ---- the manifests: each protocol's ports, named for Istio, excluded where uncaptured --------


def _ports(doc: dict[str, Any]) -> dict[int, str]:
    return {p["port"]: p["name"] for p in doc["spec"]["ports"]}


@pytest.mark.parametrize("mesh", ["istio", "linkerd", "none"])
def test_each_protocol_has_its_captured_and_uncaptured_port(stubs: Stubs, mesh: str) -> None:
    _, out = render_for(stubs, mesh)
    docs = load_docs(out / "fortio.yaml")
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    prefix = {"http": "http-", "grpc": "grpc-", "tcp": "tcp-"}
    for app in ("fortioclient", "fortioserver"):
        service_ports = _ports(services[app])
        containers = {c["name"]: c for c in pod_template(docs, app)["spec"]["containers"]}
        for protocol, (captured, uncaptured) in KUBE_PORTS.items():
            for container, port in (("captured", captured), ("uncaptured", uncaptured)):
                # Istio takes a port's protocol from its name's prefix (http-, grpc-, tcp-).
                assert service_ports[port].startswith(prefix[protocol]), (app, port)
                c = containers[container]
                names = {p["containerPort"]: p["name"] for p in c["ports"]}
                assert names[port] == service_ports[port], (app, container, port)
                # fortio serves it: -http-port / -grpc-port / -tcp-port with that number.
                flag = c["args"].index(f"-{protocol}-port")
                assert c["args"][flag + 1] == str(port), (app, container, c["args"])


def _uncaptured() -> list[str]:
    return sorted(str(u) for _, u in KUBE_PORTS.values())


def test_istio_and_linkerd_leave_every_uncaptured_port_alone(stubs: Stubs) -> None:
    _, out = render_for(stubs, "istio")
    docs = load_docs(out / "fortio.yaml")
    for app in ("fortioclient", "fortioserver"):
        ann = pod_template(docs, app)["metadata"]["annotations"]
        assert sorted(ann["traffic.sidecar.istio.io/excludeInboundPorts"].split(",")) == (
            _uncaptured()
        )
    client = pod_template(docs, "fortioclient")["metadata"]["annotations"]
    excluded = client["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",")
    assert set(_uncaptured()) <= set(excluded)
    _, out = render_for(stubs, "linkerd")
    docs = load_docs(out / "fortio.yaml")
    for app in ("fortioclient", "fortioserver"):
        ann = pod_template(docs, app)["metadata"]["annotations"]
        assert sorted(ann["config.linkerd.io/skip-inbound-ports"].split(",")) == _uncaptured()
        assert sorted(ann["config.linkerd.io/skip-outbound-ports"].split(",")) == _uncaptured()
