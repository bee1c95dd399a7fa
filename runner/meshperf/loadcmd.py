"""The one builder of the load generator's command line, for both platforms.

The local platform runs the built-in generator (or a ``fortio`` binary) on this machine; the
kubernetes platform runs ``fortio load`` in the client pod. Both take fortio's flags, so one
function turns a ``TestSpec`` into that argv, and both platforms call it.

Numbers are written as plain decimals with every digit the float holds: Python's ``:g`` turns
2,592,000 s into ``2.592e+06s`` (Go's ``time.ParseDuration``, and ours, reject exponents) and
rounds a QPS of 1,234,567 to six digits.

Protocols follow fortio v1.75.2 (``cli/fortio_main.go``, ``bincommon/commonflags.go``,
``fgrpc/grpcrunner.go``):

    http  ``fortio load [-h2] URL``               URL ``http[s]://host:port/echo?size=N``
    grpc  ``fortio load -grpc -ping host:port``   fgrpc.PingServer/Ping; always HTTP/2
    tcp   ``fortio load tcp://host:port``         fortio's TCP echo: write, read back, time it

For grpc and tcp the payload the server echoes back is the request's own, so the response
size of the HTTP tests (``?size=N``) becomes ``-payload-size N``.

This module imports only ``meshperf.errors`` so ``meshperf.platform`` can use its checks in
``TestSpec``.
"""

from __future__ import annotations

import argparse
import decimal
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from meshperf.errors import ConfigError

if TYPE_CHECKING:
    from meshperf.platform import TestSpec

PROTOCOLS: tuple[str, ...] = ("http", "grpc", "tcp")
DEFAULT_PROTOCOL = "http"

# The fortio server's ports per protocol on the kubernetes platform: (captured, uncaptured).
# HTTP and gRPC as istio/tools perf/benchmark/runner/runner.py (Fortio.ports); TCP is fortio's
# default -tcp-port 8078 behind the proxy and 8075 beside the uncaptured HTTP/gRPC ports.
# manifests/fortio.yaml and manifests/render.py's exclusions list the same ports.
KUBE_PORTS: dict[str, tuple[int, int]] = {
    "http": (8080, 8077),
    "grpc": (8079, 8076),
    "tcp": (8078, 8075),
}
INGRESS_PORTS: dict[bool, int] = {False: 80, True: 443}  # by TLS

_T = TypeVar("_T")

# An HTTP header name is an RFC 9110 token; fortio splits "-H" at the first colon.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REUSE = re.compile(r"(\d+):(\d+)")


def num(x: float) -> str:
    """``x`` as a plain decimal, no exponent and no digit lost: ``2592000``, ``0.0001``.

    ``repr`` gives the shortest text that reads back to the same float; ``Decimal`` of that
    text then prints it without an exponent.
    """
    value = float(x)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {x!r}")
    if value.is_integer():
        return str(int(value))
    return format(decimal.Decimal(repr(value)), "f")


def duration_flag(seconds: float) -> str:
    """A Go duration text for ``-t``: ``2592000s``, ``0.5s``."""
    return f"{num(seconds)}s"


# ---- checks shared by the command line (runner.py) and TestSpec -------------------------------


def check_protocol(protocol: str, h2: bool = False) -> None:
    """ValueError for an unknown protocol or ``--h2`` with TCP (which has no HTTP at all)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if h2 and protocol == "tcp":
        raise ValueError("--h2 is HTTP/2; --protocol tcp carries no HTTP")


def uses_h2(protocol: str, h2: bool) -> bool:
    """gRPC always runs over HTTP/2; HTTP only with --h2."""
    return protocol == "grpc" or (protocol == "http" and h2)


def label_token(protocol: str, h2: bool) -> str:
    """The protocol's part of a test label: "" for HTTP/1.1 (the 2019 labels stay as they
    were), else ``h2``, ``grpc`` or ``tcp``, so labels of different protocols never collide."""
    if protocol == "http":
        return "h2" if h2 else ""
    return protocol


def describe_protocol(protocol: str, h2: bool) -> str:
    """What the dry run and summaries show: ``http/1.1``, ``http/2``, ``grpc``, ``tcp``."""
    if protocol == "http":
        return "http/2" if h2 else "http/1.1"
    return protocol


def parse_header(text: str) -> str:
    """One ``Name:value`` header as fortio's ``-H`` takes it; ValueError without a colon."""
    name, sep, value = text.partition(":")
    if not sep:
        raise ValueError(f"header {text!r} has no ':' (expected Name:value)")
    name = name.strip()
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"header {text!r}: {name!r} is not a header name")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"header {text!r}: control characters in the value")
    return f"{name}:{value}"


def parse_headers(text: str) -> tuple[str, ...]:
    """``--headers 'K:V,K2:V2'``: each item through ``parse_header``; "" means none."""
    if text == "":
        return ()
    return tuple(parse_header(item) for item in text.split(","))


def parse_connection_reuse(text: str) -> tuple[int, int]:
    """``MIN:MAX`` requests per connection before it is replaced (fortio ``-connection-reuse``).

    fortio swaps a reversed range silently; a reversed range is more likely a typo, so it is an
    error here. A single number N means N:N, as in fortio.
    """
    text = text.strip()
    if text.isdigit():
        text = f"{text}:{text}"
    m = _REUSE.fullmatch(text)
    if not m:
        raise ValueError(f"connection reuse {text!r} is not MIN:MAX (two whole numbers)")
    low, high = int(m.group(1)), int(m.group(2))
    if low < 1:
        raise ValueError(f"connection reuse {text!r}: MIN must be >= 1")
    if low > high:
        raise ValueError(f"connection reuse {text!r}: MIN is larger than MAX")
    return low, high


def check_cacert(path: str) -> str:
    """A readable PEM file with at least one certificate; ValueError naming what is wrong."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ValueError(f"cacert {path}: {e.strerror or e}") from None
    if b"-----BEGIN CERTIFICATE-----" not in data or b"-----END CERTIFICATE-----" not in data:
        raise ValueError(f"cacert {path} is not a PEM certificate file")
    return str(p)


def check_load_options(
    protocol: str,
    h2: bool,
    headers: Sequence[str],
    keepalive: bool,
    connection_reuse: tuple[int, int] | None,
) -> None:
    """The rules between the options; ValueError with the one line to print."""
    check_protocol(protocol, h2)
    for h in headers:
        parse_header(h)
    if protocol == "tcp" and headers:
        raise ValueError("--headers are HTTP headers; --protocol tcp carries no HTTP")
    if protocol != "http" and not keepalive:
        # fortio: "-keepalive ... (only for fast HTTP/1.1)"; gRPC keeps its HTTP/2 connection.
        raise ValueError(f"--no-keepalive applies to --protocol http only (got {protocol})")
    if protocol != "http" and connection_reuse is not None:
        raise ValueError(f"--connection-reuse applies to --protocol http only (got {protocol})")
    if connection_reuse is not None and connection_reuse[0] > connection_reuse[1]:
        raise ValueError("connection reuse: MIN is larger than MAX")


def split_ingress(text: str) -> tuple[bool, str]:
    """``[http://|https://]HOST[:PORT]`` -> (TLS, ``HOST:PORT``), the port defaulting to 80 or
    443. ValueError for a path, a bad port or another scheme."""
    tls = text.startswith("https://")
    rest = text.removeprefix("https://").removeprefix("http://")
    if "://" in rest or "/" in rest or not rest:
        raise ValueError(f"ingress {text!r} is not [http[s]://]HOST[:PORT]")
    host, sep, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", host):
        raise ValueError(f"ingress {text!r} is not [http[s]://]HOST[:PORT]")
    if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"ingress {text!r}: port must be 1-65535")
    return tls, f"{host}:{port or INGRESS_PORTS[tls]}"


def load_options(
    *,
    protocol: str,
    h2: bool,
    headers: Sequence[str],
    keepalive: bool,
    connection_reuse: tuple[int, int] | None,
    cacert: str | None,
    ingress: str | None,
    platform: str,
) -> dict[str, Any]:
    """The run's protocol options as ``TestSpec`` fields, checked together before anything
    starts; ConfigError with one line (and a hint) for what cannot run."""
    try:
        check_load_options(protocol, h2, headers, keepalive, connection_reuse)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    tls = bool(ingress) and ingress is not None and ingress.startswith("https://")
    if cacert and not tls:
        raise ConfigError(
            "--cacert checks the gateway's certificate: it needs --ingress https://HOST[:PORT]",
            hint="the other targets are plaintext (mTLS is between the proxies)",
        )
    if tls and protocol == "tcp":
        raise ConfigError(
            "--protocol tcp cannot reach an https:// --ingress (fortio's TCP has no TLS)"
        )
    if tls and platform != "kubernetes":
        raise ConfigError("an https:// --ingress needs --platform kubernetes")
    return {
        "protocol": protocol,
        "h2": h2,
        "headers": tuple(headers),
        "keepalive": keepalive,
        "connection_reuse": connection_reuse,
        "cacert": cacert or "",
    }


# ---- argparse types (runner.py): the checks above as ArgumentTypeError ------------------------


def _arg(fn: Callable[[str], _T], text: str) -> _T:
    try:
        return fn(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def headers_arg(text: str) -> tuple[str, ...]:
    return _arg(parse_headers, text)


def connection_reuse_arg(text: str) -> tuple[int, int]:
    return _arg(parse_connection_reuse, text)


def cacert_arg(text: str) -> str:
    return _arg(check_cacert, text)


# ---- targets and the argv --------------------------------------------------------------------


def target_url(protocol: str, host: str, port: int | str, size: int, tls: bool = False) -> str:
    """The load generator's target for ``protocol``: fortio's URL forms (see the docstring)."""
    hostport = f"{host}:{port}" if port != "" else host
    if protocol == "grpc":
        # fortio reads "https://" as gRPC over TLS and a bare host:port as plaintext.
        return f"https://{hostport}" if tls else hostport
    if protocol == "tcp":
        return f"tcp://{hostport}"
    return f"{'https' if tls else 'http'}://{hostport}/echo?size={size}"


# Where each mode's load goes before the platform is up, for --dry-run: the local platform's
# ports are picked when it starts, and the kubernetes pod IP is looked up then.
_LOCAL_HOSTS: dict[str, str] = {
    "baseline": "<app>",
    "serversidecar": "<server sidecar>",
    "clientonly": "<client sidecar, plain upstream>",
    "both": "<client sidecar>",
    "ingress": "<gateway>",
}
_KUBE_HOSTS: dict[str, tuple[str, int]] = {  # host, index into KUBE_PORTS' pair
    "baseline": ("<server pod IP>", 1),
    "serversidecar": ("<server pod IP>", 0),
    "both": ("fortioserver", 0),
    "waypoint": ("fortioserver", 0),
}


def planned_url(
    platform: str, mode: str, protocol: str, size: int, ingress: str | None = None
) -> str:
    """The target URL a test will have, with placeholders for what only a started platform
    knows (``127.0.0.1:<app>``, ``<server pod IP>:8077``)."""
    if platform == "local":
        return target_url(protocol, "127.0.0.1", _LOCAL_HOSTS.get(mode, f"<{mode}>"), size)
    if mode == "ingress":
        if not ingress:
            return target_url(protocol, "<ingress gateway>", "", size)
        tls, hostport = split_ingress(ingress)
        return target_url(protocol, hostport, "", size, tls=tls)
    if mode == "clientonly":  # a Service port led to the uncaptured one (meshperf.kube.paths)
        from meshperf.kube.paths import CLIENTONLY_PORTS

        return target_url(protocol, "fortioserver", CLIENTONLY_PORTS[protocol][0], size)
    host, which = _KUBE_HOSTS.get(mode, (f"<{mode}>", 0))
    return target_url(protocol, host, KUBE_PORTS[protocol][which], size)


def load_argv(
    argv0: Sequence[str],
    spec: TestSpec,
    url: str,
    *,
    json_to: str,
    label: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """``<argv0> load <flags> -json <json_to> <url>`` for one test.

    ``label`` defaults to the spec's label; ``extra`` are platform-specific flags (the
    kubernetes platform's ``-httpbufferkb`` and ``-a``), placed before ``-json``.
    """
    argv = [
        *argv0,
        "load",
        "-c",
        str(spec.conn),
        "-qps",
        num(spec.qps),
        "-t",
        duration_flag(spec.duration),
        "-r",
        num(spec.resolution),
        "-p",
        ",".join(num(p) for p in spec.percentiles),
    ]
    if spec.uniform:
        argv.append("-uniform")
    if spec.jitter:
        argv.append("-jitter")
    if spec.nocatchup:
        argv.append("-nocatchup")
    protocol = spec.protocol
    if protocol == "grpc":
        argv += ["-grpc", "-ping"]
    elif protocol == "http" and spec.h2:
        argv.append("-h2")
    if protocol != "http" and spec.size > 0:
        argv += ["-payload-size", str(spec.size)]
    for header in spec.headers:
        argv += ["-H", header]
    if not spec.keepalive:
        # Go's flag package reads a bare "-keepalive false" as "-keepalive" plus an argument.
        argv.append("-keepalive=false")
    if spec.connection_reuse is not None:
        argv += ["-connection-reuse", "{}:{}".format(*spec.connection_reuse)]
    if spec.cacert:
        argv += ["-cacert", spec.cacert]
    argv += ["-labels", spec.labels if label is None else label]
    argv += [*extra, "-json", json_to, url]
    return argv
