"""The kubernetes platform: ``fortio load`` in the client pod against the server pod.

Pods are found by label (``app=fortioclient`` / ``app=fortioserver``) or named with
``--client`` / ``--server``. Each test is one exec of ``fortio load`` in the client pod's load
container. Where the pod's tools container shares fortio's data dir (setup_test.sh's pods),
fortio writes the result there (``-json /var/lib/fortio/<ID>.json``: the report UI lists it, as
the 2019 scripts' ``-a`` did) and a ``cat`` in the tools container reads it back; otherwise
``-json -`` and the result is the exec's stdout. The ``meshperf`` block is added to it.
Targets per mode, as the original runner (istio/tools perf/benchmark) chose them:

    baseline       http://<server pod IP>:8077/echo?size=N   uncaptured port: no proxy
    serversidecar  http://<server pod IP>:8080/echo?size=N   captured port: server proxy
    both           http://fortioserver:8080/echo?size=N      Service: client and server proxies
    ingress        http://<--ingress host[:80]>/echo?size=N  through the gateway
    waypoint       http://fortioserver:8080/echo?size=N      ambient: Service bound to a waypoint

Under istio-ambient, ``both`` means ztunnel to ztunnel (L4): if the Service is bound to a
waypoint (label ``istio.io/use-waypoint`` on it or on the namespace) ``both`` addresses the pod
IP instead, since waypoints only see Service-addressed traffic; ``waypoint`` needs that label.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import sys
import threading
from typing import Any

from meshperf import clients as clients_mod
from meshperf import loadcmd
from meshperf.errors import ClusterError, ConfigError
from meshperf.kube import capture, paths
from meshperf.kube import cluster as kc
from meshperf.kube.execs import (
    SHORT_EXEC_TIMEOUT,
    ExecResult,
    ExecSession,
    pkill_argv,
    run_exec,
)
from meshperf.kube.perf import PerfRecorder
from meshperf.platform import MODES, RESULT_KEY, RunOptions, TestSpec

CAPTURED_PORT = paths.CAPTURED_PORT  # fortio echo behind the proxy
UNCAPTURED_PORT = paths.UNCAPTURED_PORT  # excluded from capture (excludeInboundPorts / skip ports)
CLIENTONLY_PORT = paths.CLIENTONLY_PORT  # Service port led to the uncaptured one (clientonly)
INGRESS_PORT = paths.INGRESS_PORT
ZTUNNEL_DAEMONSET = "app.kubernetes.io/name=ztunnel"  # the DaemonSet's own label (istioctl)
ZTUNNEL_POD = "app=ztunnel"  # its pods' label
SERVICE_NAME = "fortioserver"
WAYPOINT_LABEL = "istio.io/use-waypoint"
MESHES: tuple[str, ...] = ("istio", "istio-ambient", "linkerd", "none")

# fortio's default client buffer (128 KiB) must hold headers plus the whole body, else it
# truncates large responses; one extra KiB covers the headers.
DEFAULT_HTTPBUFFER_KB = 128
# A test's exec may take this much longer than -t: fortio's start, warm-up and JSON output.
EXEC_SLACK_SECONDS = 60.0
STOP_TIMEOUT = 5.0

_LABEL_RE = re.compile(r"[A-Za-z0-9_.-]+")


def httpbuffer_kb(size: int) -> int:
    return max(DEFAULT_HTTPBUFFER_KB, math.ceil(size / 1024) + 1)


def fortio_argv(spec: TestSpec, url: str, json_to: str = "-") -> list[str]:
    """The ``fortio load`` command for one test (meshperf.loadcmd builds it for both
    platforms); the result goes to ``json_to``: a file in the pod, or ``-`` for stdout."""
    label = spec.labels or spec.mode
    if not _LABEL_RE.fullmatch(label):
        raise ClusterError(f"label {label!r} may only hold letters, digits, '_', '.', '-'")
    extra = ["-httpbufferkb", str(httpbuffer_kb(spec.size)), "-a"]
    return loadcmd.load_argv(["fortio"], spec, url, json_to=json_to, label=label, extra=extra)


def pod_result_name(label: str, now: dt.datetime | None = None) -> str:
    """File name of a result kept in the pod, in fortio's own ID shape
    ``YYYY-MM-DD-HHMMSS_<labels>`` (``label`` is already restricted to letters, digits, ``_.-``)."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y-%m-%d-%H%M%S}_{label}.json"


def parse_fortio_output(res: ExecResult, raw: bytes | None = None) -> dict[str, Any]:
    """The fortio result from the exec's stdout (or ``raw``, the file fortio wrote); anything
    else is a ClusterError."""
    text = (res.stdout if raw is None else raw).decode("utf-8", "replace").strip()
    if not text:
        raise ClusterError(
            "fortio load printed no JSON result"
            + (f"; stderr: {res.stderr_tail()}" if res.stderr_tail() else "")
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        first = text.splitlines()[0][:120]
        raise ClusterError(f"fortio load output is not JSON ({e.msg}): {first!r}") from e
    if not isinstance(data, dict) or "DurationHistogram" not in data:
        raise ClusterError("fortio load output is JSON but not a fortio result")
    if data.get("error"):
        raise ClusterError(f"fortio load failed to start: {data.get('message') or data['error']}")
    return data


class KubernetesPlatform:
    """``Platform`` for a real cluster; see the module docstring."""

    name = "kubernetes"

    def __init__(self, opts: RunOptions, conn: kc.Connection) -> None:
        if opts.mesh not in MESHES:
            raise ConfigError(f"unknown mesh {opts.mesh!r}; expected one of {', '.join(MESHES)}")
        self.opts = opts
        self.cluster = kc.Cluster(conn, opts.namespace)
        self.client: kc.PodInfo | None = None
        self.server: kc.PodInfo | None = None
        self.load_container = ""
        self.stop_container = ""
        self.service_host = SERVICE_NAME
        self.waypoint = False  # the Service is bound to a waypoint
        self.service_ip: str | None = None  # the server Service's ClusterIP (clientonly)
        self._lock = threading.RLock()  # stop_current may run in a signal handler on this thread
        self._current: ExecSession | None = None
        self._current_label = ""
        self._stopping = threading.Event()
        self._closed = False
        self.perf: PerfRecorder | None = None

    @classmethod
    def from_options(cls, opts: RunOptions) -> KubernetesPlatform:
        return cls(opts, kc.connect(opts))

    # -- Platform ---------------------------------------------------------------------------

    def start(self, modes: tuple[str, ...]) -> None:
        for m in modes:
            if m not in MODES:
                raise ConfigError(f"unknown mode {m!r}")
            refused = paths.refusal(self.opts.mesh, m)
            if refused is not None:
                raise ConfigError(f"mode {m} on {self.opts.mesh}: {refused[0]}", hint=refused[1])
        if "ingress" in modes:
            self._ingress_hostport()  # validate early
        server = self._find_pods()
        self.service_host = server.labels.get("app", SERVICE_NAME)
        if {"both", "waypoint", "clientonly"} & set(modes):
            svc = self.cluster.service(self.service_host)
            if svc is None:
                raise ClusterError(
                    f"no Service {self.service_host} in namespace {self.opts.namespace}; deploy "
                    f"it with NAMESPACE={self.opts.namespace} ./setup_test.sh"
                )
            self.service_ip = svc.spec.cluster_ip if svc.spec else None
            if self.opts.mesh == "istio-ambient":
                labels = dict(svc.metadata.labels or {})
                self.waypoint = WAYPOINT_LABEL in labels or (
                    WAYPOINT_LABEL in self.cluster.namespace_labels()
                )
        if "waypoint" in modes and not self.waypoint:
            raise ClusterError(
                f"mode waypoint: Service {self.service_host} is not bound to a waypoint; run "
                f"istioctl waypoint apply -n {self.opts.namespace} --enroll-namespace"
            )
        # Refuse now, before the first test, a mode whose path the pods would not give.
        for m in modes:
            self._verify(m)
        if self.opts.perf:
            self.perf = PerfRecorder(self.cluster, server, self.opts)
            self.perf.prepare()  # the debug container starts now, outside any test's window

    def _verify(self, mode: str, protocol: str = "http") -> dict[str, Any]:
        """What ``meshperf.kube.capture`` checked of ``mode``'s path with the current pods,
        on ``protocol``'s ports."""
        assert self.client is not None and self.server is not None
        port = INGRESS_PORT
        if mode == "ingress":
            port = int(self._ingress_hostport().rsplit(":", 1)[1])
        return capture.verify(
            self.opts.mesh,
            mode,
            self.client,
            self.server,
            self.service_ip,
            ingress_port=port,
            protocol=protocol,
        )

    def _find_pods(self) -> kc.PodInfo:
        """(Re)find both pods: a pod replaced during a long matrix gets a new name and IP."""
        client = self.cluster.find_pod(self.opts.client, kc.CLIENT_LABEL, "fortioclient")
        server = self.cluster.find_pod(self.opts.server, kc.SERVER_LABEL, "fortioserver")
        self.load_container = client.load_container()
        self.stop_container = client.stop_container()
        if self.perf is not None and self.server is not None and server.name != self.server.name:
            self.perf.close()
            self.perf = PerfRecorder(self.cluster, server, self.opts)
            self.perf.prepare()  # before this test's exec: start-up outside its window
        self.client, self.server = client, server
        return server

    def target(self, mode: str, size: int, protocol: str = "http") -> str:
        """fortio's target for ``mode`` in ``protocol``'s URL form (meshperf.loadcmd): the
        server's captured or uncaptured port of that protocol (loadcmd.KUBE_PORTS)."""
        if self.server is None:
            raise ClusterError("the kubernetes platform was not started")
        captured, uncaptured = loadcmd.KUBE_PORTS[protocol]

        def url(host: str, port: int | str, tls: bool = False) -> str:
            return loadcmd.target_url(protocol, host, port, size, tls=tls)

        if mode == "baseline":
            return url(self.server.ip, uncaptured)
        if mode == "serversidecar":
            return url(self.server.ip, captured)
        if mode == "clientonly":
            return url(self.service_host, paths.CLIENTONLY_PORTS[protocol][0])
        if mode == "both":
            if self.opts.mesh == "istio-ambient" and self.waypoint:
                return url(self.server.ip, captured)
            return url(self.service_host, captured)
        if mode == "waypoint":
            return url(self.service_host, captured)
        if mode == "ingress":
            tls = (self.opts.ingress or "").startswith("https://")
            return url(self._ingress_hostport(), "", tls)
        raise ClusterError(f"unknown mode {mode!r}")

    def _ingress_hostport(self) -> str:
        ing = self.opts.ingress
        if not ing:
            raise ConfigError("mode ingress needs --ingress HOST[:PORT] (the gateway address)")
        try:  # [http[s]://]HOST[:PORT]; the port defaults to 80, or 443 for https://
            return loadcmd.split_ingress(ing.rstrip("/"))[1]
        except ValueError as e:
            raise ConfigError(f"--ingress: {e}") from None

    def run_test(self, spec: TestSpec) -> dict[str, Any]:
        if self.opts.clients > 1:  # --clients N: fortio in N client pods, merged
            return clients_mod.run_kube(self, spec)
        if self.client is None or self._closed:
            raise ClusterError("the kubernetes platform was not started")
        if self._stopping.is_set():
            raise ClusterError("stopped before the test began")
        self._find_pods()  # a pod that restarted or went away fails this test, clearly
        checked = self._verify(spec.mode, spec.protocol)  # before measuring: the claimed path
        url = self.target(spec.mode, spec.size, spec.protocol)
        # Kept in the pod's data dir (and read back) where the tools container can read it.
        dirs = self.client.result_dirs()
        name = pod_result_name(spec.labels or spec.mode)
        argv = fortio_argv(spec, url, f"{dirs[0]}/{name}" if dirs else "-")
        perf_job = None
        res: ExecResult | None = None
        # Only where the server proxy is in the path (not baseline, not clientonly).
        if self.perf is not None and spec.mode not in ("baseline", "clientonly"):
            perf_job = self.perf.start(spec)
        try:
            with self._lock:
                session = ExecSession(
                    self.cluster.core,
                    self.client.name,
                    self.client.namespace,
                    self.load_container,
                    argv,
                )
                self._current = session
                self._current_label = argv[argv.index("-labels") + 1]
                if self._stopping.is_set():  # stop_current ran while the exec was connecting
                    self._interrupt(session, self._current_label)
            try:
                res = session.wait(spec.duration + EXEC_SLACK_SECONDS)
            except ClusterError:
                # Timed out or lost the stream: fortio may still be running in the pod.
                self._interrupt(session, self._current_label)
                raise
        finally:
            with self._lock:
                self._current = None
            perf_info = None
            if perf_job is not None:
                failed = res is None or not res.ok or self._stopping.is_set()
                perf_info = perf_job.finish(cancel=failed)
        if self._stopping.is_set():
            raise ClusterError(f"test {argv[argv.index('-labels') + 1]} was stopped")
        if res is None or not res.ok:
            raise ClusterError(res.describe_failure() if res else "fortio load did not run")
        result = parse_fortio_output(res, self._read_back(f"{dirs[1]}/{name}") if dirs else None)
        block = spec.result_block(
            platform=self.name, mesh=self.opts.mesh, run_id=self.opts.run_id, target=url
        )
        if dirs:
            block["pod_file"] = f"{dirs[0]}/{name}"  # the copy the client's report UI lists
        block["capture"] = checked
        if self.opts.mesh == "istio-ambient":
            # fortio.py counts only these ztunnels (the idle ones of other nodes are not load).
            block["ztunnel_pods"] = self._ztunnel_pods()
        if perf_info is not None:
            block["perf"] = perf_info
        result[RESULT_KEY] = block
        return result

    def metadata(self) -> dict[str, Any]:
        dirs = self.client.result_dirs() if self.client is not None else None
        meta: dict[str, Any] = {
            "platform": self.name,
            "mesh": self.opts.mesh,
            "namespace": self.opts.namespace,
            "context": self.cluster.conn.context,
            "server": self.cluster.conn.server,
            "ports": {"captured": CAPTURED_PORT, "uncaptured": UNCAPTURED_PORT},
            "load_container": self.load_container,
            "stop_container": self.stop_container,
            # Where results are kept for the client's report UI ("" = not kept in the pod).
            "pod_results_dir": dirs[0] if dirs else "",
        }
        errors: list[str] = []

        def attempt(key: str, fn: Any) -> None:
            try:
                meta[key] = fn()
            except ClusterError as e:
                meta[key] = None
                errors.append(str(e))

        attempt("kubernetes_version", self.cluster.version)
        attempt("mesh_version", self._mesh_version)
        if self.opts.mesh == "istio-ambient":
            attempt(
                "ztunnel_version",
                lambda: self.cluster.image_tag("daemonset", ZTUNNEL_DAEMONSET, "istio-proxy"),
            )
            attempt("ztunnel_pods", self._ztunnel_pods)
        attempt("nodes", self.cluster.nodes)
        nodes = meta.get("nodes") or []
        meta["machine_types"] = sorted({n["instance_type"] for n in nodes if n["instance_type"]})
        for role, pod in (("client", self.client), ("server", self.server)):
            if pod is None:
                continue
            node_type = next((n["instance_type"] for n in nodes if n["name"] == pod.node), "")
            meta[f"{role}_pod"] = {
                "name": pod.name,
                "node": pod.node,
                "instance_type": node_type,
                "ip": pod.ip,
                "containers": list(pod.containers),
            }
        meta["proxy_resources"] = {
            role: pod.proxy_resources()
            for role, pod in (("client", self.client), ("server", self.server))
            if pod is not None
        }
        # Worker threads of each proxy: Envoy's --concurrency, linkerd-proxy's cores.
        meta["proxy_workers"] = {
            role: pod.proxy_workers()
            for role, pod in (("client", self.client), ("server", self.server))
            if pod is not None and pod.proxy_workers()
        }
        if errors:
            meta["errors"] = errors
        return meta

    def _ztunnel_pods(self) -> list[str]:
        """The ztunnel pods on the client's and the server's nodes: the two that carry a
        test's traffic under ambient."""
        nodes = {p.node for p in (self.client, self.server) if p is not None and p.node}
        return sorted(self.cluster.pods_on_nodes(ZTUNNEL_POD, nodes))

    def _mesh_version(self) -> str | None:
        mesh = self.opts.mesh
        if mesh in ("istio", "istio-ambient"):
            return self.cluster.image_tag("deployment", "app=istiod", "discovery")
        if mesh == "linkerd":
            return self.cluster.image_tag(
                "deployment", "linkerd.io/control-plane-component=destination", "destination"
            )
        return None

    def _read_back(self, path: str) -> bytes:
        """The result fortio wrote into the pod's data dir, read in the tools container."""
        assert self.client is not None
        res = run_exec(
            self.cluster.core,
            self.client.name,
            self.client.namespace,
            kc.TOOLS_CONTAINER,
            ["cat", path],
            timeout=SHORT_EXEC_TIMEOUT,
        )
        if not res.ok:
            raise ClusterError(f"reading the result {path} back: {res.describe_failure()}")
        return res.stdout

    def stop_current(self) -> None:
        """Interrupt the fortio run in the pod (SIGINT through pkill), then drop its websocket."""
        self._stopping.set()
        with self._lock:
            current, label = self._current, self._current_label
        if current is not None:
            self._interrupt(current, label)

    def _interrupt(self, session: ExecSession, label: str) -> None:
        with self._lock:  # stop_current and run_test may both get here: interrupt once
            if session.interrupt_sent or self.client is None:
                return
            session.interrupt_sent = True
            pod = self.client
        problem = ""
        try:
            res = run_exec(
                self.cluster.core,
                pod.name,
                pod.namespace,
                self.stop_container,
                pkill_argv(label),
                timeout=STOP_TIMEOUT,
            )
            if not res.ok and res.exit_code != 1:  # 1: nothing matched, fortio had ended
                problem = res.describe_failure()
        except ClusterError as e:
            problem = str(e)
        finally:
            session.abort()
        if problem:
            # Nothing else can signal fortio in its own (shell-less) image: say so, since it
            # keeps loading the server until its -t ends and would skew a run started now.
            self._say(
                f"could not stop fortio in pod {pod.namespace}/{pod.name} ({problem}); it "
                f"ends by itself at the end of its -t {_argv_value(session.argv, '-t')} "
                "(setup_test.sh's pods have a tools container with pkill)"
            )

    def _say(self, message: str) -> None:
        if self.opts.verbose >= 0:
            print(f"meshperf: {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.perf is not None:
            self.perf.close()
        self.cluster.close()


def _argv_value(argv: tuple[str, ...], flag: str) -> str:
    """The value after ``flag`` in an argv, or "?"."""
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return "?"
