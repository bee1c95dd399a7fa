"""fortio's gRPC server side (``fortio server -grpc-port``): ``fgrpc.PingServer/Ping`` and the
standard health service, on grpcio.

As fortio v1.75.2's ``fgrpc/pingsrv.go``: Ping answers a copy of the request with ``ts`` set to
the server's wall clock (Unix ns) after sleeping ``delayNanos``; the health service reports
``SERVING`` for the health service name (default ``ping``) and for "" and ``NOT_SERVING`` for
``<name>_down``. One difference: the delay is capped by ``-max-echo-delay`` like the HTTP echo's
``delay=``, so a stray request cannot hold a server thread for hours.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshperf.errors import ConfigError
from meshperf.pingproto import SERVICE, PingMessage

if TYPE_CHECKING:
    from meshperf.echo import EchoConfig

# Server threads: a delayed Ping holds one for its delay (fortio sleeps in the handler too).
THREADS = 64


def start(host: str, port: int, cfg: EchoConfig) -> grpc.Server:
    """A started gRPC server on ``host:port`` (SO_REUSEPORT, so workers share the port)."""
    cap = cfg.max_delay_ns

    def ping(request: Any, context: grpc.ServicerContext) -> Any:
        out = PingMessage()
        out.CopyFrom(request)
        out.ts = time.time_ns()
        delay = min(request.delayNanos, cap)
        if delay > 0:
            time.sleep(delay / 1e9)
        return out

    server = grpc.server(
        ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="grpc-ping"),
        options=[("grpc.so_reuseport", 1)],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Ping": grpc.unary_unary_rpc_method_handler(
                ping,
                request_deserializer=PingMessage.FromString,
                response_serializer=PingMessage.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    servicer = health.HealthServicer()
    name = cfg.health_service
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    servicer.set(name + "_down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    shown = f"[{host}]" if ":" in host else host
    if server.add_insecure_port(f"{shown}:{port}") != port:
        raise ConfigError(f"cannot listen for gRPC on {shown}:{port}")
    server.start()
    return server
