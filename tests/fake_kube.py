"""A fake Kubernetes API server on 127.0.0.1, faked at the wire for the real ``kubernetes`` client.

HTTPS with a CA and server certificate made per instance, bearer-token auth, the read
endpoints meshperf uses (pods, services, namespaces, nodes, deployments, daemonsets,
``/version``), the ``ephemeralcontainers`` patch, and the exec websocket, speaking the
``v4.channel.k8s.io`` subprotocol (binary frames whose first byte is the channel: 1 stdout,
2 stderr, 3 status JSON); the framing is the ``websockets`` library's (its sans-I/O protocol),
not ours. Objects come from ``tests/data/kube/*.json``,
shaped like ``kubectl get -o json`` output. Every exec's argv is recorded; what an exec prints
is decided by ``exec_handler`` (default: ``fortio load`` prints a fortio 1.75-shaped JSON
result that ``tests/fortio_data.py`` builds, so the fake needs nothing outside the repository).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import hashlib
import json
import re
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.utils import accept_key

import conformance
import fortio_data
from conftest import free_port
from meshperf import fortiojson
from tlsfiles import server_tls_files

DATA_DIR = Path(__file__).resolve().parent / "data" / "kube"
# The fortio fixtures, for test modules that still import the name; the fake never reads them.
FIXTURES = conformance.path("fixtures", "fortio")
V4 = "v4.channel.k8s.io"
FRAME_CHUNK = 32 * 1024  # the API server relays exec output in pieces; so do we


@dataclasses.dataclass
class ExecCall:
    namespace: str
    pod: str
    container: str
    argv: list[str]
    query: dict[str, list[str]]
    closed_by_client: bool = False


@dataclasses.dataclass
class ExecReply:
    """What the fake does for one exec."""

    stdout: bytes = b""
    stderr: bytes = b""
    exit_code: int = 0
    failure: str | None = None  # an InternalError status (e.g. executable not found)
    hold: float = 0.0  # seconds to keep the stream open first (ends early on ``release``)


def status_json(reply: ExecReply, argv: list[str]) -> bytes:
    """The ``metav1.Status`` the API server sends on channel 3 when the command ends."""
    if reply.failure is not None:
        st: dict[str, Any] = {
            "metadata": {},
            "status": "Failure",
            "message": f"Internal error occurred: {reply.failure}",
            "reason": "InternalError",
            "details": {"causes": [{"message": reply.failure}]},
            "code": 500,
        }
    elif reply.exit_code == 0:
        st = {"metadata": {}, "status": "Success"}
    else:
        st = {
            "metadata": {},
            "status": "Failure",
            "message": (
                f"command terminated with non-zero exit code: error executing command "
                f"{argv}, exit code {reply.exit_code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(reply.exit_code)}]},
        }
    return json.dumps(st).encode()


def _not_found(kind: str, name: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'{kind} "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "kind": kind},
        "code": 404,
    }


def match_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors (``a=b,c!=d``), as meshperf sends them."""
    if not selector:
        return True
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        else:
            k, v = re.split("==?", term, maxsplit=1)
            if labels.get(k) != v:
                return False
    return True


@functools.cache
def fortio_reply() -> bytes:
    """The JSON ``fortio load`` prints by default: the run its stderr line below describes
    (178123 calls in 4m0s at 1000 qps requested, 742.2 qps achieved), latencies 0.8-2.8 ms."""
    latencies = [0.0008 + (i % 1000) * 0.000002 for i in range(178123)]
    doc = fortio_data.http_result(
        latencies,
        labels="5e1f00d2_qps_1000_c_16_1024_both",
        qps=1000.0,
        threads=16,
        duration_s=240.0,
        url="http://fortioserver:8080/echo?size=1024",
    )
    return fortiojson.dumps(doc).encode()


def pod_from(
    obj: dict[str, Any], *, name: str, app: str, ip: str, node: str, namespace: str = "twopods"
) -> dict[str, Any]:
    """A running, Ready pod as the API server would list it, made from a Deployment's pod
    template (or a Pod) another project wrote: its containers, init containers, annotations
    and labels kept as they are; ``app`` added to the labels so meshperf's selector finds it."""
    template = obj["spec"]["template"] if obj.get("kind") == "Deployment" else obj
    meta = copy.deepcopy(template.get("metadata") or {})
    spec = copy.deepcopy(template["spec"])
    labels = dict(meta.get("labels") or {}, app=app)
    spec["nodeName"] = node
    statuses = [
        {"name": c["name"], "ready": True, "restartCount": 0, "image": c.get("image", ""),
         "imageID": "", "state": {"running": {"startedAt": "2026-11-20T09:13:02Z"}}}
        for c in spec.get("containers", [])
    ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(meta.get("annotations") or {}),
            "uid": hashlib.sha256(name.encode()).hexdigest()[:32],
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "10.128.0.2",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": statuses,
        },
    }


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA_DIR / name).read_text())


class FakeKube:
    """Start with ``with FakeKube() as fk:``; write a kubeconfig with ``fk.kubeconfig(path)``."""

    def __init__(self, token: str = "fake-token-7f3a") -> None:
        self.token = token
        self.pods: dict[str, dict[str, Any]] = {}
        for name in ("pod-fortioclient.json", "pod-fortioserver.json"):
            pod = load(name)
            self.pods[pod["metadata"]["name"]] = pod
        self.services = {"fortioserver": load("service-fortioserver.json")}
        self.namespaces = {"twopods": load("namespace-twopods.json")}
        self.nodes = load("nodes.json")["items"]
        self.deployments = [load("deployment-istiod.json")]
        self.daemonsets: list[dict[str, Any]] = []
        self.other_pods: list[dict[str, Any]] = []  # pods of other namespaces (ztunnel ...)
        self.version = load("version.json")
        self.fortio_json = fortio_reply()
        self.exec_calls: list[ExecCall] = []
        self.requests: list[tuple[str, str]] = []
        self.patches: list[tuple[str, str, Any]] = []
        self.exec_handler: Callable[[ExecCall], ExecReply] = self.default_exec
        self.exec_refusal: tuple[int, str] | None = None  # (HTTP code, message) before upgrade
        self.upgrade_delay = 0.0  # seconds before an exec's upgrade is answered (ends on release)
        self.hold_fortio = 0.0  # seconds each ``fortio load`` stays open (ended by pkill)
        self.release = threading.Event()
        self.ephemeral_state: dict[str, Any] = {"running": {"startedAt": "2026-11-26T10:00:00Z"}}
        self.perf_script_output = ""
        self.files: dict[str, bytes] = {}  # what fortio wrote into the client's data volume
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="fake-kube-"))
        cert, key, ca = server_tls_files(self._tmp)
        self.ca_pem = ca.read_bytes()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        key.unlink()  # loaded; no key left on disk
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeKube:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: Path, context: str = "fake", server: str | None = None) -> Path:
        """Write a kubeconfig for this server (or ``server``) and return its path."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "fake-cluster",
                    "cluster": {
                        "server": server or self.url,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "fake-user", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "fake-cluster", "user": "fake-user"},
                }
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    # -- state helpers ------------------------------------------------------------------------

    def pod(self, prefix: str) -> dict[str, Any]:
        return next(p for n, p in self.pods.items() if n.startswith(prefix))

    def use_mesh(self, mesh: str) -> None:
        """Reshape the two hand-written (Istio sidecar) pods as ``mesh`` would have made them,
        with the containers, arguments and annotations the real projects write (the
        conformance tests check the same shapes against their objects in ../shared/upstream):

        - ``istio-ambient``: no sidecar; istio-cni's ``ambient.istio.io/redirection: enabled``.
        - ``linkerd``: ``linkerd-init`` with setup_test.sh's skip ports, ``linkerd-proxy`` as a
          native sidecar with ``LINKERD2_PROXY_CORES`` (linkerd2 ``inject_emojivoto_deployment``).
        - ``none``: no proxy at all.
        """
        for pod in self.pods.values():
            meta, spec = pod["metadata"], pod["spec"]
            ann = meta.setdefault("annotations", {})
            for k in [k for k in ann if "istio.io" in k]:
                del ann[k]
            meta["labels"].pop("security.istio.io/tlsMode", None)
            spec["containers"] = [c for c in spec["containers"] if c["name"] != "istio-proxy"]
            spec["initContainers"] = [
                c for c in spec.get("initContainers", []) if not c["name"].startswith("istio-")
            ]
            statuses = pod["status"].get("containerStatuses", [])
            pod["status"]["containerStatuses"] = [
                st for st in statuses if st["name"] != "istio-proxy"
            ]
            if mesh == "istio-ambient":
                ann["ambient.istio.io/redirection"] = "enabled"
            elif mesh == "linkerd":
                ann["linkerd.io/created-by"] = "linkerd/cli edge-26.8.3"
                ann["linkerd.io/proxy-version"] = "edge-26.8.3"
                ann["config.linkerd.io/skip-inbound-ports"] = "8075,8076,8077"
                ann["config.linkerd.io/skip-outbound-ports"] = "8075,8076,8077"
                ann["config.linkerd.io/proxy-cpu-request"] = "2"
                meta["labels"]["linkerd.io/control-plane-ns"] = "linkerd"
                image = "cr.l5d.io/linkerd/proxy:edge-26.8.3"
                spec["initContainers"] = [
                    {
                        "name": "linkerd-init",
                        "image": image,
                        "args": [
                            "--firewall-bin-path",
                            "iptables-nft",
                            "--firewall-save-bin-path",
                            "iptables-nft-save",
                            "--ipv6=false",
                            "--incoming-proxy-port",
                            "4143",
                            "--outgoing-proxy-port",
                            "4140",
                            "--proxy-uid",
                            "2102",
                            "--inbound-ports-to-ignore",
                            "4190,4191,8075,8076,8077",
                            "--outbound-ports-to-ignore",
                            "8075,8076,8077",
                        ],  # fmt: skip
                    },
                    {
                        "name": "linkerd-proxy",
                        "image": image,
                        "restartPolicy": "Always",
                        "env": [
                            {"name": "LINKERD2_PROXY_CORES", "value": "2"},
                            {"name": "LINKERD2_PROXY_CORES_MIN", "value": "2"},
                        ],
                        "resources": {"requests": {"cpu": "2", "memory": "512Mi"}},
                    },
                ]

    def set_pod(self, pod: dict[str, Any]) -> None:
        """Replace the pod with the same ``app`` label by ``pod`` (see ``pod_from``)."""
        app = pod["metadata"]["labels"]["app"]
        for name in [n for n, p in self.pods.items() if p["metadata"]["labels"].get("app") == app]:
            del self.pods[name]
        self.pods[pod["metadata"]["name"]] = pod

    def exclude_outbound_ports(self, ports: str) -> None:
        """Give the client's istio-init (and its annotation) these excluded outbound ports,
        as if setup_test.sh had rendered them."""
        pod = self.pod("fortioclient")
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundPorts"] = ports
        for c in pod["spec"].get("initContainers", []):
            if c["name"] == "istio-init":
                c["args"][c["args"].index("-o") + 1] = ports

    def calls(self, argv0: str) -> list[ExecCall]:
        return [c for c in self.exec_calls if c.argv and c.argv[0] == argv0]

    def default_exec(self, call: ExecCall) -> ExecReply:
        argv = call.argv
        if argv[:2] == ["fortio", "load"]:
            dest = argv[argv.index("-json") + 1] if "-json" in argv else ""
            stderr = (
                b"Fortio 1.69.5 running at 1000 queries per second, 8->8 procs, for 4m0s: "
                + argv[-1].encode()
                + b"\nAll done 178123 calls (plus 1 warmup) 1.255 ms avg, 742.2 qps\n"
                + f"Successfully wrote 5263 bytes of Json data to {dest or '?'}\n".encode()
            )
            if dest == "-":
                return ExecReply(stdout=self.fortio_json, stderr=stderr, hold=self.hold_fortio)
            # fortio writes the file in the load container; the pod's volume shows it to all.
            with self._lock:
                self.files[dest] = self.fortio_json
            return ExecReply(stderr=stderr, hold=self.hold_fortio)
        if argv[0] == "cat" and call.container == "tools":
            with self._lock:
                data = self.files.get(argv[1])
            if data is None:
                return ExecReply(stderr=f"cat: can't open '{argv[1]}'\n".encode(), exit_code=1)
            return ExecReply(stdout=data)
        if argv[0] == "pkill":
            self.release.set()
            return ExecReply()
        if argv[0] == "pgrep":
            return ExecReply(stdout=b"17\n")
        if argv[:2] == ["perf", "record"]:
            return ExecReply(stderr=b"[ perf record: Captured and wrote 0.1 MB ]\n")
        if argv[:2] == ["perf", "script"]:
            return ExecReply(stdout=self.perf_script_output.encode())
        return ExecReply(failure=f'exec: "{argv[0]}": executable file not found in $PATH: unknown')


# -- the HTTP side -------------------------------------------------------------------------


def _make_handler(fk: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "fake-kube"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
            pass

        def _send(self, code: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _authorized(self) -> bool:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token == fk.token:  # the scheme is case-blind
                return True
            self._send(
                401,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
            )
            return False

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query, keep_blank_values=True)
            with fk._lock:
                fk.requests.append(("GET", parts.path))
            if not self._authorized():
                return
            if self.headers.get("Upgrade", "").lower() == "websocket":
                m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/exec", parts.path)
                if m:
                    self._exec(m.group(1), m.group(2), query)
                    return
                self._send(400, {"message": "websocket only for exec"})
                return
            self._send(*self._route(parts.path, query))

        def do_POST(self) -> None:
            # Older clients open exec with POST; same handling.
            self.do_GET()

        def do_PATCH(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            with fk._lock:
                fk.requests.append(("PATCH", parts.path))
                fk.patches.append((parts.path, self.headers.get("Content-Type", ""), body))
            if not self._authorized():
                return
            m = re.fullmatch(
                r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/ephemeralcontainers", parts.path
            )
            if not m or m.group(2) not in fk.pods:
                self._send(404, _not_found("pods", m.group(2) if m else parts.path))
                return
            pod = fk.pods[m.group(2)]
            wanted = body["spec"]["ephemeralContainers"]
            pod["spec"]["ephemeralContainers"] = wanted
            pod["status"]["ephemeralContainerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": copy.deepcopy(fk.ephemeral_state),
                }
                for c in wanted
            ]
            self._send(200, pod)

        def _route(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
            selector = (query.get("labelSelector") or [""])[0]
            if path in ("/version", "/version/"):
                return 200, fk.version
            if path == "/api/v1/pods":
                items = [
                    p
                    for p in list(fk.pods.values()) + fk.other_pods
                    if match_selector(p["metadata"].get("labels", {}), selector)
                ]
                return 200, _list("PodList", "v1", items)
            if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
                items = [
                    p
                    for p in fk.pods.values()
                    if p["metadata"]["namespace"] == m.group(1)
                    and match_selector(p["metadata"].get("labels", {}), selector)
                ]
                return 200, _list("PodList", "v1", items)
            if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)", path):
                pod = fk.pods.get(m.group(2))
                if pod is None or pod["metadata"]["namespace"] != m.group(1):
                    return 404, _not_found("pods", m.group(2))
                return 200, pod
            if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/services/([^/]+)", path):
                svc = fk.services.get(m.group(2))
                if svc is None:
                    return 404, _not_found("services", m.group(2))
                return 200, svc
            if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)", path):
                ns = fk.namespaces.get(m.group(1))
                if ns is None:
                    return 404, _not_found("namespaces", m.group(1))
                return 200, ns
            if path == "/api/v1/nodes":
                return 200, _list("NodeList", "v1", fk.nodes)
            if path == "/apis/apps/v1/deployments":
                items = [
                    d for d in fk.deployments if match_selector(d["metadata"]["labels"], selector)
                ]
                return 200, _list("DeploymentList", "apps/v1", items)
            if path == "/apis/apps/v1/daemonsets":
                items = [
                    d for d in fk.daemonsets if match_selector(d["metadata"]["labels"], selector)
                ]
                return 200, _list("DaemonSetList", "apps/v1", items)
            return 404, _not_found("path", path)

        # -- exec over a websocket ----------------------------------------------------------

        def _exec(self, ns: str, pod_name: str, query: dict[str, list[str]]) -> None:
            pod = fk.pods.get(pod_name)
            if pod is None:
                self._send(404, _not_found("pods", pod_name))
                return
            if fk.exec_refusal is not None:
                code, message = fk.exec_refusal
                self._send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": message,
                        "reason": "Forbidden",
                        "code": code,
                    },
                )
                return
            fk.release.wait(fk.upgrade_delay)  # an API server that is slow to answer the upgrade
            offered = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
            if V4 not in offered:
                self._send(400, {"message": f"subprotocol {V4} not offered: {offered}"})
                return
            accept = accept_key(self.headers.get("Sec-WebSocket-Key", ""))
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.send_header("Sec-WebSocket-Protocol", V4)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            container = (query.get("container") or [""])[0]
            call = ExecCall(ns, pod_name, container, list(query.get("command", [])), query)
            with fk._lock:
                fk.exec_calls.append(call)
            reply = fk.exec_handler(call)
            conn = self.connection
            # The handshake is done above (the API server's own headers); frames from here on.
            self._ws = ServerProtocol(state=State.OPEN, max_size=None)
            # The real server opens each channel with an empty frame.
            for ch in (1, 2, 3):
                self._frame(bytes([ch]))
            if reply.hold > 0:
                end = time.monotonic() + reply.hold
                while time.monotonic() < end and not fk.release.is_set():
                    if self._client_gone(conn, 0.05):
                        call.closed_by_client = True
                        return
            for channel, data in ((2, reply.stderr), (1, reply.stdout)):
                for i in range(0, len(data), FRAME_CHUNK):
                    if not self._frame(bytes([channel]) + data[i : i + FRAME_CHUNK]):
                        call.closed_by_client = True
                        return
            self._frame(bytes([3]) + status_json(reply, call.argv))
            self._ws.send_close(1000)
            self._flush()
            self._client_gone(conn, 2.0)  # wait for the client's close frame

        def _flush(self) -> bool:
            try:
                for data in self._ws.data_to_send():
                    self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                return False
            return True

        def _frame(self, payload: bytes) -> bool:
            self._ws.send_binary(payload)
            return self._flush()

        def _client_gone(self, conn: socket.socket, timeout: float) -> bool:
            """Wait up to ``timeout`` for a client frame; True if it closed or disconnected."""
            pending = isinstance(conn, ssl.SSLSocket) and conn.pending()
            if not pending:
                r, _, _ = select.select([conn], [], [], timeout)
                if not r:
                    return False
            try:
                data = self.rfile.read1(65536)  # what arrived (the handshake was read from here)
            except OSError:
                return True
            if not data:
                self._ws.receive_eof()
                return True
            self._ws.receive_data(data)
            frames = self._ws.events_received()
            return any(f.opcode == Opcode.CLOSE for f in frames) or self._ws.state is State.CLOSED

    return Handler


def _list(kind: str, api_version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": "482999"},
        "items": items,
    }


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    return free_port()
