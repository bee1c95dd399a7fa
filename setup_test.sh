#!/usr/bin/env bash
# Deploy the fortio client and server pods that meshperf measures, into $NAMESPACE.
#
# usage: [MESH=istio|istio-ambient|linkerd|none] [NAMESPACE=twopods] ./setup_test.sh
#
#   MESH              istio (sidecars; namespace label istio-injection=enabled, the default)
#                     istio-ambient (label istio.io/dataplane-mode=ambient)
#                     linkerd (namespace annotation linkerd.io/inject=enabled)
#                     none (no proxies: the no-mesh baseline)
#   NAMESPACE         default twopods
#   DNS_DOMAIN        ingress host names fortioserver.$DNS_DOMAIN / fortioclient.$DNS_DOMAIN
#                     (default local)
#   MTLS_MODE         Istio PeerAuthentication: PERMISSIVE (default), STRICT, DISABLE.
#                     STRICT rejects the serversidecar mode's plain-text requests.
#   WAYPOINT=1        istio-ambient: add a waypoint (L7 proxy) for the namespace
#   INGRESS=0         do not create the Istio Gateway + VirtualServices (ingress mode)
#   EXPOSE_CLIENT=0   fortioclient Service as ClusterIP instead of LoadBalancer. With 1 (the
#                     default) fortio's UI is on a load balancer, and that UI can start load
#                     against any URL: restrict who reaches it with LB_SOURCE_RANGES
#   LB_SOURCE_RANGES  CIDRs allowed to reach the client's load balancer (e.g. your address,
#                     203.0.113.7/32); Kubernetes' loadBalancerSourceRanges
#   FORTIO_IMAGE      default fortio/fortio:1.75.2
#   TOOLS_IMAGE       image with sleep and pkill for the tools container (default busybox:1.36.1)
#   PROXY_CPU, PROXY_MEMORY              proxy requests (default 1000m, 512Mi); under Linkerd
#                     the CPU request is PROXY_CONCURRENCY cores instead (see below)
#   PROXY_CPU_LIMIT, PROXY_MEMORY_LIMIT  proxy limits (default none: a CPU limit throttles)
#   PROXY_CONCURRENCY worker threads of each proxy (default 2): Envoy's concurrency under
#                     Istio; under Linkerd the proxy's CPU request in cores, since linkerd-proxy
#                     takes its worker count from that request
#   APP_CPU, APP_MEMORY  requests of each fortio container (default 1000m, 256Mi)
#   POD_CIDRS         MESH=istio: pod ranges the client sidecar lets through untouched
#                     (default: the nodes' spec.podCIDR)
#   CLIENTS           fortioclient pods (default 1), for runner.py --clients N: each on a
#                     node other than the server's, loading together
#   WAIT_TIMEOUT      default 300s
#   LB_WAIT           seconds to wait for the client's load balancer address (default 90)
#   ISTIOCTL          istioctl for WAYPOINT=1 (default: istioctl on PATH)
#   RENDER_DIR        keep the rendered manifests there instead of a temp dir
#   DRY_RUN=1         print the commands instead of running them
#   KUBECTL_TIMEOUT, CLI_TIMEOUT  time limits of kubectl calls (default 60s per request)
#                    and of istioctl/linkerd/gcloud/kind (default 20m); see docs/cluster.md
set -Eeuo pipefail

WD="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/istio-install/lib.sh
source "${WD}/istio-install/lib.sh"

(($# == 0)) || usage "no arguments expected (settings are environment variables); usage: MESH=istio ${PROG}"

MESH="${MESH:-istio}"
case "${MESH}" in
  istio | istio-ambient | linkerd | none) ;;
  *) usage "MESH must be istio, istio-ambient, linkerd or none, got '${MESH}'" ;;
esac
NAMESPACE="${NAMESPACE:-twopods}"
check_value NAMESPACE "${NAMESPACE}" "${DNS_LABEL_RE}" "a namespace name (DNS-1123 label)"
DNS_DOMAIN="${DNS_DOMAIN:-local}"
MTLS_MODE="${MTLS_MODE:-PERMISSIVE}"
case "${MTLS_MODE}" in
  STRICT | PERMISSIVE | DISABLE) ;;
  *) usage "MTLS_MODE must be STRICT, PERMISSIVE or DISABLE, got '${MTLS_MODE}'" ;;
esac
if [[ "${MESH}" != istio* && "${MTLS_MODE}" != "PERMISSIVE" ]]; then
  usage "MTLS_MODE applies to Istio only (Linkerd always uses mTLS between meshed pods)"
fi
WAYPOINT="${WAYPOINT:-0}"
check_bool WAYPOINT "${WAYPOINT}"
if [[ "${WAYPOINT}" == "1" && "${MESH}" != "istio-ambient" ]]; then
  usage "WAYPOINT=1 needs MESH=istio-ambient"
fi
INGRESS="${INGRESS:-1}"
check_bool INGRESS "${INGRESS}"
EXPOSE_CLIENT="${EXPOSE_CLIENT:-1}"
check_bool EXPOSE_CLIENT "${EXPOSE_CLIENT}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-300s}"
check_value WAIT_TIMEOUT "${WAIT_TIMEOUT}" '^[1-9][0-9]*[sm]$' "a duration like 300s or 5m"
LB_WAIT="${LB_WAIT:-90}"
check_value LB_WAIT "${LB_WAIT}" '^[0-9]+$' "a number of seconds"
CLIENTS="${CLIENTS:-1}"
check_value CLIENTS "${CLIENTS}" '^([1-9]|[1-5][0-9]|6[0-4])$' "a number of client pods, 1 to 64"

need kubectl "https://kubernetes.io/docs/tasks/tools/"
command -v python3 >/dev/null 2>&1 || die "python3 not found; it renders the manifests (any Python 3.8+)"
ISTIOCTL="${ISTIOCTL:-istioctl}"
if [[ "${WAYPOINT}" == "1" ]]; then
  need "${ISTIOCTL}" "or set ISTIOCTL; istio-install/setup_istio.sh keeps one in ~/.cache/meshperf/istio/<release>/"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
out_dir="${RENDER_DIR:-${tmp}}"

# With sidecars, baseline and serversidecar requests go to the server pod's IP and must skip
# the client's sidecar: the client excludes the cluster's pod ranges from interception.
pod_cidrs="${POD_CIDRS:-}"
if [[ "${MESH}" == "istio" && -z "${pod_cidrs}" ]]; then
  if is_dry_run; then
    query kubectl get nodes -o 'jsonpath={.items[*].spec.podCIDR}'
    pod_cidrs="192.0.2.0/24"
    printf '# POD_CIDRS unknown under DRY_RUN; rendering with %s\n' "${pod_cidrs}"
  else
    pod_cidrs="$(query kubectl get nodes -o 'jsonpath={.items[*].spec.podCIDR}')"
    [[ -n "${pod_cidrs//[[:space:]]/}" ]] || die "could not read the nodes' pod CIDRs; set POD_CIDRS (e.g. POD_CIDRS=10.0.0.0/14)"
  fi
fi

python3 "${WD}/manifests/render.py" --out-dir "${out_dir}" --mesh "${MESH}" \
  --namespace "${NAMESPACE}" --dns-domain "${DNS_DOMAIN}" --mtls-mode "${MTLS_MODE}" \
  --ingress "${INGRESS}" --expose-client "${EXPOSE_CLIENT}" \
  --fortio-image "${FORTIO_IMAGE:-fortio/fortio:1.75.2}" \
  --tools-image "${TOOLS_IMAGE:-busybox:1.36.1}" \
  --proxy-cpu "${PROXY_CPU:-1000m}" --proxy-memory "${PROXY_MEMORY:-512Mi}" \
  --proxy-cpu-limit "${PROXY_CPU_LIMIT:-}" --proxy-memory-limit "${PROXY_MEMORY_LIMIT:-}" \
  --proxy-concurrency "${PROXY_CONCURRENCY:-2}" --clients "${CLIENTS}" \
  --app-cpu "${APP_CPU:-1000m}" --app-memory "${APP_MEMORY:-256Mi}" \
  --pod-cidrs "${pod_cidrs}" --lb-source-ranges "${LB_SOURCE_RANGES:-}" >/dev/null ||
  die "could not render the manifests (see above)"

# Nothing in the cluster changes before here: bad settings fail before any write.

# The namespace, labelled for exactly one mesh: labels of the other meshes are removed, so
# switching MESH on an existing namespace does not leave two data planes fighting.
run_pipe kubectl create namespace "${NAMESPACE}" --dry-run=client -o yaml '|' kubectl apply -f -
case "${MESH}" in
  istio)
    run kubectl label namespace "${NAMESPACE}" --overwrite istio-injection=enabled istio.io/dataplane-mode- istio.io/use-waypoint-
    run kubectl annotate namespace "${NAMESPACE}" --overwrite linkerd.io/inject-
    ;;
  istio-ambient)
    run kubectl label namespace "${NAMESPACE}" --overwrite istio.io/dataplane-mode=ambient istio-injection-
    run kubectl annotate namespace "${NAMESPACE}" --overwrite linkerd.io/inject-
    ;;
  linkerd)
    run kubectl label namespace "${NAMESPACE}" --overwrite istio-injection- istio.io/dataplane-mode- istio.io/use-waypoint-
    run kubectl annotate namespace "${NAMESPACE}" --overwrite linkerd.io/inject=enabled
    ;;
  none)
    run kubectl label namespace "${NAMESPACE}" --overwrite istio-injection- istio.io/dataplane-mode- istio.io/use-waypoint-
    run kubectl annotate namespace "${NAMESPACE}" --overwrite linkerd.io/inject-
    ;;
esac

run kubectl apply -f "${out_dir}/fortio.yaml"
if [[ "${MESH}" == istio* ]]; then
  run kubectl apply -f "${out_dir}/istio-mtls.yaml"
  if [[ "${INGRESS}" == "1" ]]; then
    run kubectl apply -f "${out_dir}/istio-ingress.yaml"
  fi
fi
if [[ "${MESH}" == "istio-ambient" ]]; then
  if [[ "${WAYPOINT}" == "1" ]]; then
    run "${ISTIOCTL}" waypoint apply -n "${NAMESPACE}" --enroll-namespace --wait
  else
    run kubectl label namespace "${NAMESPACE}" --overwrite istio.io/use-waypoint-
  fi
fi

# rollout status returns once the new pods are Ready (readiness probes on both fortio ports)
# and the old ones are gone from the Deployment's count.
for app in fortioserver fortioclient; do
  run kubectl -n "${NAMESPACE}" rollout status "deployment/${app}" "--timeout=${WAIT_TIMEOUT}"
done

# A "both" run without sidecars would silently measure the baseline: check the proxies.
proxy=""
case "${MESH}" in
  istio) proxy=istio-proxy ;;
  linkerd) proxy=linkerd-proxy ;;
esac
if [[ -n "${proxy}" ]]; then
  for app in fortioserver fortioclient; do
    # One line per pod: "<deletionTimestamp>|<containers> <init containers>"; pods of the
    # previous rollout may still be terminating and are skipped. Native sidecars (Kubernetes
    # 1.29+) are listed among the init containers.
    pods="$(query kubectl -n "${NAMESPACE}" get pod -l "app=${app}" -o \
      'jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{.spec.containers[*].name} {.spec.initContainers[*].name}{"\n"}{end}')"
    is_dry_run && continue
    live=0
    while IFS='|' read -r deleted names; do
      [[ -z "${deleted}" && -n "${names}" ]] || continue
      live=$((live + 1))
      if [[ " ${names} " != *" ${proxy} "* ]]; then
        die "pod app=${app} has no ${proxy} container (containers: ${names}); is ${MESH} installed and injecting in namespace ${NAMESPACE}?"
      fi
    done <<<"${pods}"
    ((live > 0)) || die "no running pod with label app=${app} in namespace ${NAMESPACE}"
  done
fi

# A cloud load balancer takes a minute or so to get its address; kind never gives one.
external=""
if [[ "${EXPOSE_CLIENT}" == "1" ]]; then
  deadline=$((SECONDS + LB_WAIT))
  while :; do
    external="$(query kubectl -n "${NAMESPACE}" get svc fortioclient \
      -o 'jsonpath={.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}')"
    if [[ -n "${external}" ]] || is_dry_run || ((SECONDS >= deadline)); then
      break
    fi
    sleep 5
  done
fi

echo "fortio client and server are ready in namespace ${NAMESPACE} (MESH=${MESH})."
echo "FORTIO_CLIENT_URL (the client's fortio report UI):"
if [[ -n "${external}" && "${MTLS_MODE}" != "STRICT" ]]; then
  echo "  export FORTIO_CLIENT_URL=http://${external}:8080"
else
  # port-forward enters the pod's network namespace directly: it works with STRICT mTLS and
  # without a load balancer (kind).
  echo "  kubectl -n ${NAMESPACE} port-forward svc/fortioclient 8080:8080 &"
  echo "  export FORTIO_CLIENT_URL=http://localhost:8080"
fi
if [[ "${MESH}" == istio* && "${INGRESS}" == "1" ]]; then
  echo "Ingress mode (--ingress): the gateway's address, Host fortioserver.${DNS_DOMAIN}:"
  echo "  kubectl -n istio-system get svc istio-ingressgateway -o jsonpath='{.status.loadBalancer.ingress[0].ip}'"
fi
# Suggest only modes this mesh can give (meshperf.kube.paths): under ambient there is no
# uncaptured port, so the baseline is a separate MESH=none run.
case "${MESH}" in
  istio) modes="--baseline --serversidecar --clientonly" ;;
  linkerd) modes="--baseline --clientonly" ;;
  istio-ambient) modes="" ;;
  none) modes="--baseline" ;;
esac
echo "Run the matrix: python runner/runner.py 16,64 1000 180 ${modes:+${modes} }--mesh ${MESH} --platform kubernetes"
if [[ "${MESH}" == "istio-ambient" ]]; then
  echo "  (ambient has no uncaptured path: measure the baseline in another namespace with MESH=none)"
fi
# Said last, beside the URL it is about.
if [[ "${EXPOSE_CLIENT}" == "1" && -z "${LB_SOURCE_RANGES:-}" ]]; then
  note "warning: EXPOSE_CLIENT=1 puts fortio's UI on a load balancer open to everyone, and that UI can start load against any URL; set LB_SOURCE_RANGES=<your address>/32 to restrict it, or EXPOSE_CLIENT=0 and use kubectl port-forward"
fi
