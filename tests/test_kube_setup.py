"""The install scripts on the clusters users have today: istio-cni found wherever istioctl put it,
Linkerd releases verified without ``.sha256`` files, current default versions.

The scripts run for real against the stub commands of tests/test_setup_scripts.py (no cluster,
no network: the stub ``curl`` serves the files a test prepares).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import test_setup_scripts
from meshperf.kube import paths
from test_setup_scripts import (
    ARCH,
    REPO,
    Stubs,
    fake_release,
    load_docs,
    one_line_error,
    plan,
    pod_template,
    render_for,
    stub_script,
    validate_doc,
)

# The harness's fixtures, shared with tests/test_setup_scripts.py.
sysbin = test_setup_scripts.sysbin
stubs = test_setup_scripts.stubs

LINUX_ONLY = pytest.mark.skipif(platform.system() != "Linux", reason="asset names are per OS")
VERSION = "edge-26.8.3"
ASSET = f"linkerd2-cli-{VERSION}-linux-{ARCH}"
URL = f"https://github.com/linkerd/linkerd2/releases/download/{VERSION}/{ASSET}"
API = f"https://api.github.com/repos/linkerd/linkerd2/releases/tags/{VERSION}"


def release_2026(stubs: Stubs, assets: list[dict[str, object]], content: bytes) -> None:
    """A Linkerd release as GitHub serves it since edge-25.9.4: the binary and the release
    metadata with each asset's digest, and no ``.sha256`` file (its download fails)."""
    srv = stubs.root / "srv"
    srv.mkdir(exist_ok=True)
    (srv / ASSET).write_bytes(content)
    (srv / "release.json").write_text(json.dumps({"tag_name": VERSION, "assets": assets}))
    stubs.rule("curl", [URL + ".sha256"], rc=22)  # curl -f without -S: silent
    stubs.rule("curl", [URL], copy_to_o=str(srv / ASSET))
    stubs.rule("curl", [API], copy_to_o=str(srv / "release.json"))


def run_linkerd(stubs: Stubs, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return stubs.run(
        "linkerd/setup_linkerd.sh",
        *args,
        env={"LINKERD_CACHE": str(stubs.root / "lc"), "SKIP_PROMETHEUS": "1", **env},
    )


# -- istio-cni wherever istioctl installed it (issue 11 item 1) ------------------------------


def test_ambient_on_gke_waits_for_istio_cni_in_kube_system(stubs: Stubs) -> None:
    stubs.rule("kubectl", ["get", "daemonset", "-A", "-l", "k8s-app=istio-cni-node"],
               stdout="kube-system")  # fmt: skip
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        "1.30.3",
        env={
            "ISTIOCTL": str(stubs.bin / "istioctl"),
            "PROFILE": "ambient",
            "ISTIO_PLATFORM": "gke",
            "SKIP_PROMETHEUS": "1",
        },
    )
    assert proc.returncode == 0, proc.stderr
    rollouts = [a for a in stubs.argvs("kubectl") if a[2:4] == ["rollout", "status"]]
    assert ["-n", "kube-system", "rollout", "status", "daemonset/istio-cni-node",
            "--timeout=300s"] in rollouts  # fmt: skip
    assert ["-n", "istio-system", "rollout", "status", "daemonset/ztunnel",
            "--timeout=300s"] in rollouts  # fmt: skip
    assert not any(a[:1] == ["-n"] and a[1] == "istio-system" and "daemonset/istio-cni-node" in a
                   for a in rollouts)  # fmt: skip


def test_no_istio_cni_daemonset_is_one_line_naming_the_label(stubs: Stubs) -> None:
    proc = stubs.run(
        "istio-install/setup_istio.sh",
        env={"ISTIOCTL": str(stubs.bin / "istioctl"), "PROFILE": "ambient", "SKIP_PROMETHEUS": "1"},
    )
    line = one_line_error(proc, "setup_istio.sh", 1)
    assert "k8s-app=istio-cni-node" in line and "any namespace" in line
    assert not any("daemonset/ztunnel" in a for a in stubs.argvs("kubectl"))


def test_istio_defaults_to_1_30(stubs: Stubs) -> None:
    proc = stubs.run(
        "istio-install/setup_istio.sh", env={"DRY_RUN": "1", "ISTIO_CACHE": str(stubs.root / "c")}
    )
    assert proc.returncode == 0, proc.stderr
    cmds = plan(proc.stdout)
    assert cmds[0][-1] == (
        f"https://github.com/istio/istio/releases/download/1.30.3/istioctl-1.30.3-linux-{ARCH}.tar.gz"
    )


def test_readme_cluster_example_is_istio_1_30_or_later() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## On a cluster", 1)[1].split("\n## ", 1)[0]
    (release,) = re.findall(r"setup_istio\.sh (\d+)\.(\d+)\.(\d+)", section)
    assert (int(release[0]), int(release[1])) >= (1, 30), release


# -- Linkerd verified against the release's asset digest (issue 11 items 2 and 3) -------------


def test_linkerd_dry_run_installs_a_2026_release_without_any_sha256(stubs: Stubs) -> None:
    proc = run_linkerd(stubs, DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert stubs.calls() == []
    assert ".sha256" not in proc.stdout.replace(f"(else {URL}.sha256)", "")
    curls = [c for c in plan(proc.stdout) if c[0] == "curl"]
    assert [c[-1] for c in curls] == [API, URL]
    assert "check: sha256sum" in proc.stdout and API in proc.stdout
    linkerd = [c for c in plan(proc.stdout) if c[0].endswith("/linkerd")]
    assert linkerd[0][0].endswith(f"/{VERSION}/linkerd")


@LINUX_ONLY
def test_linkerd_2026_release_verified_by_its_listed_digest(stubs: Stubs) -> None:
    stubs.remove("linkerd")
    cli = stub_script(stubs, "linkerd-cli")
    digest = "sha256:" + hashlib.sha256(cli).hexdigest()
    release_2026(stubs, [{"name": ASSET + "-other", "digest": "sha256:" + "1" * 64},
                         {"name": ASSET, "digest": digest}], cli)  # fmt: skip
    proc = run_linkerd(stubs)
    assert proc.returncode == 0, proc.stderr
    assert [a[-1] for a in stubs.argvs("curl")] == [API, URL]  # never a .sha256
    assert (stubs.root / "lc" / VERSION / "linkerd").read_bytes() == cli
    assert stubs.argvs("linkerd-cli")[0] == ["version", "--client"]


@LINUX_ONLY
def test_linkerd_digest_mismatch_installs_nothing(stubs: Stubs) -> None:
    stubs.remove("linkerd")
    cli = stub_script(stubs, "linkerd-cli")
    release_2026(stubs, [{"name": ASSET, "digest": "sha256:" + "e" * 64}], cli)
    proc = run_linkerd(stubs)
    line = one_line_error(proc, "setup_linkerd.sh", 1)
    assert "checksum mismatch" in line and "e" * 64 in line
    assert not (stubs.root / "lc" / VERSION / "linkerd").exists()
    assert stubs.calls("linkerd-cli") == [] and stubs.calls("kubectl") == []


@LINUX_ONLY
def test_linkerd_release_it_cannot_verify_is_refused(stubs: Stubs) -> None:
    stubs.remove("linkerd")
    release_2026(stubs, [{"name": ASSET, "digest": None}], stub_script(stubs, "linkerd-cli"))
    proc = run_linkerd(stubs)
    line = one_line_error(proc, "setup_linkerd.sh", 1)
    assert f"cannot verify {ASSET}" in line and "no sha256 digest" in line
    assert URL not in [a[-1] for a in stubs.argvs("curl")]  # the binary is never fetched
    assert stubs.calls("linkerd-cli") == []


@LINUX_ONLY
def test_linkerd_unknown_asset_is_refused(stubs: Stubs) -> None:
    stubs.remove("linkerd")
    release_2026(stubs, [{"name": "linkerd2-cli-windows.exe", "digest": "sha256:" + "2" * 64}],
                 stub_script(stubs, "linkerd-cli"))  # fmt: skip
    line = one_line_error(run_linkerd(stubs), "setup_linkerd.sh", 1)
    assert f"has no asset {ASSET}" in line


@LINUX_ONLY
def test_an_old_release_without_listed_digest_falls_back_to_its_sha256(stubs: Stubs) -> None:
    stubs.remove("linkerd")
    old = "edge-25.4.4"
    url = f"https://github.com/linkerd/linkerd2/releases/download/{old}/linkerd2-cli-{old}-linux-{ARCH}"
    fake_release(stubs, url, "", stub_script(stubs, "linkerd-cli"), tarball=False)
    meta = stubs.root / "srv" / f"linkerd2-cli-{old}-linux-{ARCH}.release.json"
    meta.write_text(json.dumps({"assets": [{"name": url.rsplit("/", 1)[1], "digest": None}]}))
    proc = run_linkerd(stubs, old)
    assert proc.returncode == 0, proc.stderr
    api = f"https://api.github.com/repos/linkerd/linkerd2/releases/tags/{old}"
    assert [a[-1] for a in stubs.argvs("curl")] == [api, url + ".sha256", url]


def test_linkerd_docs_name_the_default_version() -> None:
    readme = (REPO / "linkerd" / "README.md").read_text()
    assert f"default {VERSION}" in readme and "edge-25.4.4" not in readme
    script = (REPO / "linkerd" / "setup_linkerd.sh").read_text()
    assert f"DEFAULT_VERSION={VERSION}" in script


# -- the workloads setup_test.sh renders (issue 11 items 4, 5, 7, 11 and clientonly) -----------


def test_istio_client_excludes_the_ingress_port(stubs: Stubs) -> None:
    _, out = render_for(stubs, "istio", INGRESS="1")
    docs = load_docs(out / "fortio.yaml")
    client = pod_template(docs, "fortioclient")["metadata"]["annotations"]
    assert client["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",") == [
        "80", "443", "8075", "8076", "8077",
    ]  # fmt: skip
    server = pod_template(docs, "fortioserver")["metadata"]["annotations"]
    assert "traffic.sidecar.istio.io/excludeOutboundPorts" not in server  # server: inbound only


def test_render_py_istio_ingress_excludes_80(tmp_path: Path) -> None:
    """The issue's own command line: render.py --mesh istio --ingress 1 ..."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "manifests" / "render.py"), "--out-dir", str(tmp_path),
         "--mesh", "istio", "--ingress", "1", "--pod-cidrs", "10.0.0.0/14"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    client = pod_template(load_docs(tmp_path / "fortio.yaml"), "fortioclient")
    assert "80" in client["metadata"]["annotations"][
        "traffic.sidecar.istio.io/excludeOutboundPorts"
    ].split(",")


@pytest.mark.parametrize("concurrency", ["2", "4"])
def test_linkerd_cpu_request_is_proxy_concurrency_cores(stubs: Stubs, concurrency: str) -> None:
    _, out = render_for(stubs, "linkerd", PROXY_CONCURRENCY=concurrency, PROXY_CPU="1000m")
    for app in ("fortioclient", "fortioserver"):
        ann = pod_template(load_docs(out / "fortio.yaml"), app)["metadata"]["annotations"]
        assert ann["config.linkerd.io/proxy-cpu-request"] == concurrency
        assert "config.linkerd.io/proxy-cpu-limit" not in ann


def _services(out: Path) -> dict[str, dict[str, Any]]:
    docs = load_docs(out / "fortio.yaml")
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_clientonly_service_ports_lead_to_the_uncaptured_server(stubs: Stubs, mesh: str) -> None:
    _, out = render_for(stubs, mesh)
    ports = {p["port"]: p["targetPort"] for p in _services(out)["fortioserver"]["spec"]["ports"]}
    for proto, (port, target) in paths.CLIENTONLY_PORTS.items():
        assert ports[port] == target, (proto, ports)
    docs = load_docs(out / "fortio.yaml")
    rules = [d for d in docs if d["kind"] == "DestinationRule"]
    if mesh == "istio":
        (rule,) = rules
        validate_doc(rule)
        assert rule["spec"]["host"] == "fortioserver.twopods.svc.cluster.local"
        plain = {s["port"]["number"]: s["tls"]["mode"]
                 for s in rule["spec"]["trafficPolicy"]["portLevelSettings"]}  # fmt: skip
        assert plain == {8074: "DISABLE", 8073: "DISABLE", 8072: "DISABLE"}
        ann = pod_template(docs, "fortioserver")["metadata"]["annotations"]
        assert "8077" in ann["traffic.sidecar.istio.io/excludeInboundPorts"].split(",")
        client = pod_template(docs, "fortioclient")["metadata"]["annotations"]
        assert "8074" not in client["traffic.sidecar.istio.io/excludeOutboundPorts"].split(",")
    else:
        assert rules == []


def test_load_balancer_source_ranges(stubs: Stubs) -> None:
    proc, out = render_for(stubs, "istio", LB_SOURCE_RANGES="203.0.113.7/32, 198.51.100.0/24")
    client = _services(out)["fortioclient"]
    assert client["spec"]["type"] == "LoadBalancer"
    assert client["spec"]["loadBalancerSourceRanges"] == ["203.0.113.7/32", "198.51.100.0/24"]
    validate_doc(client)
    assert "loadBalancerSourceRanges" not in _services(out)["fortioserver"]["spec"]
    assert "warning" not in proc.stderr


def test_open_load_balancer_is_warned_about(stubs: Stubs) -> None:
    proc, _ = render_for(stubs, "istio")
    (line,) = [ln for ln in proc.stderr.splitlines() if "warning" in ln]
    assert "EXPOSE_CLIENT=1" in line and "LB_SOURCE_RANGES" in line and "any URL" in line
    proc, _ = render_for(stubs, "none", EXPOSE_CLIENT="0")
    assert "warning" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LB_SOURCE_RANGES": "203.0.113.7/33"}, "LB_SOURCE_RANGES="),
        ({"LB_SOURCE_RANGES": "10.0.0.0/8", "EXPOSE_CLIENT": "0"}, "needs EXPOSE_CLIENT=1"),
    ],
)
def test_bad_source_ranges_are_refused(stubs: Stubs, env: dict[str, str], needle: str) -> None:
    proc = stubs.run("setup_test.sh", env={"DRY_RUN": "1", "MESH": "none", **env})
    assert proc.returncode == 1
    assert needle in proc.stderr
    assert not any("apply" in " ".join(c) for c in plan(proc.stdout))


@pytest.mark.parametrize(
    ("mesh", "modes"),
    [
        ("istio", "--baseline --serversidecar --clientonly"),
        ("linkerd", "--baseline --clientonly"),
        ("istio-ambient", ""),
        ("none", "--baseline"),
    ],
)
def test_setup_test_suggests_only_modes_the_mesh_can_give(
    stubs: Stubs, mesh: str, modes: str
) -> None:
    proc, _ = render_for(stubs, mesh)
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("Run the matrix")]
    assert f"runner.py 16,64 1000 180 {modes + ' ' if modes else ''}--mesh {mesh} " in line
    for flag in modes.split():
        assert paths.refusal(mesh, flag.removeprefix("--")) is None
    if mesh == "istio-ambient":
        assert "--baseline" not in line and "MESH=none" in proc.stdout
