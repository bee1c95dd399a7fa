"""The HTTP/1.1 client of the generator: one keep-alive connection per fortio "thread".

Latency is ``perf_counter_ns`` from just before the request is written to the moment the last
byte of the response is parsed.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from meshperf.clock import now_ns as _now
from meshperf.loadgen.conn import ConnCaller, http_warmup
from meshperf.loadgen.options import USER_AGENT, LoadOptions, Target

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker


def _chunked_end(data: bytes | bytearray, pos: int) -> int:
    """End offset of a complete chunked body starting at ``pos``, or -1 if incomplete."""
    n = len(data)
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return -1
        size_text = bytes(data[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError("bad chunk size") from None
        pos = eol + 2
        if size == 0:
            # Trailers (usually none) end with an empty line.
            end = data.find(b"\r\n\r\n", pos - 2)
            return -1 if end < 0 else end + 4
        pos += size + 2
        if pos > n:
            return -1


class Conn(ConnCaller):
    """One fortio "thread": one keep-alive connection making calls on its own schedule."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        self.reuse_count = 0  # calls on the current socket
        self.reuse_limit = self._threshold()
        self.buf = bytearray()
        self.head_len = -1  # parsed header length of the response being read, -1 = not yet
        self.body_end = 0  # total response length when known
        self.chunked = False
        self.until_close = False
        self.code = 0
        self.close_after = False
        self.last_head = b""  # header block (with CRLFCRLF) of the last fast-path response
        self.last_total = -1
        self.last_code = 0

    # -- asyncio.Protocol
    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.t0:
            if self.until_close and self.head_len >= 0:
                self._complete(_now(), len(self.buf))
            else:
                self._failed(_now(), f"connection lost: {exc or 'closed by peer'}")

    def data_received(self, data: bytes) -> None:
        now = _now()
        if self.head_len < 0 and self.warmup is None and self.t0 and not self.buf:
            # Fast path (nearly every response): one chunk holding a complete keep-alive
            # HTTP/1.1 answer with Content-Length. Anything else takes the general path.
            # Servers repeat the same header block (it changes with Date once a second):
            # a prefix compare then replaces the parse.
            lh = self.last_head
            if len(data) == self.last_total and lh and data.startswith(lh):
                t0 = self.t0
                self.t0 = 0
                # Next request first: the server works on it while this one is recorded.
                self.next_call(now)
                self.w.record(now - t0, self.last_code, self.last_total, len(lh))
                return
            end = data.find(b"\r\n\r\n")
            if end > 12:
                lower = data[:end].lower()
                i = lower.find(b"\r\ncontent-length:")
                if (
                    i > 0
                    and lower.startswith(b"http/1.1 ")
                    and b"\r\nconnection: close" not in lower
                    and b"\r\ntransfer-encoding:" not in lower
                ):
                    j = lower.find(b"\r\n", i + 17)
                    try:
                        body = int(lower[i + 17 : j] if j > 0 else lower[i + 17 :])
                        code = int(data[9:12])
                    except ValueError:
                        body = code = -1
                    if len(data) == end + 4 + body and code >= 200 and code not in (204, 304):
                        self.last_head = data[: end + 4]
                        self.last_total = len(data)
                        self.last_code = code
                        t0 = self.t0
                        self.t0 = 0
                        self.next_call(now)
                        self.w.record(now - t0, code, len(data), end + 4)
                        return
        self._data_slow(data, now)

    def _data_slow(self, data: bytes, now: int) -> None:
        if not self.t0:
            return  # nothing asked: stray bytes from a misbehaving server
        buf = self.buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        if self.head_len < 0:
            end = view.find(b"\r\n\r\n")
            if end < 0:
                if not buf:
                    buf += data
                return
            try:
                self._parse_head(bytes(view[:end]))
            except ValueError as e:
                self._failed(now, f"bad response: {e}")
                return
            self.head_len = end + 4
            if not self.chunked and not self.until_close:
                self.body_end += self.head_len
        if self.chunked:
            try:
                total = _chunked_end(view, self.head_len)
            except ValueError as e:
                self._failed(now, f"bad response: {e}")
                return
            if total < 0:
                if not buf:
                    buf += data
                return
            self.body_end = total
        elif self.until_close:
            if not buf:
                buf += data
            return
        elif len(view) < self.body_end:
            if not buf:
                buf += data
            return
        self._complete(now, self.body_end)

    def _parse_head(self, head: bytes) -> None:
        if not head.startswith(b"HTTP/1.") or len(head) < 12:
            raise ValueError("not an HTTP/1.x status line")
        self.code = int(head[9:12])
        lower = head.lower()
        self.close_after = b"\r\nconnection: close" in lower or head.startswith(b"HTTP/1.0")
        if self.code < 200 or self.code in (204, 304):
            self.body_end = 0
            return
        i = lower.find(b"\r\ncontent-length:")
        if i >= 0:
            j = lower.find(b"\r\n", i + 17)
            self.body_end = int(lower[i + 17 : j if j >= 0 else None])
        elif b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
            self.chunked = True
        else:
            self.until_close = True

    def _reset(self) -> None:
        if self.buf:
            self.buf = bytearray()
        self.head_len = -1
        self.body_end = 0
        self.chunked = False
        self.until_close = False

    def _complete(self, now: int, size: int) -> None:
        code = self.code
        head_len = self.head_len
        t0 = self.t0
        self.t0 = 0
        self._reset()
        if self.close_after or self.until_close or not self.w.o.keepalive:
            self._drop()
        if self.warmup is not None:
            self.warmup.set_result(http_warmup(code))
            return
        self.w.record(now - t0, code, size, head_len)
        self.next_call(now)

    # -- calls
    def send(self) -> None:
        """Start one call now (connecting first if needed)."""
        self.t0 = _now()
        t = self.transport
        if t is not None:
            if self.reuse_limit and self.reuse_count >= self.reuse_limit:
                # fortio's -connection-reuse (FastClient.reachedReuseThreshold): this socket
                # has carried its share; a new one, with a new random threshold.
                self._drop()
                self.reuse_limit = self._threshold()
            elif not t.is_closing():
                self.reuse_count += 1
                t.write(self.w.request)
                return
            else:
                self._drop()  # the server closed it while idle: reconnect, as fortio does
        self.reuse_count = 1  # this call is the new socket's first
        self.start_connect()

    def _threshold(self) -> int:
        """fortio's generateReuseThreshold: uniform in [MIN, MAX]; 0 = unlimited."""
        reuse = self.w.o.connection_reuse
        return random.randint(reuse[0], reuse[1]) if reuse else 0

    def _connected(self) -> None:
        assert self.transport is not None
        self.transport.write(self.w.request)


def build_request(o: LoadOptions, t: Target) -> bytes:
    """The exact bytes of one request (fortio's fast client shape), built once."""
    body = o.body()
    method = "POST" if body else "GET"
    lines = [f"{method} {t.request_target} HTTP/1.1"]
    names = {h.partition(":")[0].strip().lower() for h in o.headers}
    if "host" not in names:
        lines.append(f"Host: {t.host_header}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {USER_AGENT}")
    if not o.keepalive and "connection" not in names:
        lines.append("Connection: close")  # fortio's fast client with -keepalive=false
    for h in o.headers:
        name, _, value = h.partition(":")
        lines.append(f"{name.strip()}: {value.strip()}")
    if body:
        if "content-type" not in names:
            lines.append("Content-Type: application/octet-stream")
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
