"""Render meshperf's workload manifests for one mesh (called by setup_test.sh).

Writes into OUT_DIR:
  fortio.yaml         ServiceAccount + Service + Deployment for fortioclient and fortioserver
                      (MESH=istio: + the clientonly mode's DestinationRule)
  istio-mtls.yaml     PeerAuthentication (MESH=istio, istio-ambient)
  istio-ingress.yaml  Gateway + VirtualServices (MESH=istio, istio-ambient, unless --no-ingress)

The templates beside this file use ``${NAME}`` placeholders and nothing else; every value is
checked against a strict pattern before it is substituted, so no value can inject YAML.
Standard library only: it runs with any python3 >= 3.8 a laptop has.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MESHES = ("istio", "istio-ambient", "linkerd", "none")
MTLS_MODES = ("STRICT", "PERMISSIVE", "DISABLE")
CLIENT, SERVER = "fortioclient", "fortioserver"
# Ports of the uncaptured fortio server (TCP echo, gRPC, HTTP; meshperf.loadcmd.KUBE_PORTS);
# the proxy must leave them alone on both pods.
UNCAPTURED_PORTS = "8075,8076,8077"
# The ingress gateway's ports (HTTP, and HTTPS for an https:// --ingress): excluded outbound
# on the client too, so that ingress requests reach the gateway without crossing the client's
# sidecar (istio/tools perf/benchmark/templates/fortio.yaml excludes 80 for the same reason).
INGRESS_PORTS = "80,443"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
DNS_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9./_:@-]{0,254}$")
CPU = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]{1,3})?)$")
MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
PLACEHOLDER = re.compile(r"\$\{([A-Z_]+)\}")


class RenderError(Exception):
    """A value or template that cannot be rendered."""


def _check(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise RenderError(f"{name}={value!r} is not {what}")
    return value


def parse_cidrs(value: str, name: str = "POD_CIDRS") -> str:
    """Comma- or space-separated CIDRs (as kubectl prints node podCIDRs) -> "a,b"."""
    parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    try:
        nets = [str(ipaddress.ip_network(p, strict=False)) for p in parts]
    except ValueError as exc:
        raise RenderError(f"{name}={value!r}: {exc}") from None
    return ",".join(dict.fromkeys(nets))


def fill(template: str, values: dict[str, str]) -> str:
    """Substitute every ``${NAME}``; a placeholder without a value is an error."""
    used = set(PLACEHOLDER.findall(template))
    missing = sorted(used - values.keys())
    if missing:
        raise RenderError(f"no value for {', '.join(missing)}")
    # One pass: a substituted value is never scanned again.
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def annotation_block(annotations: dict[str, str], indent: int) -> str:
    """YAML lines ``key: "value"`` (JSON strings are valid YAML scalars), one per annotation."""
    pad = " " * indent
    return f"\n{pad}".join(f"{k}: {json.dumps(v)}" for k, v in annotations.items())


def pod_annotations(args: argparse.Namespace, app: str) -> dict[str, str]:
    """The pod template annotations of one workload for the chosen mesh.

    ``meshperf/mesh`` changes the pod template whenever the mesh changes, so that a re-run
    of setup_test.sh with another MESH rolls the pods and they get (or lose) their proxies.
    """
    ann: dict[str, str] = {"meshperf/mesh": args.mesh}
    # Injection itself is switched per namespace by setup_test.sh (label or annotation).
    if args.mesh == "istio":
        ann["traffic.sidecar.istio.io/excludeInboundPorts"] = UNCAPTURED_PORTS
        ann["sidecar.istio.io/proxyCPU"] = args.proxy_cpu
        ann["sidecar.istio.io/proxyMemory"] = args.proxy_memory
        if args.proxy_cpu_limit:
            ann["sidecar.istio.io/proxyCPULimit"] = args.proxy_cpu_limit
        if args.proxy_memory_limit:
            ann["sidecar.istio.io/proxyMemoryLimit"] = args.proxy_memory_limit
        ann["proxy.istio.io/config"] = json.dumps({"concurrency": args.proxy_concurrency})
        if app == CLIENT:
            # baseline and serversidecar modes address the server pod by IP: those requests
            # must leave the client pod without its sidecar (the 2019 setup did the same);
            # ingress requests go to the gateway's port 80 and must not cross it either.
            ann["traffic.sidecar.istio.io/excludeOutboundPorts"] = (
                f"{INGRESS_PORTS},{UNCAPTURED_PORTS}"
            )
            ann["traffic.sidecar.istio.io/excludeOutboundIPRanges"] = args.pod_cidrs
    elif args.mesh == "linkerd":
        ann["config.linkerd.io/skip-inbound-ports"] = UNCAPTURED_PORTS
        ann["config.linkerd.io/skip-outbound-ports"] = UNCAPTURED_PORTS
        # Since Linkerd 2.18 the proxy's worker threads come from its CPU *request*
        # (LINKERD2_PROXY_CORES, linkerd2 pkg/inject/inject.go); the limit only caps them. A
        # request of PROXY_CONCURRENCY cores gives linkerd-proxy as many workers as Envoy's
        # --concurrency, so the two meshes are compared with the same threads.
        ann["config.linkerd.io/proxy-cpu-request"] = str(args.proxy_concurrency)
        ann["config.linkerd.io/proxy-memory-request"] = args.proxy_memory
        if args.proxy_cpu_limit:
            ann["config.linkerd.io/proxy-cpu-limit"] = args.proxy_cpu_limit
        if args.proxy_memory_limit:
            ann["config.linkerd.io/proxy-memory-limit"] = args.proxy_memory_limit
    # istio-ambient: nothing per pod (ztunnel on the node carries the traffic); none: nothing.
    return ann


def render(args: argparse.Namespace) -> dict[str, str]:
    """Return {file name: manifest text} for ``args``."""
    _check("NAMESPACE", args.namespace, DNS_LABEL, "a DNS-1123 label (a namespace name)")
    _check("DNS_DOMAIN", args.dns_domain, DNS_DOMAIN, "a DNS domain (e.g. local)")
    _check("FORTIO_IMAGE", args.fortio_image, IMAGE, "an image reference")
    _check("TOOLS_IMAGE", args.tools_image, IMAGE, "an image reference")
    for name, value in (("PROXY_CPU", args.proxy_cpu), ("APP_CPU", args.app_cpu)):
        _check(name, value, CPU, "a CPU quantity (500m, 1, 1.5)")
    if args.proxy_cpu_limit:
        _check("PROXY_CPU_LIMIT", args.proxy_cpu_limit, CPU, "a CPU quantity (500m, 1, 1.5)")
    for name, value in (("PROXY_MEMORY", args.proxy_memory), ("APP_MEMORY", args.app_memory)):
        _check(name, value, MEMORY, "a memory quantity (512Mi, 1Gi)")
    if args.proxy_memory_limit:
        _check("PROXY_MEMORY_LIMIT", args.proxy_memory_limit, MEMORY, "a memory quantity")
    if args.proxy_concurrency < 1:
        raise RenderError(f"PROXY_CONCURRENCY={args.proxy_concurrency} must be >= 1")
    if not 1 <= args.clients <= 64:
        raise RenderError(f"CLIENTS={args.clients} must be 1 to 64 (runner.py --clients)")
    lb_ranges = parse_cidrs(args.lb_source_ranges, "LB_SOURCE_RANGES") if args.lb_source_ranges else ""
    if lb_ranges and not args.expose_client:
        raise RenderError("LB_SOURCE_RANGES needs EXPOSE_CLIENT=1 (it restricts the load balancer)")
    if args.mesh == "istio":
        if not args.pod_cidrs:
            raise RenderError("POD_CIDRS is required for MESH=istio (the cluster's pod ranges)")
        args.pod_cidrs = parse_cidrs(args.pod_cidrs)

    tmpl = (HERE / "fortio.yaml").read_text(encoding="utf-8")
    docs = []
    for app, other, service_type in (
        (SERVER, CLIENT, "ClusterIP"),
        (CLIENT, SERVER, "LoadBalancer" if args.expose_client else "ClusterIP"),
    ):
        values = {
            "APP": app,
            "OTHER_APP": other,
            # runner.py --clients N loads from N client pods at once; one server.
            "REPLICAS": str(args.clients if app == CLIENT else 1),
            "NAMESPACE": args.namespace,
            "SERVICE_TYPE": service_type,
            # Who may reach the client's public load balancer (fortio's UI can start load
            # against any URL): LB_SOURCE_RANGES, as Kubernetes' loadBalancerSourceRanges.
            "SERVICE_EXTRA": (
                "\n  loadBalancerSourceRanges: " + json.dumps(lb_ranges.split(","))
                if lb_ranges and service_type == "LoadBalancer"
                else ""
            ),
            "FORTIO_IMAGE": args.fortio_image,
            "TOOLS_IMAGE": args.tools_image,
            "APP_CPU": args.app_cpu,
            "APP_MEMORY": args.app_memory,
            "POD_ANNOTATIONS": annotation_block(pod_annotations(args, app), 8),
        }
        docs.append(fill(tmpl, values).rstrip("\n"))
    if args.mesh == "istio":
        # clientonly: the client sidecar sends plain text to the server's uncaptured port.
        clientonly = (HERE / "istio-clientonly.yaml").read_text(encoding="utf-8")
        docs.append(fill(clientonly, {"NAMESPACE": args.namespace}).rstrip("\n"))
    files = {"fortio.yaml": "\n---\n".join(docs) + "\n"}
    if args.mesh in ("istio", "istio-ambient"):
        common = {"NAMESPACE": args.namespace}
        mtls = (HERE / "istio-mtls.yaml").read_text(encoding="utf-8")
        files["istio-mtls.yaml"] = fill(mtls, {**common, "MTLS_MODE": args.mtls_mode})
        if args.ingress:
            ingress = (HERE / "istio-ingress.yaml").read_text(encoding="utf-8")
            files["istio-ingress.yaml"] = fill(ingress, {**common, "DNS_DOMAIN": args.dns_domain})
    return files


def _bool01(value: str) -> bool:
    if value not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"expected 0 or 1, got {value!r}")
    return value == "1"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="render.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--mesh", choices=MESHES, required=True)
    p.add_argument("--namespace", default="twopods")
    p.add_argument("--dns-domain", default="local")
    p.add_argument("--mtls-mode", choices=MTLS_MODES, default="PERMISSIVE")
    p.add_argument("--ingress", type=_bool01, default=True, metavar="0|1")
    p.add_argument("--expose-client", type=_bool01, default=True, metavar="0|1")
    p.add_argument("--fortio-image", default="fortio/fortio:1.75.2")
    p.add_argument("--tools-image", default="busybox:1.36.1", help="holds sleep and pkill")
    p.add_argument("--proxy-cpu", default="1000m")
    p.add_argument("--proxy-memory", default="512Mi")
    p.add_argument("--proxy-cpu-limit", default="")
    p.add_argument("--proxy-memory-limit", default="")
    p.add_argument("--proxy-concurrency", type=int, default=2)
    p.add_argument("--clients", type=int, default=1, help="fortioclient replicas (CLIENTS)")
    p.add_argument("--app-cpu", default="1000m")
    p.add_argument("--app-memory", default="256Mi")
    p.add_argument("--pod-cidrs", default="", help="client excludeOutboundIPRanges (MESH=istio)")
    p.add_argument(
        "--lb-source-ranges",
        default="",
        help="CIDRs allowed to reach the client's load balancer (loadBalancerSourceRanges)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        files = render(args)
        args.out_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (args.out_dir / name).write_text(text, encoding="utf-8")
    except (RenderError, OSError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    for name in files:
        print(args.out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
