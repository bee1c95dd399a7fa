"""Before each test: check from the API that the pods give the mode the path it claims.

``meshperf.kube.paths`` says which path each mode takes on each mesh; this module reads the
client and server pods (and the Service, for the modes that address it) and refuses a test
whose path would not be that one, with one line naming what is wrong. What was checked is
returned and recorded in each result's ``meshperf.capture`` block, so a number says how its
path was established.

What the checks read, from the projects' own objects:
- Istio sidecars: the ``istio-init`` container's ``istio-iptables`` arguments (``-x`` excluded
  outbound ranges, ``-o`` excluded outbound ports, ``-d`` excluded inbound ports, ``-b``
  captured inbound ports), which is what the pod's iptables were built from; with istio-cni
  there is no ``istio-init`` and the CNI plugin reads the ``traffic.sidecar.istio.io/*``
  annotations the injector left (istio/istio pkg/kube/inject testdata
  ``traffic-annotations.yaml.injected`` and ``hello.yaml.cni.injected``).
- Linkerd: the ``linkerd-init`` arguments ``--inbound-ports-to-ignore`` and
  ``--outbound-ports-to-ignore``, else (linkerd-cni) the ``config.linkerd.io/skip-*-ports``
  annotations (linkerd2 cli/cmd/testdata ``inject_emojivoto_deployment.golden.yml``).
- Ambient: istio-cni annotates each pod it has captured ``ambient.istio.io/redirection:
  enabled``.
- The proxy container: a regular container or a native sidecar (an init container with
  ``restartPolicy: Always``, Istio's default on Kubernetes 1.33+, Linkerd's too).

What it cannot see: the iptables/nftables rules themselves, a CNI that rewrites them, a
NetworkPolicy, or which node a Service endpoint resolves to at the moment of the test.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from meshperf import loadcmd
from meshperf.errors import ClusterError
from meshperf.kube import paths

AMBIENT_REDIRECTION = "ambient.istio.io/redirection"
ISTIO_ANN = "traffic.sidecar.istio.io/"
LINKERD_ANN = "config.linkerd.io/"


def _ann(pod: Any) -> dict[str, str]:
    return dict(pod.raw.metadata.annotations or {})


def _named(containers: Iterable[Any] | None, name: str) -> Any | None:
    return next((c for c in containers or [] if c.name == name), None)


def proxy_kind(pod: Any, name: str) -> str | None:
    """ "container", "native sidecar", or None when ``pod`` has no container ``name``."""
    if _named(pod.raw.spec.containers, name) is not None:
        return "container"
    init = _named(pod.raw.spec.init_containers, name)
    if init is not None and getattr(init, "restart_policy", None) == "Always":
        return "native sidecar"
    return None


def _flag(args: list[str], flag: str) -> str | None:
    """The value after ``flag`` in an argv (``-x VALUE`` or ``--flag=VALUE``), or None."""
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _ports(text: str | None) -> set[int]:
    return {int(p) for p in (text or "").replace(" ", "").split(",") if p.isdigit()}


def _ranges(text: str | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for part in (text or "").replace(" ", "").split(","):
        if part and part != "*":
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                continue
    return out


class IstioCapture:
    """What a pod's Istio sidecar captures, from istio-init's arguments or the annotations."""

    def __init__(self, pod: Any) -> None:
        init = _named(pod.raw.spec.init_containers, "istio-init")
        args = [str(a) for a in (init.args or [])] if init is not None else []
        if init is not None and "istio-iptables" in args:
            self.source = "istio-init arguments"
            self.out_ranges = _ranges(_flag(args, "-x"))
            self.out_ports = _ports(_flag(args, "-o"))
            self.in_excluded = _ports(_flag(args, "-d"))
            self.in_included = _flag(args, "-b") or "*"
        else:
            ann = _ann(pod)
            self.source = "traffic.sidecar.istio.io annotations (istio-cni)"
            self.out_ranges = _ranges(ann.get(ISTIO_ANN + "excludeOutboundIPRanges"))
            self.out_ports = _ports(ann.get(ISTIO_ANN + "excludeOutboundPorts"))
            self.in_excluded = _ports(ann.get(ISTIO_ANN + "excludeInboundPorts"))
            self.in_included = ann.get(ISTIO_ANN + "includeInboundPorts", "*")

    def bypasses_outbound(self, ip: str, port: int) -> bool:
        if port in self.out_ports:
            return True
        addr = ipaddress.ip_address(ip)
        return any(addr in net for net in self.out_ranges)

    def captures_inbound(self, port: int) -> bool:
        if port in self.in_excluded:
            return False
        return self.in_included.strip() == "*" or port in _ports(self.in_included)


class LinkerdSkips:
    """The ports a pod's linkerd-proxy leaves alone, from linkerd-init or the annotations."""

    def __init__(self, pod: Any) -> None:
        init = _named(pod.raw.spec.init_containers, "linkerd-init")
        args = [str(a) for a in (init.args or [])] if init is not None else []
        if init is not None and args:
            self.source = "linkerd-init arguments"
            self.inbound = _ports(_flag(args, "--inbound-ports-to-ignore"))
            self.outbound = _ports(_flag(args, "--outbound-ports-to-ignore"))
        else:
            ann = _ann(pod)
            self.source = "config.linkerd.io annotations (linkerd-cni)"
            self.inbound = _ports(ann.get(LINKERD_ANN + "skip-inbound-ports"))
            self.outbound = _ports(ann.get(LINKERD_ANN + "skip-outbound-ports"))


def verify(
    mesh: str,
    mode: str,
    client: Any,
    server: Any,
    service_ip: str | None = None,
    ingress_port: int = paths.INGRESS_PORT,
    protocol: str = "http",
) -> dict[str, Any]:
    """Check that ``mode`` takes its path on ``mesh`` with these pods; return what was checked.

    ``client``/``server`` are ``meshperf.kube.cluster.PodInfo``; ``service_ip`` is the server
    Service's ClusterIP (clientonly addresses it); ``protocol`` picks the ports (the fortio
    server's ports of that protocol, ``meshperf.loadcmd.KUBE_PORTS``). Raises ClusterError
    naming the first mismatch.
    """
    refused = paths.refusal(mesh, mode)
    if refused is not None:
        raise ClusterError(f"mode {mode} on {mesh}: {refused[0]}", hint=refused[1])
    checks: list[str] = []

    def need(ok: bool, problem: str, fix: str, fact: str) -> None:
        if not ok:
            raise ClusterError(
                f"mode {mode} would not take its path on {mesh}: {problem}", hint=fix
            )
        checks.append(fact)

    setup = f"re-deploy with NAMESPACE={server.namespace} MESH={mesh} ./setup_test.sh"
    info: dict[str, Any] = {"mesh": mesh, "mode": mode, "path": paths.path(mesh, mode)}
    captured, uncaptured = loadcmd.KUBE_PORTS.get(
        protocol, (paths.CAPTURED_PORT, paths.UNCAPTURED_PORT)
    )
    clientonly_port, clientonly_target = paths.CLIENTONLY_PORTS.get(
        protocol, paths.CLIENTONLY_PORTS["http"]
    )

    if mesh in paths.PROXY_CONTAINER:
        proxy = paths.PROXY_CONTAINER[mesh]
        wants = {
            "baseline": (),
            "serversidecar": ("server",),
            "clientonly": ("client",),
            "both": ("client", "server"),
            "ingress": ("server",),
        }.get(mode, ())
        for role in wants:
            pod = client if role == "client" else server
            kind = proxy_kind(pod, proxy)
            need(
                kind is not None,
                f"the {role} pod {pod.name} has no {proxy} container",
                f"is {mesh} injecting in namespace {pod.namespace}? {setup}",
                f"{role} pod {pod.name} has {proxy} ({kind})",
            )
            info[f"{role}_proxy"] = kind

    if mesh == "istio":
        cl, sv = IstioCapture(client), IstioCapture(server)
        info["client_capture_from"], info["server_capture_from"] = cl.source, sv.source
        if mode in ("baseline", "serversidecar"):
            port = uncaptured if mode == "baseline" else captured
            need(
                proxy_kind(client, "istio-proxy") is None or cl.bypasses_outbound(server.ip, port),
                f"the server pod IP {server.ip} is not in the client's excluded outbound ranges "
                f"({', '.join(map(str, cl.out_ranges)) or 'none'}; from {cl.source}), so the "
                "request would cross the client sidecar (CNIs with their own IPAM, such as "
                "Calico or Cilium cluster-pool, do not use the nodes' spec.podCIDR)",
                f"set POD_CIDRS to the range pod IPs really come from and {setup}",
                f"client sidecar bypassed for {server.ip}:{port} ({cl.source})",
            )
        if mode == "baseline":
            need(
                proxy_kind(server, "istio-proxy") is None or not sv.captures_inbound(uncaptured),
                f"the server sidecar captures port {uncaptured} ({sv.source})",
                setup,
                f"server port {uncaptured} not captured ({sv.source})",
            )
        if mode in ("serversidecar", "both", "ingress"):
            need(
                sv.captures_inbound(captured),
                f"the server sidecar does not capture port {captured} ({sv.source})",
                setup,
                f"server port {captured} captured ({sv.source})",
            )
        if mode == "clientonly":
            port, target = clientonly_port, clientonly_target
            need(
                service_ip is not None and not cl.bypasses_outbound(service_ip, port),
                f"the client sidecar lets Service {service_ip}:{port} through uncaptured "
                f"({cl.source})",
                setup,
                f"client sidecar captures Service {service_ip}:{port} ({cl.source})",
            )
            need(
                not sv.captures_inbound(target),
                f"the server sidecar captures port {target} ({sv.source})",
                setup,
                f"server port {target} not captured ({sv.source})",
            )
        if mode == "ingress":
            need(
                proxy_kind(client, "istio-proxy") is None or ingress_port in cl.out_ports,
                f"the client sidecar captures outbound port {ingress_port}, so ingress "
                "requests would cross it before the gateway",
                setup,
                f"client sidecar bypassed for port {ingress_port} ({cl.source})",
            )
    elif mesh == "linkerd":
        cl_l, sv_l = LinkerdSkips(client), LinkerdSkips(server)
        info["client_capture_from"], info["server_capture_from"] = cl_l.source, sv_l.source
        if mode == "baseline":
            need(
                uncaptured in cl_l.outbound,
                f"the client's linkerd-proxy does not skip outbound port {uncaptured}",
                setup,
                f"client skips outbound {uncaptured} ({cl_l.source})",
            )
        if mode in ("baseline", "clientonly"):
            need(
                uncaptured in sv_l.inbound,
                f"the server's linkerd-proxy does not skip inbound port {uncaptured}",
                setup,
                f"server skips inbound {uncaptured} ({sv_l.source})",
            )
        if mode == "clientonly":
            port = clientonly_port
            need(
                port not in cl_l.outbound,
                f"the client's linkerd-proxy skips outbound port {port}",
                setup,
                f"client captures outbound {port} ({cl_l.source})",
            )
    elif mesh == "istio-ambient":
        for role, pod in (("client", client), ("server", server)):
            state = _ann(pod).get(AMBIENT_REDIRECTION, "")
            need(
                state == "enabled",
                f"the {role} pod {pod.name} is not captured by ztunnel "
                f"({AMBIENT_REDIRECTION}={state or 'absent'})",
                f"label the namespace istio.io/dataplane-mode=ambient (is istio-cni running?); "
                f"{setup}",
                f"{role} pod {pod.name} {AMBIENT_REDIRECTION}=enabled",
            )
    info["verified"] = checks
    return info
