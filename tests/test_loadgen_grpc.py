"""gRPC (fortio ``load -grpc [-ping]`` and ``server -grpc-port``): fgrpc.PingServer/Ping and
the standard health service, on grpcio, in fortio's result format."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshperf.fortioresult import error_count
from meshperf.pingproto import PING_METHOD, PingMessage
from protoserver import ProtoServer, load, load_fails
from tlsfiles import server_tls_files

# fgrpc.GRPCRunnerResults in Go's field order (fortio v1.75.2), plus our send-lag histogram.
GRPC_KEYS = [
    "RunType", "Labels", "StartTime", "RequestedQPS", "RequestedDuration", "ActualQPS",
    "ActualDuration", "NumThreads", "Version", "DurationHistogram", "ErrorsDurationHistogram",
    "Exactly", "Jitter", "Uniform", "NoCatchUp", "RunID", "AccessLoggerInfo", "ID",
    "RetCodes", "Destination", "Streams", "Ping", "Metadata", "SendLagHistogram",
]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ProtoServer]:
    with ProtoServer(grpc=True) as s:
        yield s


def dest(server: ProtoServer) -> str:
    return f"127.0.0.1:{server.ports['grpc']}"


def test_ping_server_answers_a_copy_with_its_time(server: ProtoServer) -> None:
    """What a fortio client sees: the request back, ts set to the server's Unix ns."""
    with grpc.insecure_channel(dest(server)) as ch:
        ping = ch.unary_unary(
            PING_METHOD,
            request_serializer=PingMessage.SerializeToString,
            response_deserializer=PingMessage.FromString,
        )
        before = time.time_ns()
        out = ping(PingMessage(seq=7, ts=1, payload="hello", delayNanos=20_000_000), timeout=5)
        after = time.time_ns()
    assert (out.seq, out.payload, out.delayNanos) == (7, "hello", 20_000_000)
    assert before <= out.ts <= after
    assert after - before >= 20_000_000  # the delay was slept


def test_health_service_statuses(server: ProtoServer) -> None:
    with grpc.insecure_channel(dest(server)) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        status = health_pb2.HealthCheckResponse
        assert stub.Check(health_pb2.HealthCheckRequest(service="ping")).status == status.SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == status.SERVING
        down = stub.Check(health_pb2.HealthCheckRequest(service="ping_down"))
        assert down.status == status.NOT_SERVING
        with pytest.raises(grpc.RpcError) as e:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"))
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_ping_load_streams_share_connections(server: ProtoServer) -> None:
    res, _ = load(
        "-grpc", "-ping", "-s", "2", "-c", "2", "-qps", "400", "-n", "200", "-uniform",
        "-payload", "abc", dest(server),
    )  # fmt: skip
    assert list(res) == GRPC_KEYS
    assert res["RunType"] == "GRPC Ping PayloadLength=3"
    assert res["NumThreads"] == 4 and res["Streams"] == 2 and res["Ping"] is True
    assert res["RetCodes"] == {"SERVING": 200}
    assert res["DurationHistogram"]["Count"] == 200
    assert res["Metadata"]["user-agent"][0].startswith("fortio.org/fortio-")


def test_ping_delay_is_in_the_run_type_and_the_latency(server: ProtoServer) -> None:
    res, _ = load("-grpc", "-ping", "-grpc-ping-delay", "5ms", "-c", "1", "-n", "10", dest(server))
    assert res["RunType"] == "GRPC Ping Delay=5ms"
    assert res["DurationHistogram"]["Min"] >= 0.005


def test_health_load_counts_not_serving_as_errors(server: ProtoServer) -> None:
    res, _ = load("-grpc", "-healthservice", "ping_down", "-c", "1", "-n", "4", dest(server))
    assert res["RunType"] == "GRPC Health for 'ping_down'"
    assert res["RetCodes"] == {"NOT_SERVING": 4}
    assert res["ErrorsDurationHistogram"]["Count"] == 4
    ok, _ = load("-grpc", "-c", "1", "-n", "3", dest(server))
    assert ok["RetCodes"] == {"SERVING": 3} and ok["ErrorsDurationHistogram"]["Count"] == 0


def test_grpc_to_a_port_with_no_server_fails_at_warmup_in_one_line() -> None:
    p = load_fails("-grpc", "-ping", "-c", "1", "-t", "1s", "127.0.0.1:1")
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "warmup call failed" in lines[0], p.stderr


def test_error_counts_follow_the_one_rule_for_fortio_results(server: ProtoServer) -> None:
    """Without ErrorsDurationHistogram, meshperf's reader judges RetCodes as fortio does:
    it must find the same errors our generator counted."""
    res, _ = load("-grpc", "-healthservice", "ping_down", "-c", "1", "-n", "3", dest(server))
    bare = {k: v for k, v in res.items() if k != "ErrorsDurationHistogram"}
    assert error_count(bare) == res["ErrorsDurationHistogram"]["Count"] == 3
    ok, _ = load("-grpc", "-ping", "-c", "1", "-n", "3", dest(server))
    assert error_count({k: v for k, v in ok.items() if k != "ErrorsDurationHistogram"}) == 0


def test_ping_over_tls_with_cacert(tmp_path: Path) -> None:
    """fortio dials TLS when -cacert is given (fgrpc.Dial); here against grpcio over TLS."""
    crt, key, ca = server_tls_files(tmp_path)
    srv = grpc.server(ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "fgrpc.PingServer",
        {
            "Ping": grpc.unary_unary_rpc_method_handler(
                lambda req, ctx: req,
                request_deserializer=PingMessage.FromString,
                response_serializer=PingMessage.SerializeToString,
            )
        },
    )
    srv.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials([(key.read_bytes(), crt.read_bytes())])
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    try:
        res, _ = load(
            "-grpc", "-ping", "-cacert", str(ca), "-c", "1", "-n", "4", f"127.0.0.1:{port}"
        )
        assert res["RetCodes"] == {"SERVING": 4}
        plain = load_fails("-grpc", "-ping", "-c", "1", "-t", "1s", f"127.0.0.1:{port}")
        assert "warmup call failed" in plain.stderr
    finally:
        srv.stop(0)


def test_payload_size_becomes_a_valid_utf8_ping_payload(server: ProtoServer) -> None:
    """fortio's PayloadUTF8: random bytes made valid UTF-8 of the same length, sent and echoed."""
    res, _ = load("-grpc", "-ping", "-payload-size", "1000", "-c", "1", "-n", "3", dest(server))
    assert res["RunType"] == "GRPC Ping PayloadLength=1000"
    assert res["RetCodes"] == {"SERVING": 3}
