"""The echo server (``runner/loadgen.py server``): fortio's echo semantics over real sockets.

Each test talks to a real server process on an ephemeral loopback port with ``http.client``
(or a raw socket where the test is about the wire).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import EchoServer, start_echo_server
from meshperf import echo
from meshperf.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
LOADGEN = REPO / "runner" / "loadgen.py"


Server = EchoServer
start_server = start_echo_server


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = start_server("-max-echo-delay", "200ms")
    yield s
    s.stop()


def test_listens_on_loopback_only_by_default(server: Server) -> None:
    assert server.host == "127.0.0.1"
    assert echo.parse_listen("8080") == ("127.0.0.1", 8080)
    assert echo.parse_listen(":8080") == ("127.0.0.1", 8080)
    assert echo.parse_listen("[::1]:9") == ("::1", 9)
    assert echo.parse_listen("127.0.0.2:9") == ("127.0.0.2", 9)
    for other in ("0.0.0.0:9", "[::]:9", "10.1.2.3:9", "example.com:9"):
        with pytest.raises(ConfigError, match="only loopback"):
            echo.parse_listen(other)


def test_size_returns_that_many_bytes(server: Server) -> None:
    status, headers, body = server.get("/echo?size=1024")
    assert status == 200
    assert len(body) == 1024
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-length"] == "1024"
    # Clamped to [0, maxpayloadsizekb] like fortio.
    assert len(server.get("/?size=-5")[2]) == 0
    assert len(server.get("/?size=999999999")[2]) == 256 * 1024


def test_weighted_size_list(server: Server) -> None:
    c = server.conn()
    seen: Counter[int] = Counter()
    for _ in range(200):
        c.request("POST", "/any/path?size=10:50,20:30", body=b"xyz")
        seen[len(c.getresponse().read())] += 1
    c.close()
    assert set(seen) <= {10, 20, 3}  # 3 = the echoed body, the remaining 20%
    assert seen[10] > 40 and seen[20] > 20 and seen[3] > 5


def test_status_single_weighted_and_bad(server: Server) -> None:
    assert server.get("/?status=503")[0] == 503
    assert server.get("/?status=429:100")[0] == 429
    assert server.get("/?status=abc")[0] == 400
    assert server.get("/?status=503:60,404:50")[0] == 400  # sums over 100
    assert server.get("/?status=503:x")[0] == 400
    c = server.conn()
    codes: Counter[int] = Counter()
    for _ in range(300):
        c.request("GET", "/?status=503:20,404:10")
        r = c.getresponse()
        r.read()
        codes[r.status] += 1
    c.close()
    assert set(codes) <= {200, 503, 404}
    assert codes[200] > 150 and codes[503] > 25 and codes[404] > 8


def test_delay_and_its_cap(server: Server) -> None:
    t0 = time.perf_counter()
    assert server.get("/?delay=50ms")[0] == 200
    assert time.perf_counter() - t0 >= 0.05
    # The module's server caps delays at 200ms; an uncapped 30s delay would time out here.
    assert server.get("/?delay=30s", timeout=10)[0] == 200
    assert server.get("/?delay=30s:100", timeout=10)[0] == 200
    assert server.get("/?delay=bogus")[0] == 200


def test_body_echoed_with_content_type(server: Server) -> None:
    c = server.conn()
    body = bytes(range(256)) * 40
    c.request("POST", "/echo", body=body, headers={"Content-Type": "application/x-test"})
    r = c.getresponse()
    assert r.status == 200
    assert r.getheader("Content-Type") == "application/x-test"
    assert r.read() == body
    c.close()


def test_keep_alive_reuses_one_socket(server: Server) -> None:
    c = server.conn()
    c.request("GET", "/?size=5")
    c.getresponse().read()
    first = c.sock
    c.request("GET", "/?size=7")
    assert len(c.getresponse().read()) == 7
    assert c.sock is first
    c.close()


def test_pipelined_requests_answer_in_order(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(
            b"GET /?delay=30ms&size=3 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /?size=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while True:  # the second request asks the server to close: read to EOF
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    first, second = data.split(b"HTTP/1.1 200")[1:]
    assert b"Content-Length: 3" in first
    assert b"Content-Length: 5" in second


def test_malformed_request_gets_400_and_close(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 400")
        assert s.recv(4096) == b""  # closed


def test_workers_share_the_port_and_stop_cleanly() -> None:
    s = start_server("-workers", "2")
    try:
        kids = psutil.Process(s.proc.pid).children()
        assert len(kids) == 2
        for _ in range(20):
            assert s.get("/?size=3")[0] == 200
    finally:
        rc = s.stop()
    assert rc == 0
    for k in kids:
        assert not k.is_running() or k.status() == psutil.STATUS_ZOMBIE


def test_sigint_stops_single_process_server() -> None:
    s = start_server()
    assert s.get("/echo?size=3")[0] == 200  # serving before the signal
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(10) == 0
    assert s.proc.stderr is not None
    err = s.proc.stderr.read()
    assert b"Traceback" not in err and b"error" not in err.lower(), err
    # Stopped means the port is closed, not merely that the process said so.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((s.host, s.port), timeout=2).close()


def test_port_in_use_is_one_line_error(server: Server) -> None:
    p = subprocess.run(
        [sys.executable, str(LOADGEN), "server", "-http-port", f"127.0.0.1:{server.port}"],
        capture_output=True,
        timeout=20,
    )
    assert p.returncode != 0
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen: error:"), lines


def test_generators_unit() -> None:
    assert echo.generate_status("") == 400
    assert echo.generate_status("201") == 201
    assert echo.generate_status("5000") == 400
    assert echo.generate_size("12") == 12
    assert echo.generate_size("x") == -1
    assert echo.generate_size("12:100") == 12
    assert echo.generate_delay("1ms") == 1_000_000
    assert echo.generate_delay("10s") == echo.DEFAULT_MAX_DELAY_NS
    assert echo.generate_delay("2ms:100", max_ns=1_000_000) == 1_000_000


def test_head_gets_length_but_no_body(server: Server) -> None:
    c = server.conn()
    c.request("HEAD", "/?size=100")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "100"
    assert r.read() == b""
    c.request("GET", "/?size=4")  # the connection is still in sync
    assert len(c.getresponse().read()) == 4
    c.close()


def test_expect_100_continue(server: Server) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        data = b""
        while not data.endswith(b"hello"):
            chunk = s.recv(4096)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
