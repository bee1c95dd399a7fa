"""HTTP/2 cleartext (fortio ``load -h2`` against http://): our client and server, each checked
against nghttp2's h2load, a C implementation, on the same port as HTTP/1.1."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshperf.clock import Scheduler
from meshperf.echo import EchoConfig
from meshperf.echo_h2 import H2Echo
from protoserver import ProtoServer, load, load_fails
from tlsfiles import server_tls_files


@pytest.fixture(scope="module")
def server() -> Iterator[ProtoServer]:
    with ProtoServer() as s:
        yield s


def h2load() -> str:
    path = shutil.which("h2load")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("h2load missing under CI (scripts/bootstrap.sh --system-deps installs it)")
        pytest.skip("h2load (Debian nghttp2-client) not installed")
    return path


def test_h2load_gets_echo_replies_over_h2c(server: ProtoServer) -> None:
    """A real HTTP/2 client (prior knowledge, 4 connections x 8 concurrent streams)."""
    p = subprocess.run(
        [h2load(), "-n", "400", "-c", "4", "-m", "8", server.url("/echo?size=1000")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    m = re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded, 0 failed", p.stdout)
    assert m, p.stdout
    assert re.search(r"status codes: 400 2xx", p.stdout), p.stdout
    # 1000 bytes of body per reply reached the client.
    data = re.search(r"\((\d+)\) data", p.stdout)
    assert data and int(data.group(1)) == 400 * 1000, p.stdout


def test_h2load_status_and_delay_follow_the_echo_rules(server: ProtoServer) -> None:
    p = subprocess.run(
        [h2load(), "-n", "20", "-c", "1", "-m", "20", server.url("/?status=503&delay=50ms")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert re.search(r"status codes: 0 2xx, 0 3xx, 0 4xx, 20 5xx", p.stdout), p.stdout
    # 20 streams multiplexed on one connection, each delayed 50 ms: together, not in series.
    total = re.search(r"finished in ([\d.]+)(m?s)", p.stdout)
    assert total, p.stdout
    seconds = float(total.group(1)) / (1000 if total.group(2) == "ms" else 1)
    assert 0.05 <= seconds < 0.05 * 20 / 2, p.stdout


def test_h2_client_counts_codes_on_one_connection_per_thread(server: ProtoServer) -> None:
    res, _ = load("-h2", "-c", "3", "-qps", "300", "-n", "150", "-uniform", server.url("/?size=64"))
    assert res["RunType"] == "HTTP" and res["H2"] is True
    assert res["RetCodes"] == {"200": 150}
    assert res["Sockets"] == [1, 1, 1]
    assert res["Sizes"]["Min"] == res["Sizes"]["Max"] == 64  # body bytes of each reply


def test_h2_client_posts_a_payload_and_reads_it_back(server: ProtoServer) -> None:
    res, _ = load("-h2", "-c", "1", "-n", "5", "-payload-size", "300", server.url("/"))
    assert res["RetCodes"] == {"200": 5}
    assert res["Sizes"]["Min"] == 300 and res["Sizes"]["Max"] == 300


def test_h2_client_against_h1_only_server_fails() -> None:
    """A server that speaks HTTP/1.1 only answers the preface with garbage: errors, no 200."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.recv(65536)
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        p = load_fails("-h2", "-c", "1", "-t", "1s", f"http://127.0.0.1:{port}/")
        assert "warmup call failed" in p.stderr, p.stderr
    finally:
        srv.close()


@pytest.fixture
def h2_tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The echo server's HTTP/2 side behind TLS with ALPN h2, on its own loop in a thread."""
    crt, key, ca = server_tls_files(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    ctx.set_alpn_protocols(["h2"])
    loop = asyncio.new_event_loop()
    started: list[int] = []
    ready = threading.Event()

    async def main() -> asyncio.base_events.Server:
        sched = Scheduler(loop)
        srv = await loop.create_server(lambda: H2Echo(EchoConfig(), sched), "127.0.0.1", 0, ssl=ctx)
        started.append(srv.sockets[0].getsockname()[1])
        ready.set()
        return srv

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield started[0], ca
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)


def test_h2_over_tls_negotiates_h2_by_alpn(h2_tls_server: tuple[int, Path]) -> None:
    port, ca = h2_tls_server
    url = f"https://127.0.0.1:{port}/?size=50"
    res, _ = load("-h2", "-cacert", str(ca), "-c", "2", "-n", "6", url)
    assert res["RetCodes"] == {"200": 6} and res["H2"] is True
    assert res["Sizes"]["Min"] == res["Sizes"]["Max"] == 50


def test_h2load_with_small_windows_gets_whole_bodies(server: ProtoServer, tmp_path: Path) -> None:
    """Flow control against a real peer, both ways: h2load's windows at 1023 bytes per stream
    and 65535 per connection (``-w 10 -W 16``) hold back the server's 100 kB replies, and a
    300 kB POST body (``-d``) is echoed back whole through the same small windows."""
    body = tmp_path / "body.bin"
    body.write_bytes(bytes(range(256)) * 1172)  # 300,032 bytes
    runs = [
        (["-n", "40", "-c", "2", "-m", "4"], "/echo?size=100000", 40 * 100_000),
        (["-n", "6", "-c", "1", "-m", "3", "-d", str(body)], "/echo", 6 * 300_032),
    ]
    for flags, path, want in runs:
        p = subprocess.run(
            [h2load(), "-w", "10", "-W", "16", *flags, server.url(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        n = flags[1]
        assert re.search(rf"requests: {n} total, {n} started, {n} done, {n} succeeded", p.stdout)
        data = re.search(r"\((\d+)\) data", p.stdout)
        assert data and int(data.group(1)) == want, p.stdout
