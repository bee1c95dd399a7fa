"""Connection handling shared by the protocol clients: dialing (plain or TLS), tearing a
socket down, and ``ConnCaller``, a fortio thread that owns one connection.

fortio's shape (periodic/periodic.go driving each runner's ``Run``): the periodic part
(``meshperf.loadgen.periodic.Caller``) decides when a call is due; a protocol says how one
call is made. What every connection-owning protocol does alike lives here once: connect on
demand, record the connect time and count the socket, fail the call in flight (recording it,
or answering the warm-up), and drop the socket so its late events cannot touch the next one.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

from meshperf.clock import now_ns as _now
from meshperf.goduration import SECOND
from meshperf.loadgen.periodic import Caller

if TYPE_CHECKING:
    from meshperf.loadgen.worker import Worker


class Detached(asyncio.Protocol):
    """Protocol of a socket being torn down: ignores whatever it still reports."""


async def dial(w: Worker, protocol: asyncio.Protocol) -> None:
    """Connect ``protocol`` to the worker's resolved address (TLS when the worker has a
    context). Raises ``OSError``/``ssl.SSLError`` as ``create_connection`` does."""
    if w.tls is not None:
        await w.loop.create_connection(
            lambda: protocol, w.addr[0], w.addr[1], ssl=w.tls, server_hostname=w.target.host
        )
    else:
        await w.loop.create_connection(lambda: protocol, w.addr[0], w.addr[1])


def abort(transport: asyncio.Transport | None, connecting: asyncio.Future[Any] | None) -> None:
    """Tear down a socket and a connect in progress. The socket's protocol is swapped first:
    the same protocol object serves the next socket, and the old one's late
    ``connection_lost`` must not fail the next call."""
    if transport is not None:
        transport.set_protocol(Detached())
        transport.abort()
    if connecting is not None:
        connecting.cancel()


def connect_error(e: OSError) -> str:
    """The error text of a failed connect (the OS's message when it has one)."""
    return e.strerror or str(e)


def http_warmup(code: int) -> tuple[int, str]:
    """The warm-up call's answer for an HTTP status: fortio's codeIsOK (fhttp, since 1.47:
    any 2xx and 418) is a success, anything else an error naming the status."""
    ok = 200 <= code < 300 or code == 418
    return code, "" if ok else f"HTTP status {code}"


class ConnCaller(Caller, asyncio.Protocol):
    """A fortio thread on its own connection. Subclasses implement ``send`` (using
    ``start_connect`` when there is no usable socket) and ``_connected`` (the socket is up and
    this call is still waiting: write it); ``_failed`` is the periodic ``Caller``'s."""

    def __init__(self, w: Worker, tid: int, calls: int) -> None:
        super().__init__(w, tid, calls)
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Future[Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start_connect(self) -> None:
        self.connecting = asyncio.ensure_future(self._connect(self.t0))

    async def _connect(self, t0: int) -> None:
        try:
            await dial(self.w, self)
        except asyncio.CancelledError:
            return
        except (OSError, ssl.SSLError) as e:
            self.connecting = None
            self._failed(_now(), connect_error(e))
            return
        self.connecting = None
        self.sockets += 1
        self.w.stats.connect.record((_now() - t0) / SECOND)
        if self.transport is not None and self.t0 == t0:
            self._connected()

    def _connected(self) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        t, c = self.transport, self.connecting
        self.transport = None
        self.connecting = None
        abort(t, c)
