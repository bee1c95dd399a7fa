"""A lean HTTP/2 connection (RFC 9113) for the load generator and the echo server: framing,
SETTINGS, PING, flow control and stream bookkeeping, with HPACK (RFC 7541) decoding left to
the ``hpack`` library (python-hyper's, the one ``h2`` itself uses).

Why not ``h2``'s ``H2Connection``: its state machine and event objects cost 150-250 us of CPU
per request on each side (BENCHMARKS.md), several times the request itself at 1000 req/s; a
benchmark's traffic needs only a small, fixed part of HTTP/2, done here with a handful of
method calls per frame. What is not needed is refused, not half-done: server push is disabled
in our SETTINGS (a PUSH_PROMISE is a connection error), priorities are ignored (RFC 9113
section 5.3.2 deprecates them), and the connection never uses HPACK's dynamic table for what it
sends (every header is a literal "without indexing", so each request's or reply's header block
is a constant built once, and the peer's SETTINGS_HEADER_TABLE_SIZE cannot affect it).

Decoding keeps the peer's dynamic table in step (``hpack.Decoder``) and remembers the decoded
headers of a block that did not change the table: servers and proxies repeat the same block,
mostly indexed references, call after call, so steady-state decoding is a dictionary lookup.

Sans-IO: ``receive(data)`` parses frames and calls the owner's ``h2_*`` methods; everything to
send accumulates in ``out``, which the owner writes (``take()``) once per read or call.
"""

from __future__ import annotations

import struct
from typing import Protocol

import hpack
from hpack.exceptions import HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 section 6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings identifiers (section 6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 1, 2, 3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 4, 5, 6

# Error codes (section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 5, 6, 7, 8
COMPRESSION_ERROR = 9
ERROR_NAMES = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
    8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED",
}  # fmt: skip

MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384
# What we advertise: stream windows wide enough that no benchmark reply waits for a
# WINDOW_UPDATE, the connection window opened to 1 GiB at once and topped up at half.
OUR_STREAM_WINDOW = 16 * 1024 * 1024
OUR_CONN_WINDOW = 1 << 30
OUR_MAX_FRAME = DEFAULT_FRAME  # we accept frames up to the protocol's default size
MAX_HEADER_BLOCK = 256 * 1024  # a header block (HEADERS + CONTINUATION) larger than this is refused

_HEAD = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_RST = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"error 0x{code:x}")


class H2ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY ``code``."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 section 5.1: ``value`` with an N-bit prefix; ``first`` holds the high bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_literal(name: bytes, value: bytes) -> bytes:
    """One header as "literal without indexing, new name", no Huffman (section 6.2.2): the
    same bytes every time, whatever the peer's table holds."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole header block of literals (names must be lowercase, pseudo-headers first)."""
    return b"".join(encode_literal(n, v) for n, v in headers)


class CachedDecoder:
    """``hpack.Decoder`` that remembers what a block decoded to while the table stays put."""

    def __init__(self, max_header_list_size: int = MAX_HEADER_BLOCK) -> None:
        self.dec = hpack.Decoder(max_header_list_size=max_header_list_size)
        self.cache: dict[bytes, list[tuple[bytes, bytes]]] = {}

    def _state(self) -> tuple[int, object, int]:
        table = self.dec.header_table
        entries = table.dynamic_entries
        return len(entries), (entries[0] if entries else None), table.maxsize

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        hit = self.cache.get(block)
        if hit is not None:
            return hit
        before = self._state()
        try:
            headers = [(bytes(n), bytes(v)) for n, v in self.dec.decode(block, raw=True)]
        except HPACKError as e:
            raise H2ProtocolError(COMPRESSION_ERROR, f"bad header block: {e}") from None
        after = self._state()
        if after[0] != before[0] or after[1] is not before[1] or after[2] != before[2]:
            self.cache.clear()  # the table changed: earlier results may no longer hold
        elif len(self.cache) < 256:
            self.cache[block] = headers
        return headers


class Handler(Protocol):
    """What a connection's owner is told. Stream-level calls name the stream."""

    def h2_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None: ...
    def h2_data(self, sid: int, data: bytes, end: bool) -> None: ...
    def h2_reset(self, sid: int, code: int) -> None: ...
    def h2_goaway(self, code: int, last_sid: int) -> None: ...


class Connection:
    """One HTTP/2 connection, either side. ``open`` holds the streams still expecting frames
    from the peer; ``send_data`` queues what flow control holds back and sends it by itself
    once the peer's WINDOW_UPDATE or SETTINGS make room."""

    def __init__(self, handler: Handler, client: bool) -> None:
        self.handler = handler
        self.client = client
        self.out = bytearray()
        self.buf = b""
        self.decoder = CachedDecoder()
        self.preface_needed = not client  # a server first reads the client's preface
        self.next_sid = 1  # a client's next stream id
        self.last_peer_sid = 0  # a server's highest stream id opened by the client
        self.peer_max_frame = DEFAULT_FRAME
        self.peer_stream_window = DEFAULT_WINDOW  # SETTINGS_INITIAL_WINDOW_SIZE of the peer
        self.peer_max_streams = MAX_STREAM_ID
        self.conn_window = DEFAULT_WINDOW  # how much we may still send on the connection
        self.windows: dict[int, int] = {}  # per open stream: how much we may still send
        self.pending: dict[int, tuple[bytes, bool]] = {}  # sid -> [data, end] held by flow control
        self.open: set[int] = set()
        self.recv_unacked = 0  # connection-level DATA bytes not yet given back
        self.stream_unacked: dict[int, int] = {}
        self.headers_sid = 0  # a header block in progress (CONTINUATION expected)
        self.headers_end = False
        self.headers_buf = bytearray()
        self.closed = False
        settings = [(ENABLE_PUSH, 0), (INITIAL_WINDOW_SIZE, OUR_STREAM_WINDOW)]
        if not client:
            settings = [(MAX_CONCURRENT_STREAMS, 1000), (INITIAL_WINDOW_SIZE, OUR_STREAM_WINDOW)]
        out = self.out
        if client:
            out += PREFACE
        out += frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in settings))
        out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(OUR_CONN_WINDOW - DEFAULT_WINDOW))

    # -- output
    def take(self) -> bytes:
        out = bytes(self.out)
        self.out.clear()
        return out

    def new_stream(self) -> int:
        """The next client stream id; 0 when ids ran out or the peer's concurrency limit is
        reached (the caller opens a new connection, or fails the call)."""
        sid = self.next_sid
        if sid > MAX_STREAM_ID or len(self.open) >= self.peer_max_streams or self.closed:
            return 0
        self.next_sid = sid + 2
        self.open.add(sid)
        self.windows[sid] = self.peer_stream_window
        return sid

    def send_headers(self, sid: int, block: bytes, end: bool) -> None:
        """HEADERS (and CONTINUATION when the block exceeds the peer's frame size)."""
        flags = END_STREAM if end else 0
        room = self.peer_max_frame
        if len(block) <= room:
            self.out += frame(HEADERS, flags | END_HEADERS, sid, block)
        else:
            self.out += frame(HEADERS, flags, sid, block[:room])
            rest = block[room:]
            while rest:
                part, rest = rest[:room], rest[room:]
                self.out += frame(CONTINUATION, 0 if rest else END_HEADERS, sid, part)
        if end:
            self._sent_end(sid)

    def send_data(self, sid: int, data: bytes, end: bool) -> None:
        """DATA as far as the windows allow; the rest waits for WINDOW_UPDATE."""
        if sid in self.pending:
            self.pending[sid] = (self.pending[sid][0] + data, end)
            return
        self._push(sid, data, end)

    def _push(self, sid: int, data: bytes, end: bool) -> None:
        out = self.out
        window = self.windows.get(sid, 0)
        while True:
            avail = min(self.conn_window, window)
            room = min(len(data), avail, self.peer_max_frame)
            # Nothing flow-controlled goes while a window is not positive, not even an empty
            # DATA carrying END_STREAM once a window went negative (RFC 9113 section 6.9.2).
            if room <= 0 and (data or avail < 0):
                self.pending[sid] = (data, end)
                self.windows[sid] = window
                return
            chunk, data = data[:room], data[room:]
            last = end and not data
            out += frame(DATA, END_STREAM if last else 0, sid, chunk)
            self.conn_window -= room
            window -= room
            if not data:
                break
        self.windows[sid] = window
        if end:
            self._sent_end(sid)

    def _sent_end(self, sid: int) -> None:
        # Our side of the stream is done; it stays open while the peer's side is not.
        self.windows.pop(sid, None)
        self.pending.pop(sid, None)

    def reset(self, sid: int, code: int = CANCEL) -> None:
        self.out += frame(RST_STREAM, 0, sid, _RST.pack(code))
        self._forget(sid)

    def goaway(self, code: int = NO_ERROR) -> None:
        self.out += frame(GOAWAY, 0, 0, _GOAWAY.pack(self.last_peer_sid, code))
        self.closed = True

    def _forget(self, sid: int) -> None:
        self.open.discard(sid)
        self.windows.pop(sid, None)
        self.pending.pop(sid, None)
        self.stream_unacked.pop(sid, None)

    # -- input
    def receive(self, data: bytes) -> None:
        """Parse what arrived; raises ``H2ProtocolError`` (after queueing GOAWAY) when the
        peer broke the protocol."""
        buf = self.buf + data if self.buf else data
        try:
            pos = 0
            if self.preface_needed:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(buf):
                        raise H2ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    self.buf = buf
                    return
                if not buf.startswith(PREFACE):
                    raise H2ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self.preface_needed = False
                pos = len(PREFACE)
            n = len(buf)
            unpack = _HEAD.unpack_from
            while n - pos >= 9:
                hi, lo, ftype, flags, sid = unpack(buf, pos)
                length = (hi << 8) | lo
                if length > OUR_MAX_FRAME:
                    raise H2ProtocolError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                end = pos + 9 + length
                if end > n:
                    break
                payload = buf[pos + 9 : end]
                pos = end
                self._frame(ftype, flags, sid & MAX_STREAM_ID, payload)
            self.buf = buf[pos:] if pos < n else b""
        except H2ProtocolError as e:
            self.buf = b""
            if not self.closed:
                self.goaway(e.code)
            raise

    def _frame(self, ftype: int, flags: int, sid: int, payload: bytes) -> None:
        if self.headers_sid and ftype != CONTINUATION:
            raise H2ProtocolError(PROTOCOL_ERROR, "header block interrupted")
        if ftype == DATA:
            self._data(flags, sid, payload)
        elif ftype == HEADERS:
            if not sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
            payload = self._unpad(flags, payload)
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self._header_block(sid, payload, bool(flags & END_STREAM), bool(flags & END_HEADERS))
        elif ftype == CONTINUATION:
            if not self.headers_sid or sid != self.headers_sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
            self.headers_sid = 0
            self._header_block(sid, payload, self.headers_end, bool(flags & END_HEADERS))
        elif ftype == SETTINGS:
            if flags & ACK:
                return
            if sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
            if len(payload) % 6:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "bad SETTINGS frame")
            for i in range(0, len(payload), 6):
                self._setting(*_SETTING.unpack_from(payload, i))
            self.out += frame(SETTINGS, ACK, 0)
        elif ftype == WINDOW_UPDATE:
            if len(payload) != 4:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE frame")
            inc = _U32.unpack(payload)[0] & MAX_WINDOW
            if sid == 0:
                if not inc:
                    raise H2ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                self.conn_window += inc
                if self.conn_window > MAX_WINDOW:
                    raise H2ProtocolError(FLOW_CONTROL_ERROR, "connection window overflow")
            elif sid in self.windows:
                window = self.windows[sid] + inc
                if not inc or window > MAX_WINDOW:
                    # A stream error (section 6.9): that stream ends, the connection goes on.
                    self.reset(sid, PROTOCOL_ERROR if not inc else FLOW_CONTROL_ERROR)
                    self.handler.h2_reset(sid, FLOW_CONTROL_ERROR)
                    return
                self.windows[sid] = window
            else:
                return
            if self.pending:
                self._resume()
        elif ftype == PING:
            if sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "bad PING frame")
            if not flags & ACK:
                self.out += frame(PING, ACK, 0, payload)
        elif ftype == RST_STREAM:
            if not sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(payload) != 4:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "bad RST_STREAM frame")
            # Open either way: the peer still sending, or we still sending (half-closed).
            if sid in self.open or sid in self.windows:
                self._forget(sid)
                self.handler.h2_reset(sid, _RST.unpack(payload)[0])
        elif ftype == GOAWAY:
            if sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2ProtocolError(FRAME_SIZE_ERROR, "bad GOAWAY frame")
            # Streams up to ``last`` still complete (a graceful drain); no new ones here.
            last, code = _GOAWAY.unpack_from(payload)
            self.closed = True
            self.handler.h2_goaway(code, last & MAX_STREAM_ID)
        elif ftype == PUSH_PROMISE:
            raise H2ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE while push is disabled")
        # PRIORITY and unknown types are ignored (sections 5.3.2 and 4.1).

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise H2ProtocolError(PROTOCOL_ERROR, "bad padding")
        return payload[1 : len(payload) - payload[0]]

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        size = len(payload)  # flow control counts the padding too
        self.recv_unacked += size
        if self.recv_unacked >= OUR_CONN_WINDOW // 2:
            self.out += frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.recv_unacked))
            self.recv_unacked = 0
        end = bool(flags & END_STREAM)
        if sid not in self.open:
            if not sid:
                raise H2ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
            return  # a stream we reset or finished: its window no longer matters
        if not end and size:
            got = self.stream_unacked.get(sid, 0) + size
            if got >= OUR_STREAM_WINDOW // 2:
                self.out += frame(WINDOW_UPDATE, 0, sid, _U32.pack(got))
                got = 0
            self.stream_unacked[sid] = got
        data = self._unpad(flags, payload)
        if end:
            self._peer_ended(sid)
        self.handler.h2_data(sid, data, end)

    def _header_block(self, sid: int, part: bytes, end_stream: bool, end_headers: bool) -> None:
        if not end_headers:
            self.headers_buf += part
            if len(self.headers_buf) > MAX_HEADER_BLOCK:
                raise H2ProtocolError(PROTOCOL_ERROR, "header block too large")
            self.headers_sid = sid
            self.headers_end = end_stream
            return
        if self.headers_buf:
            block = bytes(self.headers_buf) + part
            self.headers_buf.clear()
        else:
            block = part
        headers = self.decoder.decode(block)  # always: the table must stay in step
        if sid not in self.open:
            if self.client or sid % 2 == 0 or sid <= self.last_peer_sid:
                return  # a stream we are done with (reset): nothing to tell
            # A new request from the client.
            self.last_peer_sid = sid
            self.open.add(sid)
            self.windows[sid] = self.peer_stream_window
        if end_stream:
            self._peer_ended(sid)
        self.handler.h2_headers(sid, headers, end_stream)

    def _peer_ended(self, sid: int) -> None:
        self.open.discard(sid)
        self.stream_unacked.pop(sid, None)
        if sid not in self.windows:  # our side finished too
            self.pending.pop(sid, None)

    def _setting(self, key: int, value: int) -> None:
        if key == INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise H2ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
            delta = value - self.peer_stream_window
            self.peer_stream_window = value
            for sid in self.windows:
                self.windows[sid] += delta
            if self.pending:
                self._resume()
        elif key == MAX_FRAME_SIZE:
            if not DEFAULT_FRAME <= value <= 2**24 - 1:
                raise H2ProtocolError(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
            self.peer_max_frame = value
        elif key == MAX_CONCURRENT_STREAMS:
            self.peer_max_streams = value
        elif key == ENABLE_PUSH and value > 1:
            raise H2ProtocolError(PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
        # HEADER_TABLE_SIZE: our encoder never indexes; MAX_HEADER_LIST_SIZE: advisory.

    def _resume(self) -> None:
        for sid in list(self.pending):
            data, end = self.pending.pop(sid)
            self._push(sid, data, end)
