"""A real HTTP server on 127.0.0.1 that serves result files the way fortio does.

It answers with fortio's own listing formats (docs/fortio-format.md 3.2-3.4):
``index.tsv`` (GCS URL list with size and base64 MD5), the HTML data listing, and the browse
page's ``<option value="...">`` list, in server mode (``/fortio/data/``, other paths echo) or
report mode (``/data/``, ``/fortio*`` redirects to ``/``). Faults can be injected per file:
an HTTP status instead of the file, or a body cut short while the listing keeps the full
size and MD5. ``SilentServer`` accepts connections and never answers.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from conftest import free_port

LISTINGS = ("tsv", "html", "browse")


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (a size check, a timeout) are normal here, not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeFortio:
    """Serve ``files`` (name -> bytes) like ``fortio server`` (``ui_path="/fortio/"``) or
    ``fortio report`` (``ui_path="/"``).

    ``listing``: the best listing the server offers: "tsv" (all three), "html" (no index.tsv)
    or "browse" (browse page only). ``fail``: name -> HTTP status served instead of the file.
    ``truncate``: names whose body is served cut in half (listing unchanged). ``tamper``: names
    served with one digit changed (same size, other MD5).
    """

    def __init__(
        self,
        files: Mapping[str, bytes],
        *,
        ui_path: str = "/fortio/",
        listing: str = "tsv",
        fail: Mapping[str, int] | None = None,
        truncate: Iterable[str] = (),
        tamper: Iterable[str] = (),
    ) -> None:
        if listing not in LISTINGS:
            raise ValueError(f"listing must be one of {LISTINGS}")
        self.files = dict(files)
        self.ui_path = ui_path if ui_path.endswith("/") else ui_path + "/"
        self.report_mode = self.ui_path == "/"
        self.listing = listing
        self.fail = dict(fail or {})
        self.truncate = set(truncate)
        self.tamper = set(tamper)
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @classmethod
    def from_dir(cls, directory: str | Path, **kwargs: Any) -> FakeFortio:
        files = {p.name: p.read_bytes() for p in Path(directory).glob("*.json")}
        return cls(files, **kwargs)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_url(self) -> str:
        return f"{self.url}{self.ui_path}data/"

    def start(self) -> FakeFortio:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeFortio:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- fortio's listing formats ------------------------------------------------------------

    def names(self) -> list[str]:
        """Listed names: reverse lexical order, like fortio."""
        return sorted(self.files, reverse=True)

    def index_tsv(self, host: str) -> bytes:
        lines = ["TsvHttpData-1.0\n"]
        for name in self.names():
            body = self.files[name]
            md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
            lines.append(f"http://{host}{self.ui_path}data/{name}\t{len(body)}\t{md5}\n")
        return "".join(lines).encode()

    def html_listing(self) -> bytes:
        parts = ["<html><body><ul>\n"]
        for name in self.names():
            stem = name.removesuffix(".json")
            parts.append(f'<li><a href="{stem}.json">{stem}</a>\n')
        parts.append("</ul></body></html>")
        return "".join(parts).encode()

    def browse_page(self) -> bytes:
        opts = "".join(
            f'<option value="{n}">{n.removesuffix(".json")}</option>\n' for n in self.names()
        )
        return (
            "<!DOCTYPE html><html><head><title>Fortio browse</title></head><body>\n"
            '<form><input type="text" name="s" value=""> <a href="browse">all</a>\n'
            f'<select name="sel" id="files" multiple size="20">\n{opts}</select>\n'
            "</form></body></html>\n"
        ).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Go servers (fortio) set TCP_NODELAY; without it headers and body written
            # separately meet the client's delayed ACK and each response waits ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

            def _send(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                with fake._lock:
                    fake.requests.append(path)
                data = fake.ui_path + "data/"
                html = "text/html; charset=UTF-8"
                if fake.report_mode and path.startswith("/fortio"):
                    self._send(303, b"", html, Location="/")
                elif path == data + "index.tsv":
                    if fake.listing == "tsv":
                        host = self.headers.get("Host", "127.0.0.1")
                        self._send(200, fake.index_tsv(host), "text/plain; charset=UTF-8")
                    else:
                        self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
                elif path in (data, data + "index.html"):
                    if fake.listing in ("tsv", "html"):
                        self._send(200, fake.html_listing(), html)
                    else:
                        self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
                elif path.startswith(data):
                    self._file(path[len(data) :])
                elif path == fake.ui_path + "browse" or (fake.report_mode and path == "/"):
                    self._send(200, fake.browse_page(), html)
                elif fake.report_mode:
                    self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
                else:
                    self._send(200, b"", "text/plain")  # fortio server: any other path echoes

            def _file(self, name: str) -> None:
                if name in fake.fail:
                    self._send(fake.fail[name], b"injected failure\n", "text/plain")
                elif name in fake.files and name.endswith(".json"):
                    body = fake.files[name]
                    if name in fake.truncate:
                        body = body[: len(body) // 2]
                    if name in fake.tamper:  # same length, one digit changed: only MD5 tells
                        i = next(i for i, c in enumerate(body) if chr(c).isdigit())
                        body = (
                            body[:i] + (b"1" if body[i : i + 1] != b"1" else b"2") + body[i + 1 :]
                        )
                    self._send(
                        200, body, "application/json", **{"Access-Control-Allow-Origin": "*"}
                    )
                else:
                    self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")

        return Handler


class SilentServer:
    """Listens on 127.0.0.1 and never accepts: connects succeed, answers never come."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port_url() -> str:
    """A URL on a loopback port nothing listens on (bound, then released)."""
    return f"http://127.0.0.1:{free_port()}"


def main(argv: list[str] | None = None) -> int:
    """Serve a directory's ``*.json`` until interrupted; prints the base URL first."""
    import argparse
    import signal
    import sys

    ap = argparse.ArgumentParser(description="Serve fortio result files like fortio does.")
    ap.add_argument("directory", type=Path)
    ap.add_argument("--ui-path", default="/fortio/", help="'/' for fortio report's layout")
    ap.add_argument("--listing", choices=LISTINGS, default="tsv")
    args = ap.parse_args(argv)
    server = FakeFortio.from_dir(args.directory, ui_path=args.ui_path, listing=args.listing)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(server.url, flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
