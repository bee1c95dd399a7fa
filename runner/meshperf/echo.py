"""A fast HTTP/1.1 echo server with fortio's echo semantics (``fortio server``'s echo handler).

Every path is the echo handler (spec section 4.3):

* ``size=N`` replies with N pseudo-random bytes (``application/octet-stream``), clamped to
  ``[0, max_payload]``; ``size=1024:10,512:5`` picks a size by percentage (the rest echo).
* ``status=503`` or ``status=503:20,404:10`` (percentages; the remainder is 200); an
  unparsable value answers 400.
* ``delay=250us`` or ``delay=10ms:20,1s:0.5``; each value is capped by ``max_delay``.
* Without ``size`` the request body is echoed back with its Content-Type.

It is an asyncio ``Protocol`` with a minimal parser (uvloop when installed): the server must
not be the bottleneck of a sidecar benchmark on the same machine. Several worker processes
share the port with ``SO_REUSEPORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import ipaddress
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from meshperf import limits
from meshperf.clock import Scheduler, libc, new_event_loop
from meshperf.errors import ConfigError
from meshperf.goduration import parse_duration

_now = time.perf_counter_ns

DEFAULT_MAX_DELAY_NS = 1500 * 1000 * 1000  # fortio's -max-echo-delay default, 1.5s
DEFAULT_MAX_PAYLOAD = 256 * 1024  # fortio's -maxpayloadsizekb default
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024

# Incompressible bytes shared by every response; seeded so runs are reproducible.
_PAYLOAD = random.Random(0x5EED).randbytes(DEFAULT_MAX_PAYLOAD)

_REASONS: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def _status_line(code: int) -> bytes:
    reason = _REASONS.get(code) or f"status code {code}".encode()
    return b"HTTP/1.1 %d %s\r\n" % (code, reason)


class _DateCache:
    """The ``Date`` header changes once a second; formatting it per request is wasted work."""

    __slots__ = ("_sec", "_value")

    def __init__(self) -> None:
        self._sec = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._sec:
            self._sec = now
            self._value = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._value


_DATE = _DateCache()


def _weighted(text: str, parse: Callable[[str], Any], default: Any, bad: Any) -> Any:
    """Fortio's ``v1:p1,v2:p2`` percent lists: ``default`` for the remainder, ``bad`` on error."""
    total = 0.0
    weights: list[float] = []
    values: list[Any] = []
    for item in text.split(","):
        parts = item.split(":")
        if len(parts) != 2:
            return bad
        try:
            value = parse(parts[0])
            p = float(parts[1])
        except ValueError:
            return bad
        if not 0 <= p <= 100:
            return bad
        total += p
        # Rounded like fortio (stats.Round) so 33.3+33.3+33.4 is exactly 100, not more.
        cum = round(total, 4)
        if cum > 100:
            return bad
        weights.append(cum)
        values.append(value)
    r = 100.0 * random.random()
    for w, v in zip(weights, values, strict=True):
        if r <= w:  # fortio compares with <=
            return v
    return default


def generate_status(text: str) -> int:
    """Fortio's ``generateStatus``: 400 for anything unparsable."""
    if "," not in text and ":" not in text:
        try:
            code = int(text)
        except ValueError:
            return 400
    else:
        code = _weighted(text, int, 200, 400)
    return code if 100 <= code <= 999 else 400


def generate_size(text: str, max_size: int = DEFAULT_MAX_PAYLOAD) -> int:
    """Fortio's ``generateSize``: -1 means echo the body (also for unparsable input)."""
    if "," not in text and ":" not in text:
        try:
            size = int(text)
        except ValueError:
            return -1
    else:
        size = _weighted(text, int, -1, -1)
        if size < 0:
            return -1
    return max(0, min(size, max_size))


def generate_delay(text: str, max_ns: int = DEFAULT_MAX_DELAY_NS) -> int:
    """Fortio's ``generateDelay`` in nanoseconds: 0 for unparsable input, capped by ``max_ns``."""
    if "," not in text and ":" not in text:
        try:
            ns = parse_duration(text)
        except ValueError:
            return 0
    else:
        ns = _weighted(text, parse_duration, 0, 0)
    return max(0, min(ns, max_ns))


def _content_length(lower: bytes, i: int) -> int:
    """The request's Content-Length from the header at ``i`` on, -1 when it is invalid.

    RFC 9112 section 6.3: several Content-Length fields (or a ``5, 5`` list) are accepted only
    when every value is the same valid number; otherwise the framing is unknown.
    """
    value = -1
    while i >= 0:
        j = lower.find(b"\r\n", i + 17)
        for item in lower[i + 17 : j if j >= 0 else None].split(b","):
            item = item.strip()
            if not item.isdigit():  # no sign, no blank: RFC 9110 8.6 is 1*DIGIT
                return -1
            n = int(item)
            if value not in (-1, n):
                return -1
            value = n
        i = lower.find(b"\r\ncontent-length:", i + 17)
    return value


def _query(target: bytes) -> dict[str, str]:
    q = target.find(b"?")
    if q < 0:
        return {}
    out: dict[str, str] = {}
    for pair in target[q + 1 :].decode("latin-1").split("&"):
        if not pair:
            continue
        k, _, v = pair.partition("=")
        if "%" in k or "+" in k:
            k = unquote_plus(k)
        if "%" in v or "+" in v:
            v = unquote_plus(v)
        out.setdefault(k, v)  # first value wins, like Go's FormValue
    return out


class EchoConfig:
    """What the server runs: the HTTP echo's caps, and the optional TCP echo and gRPC ping
    listeners (fortio ``server``'s ``-tcp-port`` and ``-grpc-port``; ports resolved by
    ``serve`` so that port 0 gives every worker the same one)."""

    __slots__ = ("max_delay_ns", "max_payload", "plans", "tcp", "grpc", "health_service")

    def __init__(
        self,
        max_delay_ns: int = DEFAULT_MAX_DELAY_NS,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        tcp: tuple[str, int] | None = None,
        grpc: tuple[str, int] | None = None,
        health_service: str = "ping",
    ) -> None:
        self.max_delay_ns = max_delay_ns
        self.max_payload = max_payload
        self.plans: dict[bytes, _Plan] = {}
        self.tcp = tcp
        self.grpc = grpc
        self.health_service = health_service


class _Plan:
    """The echo parameters of one request target, parsed once.

    ``fixed`` holds (delay ns, status, size) when no value is a weighted list; otherwise
    ``draw`` picks them anew for every request, as fortio does.
    """

    __slots__ = ("q", "cfg", "fixed")

    def __init__(self, q: dict[str, str], cfg: EchoConfig) -> None:
        self.q = q
        self.cfg = cfg
        weighted = any(
            "," in q.get(k, "") or ":" in q.get(k, "") for k in ("delay", "status", "size")
        )
        self.fixed: tuple[int, int, int] | None = None if weighted else self.draw()

    def draw(self) -> tuple[int, int, int]:
        q = self.q
        delay = generate_delay(q["delay"], self.cfg.max_delay_ns) if "delay" in q else 0
        status = generate_status(q["status"]) if "status" in q else 200
        size = generate_size(q["size"], self.cfg.max_payload) if "size" in q else -1
        return delay, status, size


def echo_reply(
    cfg: EchoConfig, target: bytes, body: bytes, content_type: bytes
) -> tuple[int, int, bytes, bytes]:
    """fortio's echo handler for one request: (delay ns, status, content type, payload).

    The one rule for HTTP/1.1 and HTTP/2 alike (fortio serves both from the same handler).
    """
    status = 200
    size = -1
    delay = 0
    if b"?" in target:
        plan = cfg.plans.get(target)
        if plan is None:
            plan = _Plan(_query(target), cfg)
            if len(cfg.plans) < 1024:  # a benchmark asks the same few URLs over and over
                cfg.plans[target] = plan
        delay, status, size = plan.fixed or plan.draw()
    if size >= 0:
        payload = _PAYLOAD[:size]
        content_type = b"application/octet-stream"
    else:
        payload = body
    if status < 200 or status in (204, 304):
        payload = b""
    return delay, status, content_type, payload


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class EchoProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered strictly in order (pipelining safe)."""

    __slots__ = ("cfg", "sched", "transport", "buf", "busy", "closing", "arrived", "continued")

    def __init__(self, cfg: EchoConfig, sched: Scheduler) -> None:
        self.cfg = cfg
        self.sched = sched
        self.arrived = 0
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False  # a delayed reply is pending: later requests wait in buf
        self.closing = False
        self.continued = False  # "100 Continue" sent for the request being read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True

    def data_received(self, data: bytes) -> None:
        self.arrived = _now()
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        buf = self.buf
        while buf and not self.closing:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    self._fail(431)
                return
            head = bytes(buf[:end])
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            parts = request_line.split(b" ")
            if buf.startswith(H2_PREFACE[:18]) and self.transport is not None:
                # h2c with prior knowledge (fortio's server: http.Protocols with
                # UnencryptedHTTP2): this connection speaks HTTP/2 from here on.
                from meshperf import echo_h2  # h2 is loaded only when a client speaks it

                proto = echo_h2.H2Echo(self.cfg, self.sched)
                self.transport.set_protocol(proto)
                proto.connection_made(self.transport)
                self.transport = None
                self.closing = True
                proto.data_received(bytes(buf))
                buf.clear()
                return
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
                self._fail(400)
                return
            lower = head.lower()
            body_len = 0
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                body_len = _content_length(lower, i)
                if body_len == -1 or b"\r\ntransfer-encoding:" in lower:
                    # RFC 9112 6.3: conflicting lengths (or a length beside a transfer coding)
                    # are unrecoverable framing errors; guessing one is how requests smuggle.
                    self._fail(400)
                    return
                if body_len > MAX_BODY_BYTES:
                    self._fail(413)
                    return
            elif b"\r\ntransfer-encoding:" in lower:
                self._fail(501)  # chunked request bodies: no client of ours sends them
                return
            total = end + 4 + body_len
            if len(buf) < total:
                if not self.continued and b"\r\nexpect: 100-continue" in lower:
                    # Like Go's server: clients such as curl otherwise wait a second.
                    self.continued = True
                    if self.transport is not None:
                        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
            self.continued = False
            body = bytes(buf[end + 4 : total])
            del buf[:total]
            keep_alive = b"\r\nconnection: close" not in lower and (
                parts[2] != b"HTTP/1.0" or b"\r\nconnection: keep-alive" in lower
            )
            content_type = b""
            if body:
                i = lower.find(b"\r\ncontent-type:")
                if i >= 0:
                    j = head.find(b"\r\n", i + 15)
                    content_type = head[i + 15 : j if j >= 0 else None].strip()
            if not self._answer(parts[1], body, content_type, keep_alive, parts[0] == b"HEAD"):
                return

    def _answer(
        self, target: bytes, body: bytes, content_type: bytes, keep_alive: bool, head_only: bool
    ) -> bool:
        """Reply now, or later if a delay was asked; False when processing must pause."""
        delay, status, content_type, payload = echo_reply(self.cfg, target, body, content_type)
        length = len(payload)
        if head_only:
            payload = b""
        head = [_status_line(status), _DATE.get()]
        if content_type:
            head.append(b"Content-Type: " + content_type + b"\r\n")
        head.append(b"Content-Length: %d\r\n" % length)
        if not keep_alive:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        response = b"".join(head)
        if delay > 0:
            # Loop timers are ~1 ms coarse and may fire early; the scheduler is exact, so a
            # delay=5ms reply leaves 5 ms after the request arrived, not 4 or 6.
            self.busy = True
            self.sched.call_at(
                self.arrived + delay, self._send_delayed, (response, payload, keep_alive)
            )
            return False
        self._send(response, payload, keep_alive)
        return not self.closing

    def _send(self, head: bytes, payload: bytes, keep_alive: bool) -> None:
        t = self.transport
        if t is None:
            return
        if len(payload) < 16384:
            t.write(head + payload)
        else:
            t.write(head)
            t.write(payload)
        if not keep_alive:
            self.closing = True
            t.close()

    def _send_delayed(self, due: int, reply: tuple[bytes, bytes, bool]) -> None:
        self.busy = False
        self._send(*reply)
        self.arrived = _now()  # pipelined requests start their delay now, as in Go's server
        if not self.closing:
            self._process()

    def _fail(self, code: int) -> None:
        self.closing = True
        t = self.transport
        if t is not None:
            t.write(
                _status_line(code) + _DATE.get() + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            t.close()


def parse_listen(text: str, flag: str = "-http-port") -> tuple[str, int]:
    """``-http-port`` value: ``8080``, ``:8080`` (both 127.0.0.1), ``127.0.0.2:8080``,
    ``[::1]:8080``. Only loopback addresses: the server is for benchmarks on this machine."""
    host = "127.0.0.1"
    port_text = text.strip()
    if ":" in port_text:
        h, _, port_text = port_text.rpartition(":")
        h = h.strip("[]")
        if h:
            host = h
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"bad {flag} {text!r}: expected PORT or HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"bad {flag} {text!r}: port out of range")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"bad {flag} {text!r}: only loopback addresses may be bound")
    return host, port


def make_socket(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
    """A bound (and listening) TCP socket; ``reuse_port`` lets several processes share it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        raise ConfigError(f"cannot resolve listen address {host!r}: {e}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        if listen:
            sock.listen(4096)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _serve_socket(sock: socket.socket, cfg: EchoConfig, ready: Callable[[], None] | None) -> None:
    """Serve ``sock`` until SIGTERM/SIGINT (or the parent's death in a worker)."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    async def run() -> None:
        sched = Scheduler(loop, early=True)
        server = await loop.create_server(lambda: EchoProtocol(cfg, sched), sock=sock, backlog=4096)
        servers = [server]
        if cfg.tcp is not None:
            tcp_sock = make_socket(*cfg.tcp, reuse_port=True)
            servers.append(await loop.create_server(TcpEcho, sock=tcp_sock, backlog=4096))
        grpc_server = None
        if cfg.grpc is not None:
            from meshperf import echo_grpc  # grpcio is loaded only when gRPC is served

            grpc_server = echo_grpc.start(cfg.grpc[0], cfg.grpc[1], cfg)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready()
        await stop.wait()
        for srv in servers:
            srv.close()
        if grpc_server is not None:
            grpc_server.stop(0)
        sched.close()

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


class TcpEcho(asyncio.Protocol):
    """fortio's TCP echo server (fnet.handleTCPEchoRequest: io.Copy(conn, conn))."""

    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close once the peer is done, as io.Copy returning does

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the parent dies, even by SIGKILL (no orphans)."""
    with contextlib.suppress(Exception):
        libc().prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_main(
    host: str, port: int, cfg: EchoConfig, conn: multiprocessing.connection.Connection
) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    try:
        sock = make_socket(host, port, reuse_port=True)
    except ConfigError as e:
        conn.send(str(e))
        return

    def ready() -> None:
        # Ctrl-C reaches the whole process group; only the parent's SIGTERM stops a worker.
        asyncio.get_event_loop().remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        conn.send("ok")

    _serve_socket(sock, cfg, ready)


def serve(
    host: str,
    port: int,
    workers: int = 1,
    cfg: EchoConfig | None = None,
    on_listening: Callable[[str, int], None] | None = None,
) -> None:
    """Run the echo server in the foreground until SIGTERM/SIGINT.

    ``on_listening(host, port)`` is called once every worker accepts connections (the port is
    the real one when 0 was asked).
    """
    cfg = cfg or EchoConfig()
    if workers < 1:
        raise ConfigError(f"-workers must be >= 1, got {workers}")
    limits.check_workers(workers)
    # The TCP and gRPC ports are reserved here (bound with SO_REUSEPORT, not listening) so that
    # port 0 gives every worker, and the announced line, the same port.
    extra: list[socket.socket] = []
    try:
        for kind in ("tcp", "grpc"):
            addr = getattr(cfg, kind)
            if addr is not None:
                r = make_socket(addr[0], addr[1], reuse_port=True, listen=False)
                extra.append(r)
                setattr(cfg, kind, (addr[0], r.getsockname()[1]))
        _serve(host, port, workers, cfg, on_listening)
    finally:
        for r in extra:
            r.close()


def _serve(
    host: str,
    port: int,
    workers: int,
    cfg: EchoConfig,
    on_listening: Callable[[str, int], None] | None,
) -> None:
    def announce(bound: int) -> None:
        if on_listening is None:
            return
        on_listening(host, bound)
        for kind, what in (("tcp", "TCP echo server"), ("grpc", "gRPC ping server")):
            addr = getattr(cfg, kind)
            if addr is not None:
                shown = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
                print(f"Fortio-compatible {what} listening on {shown}:{addr[1]}", flush=True)

    if workers == 1:
        sock = make_socket(host, port, reuse_port=False)
        bound = sock.getsockname()[1]

        def ready() -> None:
            announce(bound)

        _serve_socket(sock, cfg, ready)
        return

    # Reserve the port (bound, not listening, so it takes no connections) so that port 0
    # gives every worker the same port; each worker then listens on its own socket.
    reserve = make_socket(host, port, reuse_port=True, listen=False)
    bound = reserve.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        pipes = []
        for _ in range(workers):
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(host, bound, cfg, child_end), daemon=True)
            proc.start()
            child_end.close()
            procs.append(proc)
            pipes.append(parent_end)
        for pipe in pipes:
            if not pipe.poll(30):
                raise ConfigError("an echo server worker did not start within 30s")
            msg = pipe.recv()
            if msg != "ok":
                raise ConfigError(str(msg))
        reserve.close()
        announce(bound)
        while not stopping and all(p.is_alive() for p in procs):
            multiprocessing.connection.wait([p.sentinel for p in procs], timeout=0.5)
        if not stopping:
            raise ConfigError("an echo server worker died")
    finally:
        reserve.close()
        for p in procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        for s, h in old.items():
            signal.signal(s, h)


def print_listening(host: str, port: int) -> None:
    """The one line a parent process waits for (stdout, flushed)."""
    shown = f"[{host}]" if ":" in host else host
    print(f"Fortio-compatible echo server listening on {shown}:{port}", flush=True)
    sys.stdout.flush()
