"""The echo server's HTTP/2 side: h2c with prior knowledge on the HTTP port, as fortio's
server answers ``fortio load -h2 http://...`` (fhttp/http_server.go: HTTP/1.1, HTTP/2 and
unencrypted HTTP/2 on one listener). The echo semantics are ``echo.echo_reply``'s.

The HTTP/2 framing, HPACK and flow control are the ``h2`` library's; this module only maps
its events to echo replies, each stream answered on its own (delays included) so streams of a
connection multiplex as they do against Go's server.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error

from meshperf.clock import now_ns as _now
from meshperf.echo import _DATE, echo_reply  # echo imports this module only when h2 is spoken

if TYPE_CHECKING:
    from meshperf.clock import Scheduler
    from meshperf.echo import EchoConfig

MAX_BODY_BYTES = 16 * 1024 * 1024


class H2Echo(asyncio.Protocol):
    """One HTTP/2 connection of the echo server."""

    def __init__(self, cfg: EchoConfig, sched: Scheduler) -> None:
        self.cfg = cfg
        self.sched = sched
        self.conn = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                # Our own headers are valid by construction, and a benchmark peer's are not
                # ours to police: skipping h2's per-header checks cuts the cost of each call.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            )
        )
        self.transport: asyncio.Transport | None = None
        # stream id -> [path, content type, body, arrival ns]
        self.streams: dict[int, list[object]] = {}
        self.pending: dict[int, bytes] = {}  # replies waiting for flow-control window

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.streams.clear()
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        now = _now()
        try:
            events = self.conn.receive_data(data)
        except H2Error:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, RequestReceived):
                path = b"/"
                ctype = b""
                for k, v in ev.headers or ():
                    if k == b":path":
                        path = v
                    elif k == b"content-type":
                        ctype = v
                self.streams[ev.stream_id] = [path, ctype, bytearray(), now]
            elif isinstance(ev, DataReceived):
                st = self.streams.get(ev.stream_id)
                if st is not None and ev.data is not None:
                    body = st[2]
                    assert isinstance(body, bytearray)
                    body += ev.data
                    if len(body) > MAX_BODY_BYTES:
                        self.conn.reset_stream(ev.stream_id)
                        self.streams.pop(ev.stream_id, None)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, StreamEnded):
                self._answer(ev.stream_id)
            elif isinstance(ev, StreamReset):
                self.streams.pop(ev.stream_id, None)
                self.pending.pop(ev.stream_id, None)
            elif isinstance(ev, WindowUpdated):
                self._send_pending()
            elif isinstance(ev, ConnectionTerminated):
                self._flush()
                if self.transport is not None:
                    self.transport.close()
                return
        self._flush()

    def _answer(self, sid: int) -> None:
        st = self.streams.pop(sid, None)
        if st is None:
            return
        path, ctype, body, arrived = st
        assert isinstance(path, bytes) and isinstance(ctype, bytes)
        assert isinstance(body, bytearray) and isinstance(arrived, int)
        delay, status, ctype, payload = echo_reply(self.cfg, path, bytes(body), ctype)
        headers = [(b":status", b"%d" % status), (b"date", _DATE.get()[6:-2])]
        if ctype:
            headers.append((b"content-type", ctype))
        headers.append((b"content-length", b"%d" % len(payload)))
        if delay > 0:
            self.sched.call_at(arrived + delay, self._reply, (sid, headers, payload))
        else:
            self._reply(0, (sid, headers, payload))

    def _reply(self, _due: int, reply: tuple[int, list[tuple[bytes, bytes]], bytes]) -> None:
        sid, headers, payload = reply
        if self.transport is None:
            return
        try:
            self.conn.send_headers(sid, headers, end_stream=not payload)
        except H2Error:
            return  # the stream was reset meanwhile
        if payload:
            self.pending[sid] = payload
            self._send_pending()
        self._flush()

    def _send_pending(self) -> None:
        conn = self.conn
        for sid in list(self.pending):
            data = self.pending[sid]
            try:
                while data:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if room <= 0:
                        break
                    chunk, data = data[:room], data[room:]
                    conn.send_data(sid, chunk, end_stream=not data)
            except H2Error:
                data = b""
            if data:
                self.pending[sid] = data
            else:
                del self.pending[sid]

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None:
            self.transport.write(out)
