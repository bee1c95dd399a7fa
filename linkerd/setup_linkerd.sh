#!/usr/bin/env bash
# Install Linkerd for meshperf with its CLI (downloaded, pinned to VERSION, sha256-checked
# against the digest GitHub's release metadata lists for the asset), run `linkerd check`,
# optionally linkerd-viz, then meshperf's Prometheus.
#
# usage: setup_linkerd.sh [VERSION]
#   VERSION          a Linkerd release tag, default edge-26.8.3; the project publishes
#                    edge-YY.M.N tags (https://github.com/linkerd/linkerd2/releases), older
#                    stable-X.Y.Z tags work too
#   LINKERD          use this linkerd CLI instead of downloading one (must match VERSION)
#   LINKERD_CACHE    where downloaded CLIs are kept (default ${XDG_CACHE_HOME:-~/.cache}/meshperf/linkerd)
#   GATEWAY_API_VERSION  Gateway API CRDs to install when missing (default v1.2.1)
#   VIZ=1            also install linkerd-viz (dashboard; meshperf does not need it)
#   SKIP_PROMETHEUS=1    do not install meshperf's Prometheus (istio-install/prometheus.yaml)
#   DRY_RUN=1        print the commands instead of running them
#   KUBECTL_TIMEOUT, CLI_TIMEOUT  time limits of kubectl calls (default 60s per request)
#                    and of istioctl/linkerd/gcloud/kind (default 20m); see docs/cluster.md
set -Eeuo pipefail

WD="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "${WD}")"
# shellcheck source=SCRIPTDIR/../istio-install/lib.sh
source "${ROOT}/istio-install/lib.sh"

# The newest Linkerd release when this was written (linkerd/linkerd2 releases, edge-26.8.3).
DEFAULT_VERSION=edge-26.8.3
(($# <= 1)) || usage "too many arguments; usage: ${PROG} [VERSION] (e.g. ${PROG} ${DEFAULT_VERSION})"
VERSION="${1:-${DEFAULT_VERSION}}"
check_value VERSION "${VERSION}" '^(edge-[0-9]{2}\.[0-9]{1,2}\.[0-9]+|stable-[0-9]+\.[0-9]+\.[0-9]+)$' \
  "a Linkerd release tag like ${DEFAULT_VERSION} or stable-2.14.10"
VIZ="${VIZ:-0}"
check_bool VIZ "${VIZ}"
SKIP_PROMETHEUS="${SKIP_PROMETHEUS:-0}"
check_bool SKIP_PROMETHEUS "${SKIP_PROMETHEUS}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.2.1}"
check_value GATEWAY_API_VERSION "${GATEWAY_API_VERSION}" '^v[0-9]+\.[0-9]+\.[0-9]+$' "a version like v1.2.1"

need kubectl "https://kubernetes.io/docs/tasks/tools/"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

# Sets LINKERD_BIN: $LINKERD, or the cached CLI of VERSION, downloaded and verified once.
resolve_linkerd() {
  if [[ -n "${LINKERD:-}" ]]; then
    is_dry_run || [[ -x "${LINKERD}" ]] || die "LINKERD=${LINKERD} is not an executable file"
    LINKERD_BIN="${LINKERD}"
    return
  fi
  local os arch suffix
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) die "unsupported OS $(uname -s); download the linkerd CLI ${VERSION} yourself and set LINKERD" ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) die "unsupported CPU $(uname -m); download the linkerd CLI ${VERSION} yourself and set LINKERD" ;;
  esac
  suffix="${os}-${arch}"
  # The macOS Intel build carries no architecture in its name.
  [[ "${suffix}" == "darwin-amd64" ]] && suffix="darwin"
  local cache="${LINKERD_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/meshperf/linkerd}/${VERSION}"
  LINKERD_BIN="${cache}/linkerd"
  [[ -x "${LINKERD_BIN}" ]] && return
  local asset="linkerd2-cli-${VERSION}-${suffix}"
  fetch_release_asset linkerd/linkerd2 "${VERSION}" "${asset}" "${tmp}/${asset}"
  run mkdir -p "${cache}"
  run install -m 0755 "${tmp}/${asset}" "${LINKERD_BIN}"
}

LINKERD_BIN=""
resolve_linkerd
run "${LINKERD_BIN}" version --client

# Linkerd 2.18+ needs the Gateway API CRDs and no longer installs them itself.
if is_dry_run || ! query kubectl get crd httproutes.gateway.networking.k8s.io >/dev/null 2>&1; then
  run kubectl apply --server-side -f \
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/${GATEWAY_API_VERSION}/standard-install.yaml"
fi

run "${LINKERD_BIN}" check --pre
run_pipe "${LINKERD_BIN}" install --crds '|' kubectl apply -f -
run_pipe "${LINKERD_BIN}" install '|' kubectl apply -f -
run "${LINKERD_BIN}" check --wait=5m
if [[ "${VIZ}" == "1" ]]; then
  run_pipe "${LINKERD_BIN}" viz install '|' kubectl apply -f -
  run "${LINKERD_BIN}" viz check --wait=5m
fi

if [[ "${SKIP_PROMETHEUS}" == "0" ]]; then
  "${ROOT}/istio-install/setup_prometheus.sh"
fi

cat <<EOF
Linkerd ${VERSION} is installed. Check it with:
  ${LINKERD_BIN} check
Then deploy the workloads with proxy injection:
  MESH=linkerd ${ROOT}/setup_test.sh
EOF
