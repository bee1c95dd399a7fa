#!/usr/bin/env bash
# Install an Istio release for meshperf with istioctl and the perf overlay, then Prometheus.
#
# usage: setup_istio.sh [RELEASE [istioctl install flags...]]
#   RELEASE          an Istio release (1.22 or later), default 1.30.3; any release listed at
#                    https://github.com/istio/istio/releases works
#   PROFILE          default (sidecars, the default) | ambient (ztunnel + istio-cni; 1.24 or later)
#   ISTIOCTL         use this istioctl instead of downloading one (must be version RELEASE)
#   ISTIO_CACHE      where downloaded istioctl binaries are kept
#                    (default ${XDG_CACHE_HOME:-~/.cache}/meshperf/istio)
#   ISTIO_PLATFORM   passed as values.global.platform (gke, k3d, ...; ambient on GKE needs gke,
#                    which also adds the ResourceQuota GKE wants for node-critical pods)
#   GATEWAY_API_VERSION  Gateway API CRDs installed for ambient waypoints (default v1.2.1)
#   SKIP_PROMETHEUS=1    do not install Prometheus (istio-install/prometheus.yaml)
#   WAIT_TIMEOUT     how long to wait for the control plane, default 300s
#   DRY_RUN=1        print the commands instead of running them
#   KUBECTL_TIMEOUT, CLI_TIMEOUT  time limits of kubectl calls (default 60s per request)
#                    and of istioctl/linkerd/gcloud/kind (default 20m); see docs/cluster.md
# Extra arguments go to `istioctl install` (e.g. --set meshConfig.accessLogFile=/dev/stdout).
set -Eeuo pipefail

WD="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${WD}/lib.sh"

# The newest Istio release when this was written (istio/istio releases, 1.30.3).
DEFAULT_RELEASE=1.30.3
RELEASE="${1:-${DEFAULT_RELEASE}}"
(($# == 0)) || shift
check_value RELEASE "${RELEASE}" '^[0-9]+\.[0-9]+\.[0-9]+(-[A-Za-z0-9.]+)?$' \
  "an Istio release like 1.24.2 (daily builds such as release-1.2-latest no longer exist)"

PROFILE="${PROFILE:-default}"
case "${PROFILE}" in
  default | sidecar) PROFILE=default overlay="${WD}/perf-overlay.yaml" min_minor=22 ;;
  ambient) overlay="${WD}/perf-overlay-ambient.yaml" min_minor=24 ;;
  *) usage "PROFILE must be default or ambient, got '${PROFILE}'" ;;
esac
major="${RELEASE%%.*}"
minor="${RELEASE#*.}"
minor="${minor%%.*}"
if ((major < 1 || (major == 1 && minor < min_minor))); then
  usage "Istio ${RELEASE} is too old for PROFILE=${PROFILE}: need 1.${min_minor} or later (the Telemetry, Gateway and PeerAuthentication v1 APIs)"
fi

WAIT_TIMEOUT="${WAIT_TIMEOUT:-300s}"
check_value WAIT_TIMEOUT "${WAIT_TIMEOUT}" '^[1-9][0-9]*[sm]$' "a duration like 300s or 5m"
SKIP_PROMETHEUS="${SKIP_PROMETHEUS:-0}"
check_bool SKIP_PROMETHEUS "${SKIP_PROMETHEUS}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.2.1}"
check_value GATEWAY_API_VERSION "${GATEWAY_API_VERSION}" '^v[0-9]+\.[0-9]+\.[0-9]+$' "a version like v1.2.1"
if [[ -n "${ISTIO_PLATFORM:-}" ]]; then
  check_value ISTIO_PLATFORM "${ISTIO_PLATFORM}" '^[a-z0-9]+$' "a platform name (gke, k3d, k3s, microk8s, minikube, openshift)"
fi

need kubectl "https://kubernetes.io/docs/tasks/tools/"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# The release's istioctl, downloaded once per version into the cache and checked against the
# release's published sha256 before it is ever run. Sets ISTIOCTL_BIN.
resolve_istioctl() {
  if [[ -n "${ISTIOCTL:-}" ]]; then
    is_dry_run || [[ -x "${ISTIOCTL}" ]] || die "ISTIOCTL=${ISTIOCTL} is not an executable file"
    ISTIOCTL_BIN="${ISTIOCTL}"
    return
  fi
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=osx ;;
    *) die "unsupported OS $(uname -s); download istioctl ${RELEASE} yourself and set ISTIOCTL" ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "unsupported CPU $(uname -m); download istioctl ${RELEASE} yourself and set ISTIOCTL" ;;
  esac
  local cache="${ISTIO_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/meshperf/istio}/${RELEASE}"
  ISTIOCTL_BIN="${cache}/istioctl"
  [[ -x "${ISTIOCTL_BIN}" ]] && return
  local asset="istioctl-${RELEASE}-${os}-${arch}.tar.gz"
  local url="https://github.com/istio/istio/releases/download/${RELEASE}/${asset}"
  need tar "GNU tar"
  fetch_verified "${url}" "${tmp}/${asset}"
  run tar -xzf "${tmp}/${asset}" -C "${tmp}" istioctl
  run mkdir -p "${cache}"
  run install -m 0755 "${tmp}/istioctl" "${ISTIOCTL_BIN}"
}

ISTIOCTL_BIN=""
resolve_istioctl

if [[ "${PROFILE}" == "ambient" && "${ISTIO_PLATFORM:-}" == "gke" ]]; then
  run_pipe kubectl create namespace istio-system --dry-run=client -o yaml '|' kubectl apply -f -
  run kubectl apply -f "${WD}/gke-ambient-quota.yaml"
fi

install_args=(install --skip-confirmation --set "profile=${PROFILE}" -f "${overlay}")
if [[ -n "${ISTIO_PLATFORM:-}" ]]; then
  install_args+=(--set "values.global.platform=${ISTIO_PLATFORM}")
fi
run "${ISTIOCTL_BIN}" "${install_args[@]}" "$@"

if [[ "${PROFILE}" == "ambient" ]]; then
  # Waypoints are Gateway API Gateways; most clusters do not ship the CRDs.
  if is_dry_run || ! query kubectl get crd gateways.gateway.networking.k8s.io >/dev/null 2>&1; then
    run kubectl apply --server-side -f \
      "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml"
  fi
fi

run kubectl -n istio-system rollout status deployment/istiod "--timeout=${WAIT_TIMEOUT}"
run kubectl -n istio-system rollout status deployment/istio-ingressgateway "--timeout=${WAIT_TIMEOUT}"
if [[ "${PROFILE}" == "ambient" ]]; then
  # istio-cni is not always in istio-system: on GKE istioctl puts it in kube-system (istio
  # operator/pkg/render/manifest.go sets components.cni.namespace for "-gke" cluster versions).
  # Find its DaemonSet by the label the chart gives it, in any namespace.
  cni_ns=""
  if is_dry_run; then
    query kubectl get daemonset -A -l k8s-app=istio-cni-node -o 'jsonpath={.items[0].metadata.namespace}'
    cni_ns="istio-system"
    printf '# istio-cni namespace unknown under DRY_RUN; shown as %s\n' "${cni_ns}"
  else
    cni_ns="$(query kubectl get daemonset -A -l k8s-app=istio-cni-node -o 'jsonpath={.items[0].metadata.namespace}')"
    [[ -n "${cni_ns}" ]] || die "no istio-cni DaemonSet (label k8s-app=istio-cni-node) in any namespace; did istioctl install the ambient profile?"
  fi
  run kubectl -n "${cni_ns}" rollout status daemonset/istio-cni-node "--timeout=${WAIT_TIMEOUT}"
  run kubectl -n istio-system rollout status daemonset/ztunnel "--timeout=${WAIT_TIMEOUT}"
fi
run "${ISTIOCTL_BIN}" version

if [[ "${SKIP_PROMETHEUS}" == "0" ]]; then
  "${WD}/setup_prometheus.sh"
fi

cat <<EOF
Istio ${RELEASE} (profile ${PROFILE}) is installed. Check it with:
  kubectl get pods -n istio-system
  ${ISTIOCTL_BIN} proxy-status
Then deploy the workloads:
  MESH=$([[ "${PROFILE}" == "ambient" ]] && echo istio-ambient || echo istio) DNS_DOMAIN=local ./setup_test.sh
Telemetry off for a run (label it --labels=notelemetry), and back on:
  ${WD}/telemetry.sh off   /   ${WD}/telemetry.sh on
EOF
