"""fortio's gRPC load client (``fortio load -grpc [-ping] -s N host:port``).

As fortio v1.75.2's ``fgrpc/grpcrunner.go``: ``-c`` connections, each carrying ``-s`` streams
(fortio threads, ``NumThreads = c * s``; threads ``k*s .. k*s+s-1`` share connection ``k``);
each call is a health ``Check`` of ``-healthservice`` or, with ``-ping``, a ``PingMessage``
with ``-payload`` and ``-grpc-ping-delay``. RetCodes keys are the health status name
(``SERVING`` for every good Ping too) or ``ERROR`` for a failed call.

The wire is gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md): a POST stream with
``content-type: application/grpc`` and ``te: trailers``, the protobuf message behind gRPC's
5-byte length prefix, the status in the ``grpc-status`` trailer. HTTP/2 itself (framing,
flow control, stream multiplexing) is ``meshperf.h2wire``, as for ``-h2``, with HPACK decoding
by the ``hpack`` library: grpcio's asyncio client cost ~44% of a core at 1000 calls/s over 16
connections (its poller thread), the ``h2`` library's state machine ~32-36%
(BENCHMARKS.md). The messages are encoded by
protobuf (``meshperf.pingproto`` and grpcio-health-checking's ``health_pb2``), and the server
side is grpcio (``meshperf.echo_grpc``), so every test runs our client against a real gRPC
implementation.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from grpc_health.v1 import health_pb2

from meshperf import h2wire
from meshperf.clock import now_ns as _now
from meshperf.goduration import SECOND
from meshperf.loadgen.conn import abort, connect_error, dial
from meshperf.loadgen.options import USER_AGENT
from meshperf.loadgen.periodic import Caller
from meshperf.pingproto import HEALTH_CHECK_METHOD, PING_METHOD, PingMessage

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker

ERROR = "ERROR"  # fgrpc.Error
SERVING = "SERVING"
_STATUS_NAME = health_pb2.HealthCheckResponse.ServingStatus.Name


def frame(message: bytes) -> bytes:
    """gRPC's Length-Prefixed-Message: uncompressed flag, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


class GrpcConnection(asyncio.Protocol):
    """One HTTP/2 connection, shared by the ``-s`` threads (streams) of one fortio connection."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.transport: asyncio.Transport | None = None
        self.conn: h2wire.Connection | None = None
        self.now = 0  # arrival time of the data being parsed
        self.connecting: asyncio.Future[Any] | None = None
        self.waiting: list[GrpcCaller] = []  # callers whose call waits for the connection
        self.streams: dict[int, GrpcCaller] = {}
        self.batching = False  # inside data_received: one write at the end
        o, t = w.o, w.target
        path = PING_METHOD if o.ping else HEALTH_CHECK_METHOD
        authority = t.host_header
        ua = USER_AGENT
        extra: list[tuple[bytes, bytes]] = []
        for h in o.headers:  # fortio: -H become metadata; Host and User-Agent dial options
            name, _, value = h.partition(":")
            key = name.strip().lower()
            if key == "host":
                authority = value.strip()
            elif key == "user-agent":
                ua = value.strip()
            else:
                extra.append((key.encode("latin-1"), value.strip().encode("latin-1")))
        self.block = h2wire.encode_headers(
            [
                (b":method", b"POST"),
                (b":scheme", b"https" if w.tls is not None else b"http"),
                (b":path", path.encode()),
                (b":authority", authority.encode("latin-1")),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", ua.encode("latin-1")),
                *extra,
            ]
        )

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn = h2wire.Connection(self, client=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conn = None
        self._fail_all(f"connection lost: {exc or 'closed by peer'}")

    def data_received(self, data: bytes) -> None:
        self.now = _now()
        conn = self.conn
        if conn is None:
            return
        # Calls that start while this read is parsed go out in one write at the end, with
        # any window updates (one syscall per read instead of one per call).
        self.batching = True
        try:
            conn.receive(data)
        except h2wire.H2ProtocolError as e:
            self.batching = False
            self._flush()
            self._fail_all(f"bad HTTP/2: {e}")
            self.close()
            return
        finally:
            self.batching = False
        self._flush()

    # -- h2wire.Handler
    def h2_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        caller = self.streams.get(sid)
        if caller is None:
            return
        for k, v in headers:
            if k == b"grpc-status":
                caller.status = int(v)
            elif k == b"grpc-message":
                caller.message = unquote(v.decode("latin-1"))
            elif k == b":status":
                caller.http_status = int(v)
        if end:
            del self.streams[sid]
            caller.ended(self.now)

    def h2_data(self, sid: int, data: bytes, end: bool) -> None:
        caller = self.streams.get(sid)
        if caller is None:
            return
        caller.body += data
        if end:
            del self.streams[sid]
            caller.ended(self.now)

    def h2_reset(self, sid: int, code: int) -> None:
        caller = self.streams.pop(sid, None)
        if caller is not None:
            caller.reset = True
            caller.ended(self.now)

    def h2_goaway(self, code: int, last_sid: int) -> None:
        # Calls on streams the server will not process fail; the rest complete, and the
        # next call opens a new connection.
        late = [c for sid, c in self.streams.items() if sid > last_sid]
        for c in late:
            del self.streams[c.stream]
            c.fail(self.now, f"GOAWAY {h2wire.error_name(code)}")

    # -- calls
    def call(self, caller: GrpcCaller) -> None:
        conn = self.conn
        if conn is not None and conn.closed and not self.streams:
            self.close()  # drained after GOAWAY: a new connection for this call
            conn = None
        if conn is None:
            self.waiting.append(caller)
            if self.connecting is None:
                self.connecting = asyncio.ensure_future(self._connect())
            return
        sid = conn.new_stream()
        if not sid:
            why = "GOAWAY received" if conn.closed else "no stream available"
            caller.fail(_now(), f"HTTP/2: {why}")
            return
        conn.send_headers(sid, self.block, end=False)
        conn.send_data(sid, caller.message_bytes, end=True)
        caller.stream = sid
        self.streams[sid] = caller
        if not self.batching:
            self._flush()

    def forget(self, caller: GrpcCaller) -> None:
        """A call abandoned (stop, timeout): reset its stream, keep the connection."""
        if caller in self.waiting:
            self.waiting.remove(caller)
        if self.streams.get(caller.stream) is caller:
            del self.streams[caller.stream]
            if self.conn is not None:
                self.conn.reset(caller.stream)
                if not self.batching:
                    self._flush()

    async def _connect(self) -> None:
        w = self.w
        try:
            await dial(w, self)
        except asyncio.CancelledError:
            return
        except (OSError, ssl.SSLError) as e:
            self.connecting = None
            self._fail_all(connect_error(e))
            return
        self.connecting = None
        if self.waiting:
            owner = self.waiting[0]
            owner.sockets += 1
            w.stats.connect.record((_now() - owner.t0) / SECOND)
        waiting, self.waiting = self.waiting, []
        for c in waiting:
            if c.t0:
                self.call(c)

    def _flush(self) -> None:
        conn, t = self.conn, self.transport
        if conn is not None and t is not None and conn.out:
            t.write(conn.take())

    def _fail_all(self, why: str) -> None:
        now = _now()
        callers = [*self.waiting, *self.streams.values()]
        self.waiting, self.streams = [], {}
        for c in callers:
            c.fail(now, why)

    def close(self) -> None:
        t, c = self.transport, self.connecting
        self.transport = self.conn = self.connecting = None
        abort(t, c)


class GrpcCaller(Caller):
    """One fortio gRPC thread: unary calls, one at a time, on its connection's streams."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        o = w.o
        conns: dict[int, GrpcConnection] = w.__dict__.setdefault("grpc_connections", {})
        key = tid // o.streams
        if key not in conns:
            conns[key] = GrpcConnection(w)
        self.connection = conns[key]
        if o.ping:
            msg: Any = PingMessage(
                payload=o.text_payload(), delayNanos=o.grpc_ping_delay_ns, seq=tid
            )
        else:
            msg = health_pb2.HealthCheckRequest(service=o.health_service)
        self.message_bytes = frame(msg.SerializeToString())
        self.stream = 0
        self._reset_call()

    def _reset_call(self) -> None:
        self.body = bytearray()
        self.status = -1
        self.message = ""
        self.http_status = 0
        self.reset = False

    def send(self) -> None:
        self.t0 = _now()
        self._reset_call()
        self.connection.call(self)

    def ended(self, now: int) -> None:
        """The stream ended: a status, and for status 0 one message."""
        if not self.t0:
            return
        if self.reset:
            self.fail(now, "stream reset by the server")
            return
        if self.status != 0:
            if self.status < 0:
                why = f"no grpc-status (HTTP {self.http_status})"
            else:
                why = f"grpc-status {self.status}: {self.message}"
            self.fail(now, why)
            return
        code = SERVING
        if not self.w.o.ping:
            body = bytes(self.body)
            if len(body) < 5 or body[0] != 0:
                self.fail(now, "bad gRPC message")
                return
            try:
                res = health_pb2.HealthCheckResponse.FromString(body[5:])
            except Exception as e:  # protobuf's DecodeError; any bad reply is one error
                self.fail(now, f"bad HealthCheckResponse: {e}")
                return
            code = _STATUS_NAME(res.status)
        t0 = self.t0
        self.t0 = 0
        if self.warmup is not None:
            self.warmup.set_result((0, "" if code == SERVING else code))
            return
        self.w.record_named(now - t0, code, code == SERVING)
        self.next_call(now)

    def fail(self, now: int, why: str) -> None:
        self._failed(now, why)

    def _record_failure(self, ns: int, why: str) -> None:
        self.w.record_named(ns, ERROR, False)

    def _drop(self) -> None:
        self.connection.forget(self)


async def close_channels(w: Worker) -> None:
    for c in w.__dict__.pop("grpc_connections", {}).values():
        c.close()
