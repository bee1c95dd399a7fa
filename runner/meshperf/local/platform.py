"""``LocalPlatform``: the two "pods" on this machine, with real Envoy sidecars and mTLS.

All on 127.0.0.1:

    baseline:      loadgen -> app
    serversidecar: loadgen -> server sidecar (plaintext inbound) -> app
    clientonly:    loadgen -> client sidecar (outbound, plain upstream) -> app
    both:          loadgen -> client sidecar =mTLS=> server sidecar (mTLS inbound) -> app
    ingress:       loadgen -> gateway =mTLS=> server sidecar (mTLS inbound) -> app

``start(modes)`` brings up what the modes need once (a per-run CA and workload certificates in
a private work dir, the echo app, the Envoys) and checks every path with one request;
``run_test`` runs the load generator against the mode's entry point while psutil samples each
workload, and returns fortio's result with the ``meshperf`` block filled in; ``close()`` stops
every process and removes the work dir with its keys.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform as pyplatform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

import meshperf
from meshperf import clients as clients_mod
from meshperf import loadcmd
from meshperf.errors import ConfigError, PlatformError
from meshperf.fortiojson import parse_start_time
from meshperf.loadgen import command as loadgen_command
from meshperf.local import certs as certs_mod
from meshperf.local import envoy as envoy_mod
from meshperf.local import perf as perf_mod
from meshperf.local.procs import (
    LOOPBACK,
    Proc,
    ProcessGroup,
    free_port,
    http_get,
    make_work_dir,
    port_open,
    wait_until,
)
from meshperf.local.sampler import Sampler
from meshperf.plan import LOCAL_MESH, LOCAL_MESH_DESCRIPTION, recorded_mesh, repeat_label
from meshperf.platform import (
    RESOURCE_CLIENT_PROXY,
    RESOURCE_INGRESS_PROXY,
    RESOURCE_LOADGEN,
    RESOURCE_SERVER_APP,
    RESOURCE_SERVER_PROXY,
    RESULT_KEY,
    RunOptions,
    TestSpec,
)

RUNNER_DIR = Path(__file__).resolve().parents[2]
LOADGEN = RUNNER_DIR / "loadgen.py"
LOCAL_MODES: tuple[str, ...] = ("baseline", "serversidecar", "clientonly", "both", "ingress")
# Modes with no server sidecar in their path.
_NO_SERVER_PROXY = ("baseline", "clientonly")
APP_READY_TIMEOUT = 30.0
LOADGEN_GRACE = 60.0  # seconds a load generator may take beyond the test's duration
VERSION_TIMEOUT = 20.0
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# The Envoys on each mode's path: a dead one fails these modes only.
_MODE_PROXIES: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "serversidecar": ("server",),
    "both": ("client", "server"),
    "ingress": ("gateway", "server"),
    "clientonly": ("clientonly",),
}


def _safe(name: str) -> str:
    return _SAFE_NAME.sub("_", name).strip("._") or "test"


def _unused(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ... if it exists: never overwrite an earlier graph."""
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(path.name.replace(".flamegraph.svg", f"-{n}.flamegraph.svg"))
    return candidate


def flame_graph_path(output_dir: Path, spec: TestSpec, label: str) -> Path:
    """``<label>[_r<repeat>].flamegraph.svg``: each repeat's graph named after its repeat."""
    return _unused(output_dir / f"{_safe(repeat_label(label, spec.repeat))}.flamegraph.svg")


def _parse_start(text: str) -> float | None:
    """fortio's StartTime as a unix timestamp (fortiojson.parse_start_time), None if unreadable."""
    try:
        return parse_start_time(text).timestamp()
    except ValueError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return pyplatform.processor() or pyplatform.machine()


def _all_open(ports: tuple[int, ...]) -> bool:
    return all(port_open(p) for p in ports)


PROBE_PAYLOAD = b"meshperf path check\n"


def probe_protocol(protocol: str, port: int, timeout: float) -> str:
    """One call through a gRPC or TCP path on loopback: "" when it answered right, else what
    went wrong. gRPC: the standard health service (fortio's server registers it); TCP: one
    echo round trip, the bytes sent must come back."""
    if protocol == "tcp":
        try:
            with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
                s.sendall(PROBE_PAYLOAD)
                got = b""
                while len(got) < len(PROBE_PAYLOAD):
                    chunk = s.recv(len(PROBE_PAYLOAD) - len(got))
                    if not chunk:
                        break
                    got += chunk
        except OSError as e:
            return str(e) or type(e).__name__
        return "" if got == PROBE_PAYLOAD else f"echo answered {got!r}"
    if protocol == "grpc":
        import grpc  # only for gRPC runs: grpcio takes a while to import
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=timeout
                )
            except grpc.RpcError as e:
                return f"health check failed: {e.code().name}"  # type: ignore[attr-defined]
        serving = health_pb2.HealthCheckResponse.SERVING
        return "" if reply.status == serving else f"health status {reply.status}"
    raise ConfigError(f"no probe for protocol {protocol!r}")


class LocalPlatform:
    """The local platform; see the module docstring. Use as a context manager or call close()."""

    name = "local"

    def __init__(
        self,
        opts: RunOptions,
        envoy: envoy_mod.EnvoyBinary | None,
        loadgen_argv0: list[str],
    ) -> None:
        self.opts = opts
        self.envoy = envoy
        self.loadgen_argv0 = loadgen_argv0
        self.work_dir: Path | None = None
        self.restarts: list[str] = []  # components that died mid-run and were started again
        self.group: ProcessGroup | None = None
        self.app: Proc | None = None
        self.app_port = 0
        self.app_ports: dict[str, int] = {}  # gRPC and TCP ports of the app, when served
        self._proto_targets: dict[tuple[str, str], int] = {}
        self.proxies: dict[str, envoy_mod.EnvoyProcess] = {}
        self.modes: tuple[str, ...] = ()
        self._targets: dict[str, int] = {}
        self._perf_error: str | None = None
        self._perf_probed = False
        self._current: Proc | None = None
        self._stopped = threading.Event()
        self._closed = False
        self._tests = 0
        self._lock = threading.Lock()
        self._loadgen_version: str | None = None
        self._sigterm_installed = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_options(cls, opts: RunOptions) -> LocalPlatform:
        """Resolve Envoy and the load generator; ConfigError naming what is missing."""
        if opts.mesh in ("linkerd", "istio-ambient"):
            raise ConfigError(
                f"mesh {opts.mesh} needs a cluster; the local platform runs Envoy sidecars "
                "(Istio-like) only",
                hint="use --mesh istio (or none) locally, or point at a cluster",
            )
        if opts.mesh not in ("istio", "none"):
            raise ConfigError(f"unknown mesh {opts.mesh!r} for the local platform")
        if opts.proxy_concurrency < 1:
            raise ConfigError(f"proxy concurrency must be >= 1, got {opts.proxy_concurrency}")
        if opts.load_generator == "fortio":
            fortio = shutil.which("fortio")
            if fortio is None:
                raise ConfigError(
                    "load generator fortio: no fortio binary on PATH",
                    hint="install fortio or use the built-in load generator",
                )
            argv0 = [fortio]
        elif opts.load_generator == "builtin":
            argv0 = loadgen_command()
        else:
            raise ConfigError(f"unknown load generator {opts.load_generator!r}")
        envoy = None if opts.mesh == "none" else envoy_mod.find_envoy(opts.envoy)
        return cls(opts, envoy, argv0)

    def __enter__(self) -> LocalPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mesh_facts(self) -> dict[str, str]:
        """``mesh`` as what ran (meshperf.plan.recorded_mesh) and, for Envoy sidecars, what
        that is: no Istio ran here."""
        mesh = recorded_mesh(self.name, self.opts.mesh)
        if mesh == LOCAL_MESH:
            return {"mesh": mesh, "mesh_description": LOCAL_MESH_DESCRIPTION}
        return {"mesh": mesh}

    def _say(self, message: str, level: int = 0) -> None:
        if self.opts.verbose >= level:
            print(f"meshperf: {message}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ start

    def start(self, modes: tuple[str, ...]) -> None:
        """Bring up the app and the Envoys the modes need; check each path with a request."""
        bad = [m for m in modes if m not in LOCAL_MODES]
        if bad:
            raise ConfigError(
                f"mode {bad[0]} needs a cluster (ambient waypoint); the local "
                f"platform runs {', '.join(LOCAL_MODES)}"
            )
        if self.envoy is None and any(m != "baseline" for m in modes):
            raise ConfigError("mesh none runs the baseline mode only")
        if self._closed:
            raise PlatformError("platform already closed")
        if not LOADGEN.is_file():
            # The echo app is always the built-in server, whichever load generator runs.
            raise ConfigError(f"built-in echo server/load generator {LOADGEN} not found")
        self._sigterm_installed = _install_sigterm_exit()
        try:
            self._start(tuple(dict.fromkeys(modes)))
        except BaseException:
            self.close()
            raise

    def _start(self, modes: tuple[str, ...]) -> None:
        # 0700, owner recorded; work dirs of SIGKILLed runs (keys in them) are swept first.
        self.work_dir = make_work_dir()
        self.group = ProcessGroup(self.work_dir)
        self._start_app()
        needs_server = any(m not in _NO_SERVER_PROXY for m in modes)
        if needs_server:
            assert self.envoy is not None
            self._start_proxies(modes)
        if "clientonly" in modes:
            self._start_clientonly()
        self.modes = modes
        self._targets = {"baseline": self.app_port}
        if needs_server:
            self._targets["serversidecar"] = self.proxies["server"].ports[
                envoy_mod.INBOUND_PLAINTEXT
            ]
        if "client" in self.proxies:
            self._targets["both"] = self.proxies["client"].ports[envoy_mod.OUTBOUND]
        if "clientonly" in self.proxies:
            self._targets["clientonly"] = self.proxies["clientonly"].ports[
                envoy_mod.CLIENTONLY_OUTBOUND
            ]
        if "gateway" in self.proxies:
            self._targets["ingress"] = self.proxies["gateway"].ports[envoy_mod.GATEWAY_HTTP]
        self._proto_targets = self._protocol_targets(modes)
        for mode in modes:
            self._check_path(mode)
            for protocol in self.app_ports:
                self._check_protocol(mode, protocol)
        self._say(
            f"local platform up in {self.work_dir}: app pid {self.app.pid if self.app else '-'}"
            f" on {LOOPBACK}:{self.app_port}",
            1,
        )
        for name, proxy in self.proxies.items():
            self._say(
                f"  {name} envoy pid {proxy.pid}, admin {LOOPBACK}:{proxy.admin_port}, "
                + ", ".join(f"{k} :{v}" for k, v in proxy.ports.items()),
                1,
            )
        if self.envoy is not None:
            self._say(f"  envoy {self.envoy.version} ({self.envoy.source}: {self.envoy.path})", 1)
        if self.opts.perf:
            self._perf_error = perf_mod.probe(self.work_dir)
            self._perf_probed = True
            if self._perf_error:
                self._say(f"--perf: {self._perf_error}; tests run without flame graphs")

    def _start_app(self, same_ports: bool = False) -> None:
        assert self.group is not None and self.work_dir is not None
        argv0 = loadgen_command()
        last: PlatformError | None = None
        # The port is picked free then handed to the app; another process may take it in
        # between, so one retry on a fresh port.
        for _ in range(2):
            if same_ports:  # a restart: the sidecars' upstreams point at these ports
                port, extra = self.app_port, dict(self.app_ports)
            else:
                port = free_port()
                # fortio's server ports: gRPC (its PingServer and health) and TCP echo, only
                # for the protocols this run measures (grpcio is not loaded otherwise).
                extra = {p: free_port() for p in self.opts.protocols if p != "http"}
            flags = [a for p, q in extra.items() for a in (f"-{p}-port", f"{LOOPBACK}:{q}")]
            proc = self.group.start(
                "app",
                [*argv0, "server", "-http-port", f"{LOOPBACK}:{port}", *flags],
                env=envoy_mod.process_env(),
                cwd=self.work_dir,
            )
            try:
                wait_until(
                    functools.partial(_all_open, (port, *extra.values())),
                    APP_READY_TIMEOUT,
                    proc,
                    f"listening on {LOOPBACK}:" + ",".join(map(str, (port, *extra.values()))),
                )
            except PlatformError as e:
                last = e
                proc.stop()
                self.group.remove(proc)
                continue
            self.app, self.app_port, self.app_ports = proc, port, extra
            return
        assert last is not None
        raise last

    def _start_proxies(self, modes: tuple[str, ...]) -> None:
        assert self.group is not None and self.work_dir is not None and self.envoy is not None
        work, telemetry = self.work_dir, self.opts.telemetry
        ca = certs_mod.CertAuthority(work)
        server = ca.issue(certs_mod.SERVER_SA)
        client = ca.issue(certs_mod.CLIENT_SA)
        gateway = ca.issue(certs_mod.INGRESS_SA)
        self.ca = ca

        def log(name: str) -> Path | None:
            return work / f"{name}.access.log" if telemetry else None

        def start(name: str, config: dict[str, Any]) -> envoy_mod.EnvoyProcess:
            assert self.envoy is not None and self.group is not None
            proxy = envoy_mod.EnvoyProcess.start(
                self.group, self.envoy.path, name, config, work, self.opts.proxy_concurrency
            )
            self.proxies[name] = proxy
            return proxy

        srv = start(
            "server",
            envoy_mod.server_sidecar_config(
                self.app_port,
                server,
                ca.cert_path,
                [client.spiffe, gateway.spiffe],
                telemetry,
                log("server"),
                grpc_port=self.app_ports.get("grpc"),
                tcp_port=self.app_ports.get("tcp"),
            ),
        )
        mtls_port = srv.ports[envoy_mod.INBOUND_MTLS]
        # The server sidecar's mTLS listener per protocol, for the client sidecar and gateway.
        upstream = {p: srv.ports[envoy_mod.LISTENERS[p][1]] for p in self.app_ports}
        grpc_port, tcp_port = upstream.get("grpc"), upstream.get("tcp")
        if "both" in modes:
            start(
                "client",
                envoy_mod.client_sidecar_config(
                    mtls_port,
                    client,
                    ca.cert_path,
                    server.spiffe,
                    telemetry,
                    log("client"),
                    grpc_port=grpc_port,
                    tcp_port=tcp_port,
                ),
            )
        if "ingress" in modes:
            # Istio's gateway keeps no access log of its own by default either way.
            start(
                "gateway",
                envoy_mod.gateway_config(
                    mtls_port,
                    gateway,
                    ca.cert_path,
                    server.spiffe,
                    telemetry,
                    None,
                    grpc_port=grpc_port,
                    tcp_port=tcp_port,
                ),
            )

    def _start_clientonly(self) -> None:
        """The client sidecar alone (clientonly): its own Envoy, upstream the app in plain
        text. A process of its own so its CPU and memory are the clientonly test's alone."""
        assert self.group is not None and self.work_dir is not None and self.envoy is not None
        log = self.work_dir / "clientonly.access.log" if self.opts.telemetry else None
        config = envoy_mod.clientonly_sidecar_config(
            self.app_port,
            self.opts.telemetry,
            log,
            grpc_port=self.app_ports.get("grpc"),
            tcp_port=self.app_ports.get("tcp"),
        )
        self.proxies["clientonly"] = envoy_mod.EnvoyProcess.start(
            self.group, self.envoy.path, "clientonly", config, self.work_dir,
            self.opts.proxy_concurrency,
        )  # fmt: skip

    def _check_path(self, mode: str) -> None:
        url = self.target(mode, 0)
        deadline = time.monotonic() + 10.0
        status, body = 0, b""
        while time.monotonic() < deadline:
            status, body = http_get(url, timeout=5.0)
            if status == 200:
                return
            time.sleep(0.1)
        detail = body.decode(errors="replace").strip()[:200]
        raise PlatformError(
            f"{mode}: GET {url} answered {status or 'nothing'}" + (f": {detail}" if detail else "")
        )

    def _protocol_targets(self, modes: tuple[str, ...]) -> dict[tuple[str, str], int]:
        """Each mode's entry port for gRPC and TCP: the app's own port (baseline), else the
        listener of that protocol on the first proxy of the mode's path."""
        out: dict[tuple[str, str], int] = {}
        first = {"serversidecar": ("server", 0), "both": ("client", 2), "ingress": ("gateway", 3)}
        for protocol, app_port in self.app_ports.items():
            for mode in modes:
                if mode == "baseline":
                    out[(mode, protocol)] = app_port
                elif mode in first and first[mode][0] in self.proxies:
                    name, which = first[mode]
                    listener = envoy_mod.LISTENERS[protocol][which]
                    out[(mode, protocol)] = self.proxies[name].ports[listener]
                elif mode == "clientonly" and "clientonly" in self.proxies:
                    ports = self.proxies["clientonly"].ports
                    listener = envoy_mod.clientonly_listener(protocol)
                    if listener in ports:
                        out[(mode, protocol)] = ports[listener]
        return out

    def _check_protocol(self, mode: str, protocol: str) -> None:
        """One gRPC health check or one TCP echo round trip through the mode's path."""
        port = self._proto_targets.get((mode, protocol))
        if port is None:
            raise PlatformError(f"{mode}: no {protocol} path on the local platform")
        deadline = time.monotonic() + 10.0
        problem = ""
        while time.monotonic() < deadline:
            problem = probe_protocol(protocol, port, timeout=5.0)
            if not problem:
                return
            time.sleep(0.1)
        raise PlatformError(f"{mode}: {protocol} to {LOOPBACK}:{port}: {problem}")

    def target(self, mode: str, size: int, protocol: str = "http") -> str:
        """The URL the load generator hits for ``mode`` (fortio's form for ``protocol``)."""
        if mode not in self._targets:
            raise ConfigError(f"mode {mode} was not started (started: {', '.join(self.modes)})")
        if protocol == "http":
            return f"http://{LOOPBACK}:{self._targets[mode]}/echo?size={size}"
        port = self._proto_targets.get((mode, protocol))
        if port is None:
            raise ConfigError(
                f"protocol {protocol} was not started"
                f" (started: {', '.join(('http', *self.app_ports))})"
            )
        return loadcmd.target_url(protocol, LOOPBACK, port, size)

    # ------------------------------------------------------------------ tests

    def _workloads(self, mode: str) -> dict[str, int]:
        assert self.app is not None
        pids = {RESOURCE_SERVER_APP: self.app.pid}
        if mode not in _NO_SERVER_PROXY:
            pids[RESOURCE_SERVER_PROXY] = self.proxies["server"].pid
        if mode == "clientonly":
            pids[RESOURCE_CLIENT_PROXY] = self.proxies["clientonly"].pid
        if mode == "both":
            pids[RESOURCE_CLIENT_PROXY] = self.proxies["client"].pid
        if mode == "ingress":
            pids[RESOURCE_INGRESS_PROXY] = self.proxies["gateway"].pid
        return pids

    def loadgen_argv(self, spec: TestSpec, url: str, json_path: Path) -> list[str]:
        return loadcmd.load_argv(self.loadgen_argv0, spec, url, json_to=str(json_path))

    def run_test(self, spec: TestSpec) -> dict[str, Any]:
        if self.group is None or self.work_dir is None or self._closed:
            raise PlatformError("platform not started")
        if spec.mode not in self.modes:
            raise ConfigError(f"mode {spec.mode} was not started")
        # A dead proxy fails only the modes whose path has it (baseline never does).
        for name in _MODE_PROXIES.get(spec.mode, tuple(self.proxies)):
            proxy = self.proxies.get(name)
            if proxy is not None and not proxy.proc.alive():
                raise proxy.proc.died_error("died")
        if self.app is not None and not self.app.alive():
            # Every mode needs the app: start it again on its ports, the sidecars' upstreams.
            dead = self.app
            error = dead.died_error("died")
            dead.stop()
            self.group.remove(dead)
            self._say(f"{error}; restarting it on {LOOPBACK}:{self.app_port}")
            self._start_app(same_ports=True)
            self.restarts.append(str(error))
            restarted = [f"app: {error}"]
        else:
            restarted = []
        if self.opts.clients > 1:  # --clients N: N generator processes, merged
            return clients_mod.run_local(self, spec)
        self._tests += 1
        label = spec.labels or f"{spec.mode}_{spec.conn}_{spec.qps:g}"
        url = self.target(spec.mode, spec.size, spec.protocol)
        json_path = self.work_dir / f"test-{self._tests}.json"
        argv = self.loadgen_argv(spec, url, json_path)

        codecs = self._codec_counters(spec.mode)
        sampler = Sampler(self._workloads(spec.mode))
        sampler.start()
        self._stopped.clear()
        recording: perf_mod.PerfRecording | None = None
        perf_info: dict[str, Any] | None = None
        proc = self.group.start(
            f"loadgen-{self._tests}", argv, env=envoy_mod.process_env(), cwd=self.work_dir
        )
        with self._lock:
            self._current = proc
        try:
            sampler.add(RESOURCE_LOADGEN, proc.pid)
            if self.opts.perf:
                recording, perf_info = self._start_perf(spec, label)
            code = self._wait_loadgen(proc, spec.duration + LOADGEN_GRACE)
            if self._stopped.is_set():
                raise PlatformError(f"test {label} stopped before it finished")
            if code != 0:
                raise proc.died_error("failed")
            sampler.stop()  # before perf script, whose CPU is not the test's
            if recording is not None:
                svg = flame_graph_path(Path(self.opts.output_dir), spec, label)
                perf_info = recording.finish(svg, f"server sidecar, {label}", timeout=30.0)
                recording = None
                if "error" in perf_info:
                    self._say(f"--perf: {perf_info['error']}")
        finally:
            with self._lock:
                self._current = None
            sampler.stop()
            if recording is not None:
                recording.abort()
            proc.stop()
            self.group.remove(proc)
            self._truncate_access_logs()
        try:
            result: dict[str, Any] = json.loads(json_path.read_text())
        except (OSError, ValueError) as e:
            raise PlatformError(f"load generator wrote no readable result for {label}: {e}") from e
        finally:
            json_path.unlink(missing_ok=True)
        window = self._window(result)
        block = dict(result.get(RESULT_KEY) or {})
        block.update(
            spec.result_block(
                platform=self.name,
                **self._mesh_facts(),
                run_id=self.opts.run_id,
                target=url,
                resources=sampler.resources(window),
                pressure=sampler.pressure(window),  # meshperf.trust's cpu-pressure
            )
        )
        if perf_info is not None:
            block["perf"] = perf_info
        if restarted:  # this test ran on a component started again just before it
            block["restarted"] = restarted
        block.update(self._codecs_seen(spec, codecs))
        result[RESULT_KEY] = block
        return result

    def _codec_counters(self, mode: str) -> dict[str, dict[str, int]]:
        """Per proxy of ``mode``'s path, from its own counters: requests taken in over HTTP/1.1
        and HTTP/2, and TCP-proxied connections, so far. Empty with telemetry off (the stats
        matcher then keeps none of them)."""
        if not self.opts.telemetry:
            return {}
        out: dict[str, dict[str, int]] = {}
        for name in _MODE_PROXIES.get(mode, ()):
            proxy = self.proxies.get(name)
            if proxy is None:
                continue
            try:
                stats = proxy.stats(r"downstream_rq_http[12]_total|downstream_cx_total")
            except PlatformError:
                continue  # no counters, no claim about them; the test itself still counts
            counts = {"http1": 0, "http2": 0, "tcp": 0}
            for key, value in stats.items():
                if key.startswith("http.") and not key.startswith("http.admin."):
                    for codec in ("http1", "http2"):
                        if key.endswith(f".downstream_rq_{codec}_total"):
                            counts[codec] += value
                elif key.startswith("tcp.") and key.endswith(".downstream_cx_total"):
                    counts["tcp"] += value
            out[name] = counts
        return out

    def _codecs_seen(
        self, spec: TestSpec, before: dict[str, dict[str, int]]
    ) -> dict[str, Any]:
        """What each proxy of the path carried during the test (``proxy_codecs``), and
        ``path_mismatch`` when that is not the protocol the test claims (kept, never dropped:
        the numbers were measured, they are just not of the claimed path)."""
        if not before:
            return {}
        after = self._codec_counters(spec.mode)
        if spec.protocol == "tcp":
            claimed = "tcp"
        else:
            claimed = "http2" if loadcmd.uses_h2(spec.protocol, spec.h2) else "http1"
        seen: dict[str, str] = {}
        wrong: list[str] = []
        for name, counts in after.items():
            old = before.get(name, {})
            carried = [k for k, v in counts.items() if v - old.get(k, 0) > 0]
            seen[name] = "+".join(carried) or "nothing"
            if carried != [claimed]:
                wrong.append(f"the {name} proxy carried {seen[name]}, not {claimed}")
        out: dict[str, Any] = {"proxy_codecs": seen}
        if wrong:
            out["path_mismatch"] = "; ".join(wrong)
            self._say(f"warning: test {spec.labels}: {out['path_mismatch']}")
        return out

    def _truncate_access_logs(self) -> None:
        """Access logs are load, not results: ~80 MB per sidecar per 3-minute test at 1000 qps.

        Envoy appends (O_APPEND), so truncating in place is safe while it runs.
        """
        if self.work_dir is None:
            return
        for log in self.work_dir.glob("*.access.log"):
            with contextlib.suppress(OSError):
                os.truncate(log, 0)

    def _start_perf(
        self, spec: TestSpec, label: str
    ) -> tuple[perf_mod.PerfRecording | None, dict[str, Any] | None]:
        assert self.group is not None and self.work_dir is not None
        if not self._perf_probed:
            self._perf_error = perf_mod.probe(self.work_dir)
            self._perf_probed = True
            if self._perf_error:
                self._say(f"--perf: {self._perf_error}; tests run without flame graphs")
        if self._perf_error:
            return None, {"error": self._perf_error}
        if "server" not in self.proxies or spec.mode in _NO_SERVER_PROXY:
            return None, {"error": f"no server sidecar in {spec.mode} mode"}
        return perf_mod.PerfRecording(
            self.group,
            self.proxies["server"].pid,
            spec.duration + LOADGEN_GRACE,
            self.work_dir,
            _safe(label),
        ), None

    def _wait_loadgen(self, proc: Proc, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while True:
            code = proc.wait(0.2)
            if code is not None:
                return code
            if self._stopped.is_set():
                proc.stop()
                return proc.popen.poll()
            if time.monotonic() > deadline:
                proc.stop()
                raise PlatformError(f"load generator still running {timeout:g} s after its start")

    @staticmethod
    def _window(result: dict[str, Any]) -> tuple[float, float] | None:
        start = _parse_start(str(result.get("StartTime", "")))
        duration = result.get("ActualDuration")
        if start is None or not isinstance(duration, int | float):
            return None
        return start, start + duration / 1e9

    def stop_current(self) -> None:
        """Stop the test in flight; signal-handler safe (only sends a signal, never waits)."""
        self._stopped.set()
        proc = self._current
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)

    # ------------------------------------------------------------------ facts, close

    def loadgen_version(self) -> str:
        """``fortio version``; the built-in generator is versioned with meshperf."""
        if self._loadgen_version is None and self.opts.load_generator == "builtin":
            self._loadgen_version = f"meshperf {meshperf.__version__}"
        if self._loadgen_version is None:
            try:
                out = subprocess.run(  # noqa: S603 (argv list, no shell)
                    [*self.loadgen_argv0, "version"],
                    capture_output=True,
                    text=True,
                    timeout=VERSION_TIMEOUT,
                    check=False,
                    env=envoy_mod.process_env(),
                )
                text = (out.stdout or out.stderr).strip().splitlines()
                self._loadgen_version = (
                    text[0].strip() if out.returncode == 0 and text else "unknown"
                )
            except (OSError, subprocess.TimeoutExpired):
                self._loadgen_version = "unknown"
        return self._loadgen_version

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "platform": self.name,
            **self._mesh_facts(),
            "mesh_requested": self.opts.mesh,
            "proxy_concurrency": self.opts.proxy_concurrency,
            "telemetry": self.opts.telemetry,
            "load_generator": {
                "name": self.opts.load_generator,
                "path": self.loadgen_argv0[-1],
                "version": self.loadgen_version(),
            },
            "python": sys.version.split()[0],
            "python_implementation": pyplatform.python_implementation(),
            "cpu_model": _cpu_model(),
            "cpu_count": os.cpu_count(),
            "cpu_count_physical": psutil.cpu_count(logical=False),
            "memory_total_MB": round(psutil.virtual_memory().total / 1024 / 1024),
            "kernel": pyplatform.release(),
            "os": pyplatform.platform(),
            "hostname": socket.gethostname(),
            "psutil": psutil.__version__,
        }
        if self.envoy is not None:
            meta["envoy"] = {
                "path": str(self.envoy.path),
                "version": self.envoy.version,
                "build": self.envoy.version_line.split("version:")[-1].strip(),
                "source": self.envoy.source,
            }
        if self.opts.perf:
            meta["perf"] = {
                "available": self._perf_error is None if self._perf_probed else None,
                "error": self._perf_error,
                "frequency_hz": perf_mod.FREQUENCY,
            }
        return meta

    def child_pids(self) -> list[int]:
        """PIDs of the processes this platform runs now (for tests and diagnostics)."""
        return self.group.pids() if self.group is not None else []

    def close(self) -> None:
        """Stop every process and remove the work dir (keys included); safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop_current()
        if self.group is not None:
            self.group.stop_all()
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self._sigterm_installed:
            _restore_sigterm()
        self.proxies = {}
        self.app = None


def _sigterm_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _install_sigterm_exit() -> bool:
    """Turn SIGTERM into SystemExit so ``finally`` blocks and atexit stop our children.

    Only when nobody else handles SIGTERM (the runner installs its own) and only from the
    main thread, where Python allows installing handlers. True if installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _sigterm_exit)
    return True


def _restore_sigterm() -> None:
    """Undo ``_install_sigterm_exit`` once the platform has nothing left to clean up."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is _sigterm_exit:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
