"""The kubernetes platform against a fake API server spoken to at the wire (tests/fake_kube.py).

The real ``kubernetes`` client runs unchanged: kubeconfig loading, HTTPS with a CA, bearer
token, REST reads and the exec websocket (v4.channel.k8s.io).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fortio_data
from fake_kube import ExecCall, ExecReply, FakeKube, closed_port, load
from meshperf import platform as mp
from meshperf.errors import ClusterError, ConfigError
from meshperf.flamegraph import fold as fold_perf_script
from meshperf.flamegraph import render_svg as render_flamegraph
from meshperf.kube import KubernetesPlatform, execs
from meshperf.kube.execs import parse_status, pkill_argv
from meshperf.kube.perf import debug_container_spec, record_argv, record_window
from meshperf.kube.platform import fortio_argv, httpbuffer_kb
from meshperf.platform import RESULT_KEY, RunOptions
from needs import missing

SERVER_IP = "10.52.2.31"  # tests/data/kube/pod-fortioserver.json
CLIENT_POD = "fortioclient-6f7d8b9c54-x2k9p"
SERVER_POD = "fortioserver-7c9d5f6b88-q7mzt"


@pytest.fixture
def fk() -> Iterator[FakeKube]:
    with FakeKube() as f:
        yield f


@pytest.fixture
def kubeconfig(fk: FakeKube, tmp_path: Path) -> Path:
    return fk.kubeconfig(tmp_path / "kubeconfig")


def opts_for(kubeconfig: Path, **kw: Any) -> RunOptions:
    base: dict[str, Any] = {
        "platform": "kubernetes",
        "kubeconfig": str(kubeconfig),
        "run_id": "5e1f00d2",
    }
    base.update(kw)
    return RunOptions(**base)


def spec(mode: str, **kw: Any) -> mp.TestSpec:
    base: dict[str, Any] = {
        "mode": mode,
        "conn": 16,
        "qps": 1000,
        "duration": 30,
        "labels": f"5e1f00d2_qps_1000_c_16_1024_{mode}",
        "run_id": "5e1f00d2",
    }
    base.update(kw)
    return mp.TestSpec(**base)


def started(opts: RunOptions, modes: tuple[str, ...]) -> KubernetesPlatform:
    p = KubernetesPlatform.from_options(opts)
    try:
        p.start(modes)
    except BaseException:
        p.close()
        raise
    return p


# -- targets and argv ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "url"),
    [
        ("baseline", f"http://{SERVER_IP}:8077/echo?size=1024"),
        ("serversidecar", f"http://{SERVER_IP}:8080/echo?size=1024"),
        ("both", "http://fortioserver:8080/echo?size=1024"),
        ("ingress", "http://gw.perf.example:80/echo?size=1024"),
    ],
)
def test_each_mode_runs_fortio_in_the_client_pod(
    fk: FakeKube, kubeconfig: Path, mode: str, url: str
) -> None:
    p = started(opts_for(kubeconfig, ingress="gw.perf.example"), (mode,))
    try:
        result = p.run_test(spec(mode))
    finally:
        p.close()
    (call,) = fk.calls("fortio")
    assert (call.namespace, call.pod, call.container) == ("twopods", CLIENT_POD, "captured")
    assert call.argv == [
        "fortio", "load", "-c", "16", "-qps", "1000", "-t", "30s", "-r", "0.0001",
        "-p", "50,75,90,99,99.9", "-labels", f"5e1f00d2_qps_1000_c_16_1024_{mode}",
        "-httpbufferkb", "128", "-a", "-json", "-", url,
    ]  # fmt: skip
    # No TTY, no stdin: the exec is a plain argv, output on separate channels.
    assert call.query["tty"] == ["false"] and call.query["stdin"] == ["false"]
    fortio = json.loads(fk.fortio_json)
    block = result.pop(RESULT_KEY)
    assert result == fortio  # fortio's own fields untouched
    assert block.pop("capture")["mode"] == mode  # what was verified (tests/test_kube_capture.py)
    assert block == {
        "format": 1,
        "run_id": "5e1f00d2",
        "platform": "kubernetes",
        "mesh": "istio",
        "mode": mode,
        "conn": 16,
        "qps": 1000,
        "duration": 30,
        "size": 1024,
        "extra_labels": "",
        "repeat": 0,
        "target": url,
        "arrival": "simultaneous",
        "protocol": "http",
        "h2": False,
        "resources": {},
    }


def test_argv_carries_arrival_switches_resolution_and_buffer() -> None:
    s = mp.TestSpec(
        mode="both", conn=4, qps=250.5, duration=1.5, size=300_000, labels="x_y", uniform=True,
        nocatchup=True, resolution=5e-05, percentiles=(50.0, 99.99),
    )  # fmt: skip
    assert fortio_argv(s, "http://fortioserver:8080/echo?size=300000") == [
        "fortio", "load", "-c", "4", "-qps", "250.5", "-t", "1.5s", "-r", "0.00005",
        "-p", "50,99.99", "-uniform", "-nocatchup", "-labels", "x_y", "-httpbufferkb", "294",
        "-a", "-json", "-", "http://fortioserver:8080/echo?size=300000",
    ]  # fmt: skip
    assert "-jitter" in fortio_argv(spec("both", jitter=True), "u")
    # The buffer holds headers + body: fortio's 128 KiB default until the body outgrows it.
    assert [httpbuffer_kb(n) for n in (0, 1024, 126 * 1024, 127 * 1024, 1 << 20)] == [
        128, 128, 128, 128, 1025,
    ]  # fmt: skip


def test_argv_refuses_a_label_with_shell_characters() -> None:
    with pytest.raises(ClusterError, match="label"):
        fortio_argv(spec("both", labels="a;rm -rf /"), "u")


def test_ingress_keeps_an_explicit_port_and_rejects_junk(fk: FakeKube, kubeconfig: Path) -> None:
    fk.exclude_outbound_ports("80,8076,8077,8443")  # a gateway port the client must bypass
    p = started(opts_for(kubeconfig, ingress="35.1.2.3:8443"), ("ingress",))
    try:
        assert p.target("ingress", 10) == "http://35.1.2.3:8443/echo?size=10"
    finally:
        p.close()
    p = KubernetesPlatform.from_options(opts_for(kubeconfig, ingress="gw/../x y"))
    with pytest.raises(ConfigError, match="--ingress"):
        p.start(("ingress",))
    p.close()
    p = KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ConfigError, match="--ingress"):
        p.start(("ingress",))
    p.close()


def test_ambient_waypoint_mode_goes_through_the_service_and_both_stays_l4(
    fk: FakeKube, kubeconfig: Path
) -> None:
    fk.use_mesh("istio-ambient")
    fk.services["fortioserver"]["metadata"]["labels"]["istio.io/use-waypoint"] = "waypoint"
    p = started(opts_for(kubeconfig, mesh="istio-ambient"), ("both", "waypoint"))
    try:
        p.run_test(spec("waypoint"))
        p.run_test(spec("both"))
    finally:
        p.close()
    waypoint, both = (c.argv[-1] for c in fk.calls("fortio"))
    assert waypoint == "http://fortioserver:8080/echo?size=1024"
    # Waypoints see Service-addressed traffic only: pod IP keeps "both" at ztunnel (L4).
    assert both == f"http://{SERVER_IP}:8080/echo?size=1024"


def test_ambient_waypoint_enrolled_by_namespace_label(fk: FakeKube, kubeconfig: Path) -> None:
    fk.use_mesh("istio-ambient")
    fk.namespaces["twopods"]["metadata"]["labels"]["istio.io/use-waypoint"] = "waypoint"
    # start() refuses a waypoint mode the server is not enrolled in (see the test below).
    p = started(opts_for(kubeconfig, mesh="istio-ambient"), ("waypoint",))
    try:
        assert p.target("waypoint", 1024) == "http://fortioserver:8080/echo?size=1024"
    finally:
        p.close()


def test_ambient_both_without_waypoint_uses_the_service(fk: FakeKube, kubeconfig: Path) -> None:
    fk.use_mesh("istio-ambient")
    p = started(opts_for(kubeconfig, mesh="istio-ambient"), ("both",))
    try:
        assert p.target("both", 1024) == "http://fortioserver:8080/echo?size=1024"
    finally:
        p.close()


def test_waypoint_mode_needs_a_waypoint_and_ambient(fk: FakeKube, kubeconfig: Path) -> None:
    fk.use_mesh("istio-ambient")
    p = KubernetesPlatform.from_options(opts_for(kubeconfig, mesh="istio-ambient"))
    with pytest.raises(ClusterError, match="not bound to a waypoint.*istioctl waypoint apply"):
        p.start(("waypoint",))
    p.close()
    p = KubernetesPlatform.from_options(opts_for(kubeconfig, mesh="istio"))
    with pytest.raises(ConfigError, match="istio-ambient"):
        p.start(("waypoint",))
    p.close()


def test_both_mode_needs_the_service(fk: FakeKube, kubeconfig: Path) -> None:
    del fk.services["fortioserver"]
    p = KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError, match=r"no Service fortioserver.*setup_test\.sh"):
        p.start(("both",))
    p.close()


# -- pods ---------------------------------------------------------------------------------


def test_client_and_server_can_be_named_or_selected(fk: FakeKube, kubeconfig: Path) -> None:
    other = load("pod-fortioclient.json")
    other["metadata"]["name"] = "loadgen-0"
    other["metadata"]["labels"] = {"role": "loadgen"}
    other["spec"]["containers"] = [
        c for c in other["spec"]["containers"] if c["name"] != "captured"
    ]
    fk.pods["loadgen-0"] = other
    p = started(opts_for(kubeconfig, client="role=loadgen", server=SERVER_POD), ("baseline",))
    try:
        p.run_test(spec("baseline"))
    finally:
        p.close()
    (call,) = fk.calls("fortio")
    # No "captured" container: the first container that is not a proxy runs fortio.
    assert (call.pod, call.container) == ("loadgen-0", "uncaptured")


def test_bad_pod_reference_is_refused(fk: FakeKube, kubeconfig: Path) -> None:
    p = KubernetesPlatform.from_options(opts_for(kubeconfig, client="Bad Name;x"))
    with pytest.raises(ClusterError, match="not a valid pod name"):
        p.start(("baseline",))
    p.close()
    assert not any(path.startswith("/api/v1/namespaces/twopods/pods") for _, path in fk.requests)


def test_missing_pod_says_how_to_deploy(fk: FakeKube, kubeconfig: Path) -> None:
    del fk.pods[SERVER_POD]
    p = KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError) as err:
        p.start(("baseline",))
    p.close()
    msg = str(err.value)
    assert "app=fortioserver" in msg and "namespace twopods" in msg
    assert "NAMESPACE=twopods ./setup_test.sh" in msg
    assert "\n" not in msg


def test_missing_named_pod(fk: FakeKube, kubeconfig: Path) -> None:
    p = KubernetesPlatform.from_options(opts_for(kubeconfig, client="fortioclient-gone"))
    with pytest.raises(ClusterError, match="named fortioclient-gone.*setup_test.sh"):
        p.start(("baseline",))
    p.close()


def test_pod_not_ready_says_which_and_why(fk: FakeKube, kubeconfig: Path) -> None:
    pod = fk.pod("fortioclient")
    for cond in pod["status"]["conditions"]:
        if cond["type"] in ("Ready", "ContainersReady"):
            cond["status"] = "False"
            cond["reason"] = "ContainersNotReady"
            cond["message"] = "containers with unready status: [istio-proxy]"
    pod["status"]["containerStatuses"][1]["ready"] = False
    pod["status"]["containerStatuses"][1]["state"] = {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting"}
    }
    p = KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError) as err:
        p.start(("baseline",))
    p.close()
    msg = str(err.value)
    assert f"twopods/{CLIENT_POD} is not ready" in msg
    assert "Ready=False" in msg and "istio-proxy CrashLoopBackOff" in msg
    assert "NAMESPACE=twopods ./setup_test.sh" in msg


def test_pending_pod_is_not_ready(fk: FakeKube, kubeconfig: Path) -> None:
    fk.pod("fortioserver")["status"]["phase"] = "Pending"
    p = KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError, match="fortioserver pod .* not ready .*phase Pending"):
        p.start(("baseline",))
    p.close()


# -- exec failures ------------------------------------------------------------------------


def run_one(fk: FakeKube, kubeconfig: Path, reply: ExecReply, mode: str = "baseline") -> str:
    fk.exec_handler = lambda call: reply
    p = started(opts_for(kubeconfig), (mode,))
    try:
        with pytest.raises(ClusterError) as err:
            p.run_test(spec(mode))
    finally:
        p.close()
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_nonzero_exit_is_a_failure_with_stderr(fk: FakeKube, kubeconfig: Path) -> None:
    msg = run_one(
        fk,
        kubeconfig,
        ExecReply(
            stdout=b"",
            stderr=b"Fortio 1.69.5 running at 1000 queries per second\n"
            b"Aborting because of dial tcp 10.52.2.31:8077: connect: connection refused\n",
            exit_code=1,
        ),
    )
    assert "fortio load failed in the pod: exit code 1" in msg
    assert "connect: connection refused" in msg


def test_failure_even_with_json_on_stdout(fk: FakeKube, kubeconfig: Path) -> None:
    # A non-zero exit is never taken for a result, whatever stdout holds.
    msg = run_one(fk, kubeconfig, ExecReply(stdout=fk.fortio_json, exit_code=2))
    assert "exit code 2" in msg


def test_exec_internal_error_is_reported(fk: FakeKube, kubeconfig: Path) -> None:
    msg = run_one(
        fk,
        kubeconfig,
        ExecReply(failure='exec: "fortio": executable file not found in $PATH: unknown'),
    )
    assert "executable file not found" in msg


def test_non_json_output_is_named(fk: FakeKube, kubeconfig: Path) -> None:
    msg = run_one(fk, kubeconfig, ExecReply(stdout=b"<html>fortio 1.69.5</html>\n"))
    assert "not JSON" in msg and "<html>" in msg


def test_empty_output_surfaces_stderr(fk: FakeKube, kubeconfig: Path) -> None:
    msg = run_one(fk, kubeconfig, ExecReply(stderr=b"flag provided but not defined: -uniform\n"))
    assert "no JSON result" in msg and "-uniform" in msg


def test_json_that_is_not_a_fortio_result(fk: FakeKube, kubeconfig: Path) -> None:
    msg = run_one(fk, kubeconfig, ExecReply(stdout=b'{"hello": 1}'))
    assert "not a fortio result" in msg


def test_pod_gone_between_tests_fails_that_test(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("baseline",))
    del fk.pods[CLIENT_POD]
    try:
        with pytest.raises(ClusterError, match="no fortioclient pod .*setup_test.sh"):
            p.run_test(spec("baseline"))
    finally:
        p.close()
    assert fk.calls("fortio") == []


def test_replaced_server_pod_is_found_again(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("baseline",))
    new = fk.pods.pop(SERVER_POD)
    new["metadata"]["name"] = "fortioserver-7c9d5f6b88-zz9k2"
    new["status"]["podIP"] = "10.52.3.9"
    fk.pods[new["metadata"]["name"]] = new
    try:
        p.run_test(spec("baseline"))
    finally:
        p.close()
    assert fk.calls("fortio")[0].argv[-1] == "http://10.52.3.9:8077/echo?size=1024"


def test_exec_refused_by_rbac(fk: FakeKube, kubeconfig: Path) -> None:
    fk.exec_refusal = (
        403,
        f'pods "{CLIENT_POD}" is forbidden: User "perf" cannot create resource "pods/exec" '
        'in API group "" in the namespace "twopods"',
    )
    p = started(opts_for(kubeconfig), ("baseline",))
    try:
        with pytest.raises(ClusterError) as err:
            p.run_test(spec("baseline"))
    finally:
        p.close()
    msg = str(err.value)
    assert f"cannot exec 'fortio' in pod twopods/{CLIENT_POD}" in msg
    assert 'Handshake status 403 Forbidden: pods "' in msg
    assert 'cannot create resource "pods/exec"' in msg and "\n" not in msg


def test_exec_stream_that_never_opens_fails_the_test_in_time(
    fk: FakeKube, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An API server that accepts the exec request and never answers the upgrade."""
    monkeypatch.setattr(execs, "CONNECT_TIMEOUT", 1.0)
    fk.upgrade_delay = 30.0
    p = started(opts_for(kubeconfig), ("baseline",))
    t0 = time.monotonic()
    try:
        with pytest.raises(ClusterError) as err:
            p.run_test(spec("baseline"))
        waited = time.monotonic() - t0
    finally:
        fk.release.set()  # the fake answers now; the late stream is closed by the client
        p.close()
    assert waited < 10, waited
    assert str(err.value) == (
        f"cannot exec 'fortio' in pod twopods/{CLIENT_POD} container captured: "
        "the API server did not open the exec stream within 1 s"
    )


def test_large_output_in_many_frames(fk: FakeKube, kubeconfig: Path) -> None:
    big = fortio_data.with_errors()
    big["Labels"] = "x" * 200_000  # several 32 KiB frames
    fk.fortio_json = json.dumps(big).encode()
    p = started(opts_for(kubeconfig), ("baseline",))
    try:
        result = p.run_test(spec("baseline"))
    finally:
        p.close()
    assert result["Labels"] == big["Labels"]


def test_exec_status_parsing() -> None:
    assert parse_status(b'{"metadata":{},"status":"Success"}') == (0, "")
    code, _ = parse_status(
        b'{"status":"Failure","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"137"}]}}'
    )
    assert code == 137
    assert parse_status(b"") == (None, "the exec stream closed without a status")
    assert parse_status(b'{"status":"Failure","message":"boom"}') == (None, "boom")


# -- Ctrl-C -------------------------------------------------------------------------------


def _run_in_thread(
    p: KubernetesPlatform, s: mp.TestSpec
) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = p.run_test(s)
        except ClusterError as e:
            out["error"] = str(e)

    t = threading.Thread(target=target)
    t.start()
    return t, out


def _wait_for(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met"
        time.sleep(0.02)


def _stop_mid_test(fk: FakeKube, p: KubernetesPlatform, s: mp.TestSpec) -> dict[str, Any]:
    """Run ``s`` in a thread, Ctrl-C it (``stop_current``) once fortio is running in the pod,
    and return what ``run_test`` gave; it must return promptly."""
    t, out = _run_in_thread(p, s)
    _wait_for(lambda: len(fk.calls("fortio")) == 1)
    p.stop_current()
    t.join(timeout=20)
    assert not t.is_alive()
    return out


def test_stop_current_interrupts_fortio_in_the_pod(fk: FakeKube, kubeconfig: Path) -> None:
    fk.hold_fortio = 120.0  # the test would otherwise hold the exec open for two minutes
    p = started(opts_for(kubeconfig), ("both",))
    s = spec("both", duration=100)
    try:
        out = _stop_mid_test(fk, p, s)
    finally:
        p.close()
    assert "was stopped" in out["error"]
    (kill,) = fk.calls("pkill")
    assert (kill.pod, kill.container) == (CLIENT_POD, "captured")
    assert kill.argv == pkill_argv(s.labels)
    assert kill.argv[:3] == ["pkill", "-INT", "-f"]
    assert "5e1f00d2_qps_1000_c_16_1024_both" in kill.argv[3]
    # Nothing more runs after a stop.
    with pytest.raises(ClusterError):
        p.run_test(spec("both"))


def add_tools_container(fk: FakeKube, data_volume: str | None = "shared-data") -> None:
    """Make the client pod look like setup_test.sh's: a shared PID namespace and a busybox
    ``tools`` container, mounting fortio's data volume unless ``data_volume`` is None."""
    pod = fk.pods[CLIENT_POD]
    pod["spec"]["shareProcessNamespace"] = True
    tools: dict[str, Any] = {
        "name": "tools", "image": "busybox:1.36.1", "command": ["sleep", "2147483647"]
    }  # fmt: skip
    if data_volume:
        tools["volumeMounts"] = [
            {"name": data_volume, "mountPath": "/var/lib/fortio", "readOnly": True}
        ]
    pod["spec"]["containers"].append(tools)
    pod["status"]["containerStatuses"].append(
        {"name": "tools", "ready": True, "restartCount": 0, "image": "busybox:1.36.1",
         "imageID": "", "state": {"running": {"startedAt": "2026-11-26T10:00:00Z"}}}
    )  # fmt: skip


def test_result_is_kept_in_the_pods_data_dir_and_read_back(
    fk: FakeKube, kubeconfig: Path
) -> None:
    """With setup_test.sh's tools container, fortio writes the result where the client's report
    UI lists it (what the 2019 scripts' -a was for), and the runner reads it back from there."""
    add_tools_container(fk)
    p = started(opts_for(kubeconfig), ("both",))
    s = spec("both")
    try:
        assert p.metadata()["pod_results_dir"] == "/var/lib/fortio"
        result = p.run_test(s)
    finally:
        p.close()
    (load,) = fk.calls("fortio")
    dest = load.argv[load.argv.index("-json") + 1]
    assert re.fullmatch(r"/var/lib/fortio/\d{4}-\d\d-\d\d-\d{6}_" + re.escape(s.labels)
                        + r"\.json", dest), dest  # fmt: skip
    assert load.container == "captured"
    (cat,) = fk.calls("cat")
    assert (cat.container, cat.argv) == ("tools", ["cat", dest])
    want = json.loads(fk.fortio_json)
    assert result["DurationHistogram"] == want["DurationHistogram"]
    assert result[RESULT_KEY]["pod_file"] == dest


def test_result_comes_from_stdout_without_a_shared_data_dir(
    fk: FakeKube, kubeconfig: Path
) -> None:
    add_tools_container(fk, data_volume=None)  # tools cannot see fortio's files
    p = started(opts_for(kubeconfig), ("both",))
    try:
        assert p.metadata()["pod_results_dir"] == ""
        result = p.run_test(spec("both"))
    finally:
        p.close()
    (load,) = fk.calls("fortio")
    assert load.argv[load.argv.index("-json") + 1] == "-"
    assert fk.calls("cat") == [] and "pod_file" not in result[RESULT_KEY]


def test_result_that_cannot_be_read_back_fails_the_test(fk: FakeKube, kubeconfig: Path) -> None:
    add_tools_container(fk)

    def handler(call: ExecCall) -> ExecReply:
        if call.argv[:2] == ["fortio", "load"]:
            return ExecReply(stderr=b"Aborting because of disk full\n")  # exit 0, no file
        return fk.default_exec(call)

    fk.exec_handler = handler
    p = started(opts_for(kubeconfig), ("both",))
    try:
        with pytest.raises(ClusterError) as err:
            p.run_test(spec("both"))
    finally:
        p.close()
    (cat,) = fk.calls("cat")
    path = cat.argv[1]
    assert str(err.value) == (
        f"reading the result {path} back: cat {path} failed in the pod: exit code 1; "
        f"stderr: cat: can't open '{path}'"
    )


def test_stop_runs_pkill_in_the_tools_container_when_the_pod_has_one(
    fk: FakeKube, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """setup_test.sh's pods share one PID namespace and carry a busybox ``tools`` container:
    the stop signal comes from there (the fortio image has no pkill)."""
    fk.hold_fortio = 120.0
    add_tools_container(fk)
    p = started(opts_for(kubeconfig), ("both",))
    s = spec("both", duration=100)
    try:
        assert p.metadata()["stop_container"] == "tools"
        out = _stop_mid_test(fk, p, s)
    finally:
        p.close()
    assert "was stopped" in out["error"]
    (kill,) = fk.calls("pkill")
    assert (kill.pod, kill.container, kill.argv) == (CLIENT_POD, "tools", pkill_argv(s.labels))
    assert fk.calls("fortio")[0].container == "captured"
    assert capsys.readouterr().err == ""  # stopped: nothing to warn about


def test_stop_without_pkill_in_the_image_still_closes_the_stream(
    fk: FakeKube, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fk.hold_fortio = 120.0

    def handler(call: ExecCall) -> ExecReply:
        if call.argv[0] == "pkill":  # a scratch fortio image has no pkill
            return ExecReply(failure='exec: "pkill": executable file not found in $PATH')
        return fk.default_exec(call)

    fk.exec_handler = handler
    p = started(opts_for(kubeconfig), ("both",))
    try:
        out = _stop_mid_test(fk, p, spec("both", duration=100))
    finally:
        p.close()
    assert "was stopped" in out["error"]
    _wait_for(lambda: fk.calls("fortio")[0].closed_by_client)
    # The run in the pod goes on until its -t: the user is told, in one line.
    err = capsys.readouterr().err
    assert err == (
        f"meshperf: could not stop fortio in pod twopods/{CLIENT_POD} (pkill -INT failed in "
        'the pod: Internal error occurred: exec: "pkill": executable file not found in $PATH); '
        "it ends by itself at the end of its -t 100s (setup_test.sh's pods have a tools "
        "container with pkill)\n"
    )


def test_stop_with_nothing_running_is_harmless(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("both",))
    p.stop_current()
    p.close()
    p.close()  # idempotent
    assert fk.calls("pkill") == []


# -- reaching the cluster -----------------------------------------------------------------


def test_unreachable_api_server_names_the_context(fk: FakeKube, tmp_path: Path) -> None:
    port = closed_port()
    kc = fk.kubeconfig(tmp_path / "kc", context="perf-gke", server=f"https://127.0.0.1:{port}")
    p = KubernetesPlatform.from_options(opts_for(kc))
    with pytest.raises(ClusterError) as err:
        p.start(("baseline",))
    p.close()
    msg = str(err.value)
    assert "context perf-gke" in msg and f"127.0.0.1:{port}" in msg
    assert "Connection refused;" in msg and '"' not in msg
    assert "--context" in msg and "KUBECONFIG" in msg


def test_no_kubeconfig_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ClusterError, match="no kubeconfig found") as err:
        KubernetesPlatform.from_options(RunOptions(platform="kubernetes"))
    assert "--context" in (err.value.hint or "")


def test_kubeconfig_from_environment_and_unknown_context(
    fk: FakeKube, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    started(RunOptions(platform="kubernetes"), ("baseline",)).close()
    with pytest.raises(ClusterError, match="cannot load context 'nope'"):
        KubernetesPlatform.from_options(RunOptions(platform="kubernetes", context="nope"))


def test_bad_credentials_on_start(fk: FakeKube, kubeconfig: Path) -> None:
    fk.token = "rotated"
    p = KubernetesPlatform.from_options(opts_for(kubeconfig))
    with pytest.raises(ClusterError, match="HTTP 401.*credentials"):
        p.start(("baseline",))
    p.close()


# -- metadata -----------------------------------------------------------------------------


def test_metadata_reads_versions_nodes_and_proxy_resources(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("both",))
    try:
        meta = p.metadata()
    finally:
        p.close()
    assert meta["platform"] == "kubernetes" and meta["mesh"] == "istio"
    assert meta["mesh_version"] == "1.24.2"  # docker.io/istio/pilot:1.24.2
    assert meta["kubernetes_version"] == "v1.31.4-gke.1256000"
    assert meta["machine_types"] == ["n2-standard-8"]
    assert meta["client_pod"]["name"] == CLIENT_POD
    assert meta["client_pod"]["instance_type"] == "n2-standard-8"
    assert meta["server_pod"]["node"] == "gke-perf-default-pool-1a2b3c4d-0002"
    # Client: classic sidecar container; server: native sidecar (restartable init container).
    assert meta["proxy_resources"]["client"] == {
        "istio-proxy": {
            "requests": {"cpu": "1", "memory": "512Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        }
    }
    assert meta["proxy_resources"]["server"]["istio-proxy"]["requests"] == {
        "cpu": "100m",
        "memory": "128Mi",
    }
    assert meta["ports"] == {"captured": 8080, "uncaptured": 8077}
    assert "errors" not in meta


def test_metadata_linkerd_and_ambient_versions(fk: FakeKube, kubeconfig: Path) -> None:
    fk.deployments.append(load("deployment-linkerd-destination.json"))
    fk.daemonsets.append(load("daemonset-ztunnel.json"))
    fk.use_mesh("linkerd")
    p = started(opts_for(kubeconfig, mesh="linkerd"), ("baseline",))
    try:
        assert p.metadata()["mesh_version"] == "stable-2.14.10"
    finally:
        p.close()
    fk.use_mesh("istio-ambient")
    p = started(opts_for(kubeconfig, mesh="istio-ambient"), ("both",))
    try:
        meta = p.metadata()
    finally:
        p.close()
    assert meta["mesh_version"] == "1.24.2"
    assert meta["ztunnel_version"] == "1.24.2-distroless"


def test_metadata_records_what_it_could_not_read(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig), ("baseline",))
    fk.nodes.clear()
    fk.deployments.clear()
    fk.version = dict(fk.version, gitVersion="v1.30.0")
    try:
        meta = p.metadata()
    finally:
        p.close()
    assert meta["mesh_version"] is None  # no istiod found
    assert meta["machine_types"] == []
    assert meta["kubernetes_version"] == "v1.30.0"


# -- perf ---------------------------------------------------------------------------------

PERF_SCRIPT = """\
envoy    17 [001] 12345.678901:   10101010 cpu-clock:
\t    55d0a1b2c3d4 Envoy::Http::ConnMgr::onData(Buffer::Instance&, bool)+0x24 (/usr/local/bin/envoy)
\t    55d0a1b2c000 Envoy::Network::FilterManagerImpl::onRead()+0x10 (/usr/local/bin/envoy)
\t    55d0a1b20000 main+0x1 (/usr/local/bin/envoy)

envoy    17 [001] 12345.688901:   10101010 cpu-clock:
\t    55d0a1b2c000 Envoy::Network::FilterManagerImpl::onRead()+0x10 (/usr/local/bin/envoy)
\t    55d0a1b20000 main+0x1 (/usr/local/bin/envoy)

envoy    18 [000] 12345.698901:   10101010 cpu-clock:
\t    7f0000001000 [unknown] (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    55d0a1b20000 main+0x1 (/usr/local/bin/envoy)

"""


def test_fold_perf_script_and_draw() -> None:
    folded = fold_perf_script(PERF_SCRIPT)
    # one rule for both platforms (meshperf.flamegraph): offsets dropped, as stackcollapse-perf
    assert folded == {
        "envoy;main;Envoy::Network::FilterManagerImpl::onRead();"
        "Envoy::Http::ConnMgr::onData(Buffer::Instance&, bool)": 1,
        "envoy;main;Envoy::Network::FilterManagerImpl::onRead()": 1,
        "envoy;main;[libc.so.6]": 1,
    }
    svg = render_flamegraph(folded, "t")
    assert svg.startswith("<svg") and "3 samples at 99 Hz" in svg
    assert "Instance&amp;" in svg  # escaped


def test_perf_commands() -> None:
    assert record_argv("17", 40, "/tmp/a.data") == [
        "perf", "record", "-F", "99", "-g", "-p", "17", "-o", "/tmp/a.data", "--", "sleep", "40",
    ]  # fmt: skip
    with pytest.raises(ClusterError):
        record_argv("17; reboot", 40, "/tmp/a.data")
    assert record_window(240) == (100.0, 40.0)
    assert record_window(10) == (2.5, 5.0)
    c = debug_container_spec("meshperf-perf-x", "example/perf:1", "istio-proxy")
    assert c["targetContainerName"] == "istio-proxy" and c["image"] == "example/perf:1"


def test_perf_writes_a_flame_graph(fk: FakeKube, kubeconfig: Path, tmp_path: Path) -> None:
    fk.perf_script_output = PERF_SCRIPT
    opts = opts_for(kubeconfig, perf=True, perf_image="example/perf:1", output_dir=tmp_path)
    p = started(opts, ("serversidecar",))
    try:
        result = p.run_test(spec("serversidecar", duration=1))
    finally:
        p.close()
    perf = result[RESULT_KEY]["perf"]
    svg = Path(perf["flamegraph"])
    assert svg.parent == tmp_path / "perf" and "envoy" in svg.read_text()
    (path, ctype, body) = fk.patches[0]
    assert path == f"/api/v1/namespaces/twopods/pods/{SERVER_POD}/ephemeralcontainers"
    assert "patch" in ctype
    (added,) = body["spec"]["ephemeralContainers"]
    assert added["image"] == "example/perf:1" and added["targetContainerName"] == "istio-proxy"
    record = next(c for c in fk.exec_calls if c.argv[:2] == ["perf", "record"])
    assert (record.pod, record.container) == (SERVER_POD, "meshperf-perf-5e1f00d2")
    assert record.argv[record.argv.index("-p") + 1] == "17"  # from pgrep


def test_perf_flame_graph_of_each_repeat_has_its_own_name(
    fk: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    fk.perf_script_output = PERF_SCRIPT
    opts = opts_for(kubeconfig, perf=True, perf_image="example/perf:1", output_dir=tmp_path)
    p = started(opts, ("serversidecar",))
    try:
        results = [
            p.run_test(spec("serversidecar", duration=1, repeat=r)) for r in (0, 1, 2)
        ]
    finally:
        p.close()
    label = spec("serversidecar").labels
    svgs = [Path(r[RESULT_KEY]["perf"]["flamegraph"]) for r in results]
    assert svgs == [tmp_path / "perf" / f"{label}{suffix}.svg" for suffix in ("", "_r1", "_r2")]
    assert all(s.is_file() for s in svgs)


def test_perf_failure_is_recorded_and_the_test_still_counts(
    fk: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    fk.ephemeral_state = {
        "waiting": {"reason": "ErrImagePull", "message": "pull access denied for nope/perf"}
    }
    opts = opts_for(kubeconfig, perf=True, perf_image="nope/perf", output_dir=tmp_path)
    p = started(opts, ("both",))
    try:
        r1 = p.run_test(spec("both", duration=1))
        r2 = p.run_test(spec("both", duration=1))
    finally:
        p.close()
    for r in (r1, r2):
        assert "ErrImagePull" in r[RESULT_KEY]["perf"]["error"]
        assert r["DurationHistogram"]["Count"] == 178123
    assert len(fk.patches) == 1  # a failed setup is not retried for every test


def test_perf_without_image_is_an_error_not_a_crash(fk: FakeKube, kubeconfig: Path) -> None:
    p = started(opts_for(kubeconfig, perf=True), ("both",))
    try:
        r = p.run_test(spec("both", duration=1))
    finally:
        p.close()
    assert "--perf-image" in r[RESULT_KEY]["perf"]["error"]
    assert fk.patches == []


def test_in_cluster_service_account(
    fk: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import incluster_config

    token = tmp_path / "token"
    token.write_text(fk.token)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(fk.ca_pem)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(fk.port))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    opts = RunOptions(platform="kubernetes", run_id="5e1f00d2")
    p = started(opts, ("baseline",))
    try:
        assert p.run_test(spec("baseline"))[RESULT_KEY]["target"].endswith(":8077/echo?size=1024")
    finally:
        p.close()


def test_perf_gives_up_promptly_when_the_test_fails(
    fk: FakeKube, kubeconfig: Path, tmp_path: Path
) -> None:
    def handler(call: ExecCall) -> ExecReply:
        if call.argv[:2] == ["fortio", "load"]:
            return ExecReply(stderr=b"Aborting because of dial tcp: i/o timeout\n", exit_code=1)
        return fk.default_exec(call)

    fk.exec_handler = handler
    opts = opts_for(kubeconfig, perf=True, perf_image="example/perf:1", output_dir=tmp_path)
    p = started(opts, ("both",))
    try:
        t, out = _run_in_thread(p, spec("both", duration=100))  # perf would wait 30 s first
        t.join(timeout=20)
        assert not t.is_alive()
    finally:
        p.close()
    assert "i/o timeout" in out["error"]
    assert not any(c.argv[:2] == ["perf", "record"] for c in fk.exec_calls)


def test_stop_from_a_signal_handler_on_the_running_thread(fk: FakeKube, kubeconfig: Path) -> None:
    # The runner's Ctrl-C handler runs on the main thread, inside run_test's wait.
    import signal

    fk.hold_fortio = 120.0
    p = started(opts_for(kubeconfig), ("both",))
    main = threading.get_ident()

    def interrupt_when_running() -> None:
        _wait_for(lambda: len(fk.calls("fortio")) == 1)
        time.sleep(0.1)
        signal.pthread_kill(main, signal.SIGINT)

    previous = signal.signal(signal.SIGINT, lambda signum, frame: p.stop_current())
    killer = threading.Thread(target=interrupt_when_running)
    killer.start()
    try:
        with pytest.raises(ClusterError, match="was stopped"):
            p.run_test(spec("both", duration=100))
    finally:
        signal.signal(signal.SIGINT, previous)
        killer.join(timeout=10)
        p.close()
    assert len(fk.calls("pkill")) == 1


def test_exec_that_outlives_its_deadline_is_interrupted(
    fk: FakeKube, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshperf.kube import platform as kp

    monkeypatch.setattr(kp, "EXEC_SLACK_SECONDS", 0.5)
    fk.hold_fortio = 120.0
    p = started(opts_for(kubeconfig), ("both",))
    try:
        with pytest.raises(ClusterError, match=r"did not finish within 2 s"):
            p.run_test(spec("both", duration=1.5))
    finally:
        p.close()
    assert len(fk.calls("pkill")) == 1


def _real_perf_script(tmp_path: Path) -> str:
    """Record a busy Python loop with the host's perf; skip where perf cannot run."""
    import shutil
    import subprocess
    import sys

    perf = shutil.which("perf")
    if perf is None:
        missing("perf is not installed (Debian linux-perf)")
    data = tmp_path / "perf.data"
    loop = "s = 0\nfor i in range(2_000_000):\n    s += i * i\n"
    rec = subprocess.run(
        [perf, "record", "-F", "499", "-g", "-o", str(data), "--", sys.executable, "-c", loop],
        capture_output=True,
        timeout=60,
    )
    if rec.returncode != 0:  # installed, but the kernel forbids it here (perf_event_paranoid)
        missing(f"perf record not permitted here: {rec.stderr.decode()[-200:]}")
    out = subprocess.run(
        [perf, "script", "-i", str(data), "--demangle"], capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.decode("utf-8", "replace")


def test_fold_real_perf_script_output(tmp_path: Path) -> None:
    text = _real_perf_script(tmp_path)
    samples = sum(1 for line in text.splitlines() if line and not line[0].isspace())
    folded = fold_perf_script(text)
    assert sum(folded.values()) == samples > 0
    comms = {stack.split(";", 1)[0] for stack in folded}
    assert any(c.startswith("python") for c in comms), comms
    # Whole call chains were kept, not only the sampled leaf.
    assert max(len(stack.split(";")) for stack in folded) > 2
    svg = render_flamegraph(folded, "python loop")
    assert f"{samples} samples at 99 Hz" in svg
