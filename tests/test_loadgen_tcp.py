"""TCP echo (fortio ``load tcp://`` and ``server -tcp-port``): write, read back, time it."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator

import pytest

from protoserver import ProtoServer, load

# tcprunner.RunnerResults in Go's field order (fortio v1.75.2), plus our send-lag histogram.
TCP_KEYS = [
    "RunType", "Labels", "StartTime", "RequestedQPS", "RequestedDuration", "ActualQPS",
    "ActualDuration", "NumThreads", "Version", "DurationHistogram", "ErrorsDurationHistogram",
    "Exactly", "Jitter", "Uniform", "NoCatchUp", "RunID", "AccessLoggerInfo", "ID",
    "Destination", "Payload", "UnixDomainSocket", "ReqTimeout", "RetCodes", "SocketCount",
    "BytesSent", "BytesReceived", "SendLagHistogram",
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ProtoServer]:
    with ProtoServer(tcp=True) as s:
        yield s


def test_tcp_echo_server_echoes_every_byte(server: ProtoServer) -> None:
    with socket.create_connection(("127.0.0.1", server.ports["tcp"]), timeout=5) as s:
        data = bytes(range(256)) * 40
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        assert got == data


def test_tcp_load_counts_ok_round_trips_in_fortio_format(server: ProtoServer) -> None:
    url = f"tcp://127.0.0.1:{server.ports['tcp']}"
    res, _ = load("-c", "2", "-qps", "200", "-n", "100", "-uniform", url)
    assert list(res) == TCP_KEYS
    assert res["RunType"] == "TCP" and res["Destination"] == url
    n = res["DurationHistogram"]["Count"]
    assert n == 100 and res["RetCodes"] == {"OK": 100}
    assert res["ErrorsDurationHistogram"]["Count"] == 0
    assert res["SocketCount"] == 2 and res["NumThreads"] == 2
    # fortio's generated payload: 24 bytes per message (-n: no warmup call).
    assert res["BytesSent"] == res["BytesReceived"] == 24 * 100
    assert res["Payload"] is None


def test_tcp_payload_size_is_what_is_sent(server: ProtoServer) -> None:
    url = f"tcp://127.0.0.1:{server.ports['tcp']}"
    res, _ = load("-c", "1", "-n", "5", "-payload-size", "1000", url)
    assert res["RetCodes"] == {"OK": 5}
    assert len(base64.b64decode(res["Payload"])) == 1000
    assert res["BytesSent"] == res["BytesReceived"] == 5000  # -n: no warmup


def test_tcp_against_a_server_that_does_not_echo_counts_errors(server: ProtoServer) -> None:
    """An HTTP request sent to the HTTP port comes back as a response, not as itself."""
    url = f"tcp://127.0.0.1:{server.ports['http']}"
    request = "GET /?size=0 HTTP/1.1\r\nHost: x\r\n\r\n"
    res, p = load("-c", "1", "-n", "3", "-payload", request, url)
    assert "OK" not in res["RetCodes"], res["RetCodes"]
    assert sum(res["RetCodes"].values()) == 3
    assert set(res["RetCodes"]) <= {"read not echoing writes", "bug: long read", "short read"}
    assert res["ErrorsDurationHistogram"]["Count"] == 3


def test_workers_share_the_tcp_and_grpc_ports() -> None:
    """Port 0 with -workers 2: every worker listens on the one announced port of each kind."""
    with ProtoServer("-workers", "2", tcp=True, grpc=True) as s:
        tcp, _ = load("-c", "4", "-n", "40", f"tcp://127.0.0.1:{s.ports['tcp']}")
        assert tcp["RetCodes"] == {"OK": 40} and tcp["SocketCount"] == 4
        grpc, _ = load("-grpc", "-ping", "-c", "4", "-n", "40", f"127.0.0.1:{s.ports['grpc']}")
        assert grpc["RetCodes"] == {"SERVING": 40}
        http, _ = load("-c", "2", "-n", "10", s.url("/"))
        assert http["RetCodes"] == {"200": 10}
