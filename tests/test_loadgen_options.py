"""Load options (fortio's -keepalive, -connection-reuse, -cacert with https://), the bounds of
-c and -workers, the echo server's framing rules, and bad input: one line, nothing started."""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from protoserver import ProtoServer, env, load, load_fails, module_argv
from tlsfiles import server_tls_files


@pytest.fixture(scope="module")
def server() -> Iterator[ProtoServer]:
    with ProtoServer() as s:
        yield s


def raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" not in out:
                return out


# ------------------------------------------------------------------ echo framing (RFC 9112 6.3)


def test_conflicting_content_lengths_get_400(server: ProtoServer) -> None:
    port = server.ports["http"]
    req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
    assert raw(port, req).startswith(b"HTTP/1.1 400 ")
    listed = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 5\r\n\r\nabcde"
    assert raw(port, listed).startswith(b"HTTP/1.1 400 ")
    both = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert raw(port, both).startswith(b"HTTP/1.1 400 ")
    signed = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc"
    assert raw(port, signed).startswith(b"HTTP/1.1 400 ")


def test_repeated_equal_content_length_is_one_length(server: ProtoServer) -> None:
    req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
    out = raw(server.ports["http"], req)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"\r\n\r\nabc"), out


# ------------------------------------------------------------------ keepalive, reuse, TLS


def test_keepalive_false_opens_a_connection_per_call(server: ProtoServer) -> None:
    res, _ = load("-keepalive=false", "-c", "2", "-n", "6", server.url("/?size=10"))
    assert res["DisableKeepAlive"] is True
    assert res["RetCodes"] == {"200": 6}
    assert res["Sockets"] == [3, 3] and res["SocketCount"] == 6


def test_connection_reuse_replaces_the_socket_after_max_calls(server: ProtoServer) -> None:
    res, _ = load("-connection-reuse", "3:3", "-c", "1", "-n", "10", server.url("/"))
    assert res["ConnReuseRange"] == [3, 3]
    assert res["RetCodes"] == {"200": 10}
    assert res["SocketCount"] == 4  # 3 + 3 + 3 + 1 calls
    unlimited, _ = load("-c", "1", "-n", "10", server.url("/"))
    assert unlimited["SocketCount"] == 1 and unlimited["ConnReuseRange"] == [0, 0]


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    crt, key, ca = server_tls_files(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], ca
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_with_cacert(https_server: tuple[int, Path]) -> None:
    port, ca = https_server
    url = f"https://127.0.0.1:{port}/"
    res, _ = load("-cacert", str(ca), "-c", "2", "-n", "6", url)
    assert res["RetCodes"] == {"200": 6} and res["CACert"] == str(ca)
    assert res["URL"] == url


def test_https_without_the_right_ca_fails_at_warmup(https_server: tuple[int, Path]) -> None:
    port, _ = https_server
    p = load_fails("-c", "1", "-t", "1s", f"https://127.0.0.1:{port}/")
    assert "warmup call failed" in p.stderr and "CERTIFICATE_VERIFY_FAILED" in p.stderr, p.stderr


# ------------------------------------------------------------------ bad input, before anything


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-H", "NoColonHere", "http://127.0.0.1:1/"], "has no ':'"),
        (["-connection-reuse", "5:2", "http://127.0.0.1:1/"], "MIN is larger than MAX"),
        (["-connection-reuse", "x", "http://127.0.0.1:1/"], "is not MIN:MAX"),
        (["-h2", "tcp://127.0.0.1:1"], "-h2 is HTTP"),
        (["-H", "a:b", "tcp://127.0.0.1:1"], "-H is HTTP"),
        (["-grpc", "tcp://127.0.0.1:1"], "-grpc with a tcp:// target"),
        (["-ping", "http://127.0.0.1:1/"], "-ping applies to -grpc"),
        (["-s", "4", "http://127.0.0.1:1/"], "-s applies to -grpc"),
        (["-grpc", "-h2", "127.0.0.1:1"], "gRPC always runs over HTTP/2"),
        (["-keepalive=false", "-h2", "http://127.0.0.1:1/"], "HTTP/1.1 only"),
        (["-connection-reuse", "2:3", "-grpc", "127.0.0.1:1"], "HTTP/1.1 only"),
        (["-cacert", "/etc/hostname", "https://127.0.0.1:1/"], "is not a PEM certificate"),
        (["-cacert", "/nonexistent.pem", "https://127.0.0.1:1/"], "No such file"),
        (["-cacert", "/etc/hostname", "http://127.0.0.1:1/"], "needs an https:// target"),
        (["-c", "99999999", "http://127.0.0.1:1/"], "above the bound"),
        (["-workers", "1000000", "http://127.0.0.1:1/"], "above the bound"),
        (["ftp://127.0.0.1:1/"], "unsupported URL scheme"),
        (["-grpc", "-c", "1000", "-s", "1000", "127.0.0.1:1"], "threads, above the bound"),
        (["-grpc", "-s", "1001", "127.0.0.1:1"], "-s must be in [1, 1000]"),
    ],
)
def test_bad_load_input_is_one_line(args: list[str], needle: str) -> None:
    p = load_fails(*args)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen: error: "), p.stderr
    assert needle in lines[0], p.stderr


def test_server_workers_bound_refused_before_any_fork() -> None:
    t0 = time.monotonic()
    p = subprocess.run(
        module_argv("server", "-http-port", "127.0.0.1:0", "-workers", "1000000"),
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
    )
    assert p.returncode == 2 and p.stdout == ""
    line = p.stderr.strip()
    assert "\n" not in line and "-workers 1000000 is above the bound of" in line, p.stderr
    assert time.monotonic() - t0 < 20


def test_server_bad_tcp_port_is_one_line() -> None:
    p = subprocess.run(
        module_argv("server", "-http-port", "127.0.0.1:0", "-tcp-port", "10.1.2.3:80"),
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
    )
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip() == (
        "loadgen: error: bad -tcp-port '10.1.2.3:80': only loopback addresses may be bound"
    )


def test_payload_text_is_posted_and_echoed(server: ProtoServer) -> None:
    res, _ = load("-payload", "hello", "-c", "1", "-n", "3", server.url("/"))
    assert res["RetCodes"] == {"200": 3}
    assert base64.b64decode(res["Payload"]) == b"hello"
    assert res["ContentType"] == "application/octet-stream"
    # The echo: the same bytes come back, so every reply is 5 body bytes larger than GET's.
    get, _ = load("-c", "1", "-n", "3", server.url("/"))
    assert res["Sizes"]["Min"] - get["Sizes"]["Min"] == len("hello") + len(
        "Content-Type: application/octet-stream\r\n"
    )
