"""Running commands in a pod through the Kubernetes exec API (websocket, v4 channel protocol).

The command is an argv list handed to the API server; no shell runs anywhere, neither here nor
in the pod. Frames arrive on channels: 1 stdout, 2 stderr, 3 the final status, a JSON
``metav1.Status``: ``{"status": "Success"}`` or a Failure whose ``NonZeroExitCode`` cause
carries the exit code. Every exec has a deadline and can be aborted from another thread
(``ExecSession.abort``), which is how Ctrl-C closes the websocket of a test in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from kubernetes import client as kclient
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from meshperf.errors import ClusterError

STDOUT_CHANNEL = 1
STDERR_CHANNEL = 2
STATUS_CHANNEL = 3

# How long one poll of the websocket waits: short enough that a stop request is noticed
# quickly, long enough not to spin.
POLL_SECONDS = 0.2
# Short commands (pgrep, pkill, perf script) get this long unless told otherwise.
SHORT_EXEC_TIMEOUT = 30.0
# Longest a read or write on the exec websocket may block once connected.
SOCKET_TIMEOUT = 30.0
# Longest the API server may take to open an exec stream (TCP, TLS, websocket upgrade).
CONNECT_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What one exec produced. ``exit_code`` is None when the API reported no exit code."""

    argv: tuple[str, ...]
    stdout: bytes
    stderr: bytes
    exit_code: int | None
    message: str  # the status message for failures that are not an exit code, else ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def stderr_tail(self, limit: int = 300) -> str:
        """The end of stderr on one line: where a failing command says why."""
        text = self.stderr.decode("utf-8", "replace").strip()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])
        return tail[-limit:]

    def describe_failure(self) -> str:
        """One line: which command failed and how."""
        what = " ".join(self.argv[:2])
        if self.exit_code is None:
            why = self.message or "no exit status"
        else:
            why = f"exit code {self.exit_code}"
        tail = self.stderr_tail()
        return f"{what} failed in the pod: {why}" + (f"; stderr: {tail}" if tail else "")


def parse_status(raw: bytes | str) -> tuple[int | None, str]:
    """Exit code and message from the status channel's ``metav1.Status`` JSON."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw.strip():
        return None, "the exec stream closed without a status"
    try:
        status = json.loads(raw)
    except ValueError:
        return None, f"unreadable exec status {raw[:100]!r}"
    if not isinstance(status, dict):
        return None, f"unreadable exec status {raw[:100]!r}"
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or status.get("reason") or "exec failed")
    if status.get("reason") == "NonZeroExitCode":
        causes = (status.get("details") or {}).get("causes") or []
        for cause in causes:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", "")), message
                except ValueError:
                    break
    return None, message


class ExecSession:
    """One exec in flight: read it to the end with ``wait``; ``abort`` from any thread."""

    def __init__(
        self,
        core: kclient.CoreV1Api,
        pod: str,
        namespace: str,
        container: str,
        argv: Sequence[str],
    ) -> None:
        self.argv = tuple(argv)
        self.pod = pod
        self.namespace = namespace
        self.container = container
        self._aborted = threading.Event()
        self.interrupt_sent = False  # set by the owner once it asked the remote command to stop
        # kubernetes.stream swaps call_api on the ApiClient while it connects: a client of its
        # own keeps concurrent REST calls and other execs (perf, stop) off the websocket path.
        self._api = kclient.ApiClient(configuration=core.api_client.configuration)
        self._ws: Any = self._connect(CONNECT_TIMEOUT)
        # From here on no socket read or write may block for ever either.
        self._ws.sock.settimeout(SOCKET_TIMEOUT)

    def _connect(self, limit: float) -> Any:
        """Open the exec websocket, or raise ``ClusterError`` after ``limit`` seconds.

        kubernetes.stream connects with no timeout at all: an API server (or a proxy in front
        of it) that accepts the connection and never answers the upgrade would hang the run.
        The connect runs in a thread of its own; one that finishes after we gave up closes its
        stream at once (the command, if it started, ends at its own -t).
        """
        box: dict[str, Any] = {}
        gave_up = threading.Event()

        def connect() -> None:
            try:
                ws = stream(
                    kclient.CoreV1Api(self._api).connect_get_namespaced_pod_exec,
                    self.pod,
                    self.namespace,
                    command=list(self.argv),
                    container=self.container,
                    stderr=True,
                    stdin=False,
                    stdout=True,
                    tty=False,
                    binary=True,
                    _preload_content=False,
                )
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = e
                return
            box["ws"] = ws
            if gave_up.is_set():
                with contextlib.suppress(Exception):
                    ws.close()

        t = threading.Thread(target=connect, name=f"exec-connect-{self.argv[0]}", daemon=True)
        t.start()
        t.join(limit)
        where = f"{self.argv[0]!r} in pod {self.namespace}/{self.pod} container {self.container}"
        if t.is_alive():
            gave_up.set()
            if "ws" in box:  # connected in the instant between the join and the flag
                with contextlib.suppress(Exception):
                    box["ws"].close()
            self._close_api()
            raise ClusterError(
                f"cannot exec {where}: the API server did not open the exec stream within "
                f"{limit:.0f} s"
            )
        err = box.get("error")
        if err is not None:
            self._close_api()
            if isinstance(err, ApiException):
                raise ClusterError(f"cannot exec {where}: {_api_reason(err)}") from err
            raise err
        return box["ws"]

    def wait(self, timeout: float) -> ExecResult:
        """Read stdout/stderr until the command ends, ``timeout`` passes or ``abort`` is called."""
        out = bytearray()
        err = bytearray()
        status = b""
        deadline = time.monotonic() + timeout
        ws = self._ws
        try:
            while ws.is_open():
                if self._aborted.is_set():
                    raise ClusterError(f"{' '.join(self.argv[:2])} in pod {self.pod} was stopped")
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"{' '.join(self.argv[:2])} in pod {self.pod} did not finish within "
                        f"{timeout:.0f} s"
                    )
                ws.update(timeout=POLL_SECONDS)
                out += ws.read_channel(STDOUT_CHANNEL)
                err += ws.read_channel(STDERR_CHANNEL)
                status += ws.read_channel(STATUS_CHANNEL)
            out += ws.read_channel(STDOUT_CHANNEL)
            err += ws.read_channel(STDERR_CHANNEL)
            status += ws.read_channel(STATUS_CHANNEL)
        except ClusterError:
            raise
        except Exception as e:  # websocket or socket errors, an abort's shutdown included
            if self._aborted.is_set():
                raise ClusterError(
                    f"{' '.join(self.argv[:2])} in pod {self.pod} was stopped"
                ) from e
            raise ClusterError(
                f"exec of {self.argv[0]!r} in pod {self.pod} lost its connection: {e}"
            ) from e
        finally:
            self.close()
        code, message = parse_status(bytes(status))
        return ExecResult(self.argv, bytes(out), bytes(err), code, message)

    def abort(self) -> None:
        """Make ``wait`` return now (from any thread): shut the socket down under it."""
        self._aborted.set()
        sock = getattr(getattr(self._ws, "sock", None), "sock", None)
        if sock is not None:
            try:
                # shutdown, not close: it wakes a poll() blocked in another thread.
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        try:
            self._ws.close()
        except Exception:  # noqa: S110 - closing an already broken socket is fine
            pass
        self._close_api()

    def _close_api(self) -> None:
        try:
            self._api.close()
        except Exception:  # noqa: S110 - a pool that never opened
            pass


def run_exec(
    core: kclient.CoreV1Api,
    pod: str,
    namespace: str,
    container: str,
    argv: Sequence[str],
    timeout: float = SHORT_EXEC_TIMEOUT,
) -> ExecResult:
    """Run a short command to the end and return what it produced (exit status not checked)."""
    return ExecSession(core, pod, namespace, container, argv).wait(timeout)


def ere_escape(text: str) -> str:
    """Escape ``text`` for a POSIX extended regular expression (pkill -f patterns)."""
    return "".join("\\" + c if c in ".[]()*+?{}|^$\\" else c for c in text)


def pkill_argv(label: str) -> list[str]:
    """argv that interrupts the ``fortio load`` run carrying ``label`` (SIGINT: fortio then
    stops early and still prints its result)."""
    return ["pkill", "-INT", "-f", f"fortio load .*-labels {ere_escape(label)}( |$)"]


def _api_reason(e: ApiException) -> str:
    """One line from a failed exec handshake; websocket-client's text is
    ``Handshake status 403 Forbidden -+-+- {headers} -+-+- {body}``: keep the status and
    the ``metav1.Status`` message of the body."""
    text = str(e.reason or e).strip()
    parts = text.split(" -+-+- ")
    if len(parts) == 3:
        head, body = parts[0], parts[2]
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return f"{head}: {status['message']}"[:300]
        return head[:300]
    lines = text.splitlines()
    return (lines[0] if lines else "unknown error")[:300]
