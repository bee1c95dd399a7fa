"""mTLS between the local sidecars, proven against real Envoys.

The server sidecar's mTLS listener must serve the client sidecar, and refuse: plain HTTP, no
client certificate, a certificate from another CA, a certificate of the right CA with an
identity that is not a client's. The client sidecar must refuse a server whose SPIFFE
identity is not the pinned one. Each refusal is checked next to a positive control made the
same way, so a broken test client cannot pass for a refusal.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshperf.local import certs, envoy
from meshperf.local.procs import ProcessGroup, http_get

pytestmark = pytest.mark.envoy


class _Echo(http.server.BaseHTTPRequestHandler):
    """A stand-in app: answers 200 with the request path, counts requests."""

    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).hits += 1
        body = f"app saw {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Mesh:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.binary = envoy.find_envoy()
        self.ca = certs.CertAuthority(tmp)
        self.server = self.ca.issue(certs.SERVER_SA)
        self.client = self.ca.issue(certs.CLIENT_SA)
        self.gateway = self.ca.issue(certs.INGRESS_SA)
        self.intruder = self.ca.issue("intruder")
        self.group = ProcessGroup(tmp)
        self.app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        threading.Thread(target=self.app.serve_forever, daemon=True).start()
        self.app_port = self.app.server_address[1]

    def start(self, name: str, config: dict) -> envoy.EnvoyProcess:
        return envoy.EnvoyProcess.start(self.group, self.binary.path, name, config, self.tmp, 1)

    def close(self) -> None:
        self.group.stop_all()
        self.app.shutdown()
        self.app.server_close()

    def start_sidecars(self) -> None:
        """The pair under test: server sidecar (accepts client and gateway), client sidecar."""
        self.srv = self.start(
            "server",
            envoy.server_sidecar_config(
                self.app_port,
                self.server,
                self.ca.cert_path,
                [self.client.spiffe, self.gateway.spiffe],
                True,
                self.tmp / "server.access.log",
            ),
        )
        self.mtls_port = self.srv.ports[envoy.INBOUND_MTLS]
        self.cli = self.start(
            "client",
            envoy.client_sidecar_config(
                self.mtls_port,
                self.client,
                self.ca.cert_path,
                self.server.spiffe,
                True,
                self.tmp / "client.access.log",
            ),
        )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = Mesh(tmp_path_factory.mktemp("mtls"))
    try:
        m.start_sidecars()
        yield m
    finally:
        m.close()


def _tls_request(port: int, ca: Path, cert: certs.CertFiles | None) -> bytes:
    """One HTTP request over TLS 1.3 to the mTLS listener; b"" when the server refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE certs carry a URI SAN, no DNS name
    ctx.load_verify_locations(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(
                    b"GET /echo HTTP/1.1\r\nHost: fortioserver\r\nConnection: close\r\n\r\n"
                )
                chunks = []
                while True:
                    data = tls.recv(65536)
                    if not data:
                        break
                    chunks.append(data)
                return b"".join(chunks)
    except (ssl.SSLError, ConnectionError):
        # TLS 1.3 reports a rejected client certificate after the client's handshake is done,
        # so the refusal shows up on the first read as an alert or a reset.
        return b""


def _ssl_stat(proxy: envoy.EnvoyProcess, name: str) -> int:
    stats = proxy.stats(f"{envoy.INBOUND_MTLS}.ssl")
    return stats.get(f"listener.{envoy.INBOUND_MTLS}.ssl.{name}", 0)


def test_client_sidecar_path_works_over_tls13(mesh: Mesh) -> None:
    before = _Echo.hits
    status, body = http_get(f"http://127.0.0.1:{mesh.cli.ports[envoy.OUTBOUND]}/echo?x=1")
    assert status == 200
    assert body == b"app saw /echo?x=1"
    assert _Echo.hits == before + 1
    assert _ssl_stat(mesh.srv, "versions.TLSv1.3") >= 1
    assert _ssl_stat(mesh.srv, "handshake") >= 1


def test_client_identity_with_right_ca_is_accepted(mesh: Mesh) -> None:
    # The positive control for the refusals below: same client code, a valid identity.
    reply = _tls_request(mesh.mtls_port, mesh.ca.cert_path, mesh.client)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
    assert reply.endswith(b"app saw /echo")


def test_plain_http_is_refused_on_mtls_listener(mesh: Mesh) -> None:
    before = _ssl_stat(mesh.srv, "connection_error")
    with socket.create_connection(("127.0.0.1", mesh.mtls_port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: fortioserver\r\n\r\n")
        try:
            reply = s.recv(65536)
        except ConnectionError:
            reply = b""
    assert not reply.startswith(b"HTTP/"), reply[:100]
    assert _ssl_stat(mesh.srv, "connection_error") > before


def test_missing_client_certificate_is_refused(mesh: Mesh) -> None:
    before = _ssl_stat(mesh.srv, "fail_verify_no_cert")
    assert _tls_request(mesh.mtls_port, mesh.ca.cert_path, None) == b""
    assert _ssl_stat(mesh.srv, "fail_verify_no_cert") == before + 1


def test_client_certificate_from_another_ca_is_refused(mesh: Mesh, tmp_path: Path) -> None:
    other_ca = certs.CertAuthority(tmp_path, name="other-ca")
    impostor = other_ca.issue(certs.CLIENT_SA)  # the right identity, the wrong issuer
    before = _ssl_stat(mesh.srv, "fail_verify_error")
    assert _tls_request(mesh.mtls_port, mesh.ca.cert_path, impostor) == b""
    assert _ssl_stat(mesh.srv, "fail_verify_error") == before + 1


def test_client_certificate_with_wrong_identity_is_refused(mesh: Mesh) -> None:
    before = _ssl_stat(mesh.srv, "fail_verify_san")
    assert _tls_request(mesh.mtls_port, mesh.ca.cert_path, mesh.intruder) == b""
    assert _ssl_stat(mesh.srv, "fail_verify_san") == before + 1


def test_gateway_identity_is_accepted(mesh: Mesh) -> None:
    reply = _tls_request(mesh.mtls_port, mesh.ca.cert_path, mesh.gateway)
    assert reply.startswith(b"HTTP/1.1 200"), reply[:100]


def test_client_sidecar_refuses_server_with_unpinned_identity(mesh: Mesh) -> None:
    # A server sidecar of the same CA but another identity: valid chain, wrong SAN.
    rogue_cert = mesh.ca.issue("rogue-server")
    rogue = mesh.start(
        "rogue",
        envoy.server_sidecar_config(
            mesh.app_port, rogue_cert, mesh.ca.cert_path, [mesh.client.spiffe], False, None
        ),
    )
    pinned = mesh.start(
        "pinned-client",
        envoy.client_sidecar_config(
            rogue.ports[envoy.INBOUND_MTLS],
            mesh.client,
            mesh.ca.cert_path,
            mesh.server.spiffe,
            True,
            None,
        ),
    )
    # Control: the same client config pinned to the rogue's identity does get through.
    trusting = mesh.start(
        "trusting-client",
        envoy.client_sidecar_config(
            rogue.ports[envoy.INBOUND_MTLS],
            mesh.client,
            mesh.ca.cert_path,
            rogue_cert.spiffe,
            True,
            None,
        ),
    )
    before = _Echo.hits
    status, _ = http_get(f"http://127.0.0.1:{trusting.ports[envoy.OUTBOUND]}/echo")
    assert status == 200
    status, body = http_get(f"http://127.0.0.1:{pinned.ports[envoy.OUTBOUND]}/echo")
    assert status == 503, body[:200]
    assert _Echo.hits == before + 1  # only the control's request reached the app
    stats = pinned.stats("ssl.fail_verify_san")
    assert sum(v for k, v in stats.items() if k.startswith("cluster.")) >= 1, stats
