"""The HTTP/2 client of the generator (``fortio load -h2``): h2c with prior knowledge against
http://, ALPN ``h2`` against https://. One connection per fortio thread, as fortio's ``-h2``
(a std client per thread) opens; each call is a new stream on it.

HTTP/2 itself is ``meshperf.h2wire`` (a lean connection; HPACK decoding is the ``hpack``
library's); the request's header block is encoded once. Latency runs from just before the
request's HEADERS are written to the response's END_STREAM.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from meshperf import h2wire
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


class H2Caller(ConnCaller):
    """One fortio thread on its own HTTP/2 connection."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        headers, self.body = request_headers(w)
        self.block = h2wire.encode_headers(headers)
        self.conn: h2wire.Connection | None = None
        self.stream = 0
        self.code = 0
        self.size = 0
        self.now = 0  # arrival time of the data being parsed

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn = h2wire.Connection(self, client=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conn = None
        if self.t0:
            self._failed(_now(), f"connection lost: {exc or 'closed by peer'}")

    def data_received(self, data: bytes) -> None:
        self.now = _now()
        conn = self.conn
        if conn is None:
            return
        try:
            conn.receive(data)
        except h2wire.H2ProtocolError as e:
            self._flush()
            self._failed(self.now, f"bad HTTP/2 response: {e}")
            return
        self._flush()

    # -- h2wire.Handler
    def h2_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if sid != self.stream:
            return
        for k, v in headers:
            if k == b":status":
                code = int(v)
                if code >= 200 or not self.code:
                    self.code = code
                break
        if end:
            self._complete(self.now)

    def h2_data(self, sid: int, data: bytes, end: bool) -> None:
        if sid != self.stream:
            return
        self.size += len(data)
        if end:
            self._complete(self.now)

    def h2_reset(self, sid: int, code: int) -> None:
        if sid == self.stream and self.t0:
            self._failed(self.now, f"stream reset: {h2wire.error_name(code)}")

    def h2_goaway(self, code: int, last_sid: int) -> None:
        if self.stream > last_sid and self.t0:
            self._failed(self.now, f"GOAWAY: {h2wire.error_name(code)}")

    def _complete(self, now: int) -> None:
        code, size = self.code, self.size
        t0 = self.t0
        self.t0 = 0
        self.stream = 0
        if not t0:
            return
        if self.warmup is not None:
            self.warmup.set_result(http_warmup(code))
            return
        self.w.record(now - t0, code, size, 0)
        # The next call (if due now) leaves in the same write as anything just queued.
        self.next_call(now)

    def _flush(self) -> None:
        conn, t = self.conn, self.transport
        if conn is not None and t is not None and conn.out:
            t.write(conn.take())

    # -- calls
    def send(self) -> None:
        self.t0 = _now()
        t = self.transport
        if t is not None and not t.is_closing() and self.conn is not None:
            if self._request():
                return
        self._drop()
        self.start_connect()

    def _request(self) -> bool:
        """Open a stream for the call; False when this connection can take no new stream
        (ids used up, GOAWAY): the caller reconnects."""
        conn = self.conn
        assert conn is not None
        self.code = self.size = 0
        sid = conn.new_stream()
        if not sid:
            return False
        body = self.body
        conn.send_headers(sid, self.block, end=not body)
        if body:
            # Bodies above the peer's window wait in the connection for WINDOW_UPDATE.
            conn.send_data(sid, body, end=True)
        self.stream = sid
        self._flush()
        return True

    def _connected(self) -> None:
        if not self._request():
            self._failed(_now(), "HTTP/2: the new connection refused a stream")

    def _reset(self) -> None:
        self.stream = 0  # the connection is dropped next (fortio's client does the same)

    def _drop(self) -> None:
        self.conn = None
        super()._drop()
