"""meshperf.h2wire, the lean sans-IO HTTP/2 connection, against an independent implementation:
python-hyper's ``h2`` (``H2Connection``), driven in-process by handing bytes back and forth.

Frames are parsed here from their 9-byte headers (RFC 9113 section 4.1) with this module's
own constants, so what is checked on the wire does not rest on h2wire's framing code.

The peer-misbehaviour cases (frames on the wrong stream, a zero window increment, windows
pushed negative or past 2**31-1, a reset of a half-closed stream) cite the RFC section
each follows.
"""

from __future__ import annotations

import struct

import h2.events
import hpack
import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes
from hyperframe.frame import HeadersFrame

from meshperf import h2wire

# RFC 9113 values, written out here rather than taken from h2wire.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
T_DATA, T_HEADERS, T_PRIORITY, T_RST, T_SETTINGS, T_PUSH, T_PING, T_GOAWAY = range(8)
T_WINDOW_UPDATE, T_CONTINUATION = 8, 9
F_END_STREAM, F_ACK, F_END_HEADERS, F_PADDED, F_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
E_NO_ERROR, E_PROTOCOL, E_FLOW_CONTROL, E_FRAME_SIZE, E_CANCEL = 0, 1, 3, 6, 8
E_ENHANCE_YOUR_CALM = 11

Frame = tuple[int, int, int, bytes]  # type, flags, stream id, payload
Headers = list[tuple[bytes, bytes]]

REQUEST: Headers = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"echo.test:8080"),
    (b":path", b"/echo?size=10"),
    (b"user-agent", b"meshperf-test/1.0"),
]


def parse_frames(data: bytes, *, preface: bool = False) -> list[Frame]:
    """Split a byte stream into frames; it must end on a frame boundary."""
    if preface:
        assert data[:24] == CLIENT_PREFACE
        data = data[24:]
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 9, f"truncated frame header at {pos}"
        length = int.from_bytes(data[pos : pos + 3], "big")
        ftype, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        payload = data[pos + 9 : pos + 9 + length]
        assert len(payload) == length, f"truncated frame payload at {pos}"
        frames.append((ftype, flags, sid, payload))
        pos += 9 + length
    return frames


def raw_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload
    )


def data_lengths(frames: list[Frame], sid: int) -> list[int]:
    return [len(p) for t, _, s, p in frames if t == T_DATA and s == sid]


class Recorder:
    """The connection's owner: records every call."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []  # every call, in order
        self.header_calls: list[tuple[int, Headers, bool]] = []
        self.data_calls: list[tuple[int, bytes, bool]] = []

    def h2_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.events.append(("headers", sid, list(headers), end))
        self.header_calls.append((sid, list(headers), end))

    def h2_data(self, sid: int, data: bytes, end: bool) -> None:
        self.events.append(("data", sid, bytes(data), end))
        self.data_calls.append((sid, bytes(data), end))

    def h2_reset(self, sid: int, code: int) -> None:
        self.events.append(("reset", sid, code))

    def h2_goaway(self, code: int, last_sid: int) -> None:
        self.events.append(("goaway", code, last_sid))

    def headers(self, sid: int) -> list[Headers]:
        return [h for s, h, _ in self.header_calls if s == sid]

    def body(self, sid: int) -> bytes:
        return b"".join(d for s, d, _ in self.data_calls if s == sid)

    def ended(self, sid: int) -> bool:
        return any(s == sid and e for s, _, e in self.header_calls) or any(
            s == sid and e for s, _, e in self.data_calls
        )


class Pair:
    """Our Connection and an h2 H2Connection of the other role, wired together in memory."""

    def __init__(
        self,
        *,
        ours_client: bool = True,
        settings: dict[SettingCodes | int, int] | None = None,
        conn_increment: int = 0,
        auto_ack: bool = True,
    ) -> None:
        self.rec = Recorder()
        self.ours = h2wire.Connection(self.rec, client=ours_client)
        self.peer = H2Connection(H2Configuration(client_side=not ours_client, header_encoding=None))
        self.peer.initiate_connection()
        if settings:
            self.peer.update_settings(settings)
        if conn_increment:
            self.peer.increment_flow_control_window(conn_increment)
        self.auto_ack = auto_ack
        self.h2_events: list[h2.events.Event] = []
        self.ours_wire = bytearray()  # everything our side sent, in order
        self.peer_wire = bytearray()  # everything h2 sent, in order
        self.ours_client = ours_client

    def to_peer(self) -> int:
        data = self.ours.take()
        if data:
            self.ours_wire += data
            events = self.peer.receive_data(data)
            self.h2_events += events
            if self.auto_ack:
                for ev in events:
                    if isinstance(ev, h2.events.DataReceived) and ev.stream_id:
                        assert ev.flow_controlled_length is not None
                        self.peer.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        return len(data)

    def to_ours(self) -> int:
        data = self.peer.data_to_send()
        if data:
            self.peer_wire += data
            self.ours.receive(data)
        return len(data)

    def pump(self, rounds: int = 10_000) -> None:
        for _ in range(rounds):
            moved = self.to_peer()
            moved += self.to_ours()
            if not moved:
                return
        raise AssertionError("the two sides never went quiet")

    def ours_frames(self) -> list[Frame]:
        return parse_frames(bytes(self.ours_wire), preface=self.ours_client)

    def peer_frames(self) -> list[Frame]:
        return parse_frames(bytes(self.peer_wire), preface=not self.ours_client)

    def h2_of(self, kind: type, sid: int) -> list[h2.events.Event]:
        return [e for e in self.h2_events if isinstance(e, kind) and e.stream_id == sid]  # type: ignore[attr-defined]

    def h2_body(self, sid: int) -> bytes:
        return b"".join(
            e.data or b""
            for e in self.h2_events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )

    def h2_request_headers(self, sid: int) -> Headers:
        (ev,) = self.h2_of(h2.events.RequestReceived, sid)
        assert isinstance(ev, h2.events.RequestReceived) and ev.headers is not None
        return [(bytes(n), bytes(v)) for n, v in ev.headers]

    def h2_response_headers(self, sid: int) -> Headers:
        (ev,) = self.h2_of(h2.events.ResponseReceived, sid)
        assert isinstance(ev, h2.events.ResponseReceived) and ev.headers is not None
        return [(bytes(n), bytes(v)) for n, v in ev.headers]

    def h2_ended(self, sid: int) -> bool:
        return bool(self.h2_of(h2.events.StreamEnded, sid))


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ at every offset modulo 251, so a lost, doubled or reordered
    chunk cannot compare equal."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


# -- our client -> h2 server -----------------------------------------------------------------


def test_request_headers_decode_exactly_and_response_reaches_handler() -> None:
    p = Pair()
    p.pump()
    request = REQUEST + [
        (b"x-empty", b""),
        (b"x-" + b"n" * 140, b"long name: a 7-bit length prefix continued"),
        (b"x-long-value", b"v" * 300),
        (b"x-" + b"m" * 125, b"w" * 127),  # lengths of exactly 127: the 7-bit prefix is full
        (b"x-len-128", b"u" * 128),
        (b"content-type", b"application/grpc+proto"),
    ]
    sid = p.ours.new_stream()
    assert sid == 1
    p.ours.send_headers(sid, h2wire.encode_headers(request), end=True)
    p.pump()
    assert p.h2_request_headers(1) == request
    assert p.h2_ended(1)

    p.peer.send_headers(
        1, [(b":status", b"200"), (b"content-type", b"text/plain"), (b"server", b"h2")]
    )
    p.peer.send_data(1, b"hello ", end_stream=False)
    p.peer.send_data(1, b"world", end_stream=True)
    p.pump()
    assert p.rec.events == [
        (
            "headers",
            1,
            [(b":status", b"200"), (b"content-type", b"text/plain"), (b"server", b"h2")],
            False,
        ),
        ("data", 1, b"hello ", False),
        ("data", 1, b"world", True),
    ]
    assert 1 not in p.ours.open


def test_headers_only_response_with_end_stream() -> None:
    p = _with_gets(1)
    p.peer.send_headers(1, [(b":status", b"204")], end_stream=True)
    p.pump()
    assert p.rec.events == [("headers", 1, [(b":status", b"204")], True)]
    assert p.ours.open == set()


def test_fifty_sequential_streams_with_h2s_dynamic_table() -> None:
    """h2's encoder indexes what it sends: repeated headers become table references, a new
    ``date`` (every third response) adds an entry and, with 1 KB ``x-big`` values, evicts old
    ones. Runs of identical blocks (the decoder's cache) alternate with table changes."""
    p = Pair()
    p.pump()
    block = h2wire.encode_headers(REQUEST)
    for i in range(50):
        sid = p.ours.new_stream()
        assert sid == 2 * i + 1
        p.ours.send_headers(sid, block, end=True)
        p.pump()
        assert p.h2_request_headers(sid) == REQUEST
        response = [
            (b":status", b"200" if (i // 3) % 4 else b"404"),
            (b"server", b"h2-test"),
            (b"date", b"Mon, 01 Jan 2024 00:00:%02d GMT" % (i // 3)),
            (b"x-fixed", b"same every time"),
            (b"x-big", (b"%02d" % (i // 3 % 5)) * 500),  # 1000 bytes: churns the 4 KB table
        ]
        p.peer.send_headers(sid, response)
        p.peer.send_data(sid, b"body %d" % i, end_stream=True)
        p.pump()
        assert p.rec.headers(sid) == [response], i
        assert p.rec.body(sid) == b"body %d" % i
        assert p.rec.ended(sid)
    assert p.ours.open == set()
    blocks = [pl for t, _, _, pl in p.peer_frames() if t == T_HEADERS]
    assert len(blocks) == 50
    assert len(set(blocks)) < 50  # some blocks repeated byte for byte: the cache was used


def test_cached_block_is_not_reused_after_the_table_changed() -> None:
    """The same header block bytes can mean different headers once the table moved: h2 sends
    ``:status 200`` + index 62 first for ``x-a: 1`` and later for ``x-b: 2``."""
    p = Pair()
    p.pump()
    sequence = [
        [(b":status", b"200"), (b"x-a", b"1")],  # x-a added: index 62
        [(b":status", b"200"), (b"x-a", b"1")],  # index 62 -> x-a (cached by the decoder)
        [(b":status", b"200"), (b"x-b", b"2")],  # x-b added: now 62, x-a 63
        [(b":status", b"200"), (b"x-b", b"2")],  # index 62 -> x-b: same bytes as the 2nd block
        [(b":status", b"200"), (b"x-a", b"1")],  # index 63
        [(b":status", b"200"), (b"x-b", b"2")],
    ]
    sids = []
    for response in sequence:
        sid = p.ours.new_stream()
        sids.append(sid)
        p.ours.send_headers(sid, h2wire.encode_headers(REQUEST), end=True)
        p.pump()
        mark = len(p.peer_wire)
        p.peer.send_headers(sid, response, end_stream=True)
        p.pump()
        assert p.rec.headers(sid) == [response]
        assert mark < len(p.peer_wire)
    blocks = {s: pl for t, _, s, pl in p.peer_frames() if t == T_HEADERS}
    # The test means something only if h2 really sent identical bytes for different headers.
    assert blocks[sids[1]] == blocks[sids[3]] == blocks[sids[5]]
    assert blocks[sids[1]] != blocks[sids[0]]


# -- our server role <- h2 client ------------------------------------------------------------


def test_server_role_answers_an_h2_client() -> None:
    p = Pair(ours_client=False)
    p.peer.send_headers(1, REQUEST, end_stream=True)
    p.pump()
    assert p.rec.events == [("headers", 1, REQUEST, True)]
    assert p.ours.last_peer_sid == 1

    reply = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"4")]
    p.ours.send_headers(1, h2wire.encode_headers(reply), end=False)
    p.ours.send_data(1, b"pong", end=True)
    p.pump()
    assert p.h2_response_headers(1) == reply
    assert p.h2_body(1) == b"pong"
    assert p.h2_ended(1)

    # A POST with a body on stream 3, answered with headers only.
    post = [(b":method", b"POST")] + REQUEST[1:] + [(b"content-type", b"application/octet-stream")]
    p.peer.send_headers(3, post)
    p.peer.send_data(3, pattern(5000), end_stream=True)
    p.pump()
    assert p.rec.headers(3) == [post]
    assert p.rec.body(3) == pattern(5000)
    assert p.rec.ended(3)
    assert p.ours.last_peer_sid == 3
    p.ours.send_headers(3, h2wire.encode_headers([(b":status", b"201")]), end=True)
    p.pump()
    assert p.h2_response_headers(3) == [(b":status", b"201")]
    assert p.h2_ended(3)
    # Our server's SETTINGS and h2's were both acknowledged.
    assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in p.h2_events)
    assert any(t == T_SETTINGS and f & F_ACK for t, f, _, _ in p.ours_frames())


def test_server_role_decodes_h2_clients_indexed_requests() -> None:
    p = Pair(ours_client=False)
    for i in range(20):
        sid = 2 * i + 1
        request = REQUEST[:3] + [
            (b":path", b"/item/%d" % (i % 4)),
            (b"x-request-id", b"req-%d" % i),
        ]
        p.peer.send_headers(sid, request, end_stream=True)
        p.pump()
        assert p.rec.headers(sid) == [request], i
        p.ours.send_headers(sid, h2wire.encode_headers([(b":status", b"200")]), end=True)
        p.pump()
        assert p.h2_ended(sid)


# -- flow control of what we send ------------------------------------------------------------


def _open_post(p: Pair) -> int:
    sid = p.ours.new_stream()
    post = [(b":method", b"POST")] + REQUEST[1:]
    p.ours.send_headers(sid, h2wire.encode_headers(post), end=False)
    return sid


def test_small_stream_window_holds_data_until_window_update() -> None:
    p = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 100}, auto_ack=False)
    p.pump()
    sid = _open_post(p)
    body = pattern(70_000)
    p.ours.send_data(sid, body, end=True)
    flight = p.ours.take()
    p.ours_wire += flight
    first = parse_frames(flight)
    assert [t for t, _, _, _ in first] == [T_HEADERS, T_DATA]
    assert data_lengths(first, sid) == [100]
    assert first[1][1] & F_END_STREAM == 0
    # Nothing more goes until the peer opens the window.
    assert p.ours.take() == b""
    events = p.peer.receive_data(flight)
    got = [e for e in events if isinstance(e, h2.events.DataReceived)]
    assert [e.data for e in got] == [body[:100]]
    p.h2_events += events
    p.peer.acknowledge_received_data(100, sid)
    p.auto_ack = True
    p.pump()
    assert p.h2_body(sid) == body
    assert p.h2_ended(sid)
    lengths = data_lengths(p.ours_frames(), sid)
    assert lengths[0] == 100 and max(lengths) <= 100
    assert sum(lengths) == 70_000


def test_connection_window_limits_first_flight() -> None:
    """Stream window 1 MiB, connection window the default 65535: 65535 bytes go, in frames
    of at most 16384, then the rest after h2's connection WINDOW_UPDATE."""
    p = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}, auto_ack=False)
    p.pump()
    sid = _open_post(p)
    body = pattern(70_000, seed=3)
    p.ours.send_data(sid, body, end=True)
    p.to_peer()
    assert data_lengths(p.ours_frames(), sid) == [16384, 16384, 16384, 16383]
    assert p.ours.take() == b""
    assert p.h2_body(sid) == body[:65535]
    assert not p.h2_ended(sid)
    p.peer.acknowledge_received_data(65535, sid)
    p.auto_ack = True
    p.pump()
    lengths = data_lengths(p.ours_frames(), sid)
    assert lengths == [16384, 16384, 16384, 16383, 70_000 - 65535]
    assert p.h2_body(sid) == body
    assert p.h2_ended(sid)


def test_data_appended_while_held_back_keeps_order() -> None:
    p = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    p.pump()
    sid = _open_post(p)
    p.ours.send_data(sid, pattern(3000, 1), end=False)
    p.ours.send_data(sid, pattern(2000, 2), end=False)
    p.ours.send_data(sid, pattern(500, 3), end=True)
    p.pump()
    assert p.h2_body(sid) == pattern(3000, 1) + pattern(2000, 2) + pattern(500, 3)
    assert p.h2_ended(sid)
    assert max(data_lengths(p.ours_frames(), sid)) <= 1000


def test_data_frames_respect_default_max_frame_size() -> None:
    p = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}, conn_increment=1 << 20)
    p.pump()
    sid = _open_post(p)
    p.ours.send_data(sid, pattern(100_000), end=True)
    p.pump()
    lengths = data_lengths(p.ours_frames(), sid)
    assert lengths == [16384] * 6 + [100_000 - 6 * 16384]
    assert p.h2_body(sid) == pattern(100_000)


def test_larger_peer_max_frame_size_is_used() -> None:
    p = Pair(
        settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20, SettingCodes.MAX_FRAME_SIZE: 65536},
        conn_increment=1 << 20,
    )
    p.pump()
    sid = _open_post(p)
    p.ours.send_data(sid, pattern(200_000), end=True)
    p.pump()
    assert data_lengths(p.ours_frames(), sid) == [65536, 65536, 65536, 200_000 - 3 * 65536]
    assert p.h2_body(sid) == pattern(200_000)
    assert p.h2_ended(sid)


def test_peer_concurrency_limit() -> None:
    p = Pair(settings={SettingCodes.MAX_CONCURRENT_STREAMS: 3})
    p.pump()
    assert [p.ours.new_stream() for _ in range(4)] == [1, 3, 5, 0]


# -- flow control of what we receive ---------------------------------------------------------


def test_twenty_megabyte_response_never_stalls() -> None:
    """20 MB is beyond the 16 MiB stream window we advertise: we must give window back."""
    total = 20 * 1024 * 1024
    p = _with_gets(1)
    sid = 1
    p.peer.send_headers(sid, [(b":status", b"200")])
    chunk = pattern(16384, seed=5)
    sent = 0
    while sent < total:
        room = min(p.peer.local_flow_control_window(sid), p.peer.max_outbound_frame_size)
        if room <= 0:
            p.pump()
            room = p.peer.local_flow_control_window(sid)
            assert room > 0, f"h2 stuck with a zero window after {sent} of {total} bytes"
            continue
        n = min(room, len(chunk), total - sent)
        p.peer.send_data(sid, chunk[:n], end_stream=sent + n == total)
        sent += n
        p.to_ours()
        p.to_peer()
    p.pump()
    datas = p.rec.data_calls
    assert {s for s, _, _ in datas} == {sid}
    assert sum(len(d) for _, d, _ in datas) == total
    assert all(d == chunk[: len(d)] for _, d, _ in datas)  # each h2 DATA frame started a chunk
    assert [end for _, _, end in datas] == [False] * (len(datas) - 1) + [True]
    assert p.rec.ended(sid)
    stream_updates = [pl for t, _, s, pl in p.ours_frames() if t == T_WINDOW_UPDATE and s == sid]
    assert stream_updates, "no WINDOW_UPDATE for the stream"
    assert sum(struct.unpack(">L", pl)[0] for pl in stream_updates) >= total - 16 * 1024 * 1024


# -- header blocks across CONTINUATION -------------------------------------------------------


def test_large_request_header_block_split_into_continuation() -> None:
    p = Pair()
    p.pump()
    big = bytes(b"abcdefghij"[i % 10] for i in range(40_000))
    request = REQUEST + [(b"x-big", big)]
    sid = p.ours.new_stream()
    p.ours.send_headers(sid, h2wire.encode_headers(request), end=True)
    p.pump()
    frames = [f for f in p.ours_frames() if f[2] == sid]
    assert [f[0] for f in frames] == [T_HEADERS, T_CONTINUATION, T_CONTINUATION]
    assert [len(f[3]) for f in frames[:2]] == [16384, 16384]
    assert 0 < len(frames[2][3]) <= 16384
    assert frames[0][1] == F_END_STREAM  # END_STREAM on HEADERS, END_HEADERS only at the end
    assert frames[1][1] == 0
    assert frames[2][1] == F_END_HEADERS
    assert p.h2_request_headers(sid) == request
    assert p.h2_ended(sid)


def test_large_header_block_in_one_frame_when_peer_allows() -> None:
    p = Pair(settings={SettingCodes.MAX_FRAME_SIZE: 65536})
    p.pump()
    request = REQUEST + [(b"x-big", b"q" * 40_000)]
    sid = p.ours.new_stream()
    p.ours.send_headers(sid, h2wire.encode_headers(request), end=False)
    p.pump()
    frames = [f for f in p.ours_frames() if f[2] == sid]
    assert [(f[0], f[1]) for f in frames] == [(T_HEADERS, F_END_HEADERS)]
    assert p.h2_request_headers(sid) == request


def test_large_response_header_block_from_h2() -> None:
    p = _with_gets(1)
    sid = 1
    response = [(b":status", b"200"), (b"x-big", pattern(40_000).hex()[:40_000].encode())]
    p.peer.send_headers(sid, response, end_stream=True)
    p.pump()
    types = [t for t, _, s, _ in p.peer_frames() if s == sid]
    assert types[0] == T_HEADERS and T_CONTINUATION in types  # h2 really split it
    assert p.rec.events == [("headers", sid, response, True)]


# -- PING, SETTINGS, RST_STREAM, GOAWAY ------------------------------------------------------


def test_ping_gets_ack_with_same_bytes() -> None:
    p = Pair()
    p.pump()
    opaque = b"\x00\x01\x7f\x80\xfe\xffZz"
    p.peer.ping(opaque)
    p.to_ours()
    out = parse_frames(p.ours.take())
    assert out == [(T_PING, F_ACK, 0, opaque)]
    events = p.peer.receive_data(raw_frame(*out[0]))
    acks = [e for e in events if isinstance(e, h2.events.PingAckReceived)]
    assert [a.ping_data for a in acks] == [opaque]


def test_ping_ack_from_peer_is_not_answered() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    c.take()
    c.receive(raw_frame(T_PING, F_ACK, 0, b"12345678"))
    assert c.take() == b""


def test_settings_are_acknowledged_and_applied() -> None:
    p = Pair()
    p.pump()
    p.peer.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    p.to_ours()
    out = parse_frames(p.ours.take())
    assert out == [(T_SETTINGS, F_ACK, 0, b"")]
    events = p.peer.receive_data(raw_frame(*out[0]))
    (ack,) = [e for e in events if isinstance(e, h2.events.SettingsAcknowledged)]
    assert ack.changed_settings[SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 2
    assert [p.ours.new_stream() for _ in range(3)] == [1, 3, 0]


def _with_gets(n: int) -> Pair:
    """A pair past its prefaces with ``n`` GET streams (1, 3, ...) sent to h2."""
    p = Pair()
    p.pump()
    block = h2wire.encode_headers(REQUEST)
    for _ in range(n):
        p.ours.send_headers(p.ours.new_stream(), block, end=True)
    p.pump()
    return p


def test_rst_stream_from_h2_reaches_handler() -> None:
    p = _with_gets(2)
    p.peer.reset_stream(3, E_CANCEL)
    p.pump()
    assert p.rec.events == [("reset", 3, E_CANCEL)]
    assert p.ours.open == {1}
    p.peer.send_headers(1, [(b":status", b"200")], end_stream=True)
    p.pump()
    assert p.rec.events[-1] == ("headers", 1, [(b":status", b"200")], True)


def test_goaway_from_h2_reaches_handler_and_stops_new_streams() -> None:
    p = _with_gets(3)
    p.peer.close_connection(
        error_code=E_ENHANCE_YOUR_CALM, additional_data=b"slow down", last_stream_id=3
    )
    p.to_ours()
    assert p.rec.events == [("goaway", E_ENHANCE_YOUR_CALM, 3)]
    assert p.ours.new_stream() == 0
    assert p.ours.new_stream() == 0


def test_goaway_no_error_last_stream_id() -> None:
    p = Pair()
    p.pump()
    p.ours.send_headers(p.ours.new_stream(), h2wire.encode_headers(REQUEST), end=True)
    p.pump()
    p.peer.close_connection()
    p.to_ours()
    assert p.rec.events == [("goaway", E_NO_ERROR, 1)]
    assert p.ours.new_stream() == 0


# -- padding ---------------------------------------------------------------------------------


def test_padded_data_from_h2() -> None:
    p = _with_gets(1)
    sid = 1
    p.peer.send_headers(sid, [(b":status", b"200")])
    p.peer.send_data(sid, b"padded payload", pad_length=37)
    p.peer.send_data(sid, b"", end_stream=True, pad_length=0)
    p.pump()
    datas = [f for f in p.peer_frames() if f[0] == T_DATA and f[2] == sid]
    assert [(f[1] & F_PADDED, len(f[3])) for f in datas] == [(F_PADDED, 1 + 14 + 37), (F_PADDED, 1)]
    assert p.rec.events[1:] == [("data", sid, b"padded payload", False), ("data", sid, b"", True)]


def test_padded_headers_with_priority() -> None:
    """h2's send_headers takes no pad_length, so hyperframe (h2's own framing) builds the
    frame: PADDED + PRIORITY + END_STREAM + END_HEADERS, HPACK by a fresh hpack.Encoder."""
    c = h2wire.Connection(Recorder(), client=True)
    rec = c.handler
    assert isinstance(rec, Recorder)
    sid = c.new_stream()
    response = [(b":status", b"200"), (b"x-padded", b"yes"), (b"server", b"hyperframe")]
    f = HeadersFrame(sid, flags=["END_HEADERS", "END_STREAM", "PADDED", "PRIORITY"])
    f.data = hpack.Encoder().encode(response)
    f.pad_length = 33
    f.depends_on = 0
    f.stream_weight = 200
    wire = f.serialize()
    ((_, flags, _, payload),) = parse_frames(wire)
    assert flags == F_END_STREAM | F_END_HEADERS | F_PADDED | F_PRIORITY
    assert payload[0] == 33 and payload[-33:] == b"\x00" * 33
    c.receive(wire)
    assert rec.events == [("headers", sid, response, True)]


def test_padded_headers_with_continuation() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    rec = c.handler
    assert isinstance(rec, Recorder)
    sid = c.new_stream()
    response = [(b":status", b"200"), (b"x-v", b"w" * 100)]
    block = hpack.Encoder().encode(response, huffman=False)
    head, rest = block[:10], block[10:]
    padded = bytes([5]) + head + b"\x00" * 5
    c.receive(
        raw_frame(T_HEADERS, F_PADDED, sid, padded)
        + raw_frame(T_CONTINUATION, 0, sid, rest[:40])
        + raw_frame(T_CONTINUATION, F_END_HEADERS, sid, rest[40:])
    )
    assert rec.events == [("headers", sid, response, False)]


# -- protocol errors -------------------------------------------------------------------------


def _goaways(c: h2wire.Connection, *, preface: bool) -> list[tuple[int, int]]:
    frames = parse_frames(c.take(), preface=preface)
    return [struct.unpack(">LL", pl[:8]) for t, _, s, pl in frames if t == T_GOAWAY and s == 0]


def _client() -> tuple[h2wire.Connection, int]:
    """A client connection with one stream open and its preface already taken."""
    c = h2wire.Connection(Recorder(), client=True)
    sid = c.new_stream()
    c.take()
    return c, sid


def _expect_connection_error(c: h2wire.Connection, data: bytes, code: int) -> None:
    """``data`` is a connection error ``code``: raised, and a GOAWAY naming it queued."""
    with pytest.raises(h2wire.H2ProtocolError) as e:
        c.receive(data)
    assert e.value.code == code
    assert _goaways(c, preface=False) == [(0, code)]


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: echo.test\r\n\r\n",
        b"GET ",
        b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n\x00",
    ],
)
def test_bad_preface_to_server_role(data: bytes) -> None:
    c = h2wire.Connection(Recorder(), client=False)
    _expect_connection_error(c, data, E_PROTOCOL)


def test_partial_good_preface_waits() -> None:
    c = h2wire.Connection(Recorder(), client=False)
    c.take()
    c.receive(CLIENT_PREFACE[:10])
    c.receive(CLIENT_PREFACE[10:])
    c.receive(raw_frame(T_SETTINGS, 0, 0))
    assert parse_frames(c.take()) == [(T_SETTINGS, F_ACK, 0, b"")]


def test_frame_longer_than_16384_is_frame_size_error() -> None:
    c, sid = _client()
    # The header alone says too much: no need to wait for the payload.
    header = (16385).to_bytes(3, "big") + bytes([T_DATA, 0]) + sid.to_bytes(4, "big")
    _expect_connection_error(c, header, E_FRAME_SIZE)


def test_frame_of_exactly_16384_is_accepted() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    rec = c.handler
    assert isinstance(rec, Recorder)
    sid = c.new_stream()
    c.receive(
        h2wire.frame(T_HEADERS, F_END_HEADERS, sid, h2wire.encode_headers([(b":status", b"200")]))
    )
    c.receive(raw_frame(T_DATA, F_END_STREAM, sid, b"z" * 16384))
    assert rec.body(sid) == b"z" * 16384 and rec.ended(sid)


def test_push_promise_is_protocol_error() -> None:
    c, sid = _client()
    block = h2wire.encode_headers(REQUEST)
    _expect_connection_error(
        c, h2wire.frame(T_PUSH, F_END_HEADERS, sid, struct.pack(">L", 2) + block), E_PROTOCOL
    )


def test_continuation_without_headers_is_protocol_error() -> None:
    c, sid = _client()
    _expect_connection_error(c, raw_frame(T_CONTINUATION, F_END_HEADERS, sid, b"\x88"), E_PROTOCOL)


def test_continuation_on_stream_zero_is_protocol_error() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    c.take()
    _expect_connection_error(c, raw_frame(T_CONTINUATION, F_END_HEADERS, 0, b"\x88"), E_PROTOCOL)


def test_header_block_interrupted_is_protocol_error() -> None:
    c, sid = _client()
    block = h2wire.encode_headers([(b":status", b"200"), (b"x", b"y")])
    _expect_connection_error(
        c,
        raw_frame(T_HEADERS, 0, sid, block[:3]) + raw_frame(T_PING, 0, 0, b"01234567"),
        E_PROTOCOL,
    )


def test_continuation_on_another_stream_is_protocol_error() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    s1, s3 = c.new_stream(), c.new_stream()
    c.take()
    block = h2wire.encode_headers([(b":status", b"200"), (b"x", b"y")])
    with pytest.raises(h2wire.H2ProtocolError) as e:
        c.receive(
            raw_frame(T_HEADERS, 0, s1, block[:3])
            + raw_frame(T_CONTINUATION, F_END_HEADERS, s3, block[3:])
        )
    assert e.value.code == E_PROTOCOL


def test_bad_padding_is_protocol_error() -> None:
    c, sid = _client()
    with pytest.raises(h2wire.H2ProtocolError) as e:
        c.receive(raw_frame(T_DATA, F_PADDED, sid, bytes([4]) + b"abc"))  # 4 >= 4 bytes
    assert e.value.code == E_PROTOCOL
    assert _goaways(c, preface=False) == [(0, E_PROTOCOL)]


def test_server_role_goaway_names_last_stream() -> None:
    p = Pair(ours_client=False)
    p.peer.send_headers(1, REQUEST, end_stream=True)
    p.peer.send_headers(3, REQUEST, end_stream=True)
    p.pump()
    p.ours.take()
    with pytest.raises(h2wire.H2ProtocolError):
        p.ours.receive(raw_frame(T_PUSH, F_END_HEADERS, 1, b"\x00\x00\x00\x02\x88"))
    assert _goaways(p.ours, preface=False) == [(3, E_PROTOCOL)]


def test_settings_on_a_stream_is_protocol_error() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    c.take()
    with pytest.raises(h2wire.H2ProtocolError) as e:
        c.receive(raw_frame(T_SETTINGS, 0, 1, b""))
    assert e.value.code == E_PROTOCOL


# -- arbitrary byte boundaries ---------------------------------------------------------------


def test_client_role_one_byte_at_a_time() -> None:
    """A whole h2 server conversation, fed to a second connection one byte per call."""
    p = Pair()
    sid = p.ours.new_stream()
    p.ours.send_headers(sid, h2wire.encode_headers(REQUEST), end=True)
    p.to_peer()
    response = [(b":status", b"200"), (b"x-big", b"k" * 20_000), (b"date", b"today")]
    p.peer.send_headers(sid, response)
    p.peer.ping(b"pingpong")
    p.peer.send_data(sid, pattern(20_000)[:10_000], pad_length=9)
    p.peer.send_data(sid, pattern(20_000)[10_000:])
    p.peer.send_data(sid, b"tail", end_stream=True)
    wire = p.peer.data_to_send()

    whole = Recorder()
    a = h2wire.Connection(whole, client=True)
    assert a.new_stream() == sid
    a.receive(wire)
    bytewise = Recorder()
    b = h2wire.Connection(bytewise, client=True)
    assert b.new_stream() == sid
    for i in range(len(wire)):
        b.receive(wire[i : i + 1])
    expected_body = pattern(20_000) + b"tail"
    for rec in (whole, bytewise):
        assert rec.headers(sid) == [response]
        assert rec.body(sid) == expected_body
        assert rec.ended(sid)
    assert whole.events == bytewise.events
    assert a.take() == b.take()  # the same ACKs, PING ACK, window updates


def test_server_role_one_byte_at_a_time() -> None:
    h2c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    h2c.initiate_connection()
    post = [(b":method", b"POST")] + REQUEST[1:]
    h2c.send_headers(1, post)
    h2c.send_data(1, b"request body", end_stream=True)
    h2c.send_headers(3, REQUEST, end_stream=True)
    wire = h2c.data_to_send()
    rec = Recorder()
    c = h2wire.Connection(rec, client=False)
    for i in range(len(wire)):
        c.receive(wire[i : i + 1])
    assert rec.events == [
        ("headers", 1, post, False),
        ("data", 1, b"request body", True),
        ("headers", 3, REQUEST, True),
    ]
    assert c.last_peer_sid == 3
    out = parse_frames(c.take())
    assert (T_SETTINGS, F_ACK, 0, b"") in out


# -- stream ids run out ----------------------------------------------------------------------


def test_stream_ids_run_out() -> None:
    c = h2wire.Connection(Recorder(), client=True)
    c.next_sid = 2**31 - 5
    assert [c.new_stream() for _ in range(4)] == [2**31 - 5, 2**31 - 3, 2**31 - 1, 0]
    assert c.new_stream() == 0
    c.take()
    c.send_headers(2**31 - 1, h2wire.encode_headers(REQUEST), end=True)
    ((t, _, sid, _),) = parse_frames(c.take())
    assert (t, sid) == (T_HEADERS, 2**31 - 1)


# -- bugs found ------------------------------------------------------------------------------


def test_no_data_after_rst_stream_on_half_closed_stream() -> None:
    """Our server answers a finished request with 200 KB; the h2 client (stream window
    1 MiB, connection window 65535) cancels after 65535 bytes, then opens the connection
    window. Nothing more may go on stream 1."""
    p = Pair(
        ours_client=False, settings={SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20}, auto_ack=False
    )
    p.pump()
    p.peer.send_headers(1, REQUEST, end_stream=True)
    p.pump()
    p.ours.send_headers(1, h2wire.encode_headers([(b":status", b"200")]), end=False)
    p.ours.send_data(1, pattern(200_000), end=True)
    p.to_peer()
    assert sum(data_lengths(p.ours_frames(), 1)) == 65535
    p.peer.reset_stream(1, E_CANCEL)
    p.peer.increment_flow_control_window(1 << 20)
    p.to_ours()
    after = parse_frames(p.ours.take())
    assert data_lengths(after, 1) == []


def test_rst_stream_on_half_closed_stream_reaches_handler() -> None:
    p = Pair(ours_client=False, auto_ack=False)
    p.pump()
    p.peer.send_headers(1, REQUEST, end_stream=True)
    p.pump()
    p.ours.send_headers(1, h2wire.encode_headers([(b":status", b"200")]), end=False)
    p.ours.send_data(1, pattern(100_000), end=True)  # 65535 go, the rest waits
    p.to_peer()
    p.peer.reset_stream(1, E_CANCEL)
    p.to_ours()
    assert ("reset", 1, E_CANCEL) in p.rec.events
    assert p.ours.pending == {}


def _negative_stream_window(p: Pair) -> int:
    """A stream whose send window is -50: 100 bytes sent, then h2 lowers its
    INITIAL_WINDOW_SIZE from 100 to 50 (RFC 9113 6.9.2 allows it). The connection window
    has 65435 left (h2 never acknowledges)."""
    p.pump()
    sid = _open_post(p)
    p.ours.send_data(sid, pattern(100), end=False)
    p.pump()
    p.peer.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 50})
    p.pump()
    return sid


def test_no_empty_data_while_stream_window_negative() -> None:
    p = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 100}, auto_ack=False)
    sid = _negative_stream_window(p)
    p.ours.send_data(sid, b"", end=True)
    assert data_lengths(parse_frames(p.ours.take()), sid) == []  # held back
    # The window back above zero (-50 + 60 = 10), by a hand-made WINDOW_UPDATE: h2 as the
    # peer refuses to shrink its own window below 0, so it cannot play this part.
    p.ours.receive(raw_frame(T_WINDOW_UPDATE, 0, sid, struct.pack(">L", 60)))
    frames = parse_frames(p.ours.take())
    assert [(f[0], f[1] & F_END_STREAM, len(f[3])) for f in frames if f[2] == sid] == [
        (T_DATA, F_END_STREAM, 0)
    ]


def test_empty_end_data_with_negative_window_keeps_connection_window() -> None:
    p = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 100}, auto_ack=False)
    sid = _negative_stream_window(p)
    p.ours.send_data(sid, b"", end=True)
    # h2 rightly refuses that empty DATA on a negative window (the bug above): keep it from
    # h2 and end the stream with RST_STREAM instead, to look at the connection window alone.
    out = [f for f in parse_frames(p.ours.take()) if f[0] != T_DATA]
    p.peer.receive_data(b"".join(raw_frame(*f) for f in out))
    p.ours.reset(sid, E_CANCEL)
    p.pump()
    p.peer.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    p.pump()
    sid2 = _open_post(p)
    p.ours.send_data(sid2, pattern(65535), end=True)
    out2 = p.ours.take()
    assert sum(data_lengths(parse_frames(out2), sid2)) == 65535 - 100
    p.peer.receive_data(out2)  # h2 raises FlowControlError if we overran its window


@pytest.mark.parametrize(
    ("ftype", "sid", "payload"),
    [
        (T_PING, 1, b"\0" * 8),  # section 6.7: PING is connection-level
        (T_GOAWAY, 1, b"\0" * 8),  # section 6.8
        (T_RST, 0, b"\0" * 4),  # section 6.4: RST_STREAM names a stream
        (T_WINDOW_UPDATE, 0, b"\0" * 4),  # section 6.9: an increment of 0
    ],
    ids=["ping-on-stream", "goaway-on-stream", "rst-on-stream-0", "window-update-0"],
)
def test_connection_level_misuse_is_protocol_error(ftype: int, sid: int, payload: bytes) -> None:
    c = h2wire.Connection(Recorder(), client=True)
    c.new_stream()
    c.take()
    _expect_connection_error(c, raw_frame(ftype, 0, sid, payload), E_PROTOCOL)


def test_stream_window_overflow_resets_only_that_stream() -> None:
    """Section 6.9.1: a stream window above 2**31-1 is a stream error FLOW_CONTROL_ERROR."""
    rec = Recorder()
    c = h2wire.Connection(rec, client=True)
    sid = c.new_stream()
    c.take()
    c.receive(raw_frame(T_WINDOW_UPDATE, 0, sid, struct.pack(">L", 2**31 - 1)))
    frames = parse_frames(c.take())
    assert [(f[0], f[2], struct.unpack(">L", f[3])[0]) for f in frames] == [
        (T_RST, sid, E_FLOW_CONTROL)
    ]
    assert c.new_stream() == sid + 2  # the connection goes on
