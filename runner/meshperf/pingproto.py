"""fortio's gRPC ping service, ``fgrpc.PingServer/Ping``, as protobuf classes.

The message and service are fortio v1.75.2's ``fgrpc/ping.proto``:

    message PingMessage { int64 seq = 1; int64 ts = 2; string payload = 3; int64 delayNanos = 4; }
    service PingServer { rpc Ping (PingMessage) returns (PingMessage) {} }

built at import from that descriptor (no generated code, no protoc), so the bytes on the wire
are those of fortio's generated ``ping.pb.go``: a real fortio client or server can stand in for
either side. The health service is the standard ``grpc.health.v1.Health`` (grpcio-health-checking).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "fgrpc.PingServer"
PING_METHOD = f"/{SERVICE}/Ping"
HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
DEFAULT_HEALTH_SERVICE = "ping"  # fgrpc.DefaultHealthServiceName


def _build() -> Any:
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="fgrpc/ping.proto", package="fgrpc", syntax="proto3"
    )
    msg = fdp.message_type.add(name="PingMessage")
    for name, number, kind, json_name in (
        ("seq", 1, f.TYPE_INT64, "seq"),
        ("ts", 2, f.TYPE_INT64, "ts"),
        ("payload", 3, f.TYPE_STRING, "payload"),
        ("delayNanos", 4, f.TYPE_INT64, "delayNanos"),
    ):
        msg.field.add(
            name=name, number=number, type=kind, label=f.LABEL_OPTIONAL, json_name=json_name
        )
    svc = fdp.service.add(name="PingServer")
    svc.method.add(name="Ping", input_type=".fgrpc.PingMessage", output_type=".fgrpc.PingMessage")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("fgrpc.PingMessage"))


PingMessage: Any = _build()
