"""The vocabulary of the charts: metrics, axes, proxies, statistics and CSV formats.

A leaf: every other module of the package imports these names from here, and this module
imports nothing of the package.
"""

from __future__ import annotations

import re

from meshperf import labels
from meshperf.platform import (
    RESOURCE_CLIENT_PROXY,
    RESOURCE_INGRESS_PROXY,
    RESOURCE_SERVER_PROXY,
)

LATENCY_METRICS: tuple[str, ...] = ("p50", "p90", "p99", "p999")
RESOURCE_METRICS: tuple[str, ...] = ("cpu", "mem")
METRICS: tuple[str, ...] = (*LATENCY_METRICS, *RESOURCE_METRICS, "all")
XAXES: tuple[str, ...] = ("connections", "qps")
PROXIES: tuple[str, ...] = ("server", "client", "ingress", "ztunnel", "waypoint")
STATS: tuple[str, ...] = ("min", "avg", "max")

FORMAT_MESHPERF = "meshperf"
FORMAT_ISTIO2019 = "istio2019"
FORMAT_ISTIO_TOOLS = "istio-tools"
FORMAT_DESCRIPTIONS: dict[str, str] = {
    FORMAT_MESHPERF: "meshperf (runner/fortio.py)",
    FORMAT_ISTIO2019: "2019 perf/benchmark scripts (mode from the Labels suffix)",
    FORMAT_ISTIO_TOOLS: "istio/tools perf/benchmark pipeline (istio_proxy resource columns)",
}

# Our resource keys (also the 2019 scripts' Prometheus names) for each --proxy choice.
OUR_PROXY_KEYS: dict[str, str] = {
    "server": RESOURCE_SERVER_PROXY,
    "client": RESOURCE_CLIENT_PROXY,
    "ingress": RESOURCE_INGRESS_PROXY,
    # Ambient mode's proxies, as runner/fortio.py names them (meshperf.prom).
    "ztunnel": "ztunnel",
    "waypoint": "waypoint_proxy",
}
# istio/tools names columns <container>_<pod>; Linkerd runs of it name the container linkerd-proxy.
ISTIO_TOOLS_PROXY_KEYS: dict[str, tuple[str, ...]] = {
    "server": ("istio_proxy_fortioserver", "linkerd_proxy_fortioserver"),
    "client": ("istio_proxy_fortioclient", "linkerd_proxy_fortioclient"),
    "ingress": ("istio_proxy_istio-ingressgateway", "istio_proxy_ingressgateway"),
    "ztunnel": (),
    "waypoint": (),
}
PROXY_TITLES: dict[str, str] = {
    "server": "server sidecar",
    "client": "client sidecar",
    "ingress": "ingress gateway",
    "ztunnel": "ztunnel",
    "waypoint": "waypoint",
}

# Legend order: every mode a label or mode column may name (meshperf.labels), in run order.
MODE_ORDER: tuple[str, ...] = labels.MODES
MESH_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


def fmt_number(v: float) -> str:
    """A number as a user typed it: ``16``, ``0.5``."""
    return f"{v:g}" if not float(v).is_integer() else str(int(v))


def fmt_qps(v: float) -> str:
    """Requested QPS; 0 is fortio's "max" (as fast as possible)."""
    return "max" if v == 0 else fmt_number(v)
