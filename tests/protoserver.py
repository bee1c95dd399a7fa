"""The echo server with its HTTP, TCP and gRPC listeners, started as the platforms start it
(``python -m meshperf.loadgen server``), and the load generator run the same way."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "runner"
LISTEN_RE = re.compile(r"Fortio-compatible (.+) listening on (\S+):(\d+)")
KINDS = {"echo server": "http", "TCP echo server": "tcp", "gRPC ping server": "grpc"}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(LIBRARY) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def module_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "meshperf.loadgen", *args]


class ProtoServer:
    """``server -http-port 127.0.0.1:0`` plus ``-tcp-port``/``-grpc-port`` when asked."""

    def __init__(self, *extra: str, tcp: bool = False, grpc: bool = False) -> None:
        argv = module_argv("server", "-http-port", "127.0.0.1:0", *extra)
        if tcp:
            argv += ["-tcp-port", "127.0.0.1:0"]
        if grpc:
            argv += ["-grpc-port", "127.0.0.1:0"]
        want = 1 + tcp + grpc
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd="/"
        )
        self.ports: dict[str, int] = {}
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        text = ""
        deadline = time.monotonic() + 30
        try:
            while len(self.ports) < want and time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    text += chunk.decode()
                    for m in LISTEN_RE.finditer(text):
                        self.ports[KINDS[m.group(1)]] = int(m.group(3))
        finally:
            sel.close()
        if len(self.ports) < want:
            self.stop()
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"server did not start: {text!r} {err!r}")

    def url(self, path: str = "/echo") -> str:
        return f"http://127.0.0.1:{self.ports['http']}{path}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def __enter__(self) -> ProtoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def load(
    *args: str, timeout: float = 60
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """``load -json - ARGS``: the parsed result and the finished process."""
    p = subprocess.run(
        module_argv("load", "-json", "-", *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd="/",
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), p


def load_fails(*args: str) -> subprocess.CompletedProcess[str]:
    """A load run expected to be refused before anything starts."""
    p = subprocess.run(
        module_argv("load", "-json", "-", *args),
        capture_output=True,
        text=True,
        timeout=30,
        env=env(),
        cwd="/",
    )
    assert p.returncode != 0 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    return p
