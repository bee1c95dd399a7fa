"""fortio's gRPC load client (``fortio load -grpc [-ping] -s N host:port``) on grpcio.

As fortio v1.75.2's ``fgrpc/grpcrunner.go``: ``-c`` connections, each carrying ``-s`` streams
(fortio threads, ``NumThreads = c * s``, threads ``k*s .. k*s+s-1`` share connection ``k``);
each call is a health ``Check`` of ``-healthservice`` or, with ``-ping``, a ``PingMessage``
with ``-payload`` and ``-grpc-ping-delay``. RetCodes keys are the health status name
(``SERVING`` for every good Ping too) or ``ERROR`` for a failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2

from meshperf.clock import now_ns as _now
from meshperf.goduration import SECOND
from meshperf.loadgen.periodic import Caller
from meshperf.pingproto import HEALTH_CHECK_METHOD, PING_METHOD, PingMessage

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker

ERROR = "ERROR"  # fgrpc.Error
SERVING = "SERVING"


def _channel(w: Worker) -> grpc.aio.Channel:
    """One HTTP/2 connection: grpcio shares subchannels between equal channels unless told not
    to, so each gets a distinct local-subchannel-pool (as fortio dials one ClientConn each)."""
    o, t = w.o, w.target
    host = f"[{w.addr[0]}]" if ":" in w.addr[0] else w.addr[0]
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    for h in o.headers:
        name, _, value = h.partition(":")
        if name.strip().lower() == "user-agent":
            options.append(("grpc.primary_user_agent", value.strip()))
        elif name.strip().lower() == "host":
            options.append(("grpc.default_authority", value.strip()))
    if t.tls:
        roots = Path(o.cacert).read_bytes() if o.cacert else None
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
        options.append(("grpc.ssl_target_name_override", t.host))
        return grpc.aio.secure_channel(f"{host}:{w.addr[1]}", creds, options=options)
    return grpc.aio.insecure_channel(f"{host}:{w.addr[1]}", options=options)


class GrpcCaller(Caller):
    """One fortio gRPC thread: unary calls on its connection's channel."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        o = w.o
        self.task: asyncio.Task[None] | None = None
        self.metadata = tuple(
            (name.strip().lower(), value.strip())
            for name, _, value in (h.partition(":") for h in o.headers)
            if name.strip().lower() not in ("user-agent", "host")
        )
        if o.ping:
            self.request: Any = PingMessage(
                payload=o.payload, delayNanos=o.grpc_ping_delay_ns, seq=tid
            )
        else:
            self.request = health_pb2.HealthCheckRequest(service=o.health_service)
        self.method: Any = None

    def _stub(self) -> Any:
        w = self.w
        channels: dict[int, grpc.aio.Channel] = w.__dict__.setdefault("grpc_channels", {})
        key = self.tid // w.o.streams
        ch = channels.get(key)
        if ch is None:
            ch = channels[key] = _channel(w)
            self.sockets += 1  # this thread opened the connection its stream-mates share
        if w.o.ping:
            return ch.unary_unary(
                PING_METHOD,
                request_serializer=PingMessage.SerializeToString,
                response_deserializer=PingMessage.FromString,
            )
        return ch.unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )

    def send(self) -> None:
        if self.method is None:
            self.method = self._stub()
        self.t0 = _now()
        self.task = asyncio.ensure_future(self._call(self.t0))

    async def _call(self, t0: int) -> None:
        try:
            res = await self.method(
                self.request,
                metadata=self.metadata or None,
                timeout=self.w.o.timeout_ns / SECOND,
            )
        except asyncio.CancelledError:
            return
        except grpc.aio.AioRpcError as e:
            self._failed(_now(), f"{e.code().name}: {e.details()}")
            return
        now = _now()
        if self.t0 != t0:
            return
        self.t0 = 0
        self.task = None
        code = SERVING
        if not self.w.o.ping:
            code = health_pb2.HealthCheckResponse.ServingStatus.Name(res.status)
        if self.warmup is not None:
            self.warmup.set_result((0, "" if code == SERVING else code))
            return
        self.w.record_named(now - t0, code, code == SERVING)
        self.next_call(now)

    def _failed(self, now: int, why: str) -> None:
        t0 = self.t0
        self.t0 = 0
        self._drop()
        if self.warmup is not None:
            if not self.warmup.done():
                self.warmup.set_result((-1, why))
            return
        if t0:
            self.w.record_named(now - t0, ERROR, False)
            self.w.note_error(why)
        self.next_call(now)

    def _drop(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()


async def close_channels(w: Worker) -> None:
    for ch in w.__dict__.pop("grpc_channels", {}).values():
        with contextlib.suppress(Exception):
            await ch.close()
