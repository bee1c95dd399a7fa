"""Which mode each mesh can measure on a cluster, and the exact path of each.

A mode is a claim about the path a request takes. Where a mesh cannot give that path the mode
is refused here, before anything runs, with one line that says why and what to run instead;
``meshperf.kube.capture`` then checks from the API, before each test, that the pods are set up
the way the path below needs.

Standard library and ``meshperf.loadcmd`` only, nothing of the ``kubernetes`` client:
``meshperf.plan`` asks this module while it builds the plan, for ``--dry-run`` too.

Sources for the refusals:
- Ambient in-pod capture redirects every non-loopback TCP connection of a captured pod, whatever
  the sidecar port annotations say (istio/istio cni/pkg/iptables): an uncaptured port does not
  exist under ambient, so baseline, serversidecar and clientonly all travel ztunnel to ztunnel,
  the path of ``both``.
- Linkerd's ``skip-outbound-ports`` is per port and its ``skip-subnets`` matches the source
  address (linkerd2 proxy-init), so the client's proxy cannot be bypassed for the server pod's
  captured port: ``serversidecar`` would cross both proxies, the path of ``both``.
"""

from __future__ import annotations

from meshperf import loadcmd

# fortio's HTTP echo behind the proxy, and excluded from capture on both pods (inbound and
# outbound); meshperf.loadcmd.KUBE_PORTS holds the pair of every protocol, in one place.
CAPTURED_PORT, UNCAPTURED_PORT = loadcmd.KUBE_PORTS["http"]
# The Service ports of the clientonly mode, per protocol: (Service port, targetPort). The
# client's proxy captures them (not excluded ports, a ClusterIP outside the excluded pod
# ranges) and delivers them to the server's uncaptured ports (meshperf.loadcmd.KUBE_PORTS),
# so no server proxy is crossed. manifests/fortio.yaml lists the same ports.
CLIENTONLY_PORTS: dict[str, tuple[int, int]] = {
    "http": (8074, UNCAPTURED_PORT),
    "grpc": (8073, loadcmd.KUBE_PORTS["grpc"][1]),
    "tcp": (8072, loadcmd.KUBE_PORTS["tcp"][1]),
}
CLIENTONLY_PORT = CLIENTONLY_PORTS["http"][0]
# The gateway's (plain HTTP) port; excluded outbound on the client like istio/tools does.
INGRESS_PORT = loadcmd.INGRESS_PORTS[False]

# The proxy container each sidecar mesh injects (istio/istio pkg/kube/inject, linkerd2
# pkg/inject): a regular container, or a native sidecar (an init container with
# restartPolicy Always) on newer Kubernetes. The one list of proxy container names.
PROXY_CONTAINER: dict[str, str] = {"istio": "istio-proxy", "linkerd": "linkerd-proxy"}
PROXY_CONTAINERS: frozenset[str] = frozenset(PROXY_CONTAINER.values())

# mesh -> mode -> the path, as docs/kubernetes.md and --dry-run print it.
PATHS: dict[str, dict[str, str]] = {
    "istio": {
        "baseline": f"client -> server pod IP:{UNCAPTURED_PORT} (client sidecar bypassed: pod"
        " ranges and the port excluded outbound; port excluded inbound on the server) -> app",
        "serversidecar": f"client -> server pod IP:{CAPTURED_PORT} (client sidecar bypassed:"
        " pod ranges excluded outbound) -> server sidecar -> app",
        "clientonly": f"client sidecar (Service fortioserver:{CLIENTONLY_PORT}, plain text"
        f" per DestinationRule) -> server pod IP:{UNCAPTURED_PORT} (excluded inbound) -> app",
        "both": f"client sidecar =mTLS=> server sidecar -> app (Service fortioserver:"
        f"{CAPTURED_PORT})",
        "ingress": f"client (port {INGRESS_PORT} excluded outbound) -> ingress gateway"
        " =mTLS=> server sidecar -> app",
    },
    "istio-ambient": {
        "both": f"client ztunnel =HBONE mTLS=> server ztunnel -> app (Service fortioserver:"
        f"{CAPTURED_PORT}; the server pod IP when a waypoint is bound)",
        "ingress": "client ztunnel (it cannot be bypassed under ambient) -> ingress gateway"
        " => server ztunnel -> app",
        "waypoint": f"client ztunnel => waypoint => server ztunnel -> app (Service"
        f" fortioserver:{CAPTURED_PORT} bound to a waypoint)",
    },
    "linkerd": {
        "baseline": f"client -> server pod IP:{UNCAPTURED_PORT} (skip-outbound-ports on the"
        " client, skip-inbound-ports on the server) -> app",
        "clientonly": f"client linkerd-proxy (Service fortioserver:{CLIENTONLY_PORT}; no TLS:"
        f" the endpoint's port {UNCAPTURED_PORT} is skip-inbound) -> server pod IP:"
        f"{UNCAPTURED_PORT} -> app",
        "both": f"client linkerd-proxy =mTLS=> server linkerd-proxy -> app (Service"
        f" fortioserver:{CAPTURED_PORT})",
        "ingress": "client linkerd-proxy -> your ingress (--ingress) -> server linkerd-proxy"
        " -> app (the ingress itself is not checked)",
    },
    "none": {
        "baseline": f"client -> server pod IP:{UNCAPTURED_PORT} -> app (no proxies at all)",
    },
}

_AMBIENT_BASELINE = (
    "under ambient every TCP connection of a captured pod goes through ztunnel, whatever the"
    " port (ambient ignores the sidecar port annotations): {mode} would travel ztunnel to"
    " ztunnel, the same path as both"
)
_AMBIENT_HINT = (
    "measure the no-mesh baseline in a separate run outside the mesh: NAMESPACE=nomesh"
    " MESH=none ./setup_test.sh, then runner.py ... --mesh none --baseline --namespace nomesh"
)

# (mesh, mode) -> (why the mode cannot run on that mesh, what to do instead)
REFUSED: dict[tuple[str, str], tuple[str, str]] = {
    ("istio-ambient", "baseline"): (_AMBIENT_BASELINE.format(mode="baseline"), _AMBIENT_HINT),
    ("istio-ambient", "serversidecar"): (
        _AMBIENT_BASELINE.format(mode="serversidecar"),
        "ambient has no per-pod proxy to leave out; compare both (ztunnel) and --waypoint",
    ),
    ("istio-ambient", "clientonly"): (
        _AMBIENT_BASELINE.format(mode="clientonly"),
        "ambient has no per-pod proxy to leave out; compare both (ztunnel) and --waypoint",
    ),
    ("linkerd", "serversidecar"): (
        "Linkerd's client proxy cannot be bypassed for the server pod's captured port"
        " (skip-outbound-ports is per port and skip-subnets matches the source), so"
        " serversidecar would cross both proxies, the path of both",
        "compare --baseline, --clientonly and both",
    ),
    ("linkerd", "waypoint"): (
        "waypoints exist only in Istio's ambient mode (--mesh istio-ambient)",
        "drop --waypoint",
    ),
    ("istio", "waypoint"): (
        "waypoints exist only in Istio's ambient mode (--mesh istio-ambient)",
        "use --mesh istio-ambient on a cluster installed with PROFILE=ambient",
    ),
}
for _mode in ("serversidecar", "clientonly", "both", "ingress", "waypoint"):
    REFUSED[("none", _mode)] = (
        f"--mesh none has no proxies: {_mode} cannot run",
        "use --baseline alone, or pick a mesh",
    )


def refusal(mesh: str, mode: str) -> tuple[str, str] | None:
    """(reason, hint) when ``mode`` cannot take its claimed path on ``mesh``; else None."""
    return REFUSED.get((mesh, mode))


def path(mesh: str, mode: str) -> str:
    """The path of ``mode`` on ``mesh`` (a cluster), for the plan listing and the docs."""
    return PATHS.get(mesh, {}).get(mode, f"(no {mode} path on {mesh})")
