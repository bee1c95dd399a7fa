"""fortio's TCP echo client (``fortio load tcp://host:port``): each call writes the payload,
reads the same number of bytes back and checks they are the same; timed per round trip.

Follows fortio v1.75.2 ``tcprunner/tcprunner.go``: without ``-payload``/``-payload-size`` the
payload is ``"Fortio\\n%04d\\n%012d"`` (thread id, message number: 24 bytes, new every call);
RetCodes keys are ``OK`` or the error text (``short read``, ``read not echoing writes``); a
socket is reused after a good call and replaced after a failed one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshperf.clock import now_ns as _now
from meshperf.loadgen.conn import ConnCaller

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker

OK = "OK"  # tcprunner.TCPStatusOK
SHORT_READ = "short read"
LONG_READ = "bug: long read"
MISMATCH = "read not echoing writes"


def generate_payload(thread: int, i: int) -> bytes:
    """tcprunner.GeneratePayload: 6 + 2 + 4 + 12 = 24 bytes."""
    return b"Fortio\n%04d\n%012d" % (thread, i)


class TcpConn(ConnCaller):
    """One fortio thread on one TCP connection to an echo server."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        o = w.o
        self.fixed = o.body()  # b"" = generate a new payload per call, as fortio does
        self.messages = 0
        self.req = b""
        self.buf = bytearray()
        self.sent = 0
        self.received = 0

    # -- asyncio.Protocol
    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.t0:
            self._failed(_now(), SHORT_READ)  # fortio: EOF or reset before the whole echo

    def data_received(self, data: bytes) -> None:
        now = _now()
        self.received += len(data)
        if not self.t0:
            return
        buf = self.buf
        buf += data
        want = len(self.req)
        if len(buf) < want:
            return
        t0 = self.t0
        self.t0 = 0
        code = (
            OK
            if len(buf) == want and buf == self.req
            else (LONG_READ if len(buf) > want else MISMATCH)
        )
        buf.clear()
        if code != OK:
            self._drop()
        if self.warmup is not None:
            self.warmup.set_result((0, "" if code == OK else code))
            return
        self.w.record_named(now - t0, code, code == OK)
        if code != OK:
            self.w.note_error(code)
        self.next_call(now)

    # -- calls
    def send(self) -> None:
        self.messages += 1
        self.req = self.fixed or generate_payload(self.tid, self.messages)
        self.t0 = _now()
        t = self.transport
        if t is not None:
            if not t.is_closing():
                t.write(self.req)
                self.sent += len(self.req)
                return
            self._drop()
        self.start_connect()

    def _connected(self) -> None:
        assert self.transport is not None
        self.transport.write(self.req)
        self.sent += len(self.req)

    def _reset(self) -> None:
        self.buf.clear()

    def _record_failure(self, ns: int, why: str) -> None:
        self.w.record_named(ns, why, False)
