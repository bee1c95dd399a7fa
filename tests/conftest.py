"""Helpers several test modules share: a free loopback port, the built-in echo server,
runner/fortio.py loaded as a module, runner.py's ``main`` run in-process, and the processes a
run left behind.

Import them (``from conftest import free_port, start_echo_server``); tests/ is on the path.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
LOADGEN = REPO / "runner" / "loadgen.py"
LISTEN_RE = re.compile(rb"listening on (\S+):(\d+)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EchoServer:
    """``runner/loadgen.py server`` in its own process, on an ephemeral loopback port."""

    def __init__(self, proc: subprocess.Popen[bytes], host: str, port: int) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.base = f"http://{host}:{port}"

    def conn(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        c = self.conn(timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 10 s (which fails the caller); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


def start_echo_server(*extra: str, startup: float = 15.0) -> EchoServer:
    """Start ``loadgen.py server -http-port 127.0.0.1:0 EXTRA...``; wait for its listening line."""
    proc = subprocess.Popen(
        [sys.executable, str(LOADGEN), "server", "-http-port", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = b""
    deadline = time.monotonic() + startup
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if sel.select(timeout=0.5):
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    sel.close()
    m = LISTEN_RE.search(line)
    if m is None:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"echo server did not start: {line!r} {err!r}")
    return EchoServer(proc, m.group(1).decode(), int(m.group(2)))


def load_fortio_cli() -> ModuleType:
    """A fresh copy of ``runner/fortio.py`` as the module ``fortio_cli``, so its ``main`` runs
    in-process (each caller gets its own, as a module of its own would)."""
    spec = importlib.util.spec_from_file_location("fortio_cli", REPO / "runner" / "fortio.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def marked_processes(*marks: str) -> list[str]:
    """Processes (other than this one) with one of ``marks`` as their TMPDIR or in their
    command line: what a run started and failed to stop."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.pid == os.getpid():
            continue
        try:
            cmdline = " ".join(p.info["cmdline"] or [])
            tmpdir = p.environ().get("TMPDIR", "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if any(m == tmpdir or m in cmdline for m in marks):
            found.append(f"{p.pid}: {cmdline}")
    return found


def run_runner(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``runner.main(argv)`` in-process: its exit status (argparse's own exits included) and
    what it printed (``capsys``: pytest's capture fixture)."""
    import runner  # runner/runner.py; imported here so modules that do not use it never load it

    return run_main(runner.main, capsys, *argv)


def run_main(main: Callable[[list[str]], int], capsys: Any, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own exits
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
