"""The echo server's HTTP/2 side: h2c with prior knowledge on the HTTP port, as fortio's
server answers ``fortio load -h2 http://...`` (fhttp/http_server.go: HTTP/1.1, HTTP/2 and
unencrypted HTTP/2 on one listener). The echo semantics are ``echo.echo_reply``'s.

HTTP/2 itself is ``meshperf.h2wire`` (framing, flow control; HPACK decoding by the ``hpack``
library); this module only maps requests to echo replies, each stream answered on its own
(delays included) so streams of a connection multiplex as they do against Go's server.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from meshperf import h2wire
from meshperf.clock import now_ns as _now
from meshperf.echo import _DATE, echo_reply  # echo imports this module only when h2 is spoken

if TYPE_CHECKING:
    from meshperf.clock import Scheduler
    from meshperf.echo import EchoConfig

MAX_BODY_BYTES = 16 * 1024 * 1024

# Reply header blocks by (status, date, content type, length): the same few, call after call.
_BLOCKS: dict[tuple[int, bytes, bytes, int], bytes] = {}


def reply_block(status: int, ctype: bytes, length: int) -> bytes:
    date = _DATE.get()[6:-2]
    key = (status, date, ctype, length)
    block = _BLOCKS.get(key)
    if block is None:
        headers = [(b":status", b"%d" % status), (b"date", date)]
        if ctype:
            headers.append((b"content-type", ctype))
        headers.append((b"content-length", b"%d" % length))
        block = h2wire.encode_headers(headers)
        if len(_BLOCKS) > 512:
            _BLOCKS.clear()
        _BLOCKS[key] = block
    return block


class H2Echo(asyncio.Protocol):
    """One HTTP/2 connection of the echo server."""

    def __init__(self, cfg: EchoConfig, sched: Scheduler) -> None:
        self.cfg = cfg
        self.sched = sched
        self.conn = h2wire.Connection(self, client=False)
        self.transport: asyncio.Transport | None = None
        # stream id -> [path, content type, body, arrival ns]
        self.streams: dict[int, list[object]] = {}
        self.now = 0
        self.batching = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.streams.clear()

    def data_received(self, data: bytes) -> None:
        self.now = _now()
        self.batching = True
        try:
            self.conn.receive(data)
        except h2wire.H2ProtocolError:
            self.batching = False
            self._flush()  # the GOAWAY naming the error
            if self.transport is not None:
                self.transport.close()
            return
        finally:
            self.batching = False
        self._flush()

    # -- h2wire.Handler
    def h2_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        st = self.streams.get(sid)
        if st is None:
            path = b"/"
            ctype = b""
            for k, v in headers:
                if k == b":path":
                    path = v
                elif k == b"content-type":
                    ctype = v
            self.streams[sid] = [path, ctype, bytearray(), self.now]
        # else: trailers after the request body; nothing in them matters to the echo
        if end:
            self._answer(sid)

    def h2_data(self, sid: int, data: bytes, end: bool) -> None:
        st = self.streams.get(sid)
        if st is None:
            return
        body = st[2]
        assert isinstance(body, bytearray)
        body += data
        if len(body) > MAX_BODY_BYTES:
            self.streams.pop(sid, None)
            self.conn.reset(sid, h2wire.REFUSED_STREAM)
            return
        if end:
            self._answer(sid)

    def h2_reset(self, sid: int, code: int) -> None:
        self.streams.pop(sid, None)

    def h2_goaway(self, code: int, last_sid: int) -> None:
        pass  # the client is leaving; streams in flight still get their replies

    def _answer(self, sid: int) -> None:
        st = self.streams.pop(sid, None)
        if st is None:
            return
        path, ctype, body, arrived = st
        assert isinstance(path, bytes) and isinstance(ctype, bytes)
        assert isinstance(body, bytearray) and isinstance(arrived, int)
        delay, status, ctype, payload = echo_reply(self.cfg, path, bytes(body), ctype)
        reply = (sid, reply_block(status, ctype, len(payload)), payload)
        if delay > 0:
            self.sched.call_at(arrived + delay, self._reply, reply)
        else:
            self._reply(0, reply)

    def _reply(self, _due: int, reply: tuple[int, bytes, bytes]) -> None:
        sid, block, payload = reply
        conn = self.conn
        if self.transport is None or sid not in conn.windows:
            return  # gone, or the stream was reset meanwhile
        conn.send_headers(sid, block, end=not payload)
        if payload:
            conn.send_data(sid, payload, end=True)
        if not self.batching:
            self._flush()

    def _flush(self) -> None:
        conn, t = self.conn, self.transport
        if t is not None and conn.out:
            t.write(conn.take())
