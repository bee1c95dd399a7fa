"""runner.py's command line: the plan it prints, config files, platform choice, one-line errors.

Everything here goes through ``main([...])``; nothing starts a platform except the test that
proves a missing Envoy is a one-line error. ``--platform auto`` is tested against a real HTTP
server on 127.0.0.1 standing in for the Kubernetes API server (only ``/version`` is asked).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fortio_data
import runner
from conftest import run_runner as run
from meshperf.errors import ExitCode
from meshperf.plan import PER_TEST_OVERHEAD, START_OVERHEAD, Plan, build_plan
from tlsfiles import server_tls_files


@pytest.fixture(autouse=True)
def _no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's own kubeconfig must not decide what these tests see.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("ENVOY_BIN", raising=False)
    monkeypatch.delenv("NAMESPACE", raising=False)


def test_dry_run_prints_every_test_label_target_and_estimate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "1,4", "500", "3", "--baseline", "--platform", "local", "--run-id", "0123abcd",
        "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert err == ""
    both = "loadgen -> client sidecar =mTLS=> server sidecar -> app"
    per, start = PER_TEST_OVERHEAD["local"], START_OVERHEAD["local"]
    total = start + 4 * (3 + per)
    expected = [
        "plan: 4 tests on local (mesh envoy), run id 0123abcd",
        "#  mode      conn  qps  duration  label                           protocol  url"
        "                                               target",
        "1  baseline  1     500  3s        0123abcd_qps_500_c_1_1024_base  http/1.1"
        "  http://127.0.0.1:<app>/echo?size=1024             loadgen -> app",
        "2  both      1     500  3s        0123abcd_qps_500_c_1_1024_both  http/1.1"
        f"  http://127.0.0.1:<client sidecar>/echo?size=1024  {both}",
        "3  baseline  4     500  3s        0123abcd_qps_500_c_4_1024_base  http/1.1"
        "  http://127.0.0.1:<app>/echo?size=1024             loadgen -> app",
        "4  both      4     500  3s        0123abcd_qps_500_c_4_1024_both  http/1.1"
        f"  http://127.0.0.1:<client sidecar>/echo?size=1024  {both}",
        f"estimated time: 0:00:{int(total):02d} (12 s of tests + 4 x {per:g} s per-test overhead"
        f" + {start:g} s start-up)",
    ]
    assert out.splitlines() == expected


def test_2019_example_2_is_twelve_tests(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "16,64", "1000,4000", "180", "--serversidecar", "--baseline", "--platform",
        "local", "--dry-run",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("plan: 12 tests on local")
    rows = [ln.split() for ln in lines[2:-1]]
    cells = {(r[1], r[2], r[3]) for r in rows}
    assert cells == {(m, c, q) for m in ("baseline", "serversidecar", "both")
                     for c in ("16", "64") for q in ("1000", "4000")}  # fmt: skip
    assert all(r[4] == "180s" for r in rows)


def test_mode_switches_labels_and_qps_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "4", "100,0", "2", "--no-clientsidecar", "--baseline", "--ingress",
        "--qps-per-connection", "--labels", "nomixer", "--no-telemetry", "--size", "64",
        "--platform", "local", "--run-id", "00000001", "--dry-run",
    )  # fmt: skip
    assert code == 0
    labels = [ln.split()[5] for ln in out.splitlines()[2:-1]]
    assert labels == [
        "00000001_qps_400_c_4_64_nomixer_notelemetry_base",
        "00000001_qps_400_c_4_64_nomixer_notelemetry_ingress",
        "00000001_qps_max_c_4_64_nomixer_notelemetry_base",
        "00000001_qps_max_c_4_64_nomixer_notelemetry_ingress",
    ]


def test_long_labels_with_no_telemetry_name_the_suffix(capsys: pytest.CaptureFixture[str]) -> None:
    label = "L" * 55
    argv = ("1", "10", "1", "--platform", "local", "--labels", label, "--dry-run")
    code, out, _ = run(capsys, *argv)
    assert code == 0 and f"_{label}_both" in out
    code, out, err = run(capsys, *argv, "--no-telemetry")
    assert code == ExitCode.ERROR and out == ""
    assert err.count("\n") == 1 and err.startswith("runner.py: error: ")
    assert f"'{label}_notelemetry' are 67 characters, longer than 63" in err
    assert "--no-telemetry adds '_notelemetry'" in err


def test_repeat_and_run_ids_differ(capsys: pytest.CaptureFixture[str]) -> None:
    _, out1, _ = run(capsys, "1", "10", "1", "--repeat", "3", "--platform", "local", "--dry-run")
    _, out2, _ = run(capsys, "1", "10", "1", "--platform", "local", "--dry-run")
    assert out1.splitlines()[0].startswith("plan: 3 tests")
    rid1, rid2 = out1.split("run id ")[1][:8], out2.split("run id ")[1][:8]
    assert rid1 != rid2 and len(rid1) == 8 and int(rid1, 16) >= 0


def test_help_documents_total_qps_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    flat = " ".join(out.split())
    assert "requests per second in TOTAL across all connections, as fortio's -qps" in flat
    assert "env ENVOY_BIN" in flat and "env NAMESPACE" in flat
    assert "default: 0.0001 = 0.1 ms" in flat
    for flag in ("--baseline", "--no-baseline", "--serversidecar", "--no-clientsidecar",
                 "--ingress", "--labels", "--perf", "--client", "--server", "--mesh"):  # fmt: skip
        assert flag in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["16,,abc", "1000", "10"], "argument CONN: invalid connection list '16,,abc': empty item"),
        (["-4", "1000", "10"], "argument CONN: invalid connection count -4 in '-4': must be >= 1"),
        (["0", "1000", "10"], "argument CONN: invalid connection count 0 in '0': must be >= 1"),
        (["1", "-5", "10"], "argument QPS: invalid qps '-5' in '-5': must be >= 0"),
        (["1", "10", "0"], "argument DURATION: '0' must be > 0"),
        (["1", "10"], "the following arguments are required: DURATION"),
        (["1", "10", "1", "--mesh", "consul"], "argument --mesh: invalid choice: 'consul'"),
        (["1", "10", "1", "--labels", "a b"], "argument --labels: labels 'a b' may only contain"),
        (["1", "10", "1", "--labels", "x" * 64], "argument --labels: labels 'xxxxxxxx"),
        (["1", "10", "1", "--repeat", "0"], "argument --repeat: '0' must be >= 1"),
        (["1", "10", "1", "--run-id", "XYZ"], "argument --run-id: run id 'XYZ' must be 8"),
        (["1", "10", "1", "-q", "-v"], "--quiet and --verbose contradict each other"),
    ],
)
def test_bad_command_lines_are_one_line_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv, "--platform", "local", "--dry-run")
    assert code == ExitCode.USAGE
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"runner.py: error: {message}")


@pytest.mark.parametrize(
    ("argv", "message", "hint"),
    [
        (["--mesh", "linkerd"], "--mesh linkerd needs a cluster", "--platform kubernetes"),
        (["--mesh", "istio-ambient"], "--mesh istio-ambient needs a", "--platform kubernetes"),
        (["--ingress", "gw:80"], "--ingress takes no value on the local", "--ingress alone"),
        (["--client", "pod-a"], "--client, --server and --perf-image apply to", None),
        (["--no-clientsidecar"], "no sidecar mode selected", "add --baseline"),
        (["--mesh", "none", "--serversidecar"], "--mesh none has no sidecars", "--baseline alone"),
    ],
)
def test_config_conflicts_exit_error_with_hint(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str, hint: str | None
) -> None:
    code, out, err = run(capsys, "1", "10", "1", "--platform", "local", "--dry-run", *argv)
    assert code == ExitCode.ERROR
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"runner.py: error: {message}")
    if hint:
        assert len(lines) == 1 and hint in lines[0].partition(" (hint: ")[2]
    else:
        assert len(lines) == 1


def test_mesh_none_runs_baseline_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "1", "10", "1", "--mesh", "none", "--platform", "local", "--dry-run")
    assert code == 0
    assert [ln.split()[1] for ln in out.splitlines()[2:-1]] == ["baseline"]


def test_kubernetes_dry_run_targets_and_short_duration_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(
        capsys, "16", "1000", "30", "--platform", "kubernetes", "--ingress", "gw.example:80",
        "--baseline", "--mesh", "linkerd", "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert (
        "runner.py: warning: 30 s tests are too short for Prometheus CPU/memory (needs >= 92 s"
        in err
    )
    rows = out.splitlines()
    assert rows[0].startswith("plan: 3 tests on kubernetes (mesh linkerd)")
    assert rows[2].endswith("client -> server pod IP:8077 (skip-outbound-ports on the client,"
                            " skip-inbound-ports on the server) -> app")  # fmt: skip
    assert rows[4].endswith("; gateway gw.example:80")
    # A shorter scrape interval lowers the minimum: the warning is derived, not a constant.
    code, _, err = run(capsys, "16", "1000", "80", "--platform", "kubernetes",
                       "--scrape-interval", "5", "--dry-run")  # fmt: skip
    assert code == 0 and "warning" not in err
    code, _, err = run(capsys, "16", "1000", "80", "--platform", "kubernetes", "--dry-run")
    assert "needs >= 92 s" in err


def test_kubernetes_ingress_needs_an_address(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "1", "10", "100", "--platform", "kubernetes", "--ingress", "--dry-run"
    )
    assert code == ExitCode.ERROR
    assert err.startswith(
        "runner.py: error: --ingress needs the gateway's HOST[:PORT] on kubernetes"
    )


# ---- --config -------------------------------------------------------------------------------


def test_config_file_supplies_flags_and_command_line_wins(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = tmp_path / "matrix.yaml"
    cfg.write_text(
        "conn: [1, 4]\nqps: 500\nduration: 3\nbaseline: true\nserver_sidecar_unused: 1\n"
    )
    code, _, err = run(capsys, "--config", str(cfg), "--platform", "local", "--dry-run")
    assert code == ExitCode.ERROR
    assert err == f"runner.py: error: config {cfg}: unknown option 'server_sidecar_unused'\n"

    cfg.write_text(
        "conn: [1, 4]\nqps: 500\nduration: 3\nbaseline: true\nrun-id: 0123abcd\n"
        "platform: local\nlabels: cfg\nsize: 10\n"
    )
    code, out, _ = run(capsys, "--config", str(cfg), "--dry-run")
    assert code == 0
    labels = [ln.split()[5] for ln in out.splitlines()[2:-1]]
    assert labels == [
        "0123abcd_qps_500_c_1_10_cfg_base",
        "0123abcd_qps_500_c_1_10_cfg_both",
        "0123abcd_qps_500_c_4_10_cfg_base",
        "0123abcd_qps_500_c_4_10_cfg_both",
    ]
    # Positionals and flags on the command line override the file.
    code, out, _ = run(capsys, "16", "100", "2", "--config", str(cfg), "--no-baseline",
                       "--labels", "cli", "--dry-run")  # fmt: skip
    assert code == 0
    labels = [ln.split()[5] for ln in out.splitlines()[2:-1]]
    assert labels == ["0123abcd_qps_100_c_16_10_cli_both"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conn: 0\n", "conn: invalid connection count 0 in '0': must be >= 1"),
        ("mesh: consul\n", "mesh: invalid choice 'consul'"),
        ("uniform: maybe\n", "uniform: expected true or false"),
        ("labels: 'a b'\n", "labels: labels 'a b' may only contain"),
        ("[1, 2]\n", "expected a mapping of option names to values"),
    ],
)
def test_bad_config_values_exit_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, message: str
) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code, out, err = run(capsys, "1", "10", "1", "--config", str(cfg), "--dry-run")
    assert code == ExitCode.ERROR
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"runner.py: error: config {cfg}") and message in err


# ---- --platform auto ------------------------------------------------------------------------


class _FakeApiServer(http.server.BaseHTTPRequestHandler):
    status = 200
    delay = 0.0
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        time.sleep(self.delay)
        body = json.dumps({"major": "1", "minor": "30", "gitVersion": "v1.30.0"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def api_server() -> Iterator[tuple[str, type[_FakeApiServer]]]:
    handler = type("Handler", (_FakeApiServer,), {"seen": [], "status": 200, "delay": 0.0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    # Clients that reject the certificate or time out are the point of these tests; a
    # server thread's traceback would land in a later test's captured stderr.
    srv.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def _kubeconfig(path: Path, server: str, current: str = "perf") -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
current-context: {current}
contexts:
- name: perf
  context: {{cluster: c1, user: u1}}
- name: other
  context: {{cluster: c2, user: u1}}
clusters:
- name: c1
  cluster: {{server: "{server}"}}
- name: c2
  cluster: {{server: "http://127.0.0.1:9"}}
users:
- name: u1
  user: {{token: sekret}}
"""
    )
    return path


def test_auto_picks_kubernetes_when_the_context_answers(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api_server: tuple[str, type[_FakeApiServer]],
) -> None:
    url, handler = api_server
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", url)))
    code, out, err = run(capsys, "1", "10", "100", "--dry-run")
    assert code == 0
    assert err.splitlines()[0] == f"platform: kubernetes (context 'perf' at {url} answers)"
    assert out.startswith("plan: 1 tests on kubernetes")
    assert handler.seen == [("/version", "Bearer sekret")]
    # --kubeconfig names the file instead of $KUBECONFIG.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "elsewhere"))
    kc = str(tmp_path / "kc")
    code, out, err = run(capsys, "1", "10", "100", "--kubeconfig", kc, "--dry-run")
    assert code == 0 and out.startswith("plan: 1 tests on kubernetes")


def test_auto_falls_back_to_local_and_says_why(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api_server: tuple[str, type[_FakeApiServer]],
) -> None:
    url, handler = api_server
    code, out, err = run(capsys, "1", "10", "1", "--dry-run")
    assert err == "platform: local (no kubeconfig ($KUBECONFIG not found))\n"
    assert out.startswith("plan: 1 tests on local")

    handler.status = 401
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", url)))
    code, out, err = run(capsys, "1", "10", "1", "--dry-run")
    assert err == f"platform: local (context 'perf': {url}/version answered HTTP 401)\n"

    # A server nobody listens on (a closed port) does not answer.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    _kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{dead}")
    code, out, err = run(capsys, "1", "10", "1", "--dry-run")
    dead_url = f"http://127.0.0.1:{dead}"
    assert err.startswith(f"platform: local (context 'perf': {dead_url} did not answer")

    _kubeconfig(tmp_path / "kc", url, current="missing")
    code, out, err = run(capsys, "1", "10", "1", "--dry-run")
    assert err == f"platform: local (kubeconfig {tmp_path / 'kc'} has no context 'missing')\n"


def test_auto_merges_a_kubeconfig_list_as_kubectl_does(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api_server: tuple[str, type[_FakeApiServer]],
) -> None:
    """KUBECONFIG=a:b with the current context set in a and defined in b (kubectl's merge:
    the first file to set a name wins); the whole list is handed on to the platform."""
    url, handler = api_server
    full = _kubeconfig(tmp_path / "b", url)
    first = tmp_path / "a"
    # a names the context and shadows the user of the same name with another token.
    first.write_text("current-context: perf\nusers:\n- name: u1\n  user: {token: first-wins}\n")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'gone'}:{first}:{full}")
    code, out, err = run(capsys, "1", "10", "100", "--dry-run")
    assert code == 0
    assert err.splitlines()[0] == f"platform: kubernetes (context 'perf' at {url} answers)"
    assert handler.seen == [("/version", "Bearer first-wins")]
    # The other order: b's current context and b's user.
    monkeypatch.setenv("KUBECONFIG", f"{full}:{first}")
    code, out, err = run(capsys, "1", "10", "100", "--dry-run")
    assert code == 0 and handler.seen[-1] == ("/version", "Bearer sekret")
    # A context that none of the files defines.
    first.write_text("current-context: nowhere\n")
    monkeypatch.setenv("KUBECONFIG", f"{first}:{full}")
    code, out, err = run(capsys, "1", "10", "1", "--dry-run")
    assert err == f"platform: local (kubeconfig ({first}:{full}) has no context 'nowhere')\n"


def test_auto_gives_up_on_a_slow_server_within_two_seconds(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    api_server: tuple[str, type[_FakeApiServer]],
) -> None:
    url, handler = api_server
    handler.delay = 5.0
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "kc", url)))
    code, out, err = run(capsys, "1", "10", "1", "--dry-run")
    # The probe timed out (ReadTimeout) instead of waiting for the late answer.
    assert "did not answer /version within 2 s (ReadTimeout)" in err
    assert out.startswith("plan: 1 tests on local")


def test_auto_local_with_cluster_only_mesh_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "1", "10", "1", "--mesh", "linkerd", "--dry-run")
    assert code == ExitCode.ERROR
    assert "runner.py: error: --mesh linkerd needs a cluster" in err
    assert "(hint: use --platform kubernetes" in err


def test_unwritable_output_dir_fails_before_starting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, out, err = run(capsys, "1", "10", "1", "--platform", "local", "--output-dir",
                         str(blocker / "results"), "-q")  # fmt: skip
    assert code == ExitCode.ERROR and out == ""
    target = blocker / "results"
    assert err == f"runner.py: error: cannot create output dir {target}: Not a directory\n"


@pytest.mark.parametrize("kind", ["file", "unwritable"])
def test_output_dir_that_is_no_writable_directory_fails_before_starting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    if kind == "file":
        target = tmp_path / "file"
        target.write_text("not a directory")
        want = f"runner.py: error: output dir {target} exists and is not a directory\n"
    else:
        target = Path("/proc/self/fdinfo")  # a directory nobody, root included, can write to
        want = f"runner.py: error: cannot write to output dir {target}: "
    code, out, err = run(capsys, "1", "10", "1", "--platform", "local", "--output-dir",
                         str(target), "-q")  # fmt: skip
    assert code == ExitCode.ERROR and out == ""
    assert err.startswith(want) and err.count("\n") == 1, err


# ---- a real platform refusing to start --------------------------------------------------------


def test_missing_envoy_is_one_line_and_a_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    code, out, err = run(
        capsys, "1", "10", "1", "--platform", "local", "--envoy", str(tmp_path / "no-envoy"),
        "--output-dir", str(out_dir), "-q",
    )  # fmt: skip
    assert code == ExitCode.ERROR
    lines = err.splitlines()
    assert lines[0].startswith("runner.py: error: ") and "no-envoy" in lines[0]
    assert all(ln.startswith("runner.py: ") for ln in lines) and len(lines) <= 2
    assert "Traceback" not in err and out == ""
    assert not out_dir.exists()  # made for this run, nothing written: removed again


def test_start_up_error_removes_only_the_empty_dirs_it_made(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no fortio to be found
    argv = ("1", "10", "1", "--platform", "local", "--load-generator", "fortio", "-q")
    out_dir = tmp_path / "a" / "b" / "out"
    code, _, err = run(capsys, *argv, "--output-dir", str(out_dir))
    assert code == ExitCode.ERROR and "no fortio binary on PATH" in err
    assert not (tmp_path / "a").exists()  # every level this run made is gone again
    # A directory that was there before stays, empty or not.
    existing = tmp_path / "existing"
    existing.mkdir()
    code, _, err = run(capsys, *argv, "--output-dir", str(existing / "new"))
    assert code == ExitCode.ERROR and "no fortio binary on PATH" in err
    assert existing.is_dir() and not (existing / "new").exists()
    code, _, _ = run(capsys, *argv, "--output-dir", str(existing))
    assert code == ExitCode.ERROR and existing.is_dir()


def test_made_dirs_with_a_file_in_them_are_kept(tmp_path: Path) -> None:
    created: list[Path] = []
    runner.make_output_dir(tmp_path / "a" / "b" / "c", created)
    assert created == [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    (tmp_path / "a" / "keep.json").write_text("{}")
    runner.remove_if_empty(created)
    assert (tmp_path / "a" / "keep.json").is_file() and not (tmp_path / "a" / "b").exists()
    created = []
    runner.make_output_dir(tmp_path / "a" / "b", created)
    assert created == [tmp_path / "a" / "b"]  # "a" was there already: never listed
    (tmp_path / "a" / "b" / "result.json").write_text("{}")
    runner.remove_if_empty(created)
    assert (tmp_path / "a" / "b" / "result.json").is_file()


def test_missing_envoy_from_environment_names_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ENVOY_BIN", str(tmp_path / "no-envoy"))
    code, _, err = run(capsys, "1", "10", "1", "--platform", "local", "--output-dir",
                       str(tmp_path / "out"), "-q")  # fmt: skip
    assert code == ExitCode.ERROR
    missing = tmp_path / "no-envoy"
    assert err.splitlines()[0] == (
        f"runner.py: error: envoy from $ENVOY_BIN ({missing}) is not an executable file"
    )


def test_auto_verifies_the_cluster_ca_over_https(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key, ca = server_tls_files(tmp_path)
    handler = type("Handler", (_FakeApiServer,), {"seen": [], "status": 200, "delay": 0.0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    # Clients that reject the certificate or time out are the point of these tests; a
    # server thread's traceback would land in a later test's captured stderr.
    srv.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the CA file is written
    try:
        url = f"https://127.0.0.1:{srv.server_address[1]}"
        kc = _kubeconfig(tmp_path / "kc", url)
        monkeypatch.setenv("KUBECONFIG", str(kc))
        # Without the cluster's CA the server is not trusted.
        code, out, err = run(capsys, "1", "10", "100", "--dry-run")
        assert err.startswith(f"platform: local (context 'perf': {url} did not answer")
        assert "SSLError" in err
        # With certificate-authority-data it is.
        ca_data = base64.b64encode(ca.read_bytes()).decode()
        with_ca = f'server: "{url}", certificate-authority-data: {ca_data}'
        kc.write_text(kc.read_text().replace(f'server: "{url}"', with_ca))
        code, out, err = run(capsys, "1", "10", "100", "--dry-run")
        assert err.splitlines()[0] == f"platform: kubernetes (context 'perf' at {url} answers)"
        assert list(scratch.iterdir()) == []  # the CA file written for the probe is gone
    finally:
        srv.shutdown()
        srv.server_close()


def test_waypoint_mode_is_planned_for_ambient_only(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "16", "1000", "60", "--mesh", "istio-ambient", "--waypoint",
        "--platform", "kubernetes", "--dry-run", "--run-id", "0d35a118",
    )  # fmt: skip
    assert code == ExitCode.OK, err
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [(r[1], r[5]) for r in rows] == [
        ("both", "0d35a118_qps_1000_c_16_1024_both"),
        ("waypoint", "0d35a118_qps_1000_c_16_1024_waypoint"),
    ]
    code, out, err = run(capsys, "16", "1000", "60", "--waypoint", "--dry-run",
                         "--platform", "local")  # fmt: skip
    assert code == ExitCode.ERROR
    assert err.splitlines()[0].partition(" (hint: ")[0] == (
        "runner.py: error: --waypoint needs --mesh istio-ambient (got --mesh istio)"
    )


@pytest.mark.parametrize(
    ("argv", "content", "expected"),
    [
        (["--config", "{f}", "1", "10", "1", "--dry-run"], b"\xd0\xff\x00binary",
         "runner.py: error: config {f}: not UTF-8 text"),
        (["1", "10", "1", "--kubeconfig", "{f}", "--dry-run"], b"\xd0\xff\x00binary",
         "platform: local (kubeconfig {f} unreadable (UnicodeDecodeError))"),
        (["1", "10", "1", "--kubeconfig", "{f}", "--dry-run"],
         b"users: 5\nclusters: 7\ncontexts: [{name: a, context: {cluster: c}}]\n"
         b"current-context: a\n",
         "platform: local (context 'a' has no cluster server URL)"),
        (["1", "10", "100", "--kubeconfig", "{f}", "--platform", "kubernetes"],
         b"a,b,c\n1,2,3\n",
         "runner.py: error: cannot load the current context from kubeconfig {f}: "),
    ],
    ids=["config-binary", "kubeconfig-binary", "kubeconfig-wrong-types", "kubeconfig-not-yaml-map"],
)
def test_malformed_config_files_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], content: bytes,
    expected: str,
) -> None:
    f = tmp_path / "file"
    f.write_bytes(content)
    code, _, err = run(capsys, *(a.replace("{f}", str(f)) for a in argv))
    assert "Traceback" not in err
    assert err.splitlines()[0].startswith(expected.replace("{f}", str(f))), err
    if "--dry-run" not in argv or "--config" in argv:
        assert code == ExitCode.ERROR


def test_reader_that_closed_stdout_gets_no_traceback(tmp_path: Path) -> None:
    """``runner.py ... --dry-run | head -2``: head exits before the plan is printed."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(runner.__file__)), "1,2,4,8,16,32,64", "1000", "240",
             "--serversidecar", "--platform", "local", "--dry-run"],
            stdout=w, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
            env={**os.environ, "KUBECONFIG": str(tmp_path / "none")},
        )  # fmt: skip
    finally:
        os.close(w)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr == ""
    assert proc.returncode == ExitCode.ERROR


def test_interpreter_without_psutil_is_one_line(tmp_path: Path) -> None:
    """``python runner/runner.py`` with a Python that lacks the project's packages (``-S``
    leaves site-packages out): psutil is imported when the local platform starts."""
    proc = subprocess.run(
        [sys.executable, "-S", str(Path(runner.__file__)), "1", "10", "1", "--platform", "local",
         "-q", "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == ExitCode.ERROR
    assert proc.stderr.startswith("runner.py: error: Python package ")
    assert proc.stderr.count("\n") == 1 and "make bootstrap" in proc.stderr, proc.stderr


@pytest.mark.parametrize("image", ["x y", "img;rm -rf /", "$(id)", "-image", "a\nb: c", ""])
def test_perf_image_is_checked_before_it_reaches_a_manifest(
    capsys: pytest.CaptureFixture[str], image: str
) -> None:
    code, _, err = run(capsys, "1", "10", "100", "--platform", "kubernetes", "--perf",
                       f"--perf-image={image}", "--dry-run")  # fmt: skip
    assert code == 2
    assert err.startswith("runner.py: error: argument --perf-image: ")
    assert err.count("\n") == 1


def test_ctrl_c_before_the_run_starts_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during start-up (imports, the platform probe) ends the CLI with 130, no traceback."""
    from meshperf.errors import exit_cli

    def interrupted() -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("sys.argv", ["runner.py", "1", "10", "1"])
    with pytest.raises(SystemExit) as exc:
        exit_cli(interrupted)
    assert exc.value.code == ExitCode.INTERRUPTED
    assert capsys.readouterr().err == "runner.py: interrupted\n"


# ---- --resume: the start line counts only what runs -------------------------------------------

def _resume_plan(run_id: str) -> Plan:
    return build_plan(conns=(1, 2), qpss=(10.0,), duration=100.0, modes=("baseline",),
                      platform="local", mesh="none", run_id=run_id)  # fmt: skip


def _store(out: Path, plan: Plan, conns: tuple[int, ...]) -> None:
    from meshperf.run import store_result

    out.mkdir(parents=True, exist_ok=True)
    for spec in plan.tests:
        if spec.conn in conns:
            result = fortio_data.http_defaults()
            store_result(out, plan, spec, result)


def test_resume_start_line_estimates_only_the_tests_that_run(tmp_path: Path) -> None:
    from meshperf.run import still_to_run

    out = tmp_path / "out"
    _store(out, _resume_plan("0000aaaa"), conns=(1,))
    plan = _resume_plan("0000bbbb")
    todo = still_to_run(plan, out)
    assert [t.conn for t in todo] == [2]
    line = runner.start_line(plan, todo, out)
    one = START_OVERHEAD["local"] + 100 + PER_TEST_OVERHEAD["local"]
    assert line == (
        "run 0000bbbb: 1 of 2 tests to run on local (1 skipped: results already there),"
        f" estimated {_hms(one)}; results in {out}"
    )
    # Without --resume every planned test counts.
    two = one + 100 + PER_TEST_OVERHEAD["local"]
    full = runner.start_line(plan, list(plan.tests), out)
    assert full == f"run 0000bbbb: 2 tests on local, estimated {_hms(two)}; results in {out}"


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def test_resume_with_everything_done_says_so_and_runs_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    _store(out, _resume_plan("0000aaaa"), conns=(1, 2))
    code, stdout, err = run(capsys, "1,2", "10", "100", "--mesh", "none", "--platform", "local",
                            "--output-dir", str(out), "--resume",
                            "--run-id", "0000cccc")  # fmt: skip
    assert code == ExitCode.OK, err
    start = next(ln for ln in err.splitlines() if ln.startswith("run 0000cccc:"))
    assert start == (
        "run 0000cccc: 0 of 2 tests to run on local (2 skipped: results already there),"
        f" estimated 0:00:00; results in {out}"
    )
    assert stdout.count("skipped-resume") == 2
