"""The HTTP/2 client of the generator (``fortio load -h2``): h2c with prior knowledge against
http://, ALPN ``h2`` against https://. One connection per fortio thread, as fortio's ``-h2``
(a std client per thread) opens; each call is a new stream on it.

The framing, HPACK and flow control are the ``h2`` library's. Latency runs from just before
the request's HEADERS are written to the response's END_STREAM.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error

from meshperf.clock import now_ns as _now
from meshperf.loadgen.conn import ConnCaller, http_warmup
from meshperf.loadgen.options import USER_AGENT

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker


def request_headers(w: Worker) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The HEADERS of every request and its body (``-payload``/``-payload-size``: POST)."""
    o, t = w.o, w.target
    body = o.body()
    names = {h.partition(":")[0].strip().lower() for h in o.headers}
    authority = t.host_header
    extra: list[tuple[bytes, bytes]] = []
    for h in o.headers:
        name, _, value = h.partition(":")
        key = name.strip().lower().encode("latin-1")
        if key == b"host":
            authority = value.strip()
        else:
            extra.append((key, value.strip().encode("latin-1")))
    headers = [
        (b":method", b"POST" if body else b"GET"),
        (b":scheme", t.scheme.encode()),
        (b":authority", authority.encode("latin-1")),
        (b":path", t.request_target.encode("latin-1")),
    ]
    if "user-agent" not in names:
        headers.append((b"user-agent", USER_AGENT.encode()))
    headers += extra
    if body:
        if "content-type" not in names:
            headers.append((b"content-type", b"application/octet-stream"))
        headers.append((b"content-length", b"%d" % len(body)))
    return headers, body


def client_connection() -> H2Connection:
    """A client HTTP/2 connection, its preface queued (shared with the gRPC client)."""
    conn = H2Connection(
        H2Configuration(
            client_side=True,
            header_encoding=None,
            # Our own headers are valid by construction, and a benchmark peer's are not
            # ours to police: skipping h2's per-header checks cuts the cost of each call.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
    )
    conn.initiate_connection()
    return conn


class H2Caller(ConnCaller):
    """One fortio thread on its own HTTP/2 connection."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        self.headers, self.body = request_headers(w)
        self.conn: H2Connection | None = None
        self.stream = 0
        self.code = 0
        self.size = 0

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn = client_connection()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conn = None
        if self.t0:
            self._failed(_now(), f"connection lost: {exc or 'closed by peer'}")

    def data_received(self, data: bytes) -> None:
        now = _now()
        conn = self.conn
        if conn is None:
            return
        try:
            events = conn.receive_data(data)
        except H2Error as e:
            self._failed(now, f"bad HTTP/2 response: {e}")
            return
        done = False
        for ev in events:
            if isinstance(ev, ResponseReceived) and ev.stream_id == self.stream:
                for k, v in ev.headers or ():
                    if k == b":status":
                        self.code = int(v)
            elif isinstance(ev, DataReceived):
                if ev.stream_id == self.stream and ev.data is not None:
                    self.size += len(ev.data)
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, StreamEnded) and ev.stream_id == self.stream:
                done = True
            elif isinstance(ev, StreamReset) and ev.stream_id == self.stream:
                self._flush()
                self._failed(now, f"stream reset: {ev.error_code!r}")
                return
            elif isinstance(ev, ConnectionTerminated):
                self._failed(now, f"GOAWAY: {ev.error_code!r}")
                return
        if done and self.t0:
            # The next call (if due now) leaves in the same write as the window updates.
            self._complete(now)
        self._flush()

    def _complete(self, now: int) -> None:
        code, size = self.code, self.size
        t0 = self.t0
        self.t0 = 0
        self.stream = 0
        if self.warmup is not None:
            self.warmup.set_result(http_warmup(code))
            return
        self.w.record(now - t0, code, size, 0)
        self.next_call(now)

    def _flush(self) -> None:
        if self.conn is not None and self.transport is not None:
            out = self.conn.data_to_send()
            if out:
                self.transport.write(out)

    # -- calls
    def send(self) -> None:
        self.t0 = _now()
        if self.transport is not None and not self.transport.is_closing():
            self._request()
            return
        self._drop()
        self.start_connect()

    def _request(self) -> None:
        conn = self.conn
        assert conn is not None
        self.code = self.size = 0
        try:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, self.headers, end_stream=not self.body)
            if self.body:
                # Bodies above the peer's window would wait for WINDOW_UPDATE; -payload-size
                # is capped at 256 KiB and servers open their window wide, so send at once.
                conn.send_data(sid, self.body, end_stream=True)
        except H2Error as e:
            self._failed(_now(), f"HTTP/2: {e}")
            return
        self.stream = sid
        self._flush()

    def _connected(self) -> None:
        self._request()

    def _reset(self) -> None:
        self.stream = 0

    def _drop(self) -> None:
        self.conn = None
        super()._drop()
