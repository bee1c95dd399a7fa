"""What a platform (local or kubernetes) must provide, and the test it is handed.

The contract between stages is the fortio result JSON. A platform's ``run_test`` returns
one fortio-format result dict; meshperf's own facts sit beside fortio's fields under the
single key ``RESULT_KEY`` ("meshperf") and never change the meaning of fortio's fields:

    result["meshperf"] = {
        "format": 1,                  # version of this block
        "run_id": "...",              # joins the test to <output-dir>/run-<run_id>.json
        "platform": "local" | "kubernetes",
        "mesh": "istio" | "istio-ambient" | "linkerd" | "none",
        "mode": "baseline" | "serversidecar" | "clientonly" | "both" | "ingress" | "waypoint",
        "conn": 16, "qps": 1000.0, "duration": 30.0, "size": 1024,
        "extra_labels": "nomixer" | "",
        "repeat": 0,
        "target": "http://127.0.0.1:.../echo?size=1024",
        "arrival": "uniform" | "jitter" | "simultaneous",
        "protocol": "http" | "grpc" | "tcp", "h2": false,   # h2: the test ran over HTTP/2
        "headers": [...], "keepalive": false, "connection_reuse": [min, max], "cacert": "...",
                                      # only where set (see TestSpec)
        "resources": {                # see RESOURCE_* below; may be {}
            "fortioserver_deployment_proxy": {
                "cpu_mili": {"min": .., "avg": .., "max": ..},
                "mem_MB":   {"min": .., "avg": .., "max": ..},      # RSS (working-set-like)
                "mem_uss_MB": {"min": .., "avg": .., "max": ..},    # local only
                "samples": [[t_unix, cpu_mili, rss_MB, uss_MB], ...],
            }, ...
        },
        "perf": {"flamegraph": "path", "error": "..."} | absent,
    }

The built-in load generator also adds ``SendLagHistogram`` (a fortio ``HistogramData`` in
seconds) at the top level, beside fortio's histograms.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

from meshperf import loadcmd
from meshperf.labels import MODE_SUFFIX

RESULT_KEY = "meshperf"
RESULT_FORMAT = 1

# Sidecar modes in their order, and the label suffix each is written with: meshperf.labels
# is the one place that knows label grammars; these are views of it.
MODES: tuple[str, ...] = ("baseline", "serversidecar", "clientonly", "both", "ingress", "waypoint")
MODE_LABEL: dict[str, str] = {m: MODE_SUFFIX[m] for m in MODES}
LABEL_MODE: dict[str, str] = {v: k for k, v in MODE_LABEL.items()}

# Workload keys of ``resources``; CSV columns are cpu_mili_<stat>_<key>, mem_MB_<stat>_<key>.
RESOURCE_SERVER_PROXY = "fortioserver_deployment_proxy"
RESOURCE_CLIENT_PROXY = "fortio_deployment_proxy"
RESOURCE_INGRESS_PROXY = "ingressgateway_proxy"
RESOURCE_SERVER_APP = "fortioserver_deployment_captured"
RESOURCE_LOADGEN = "fortio_deployment_loadgen"


@dataclasses.dataclass(frozen=True)
class TestSpec:
    """One cell of the matrix, fully resolved."""

    mode: str
    conn: int
    qps: float  # total across connections; 0 = max
    duration: float  # seconds
    size: int = 1024  # response payload bytes (echo ?size=)
    labels: str = ""  # the full fortio label, 2019 shape
    extra_labels: str = ""
    repeat: int = 0
    run_id: str = ""
    uniform: bool = False
    jitter: bool = False
    nocatchup: bool = False
    resolution: float = 0.0001
    percentiles: tuple[float, ...] = (50.0, 75.0, 90.0, 99.0, 99.9)
    # Protocol and fortio's connection options (meshperf.loadcmd builds the flags from them).
    protocol: str = "http"  # "http" | "grpc" | "tcp"
    h2: bool = False  # HTTP/2 for http; grpc is HTTP/2 whatever this says
    headers: tuple[str, ...] = ()  # "Name:value", fortio -H
    keepalive: bool = True  # False: fortio -keepalive=false
    connection_reuse: tuple[int, int] | None = None  # fortio -connection-reuse MIN:MAX
    cacert: str = ""  # fortio -cacert, for https:// and TLS gRPC targets

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.conn < 1:
            raise ValueError(f"connections must be >= 1, got {self.conn}")
        if self.qps < 0:
            raise ValueError(f"qps must be >= 0, got {self.qps}")
        if not self.duration > 0:
            raise ValueError(f"duration must be > 0, got {self.duration}")
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")
        if not self.resolution > 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")
        loadcmd.check_load_options(
            self.protocol, self.h2, self.headers, self.keepalive, self.connection_reuse
        )

    def result_block(
        self, *, platform: str, mesh: str, run_id: str, **extra: Any
    ) -> dict[str, Any]:
        """The ``meshperf`` block for this test's result (see the module docstring)."""
        return {
            "format": RESULT_FORMAT,
            "run_id": self.run_id or run_id,
            "platform": platform,
            "mesh": mesh,
            "mode": self.mode,
            "conn": self.conn,
            "qps": self.qps,
            "duration": self.duration,
            "size": self.size,
            "extra_labels": self.extra_labels,
            "repeat": self.repeat,
            "arrival": self.arrival,
            "protocol": self.protocol,
            "h2": loadcmd.uses_h2(self.protocol, self.h2),
            **self._load_options(),
            "resources": {},
            **extra,
        }

    def _load_options(self) -> dict[str, Any]:
        """fortio's connection options, recorded only where a test changed them."""
        out: dict[str, Any] = {}
        if self.headers:
            out["headers"] = list(self.headers)
        if not self.keepalive:
            out["keepalive"] = False
        if self.connection_reuse is not None:
            out["connection_reuse"] = list(self.connection_reuse)
        if self.cacert:
            out["cacert"] = self.cacert
        return out

    @property
    def arrival(self) -> str:
        if self.uniform:
            return "uniform"
        if self.jitter:
            return "jitter"
        return "simultaneous"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything a platform needs to know about the run, resolved from flags/config/env.

    ``runner.py`` builds it; ``LocalPlatform.from_options`` and
    ``KubernetesPlatform.from_options`` take it.
    """

    platform: str = "local"  # resolved: "local" | "kubernetes"
    mesh: str = "istio"  # "istio" | "istio-ambient" | "linkerd" | "none"
    output_dir: Path = Path("results")
    run_id: str = ""
    proxy_concurrency: int = 2  # Envoy --concurrency (Istio's sidecar default)
    telemetry: bool = True  # sidecar stats/access-log filters (the 2019 scripts' "Mixer")
    perf: bool = False  # perf record the server proxy, write a flame graph
    load_generator: str = "builtin"  # "builtin" | "fortio" (local platform)
    envoy: str | None = None  # --envoy PATH; else $ENVOY_BIN, PATH, the wheel
    ingress: str | None = None  # kubernetes: gateway host[:port]; local: "local"
    client: str | None = None  # kubernetes: client pod name or label selector
    server: str | None = None  # kubernetes: server pod name or label selector
    namespace: str = "twopods"
    context: str | None = None  # kubeconfig context
    kubeconfig: str | None = None
    perf_image: str | None = None
    verbose: int = 0  # -1 quiet, 0 normal, 1+ verbose
    # The run's protocols (meshperf.loadcmd.PROTOCOLS): the local platform serves gRPC and TCP
    # only when asked; HTTP always (it checks each path with an HTTP request).
    protocols: tuple[str, ...] = ("http",)
    clients: int = 1  # load generators (local) or client pods (kubernetes) per test


class Platform(Protocol):
    """Brings up the two "pods" and runs one test at a time against them."""

    name: str

    def start(self, modes: tuple[str, ...]) -> None:
        """Bring up what the given modes need; raise ConfigError/PlatformError/ClusterError."""

    def run_test(self, spec: TestSpec) -> dict[str, Any]:
        """Run one test; return the fortio result with the ``meshperf`` block filled in."""

    def metadata(self) -> dict[str, Any]:
        """Facts stored once per run: versions, machine, proxy concurrency, mesh, ..."""

    def stop_current(self) -> None:
        """Stop a test in flight (Ctrl-C); safe to call from a signal handler's thread."""

    def close(self) -> None:
        """Stop every process started and remove temp files and keys; idempotent."""
