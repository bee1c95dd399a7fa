"""runner.py's protocol options: --protocol, --h2, --headers, --no-keepalive, --connection-reuse,
--cacert and an https:// ingress; what the dry run shows, what is refused, what --resume matches.

Everything goes through ``main([...])`` or the pure plan functions; nothing starts a platform.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_runner as run
from meshperf.plan import build_plan
from meshperf.run import still_to_run


@pytest.fixture(autouse=True)
def _no_kubeconfig(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("ENVOY_BIN", raising=False)
    monkeypatch.delenv("NAMESPACE", raising=False)


def _rows(out: str) -> list[list[str]]:
    """The dry run's test rows, split on the double spaces between columns."""
    return [
        [c.strip() for c in line.split("  ") if c.strip()]
        for line in out.splitlines()[2:]
        if line[:1].isdigit()
    ]


def test_dry_run_shows_protocol_label_and_url_local(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "4", "500", "3", "--baseline", "--platform", "local", "--run-id", "0123abcd",
        "--protocol", "grpc", "--dry-run",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.splitlines()[1].split() == [
        "#", "mode", "conn", "qps", "duration", "label", "protocol", "url", "target",
    ]  # fmt: skip
    assert _rows(out) == [
        ["1", "baseline", "4", "500", "3s", "0123abcd_qps_500_c_4_1024_grpc_base", "grpc",
         "127.0.0.1:<app>", "loadgen -> app"],
        ["2", "both", "4", "500", "3s", "0123abcd_qps_500_c_4_1024_grpc_both", "grpc",
         "127.0.0.1:<client sidecar>", "loadgen -> client sidecar =mTLS=> server sidecar -> app"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "protocol", "label_part", "urls"),
    [
        ((), "http/1.1", "1024", ["http://<server pod IP>:8077/echo?size=1024",
                                  "http://<server pod IP>:8080/echo?size=1024",
                                  "http://fortioserver:8080/echo?size=1024"]),
        (("--h2",), "http/2", "1024_h2", ["http://<server pod IP>:8077/echo?size=1024",
                                          "http://<server pod IP>:8080/echo?size=1024",
                                          "http://fortioserver:8080/echo?size=1024"]),
        (("--protocol", "grpc"), "grpc", "1024_grpc", ["<server pod IP>:8076",
                                                       "<server pod IP>:8079",
                                                       "fortioserver:8079"]),
        (("--protocol", "tcp"), "tcp", "1024_tcp", ["tcp://<server pod IP>:8075",
                                                    "tcp://<server pod IP>:8078",
                                                    "tcp://fortioserver:8078"]),
    ],
)  # fmt: skip
def test_dry_run_kubernetes_ports_per_protocol(
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    protocol: str,
    label_part: str,
    urls: list[str],
) -> None:
    code, out, _ = run(
        capsys, "16", "1000", "100", "--platform", "kubernetes", "--baseline", "--serversidecar",
        "--run-id", "0123abcd", "--dry-run", *flags,
    )  # fmt: skip
    assert code == 0
    rows = _rows(out)
    assert [r[1] for r in rows] == ["baseline", "serversidecar", "both"]
    assert [r[6] for r in rows] == [protocol] * 3
    assert rows[0][5] == f"0123abcd_qps_1000_c_16_{label_part}_base"
    assert [r[7] for r in rows] == urls


def test_https_ingress_with_cacert(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cert = tmp_path / "ca.pem"
    cert.write_text(
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
    )
    code, out, err = run(
        capsys, "16", "1000", "100", "--platform", "kubernetes", "--no-clientsidecar",
        "--ingress", "https://gw.example", "--cacert", str(cert), "--h2", "--dry-run",
    )  # fmt: skip
    assert (code, err) == (0, "")
    (row,) = _rows(out)
    assert (row[1], row[6]) == ("ingress", "http/2")
    assert row[7] == "https://gw.example:443/echo?size=1024"
    # The plan gives the CA to the ingress tests, where it verifies the gateway's certificate.
    plan = build_plan(
        conns=[1], qpss=[10.0], duration=1, modes=("baseline", "ingress"), platform="kubernetes",
        mesh="istio", run_id="0123abcd", load_options={"cacert": str(cert), "h2": True},
    )  # fmt: skip
    assert [(t.mode, t.cacert, t.h2) for t in plan.tests] == [
        ("baseline", "", True),
        ("ingress", str(cert), True),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--protocol", "quic"), "argument --protocol: invalid choice: 'quic'"),
        (("--h2", "--protocol", "tcp"), "--h2 is HTTP/2; --protocol tcp carries no HTTP"),
        (("--headers", "X-A:1,nocolon"), "header 'nocolon' has no ':' (expected Name:value)"),
        (("--headers", "X-A"), "header 'X-A' has no ':'"),
        (("--connection-reuse", "5:2"), "connection reuse '5:2': MIN is larger than MAX"),
        (("--connection-reuse", "x"), "connection reuse 'x' is not MIN:MAX"),
        (("--protocol", "grpc", "--no-keepalive"), "--no-keepalive applies to --protocol http"),
        (("--protocol", "tcp", "--headers", "A:b"), "--headers are HTTP headers"),
        (("--protocol", "tcp", "--connection-reuse", "1:2"), "--connection-reuse applies to"),
        (("--ingress", "ftp://gw"), "ingress 'ftp://gw' is not [http[s]://]HOST[:PORT]"),
        (("--ingress", "https://gw/x"), "is not [http[s]://]HOST[:PORT]"),
    ],
)
def test_bad_input_is_one_line_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    out_dir = tmp_path / "results"
    code, out, err = run(
        capsys, "4", "500", "3", "--platform", "kubernetes", "--output-dir", str(out_dir), *argv
    )
    assert code in (1, 2), err
    assert out == ""
    first = err.splitlines()[0]
    assert first.startswith("runner.py: error: ")
    assert message in first
    assert [ln for ln in err.splitlines() if not ln.startswith("runner.py: hint:")] == [first]
    assert not out_dir.exists()  # nothing was made, nothing started


def test_cacert_that_is_not_pem(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x82\x03\x0b\x30\x82\x01\xf3")
    code, out, err = run(
        capsys, "4", "500", "3", "--platform", "kubernetes", "--ingress", "https://gw:8443",
        "--cacert", str(der), "--dry-run",
    )  # fmt: skip
    assert code == 2 and out == ""  # argparse usage error
    assert err == (
        f"runner.py: error: argument --cacert: cacert {der} is not a PEM certificate file"
        " (see --help)\n"
    )


def test_cacert_needs_an_https_ingress(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    code, out, err = run(
        capsys, "4", "500", "3", "--platform", "kubernetes", "--ingress", "gw:80",
        "--cacert", str(pem), "--dry-run",
    )  # fmt: skip
    assert code == 1 and out == ""
    assert err.splitlines()[0].partition(" (hint: ")[0] == (
        "runner.py: error: --cacert checks the gateway's certificate: it needs"
        " --ingress https://HOST[:PORT]"
    )


def test_load_options_reach_every_test(capsys: pytest.CaptureFixture[str]) -> None:
    plan = build_plan(
        conns=[1, 2], qpss=[10.0], duration=1, modes=("both",), platform="local", mesh="istio",
        run_id="0123abcd",
        load_options={"protocol": "http", "h2": False, "headers": ("X-A:1",), "keepalive": False,
                      "connection_reuse": (3, 9), "cacert": ""},
    )  # fmt: skip
    assert [(t.headers, t.keepalive, t.connection_reuse) for t in plan.tests] == [
        (("X-A:1",), False, (3, 9)),
        (("X-A:1",), False, (3, 9)),
    ]
    block = plan.tests[0].result_block(platform="local", mesh="istio", run_id="0123abcd")
    assert (block["protocol"], block["h2"]) == ("http", False)
    assert (block["headers"], block["keepalive"], block["connection_reuse"]) == (
        ["X-A:1"], False, [3, 9],
    )  # fmt: skip


def _write_result(out: Path, name: str, **block: object) -> None:
    facts = {
        "format": 1, "run_id": "0badcafe", "platform": "local", "mesh": "istio",
        "mode": "baseline", "conn": 1, "qps": 10.0, "duration": 1.0, "size": 1024,
        "extra_labels": "", "repeat": 0, **block,
    }  # fmt: skip
    doc = {"Labels": name, "RetCodes": {"200": 10}, "DurationHistogram": {"Count": 10},
           "meshperf": facts}  # fmt: skip
    (out / f"{name}.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("load", "runs"),
    [
        ({}, False),  # an HTTP/1.1 result written before protocols existed is HTTP/1.1
        ({"protocol": "http", "h2": True}, True),
        ({"protocol": "grpc"}, True),
        ({"protocol": "tcp"}, True),
    ],
)
def test_resume_tells_protocols_apart(tmp_path: Path, load: dict[str, object], runs: bool) -> None:
    _write_result(tmp_path, "old")  # no protocol fields at all
    plan = build_plan(
        conns=[1], qpss=[10.0], duration=1, modes=("baseline",), platform="local", mesh="istio",
        run_id="0000beef", load_options=load,
    )  # fmt: skip
    assert len(still_to_run(plan, tmp_path)) == (1 if runs else 0)


def test_resume_finds_a_grpc_result_for_a_grpc_test(tmp_path: Path) -> None:
    _write_result(tmp_path, "g", protocol="grpc", h2=True)
    _write_result(tmp_path, "t", protocol="tcp", h2=False)
    for protocol in ("grpc", "tcp"):
        plan = build_plan(
            conns=[1], qpss=[10.0], duration=1, modes=("baseline",), platform="local",
            mesh="istio", run_id="0000beef", load_options={"protocol": protocol},
        )  # fmt: skip
        assert still_to_run(plan, tmp_path) == []
    plan = build_plan(
        conns=[1], qpss=[10.0], duration=1, modes=("baseline",), platform="local",
        mesh="istio", run_id="0000beef",
    )  # fmt: skip
    assert len(still_to_run(plan, tmp_path)) == 1  # HTTP/1.1 has no result yet


def test_local_results_name_envoy_not_istio(tmp_path: Path) -> None:
    """--mesh istio on the local platform runs Envoy sidecars, no Istio: the plan (whose mesh
    every result and the run file record) says envoy; Kubernetes keeps the mesh asked for."""
    from meshperf.plan import recorded_mesh

    assert recorded_mesh("local", "istio") == "envoy"
    assert recorded_mesh("local", "none") == "none"
    assert recorded_mesh("kubernetes", "istio") == "istio"
    plan = build_plan(
        conns=[1], qpss=[10.0], duration=1, modes=("baseline",), platform="local",
        mesh=recorded_mesh("local", "istio"), run_id="0000beef",
    )  # fmt: skip
    assert plan.mesh == "envoy"
    # A result the local platform wrote as "istio" before this rule is still found by --resume.
    _write_result(tmp_path, "old", mesh="istio")
    assert still_to_run(plan, tmp_path) == []
