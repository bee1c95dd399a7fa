#!/usr/bin/env bash
# Create a Kubernetes cluster for meshperf: GKE (default) or a local kind cluster.
#
# usage: create_cluster.sh NAME
#
# GKE (CLUSTER_TYPE=gke, the default):
#   PROJECT_ID     GCP project (required)
#   ZONE           default us-central1-a
#   MACHINE_TYPE   default n1-standard-32 (what istio/tools recommends for load tests: at least
#                  32 vCPUs for the mesh; n1-standard-4 is enough to try things out)
#   NUM_NODES      default 4
#   MIN_NODES, MAX_NODES  set both to enable autoscaling (off by default: nodes that come and
#                  go during a run add noise)
#   DISK_SIZE      GB, default 64;  IMAGE_TYPE default COS_CONTAINERD;  GKE_VERSION optional
# kind (CLUSTER_TYPE=kind):
#   WORKERS        worker nodes, default 2, at least 2 so that the fortio client and server
#                  (required pod anti-affinity) land on different nodes
#   KIND_IMAGE     node image (kindest/node:vX.Y.Z), optional
# Both:
#   DRY_RUN=1      print the commands instead of running them
#   KUBECTL_TIMEOUT, CLI_TIMEOUT  time limits of kubectl calls (default 60s per request)
#                    and of istioctl/linkerd/gcloud/kind (default 20m); see docs/cluster.md
#   RENDER_DIR     keep generated files (the kind config) there instead of a temp dir
set -Eeuo pipefail

WD="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${WD}/lib.sh"

NAME="${1:-${CLUSTER_NAME:-}}"
[[ -n "${NAME}" ]] || usage "missing cluster NAME; usage: ${PROG} NAME (CLUSTER_TYPE=gke|kind)"
# GKE cluster names: lower case, start with a letter, at most 40 characters.
check_value NAME "${NAME}" '^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$' \
  "a cluster name (lower-case letters, digits and '-', starting with a letter, at most 40)"

CLUSTER_TYPE="${CLUSTER_TYPE:-gke}"

tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT
out_dir="${RENDER_DIR:-${tmp}}"
mkdir -p "${out_dir}"

create_gke() {
  local project="${PROJECT_ID:-}"
  [[ -n "${project}" ]] || usage "PROJECT_ID is required for CLUSTER_TYPE=gke (your GCP project)"
  check_value PROJECT_ID "${project}" '^[a-z][-a-z0-9]{4,28}[a-z0-9]$' "a GCP project id"
  local zone="${ZONE:-us-central1-a}"
  check_value ZONE "${zone}" '^[a-z]+-[a-z]+[0-9]+(-[a-z])?$' "a GCP zone (e.g. us-central1-a)"
  local machine="${MACHINE_TYPE:-n1-standard-32}"
  check_value MACHINE_TYPE "${machine}" '^[a-z0-9]+(-[a-z0-9]+)+$' "a GCE machine type"
  local nodes="${NUM_NODES:-4}" disk="${DISK_SIZE:-64}" image="${IMAGE_TYPE:-COS_CONTAINERD}"
  check_value NUM_NODES "${nodes}" '^[1-9][0-9]*$' "a positive integer"
  check_value DISK_SIZE "${disk}" '^[1-9][0-9]*$' "a positive integer (GB)"
  check_value IMAGE_TYPE "${image}" '^[A-Z_]+$' "a GKE image type (COS_CONTAINERD, UBUNTU_CONTAINERD)"
  ((nodes >= 2)) || usage "NUM_NODES=${nodes}: need at least 2 nodes (client and server on different nodes)"

  need gcloud "https://cloud.google.com/sdk/docs/install"
  need kubectl "gcloud components install kubectl, or https://kubernetes.io/docs/tasks/tools/"

  local -a args=(
    container clusters create "${NAME}"
    --project "${project}" --zone "${zone}"
    --machine-type "${machine}" --num-nodes "${nodes}"
    --image-type "${image}" --disk-type pd-ssd --disk-size "${disk}"
    --enable-ip-alias
    --labels "purpose=meshperf"
  )
  if [[ -n "${MIN_NODES:-}${MAX_NODES:-}" ]]; then
    check_value MIN_NODES "${MIN_NODES:-}" '^[1-9][0-9]*$' "a positive integer"
    check_value MAX_NODES "${MAX_NODES:-}" '^[1-9][0-9]*$' "a positive integer"
    ((MIN_NODES <= MAX_NODES)) || usage "MIN_NODES=${MIN_NODES} is more than MAX_NODES=${MAX_NODES}"
    args+=(--enable-autoscaling --min-nodes "${MIN_NODES}" --max-nodes "${MAX_NODES}")
  fi
  if [[ -n "${GKE_VERSION:-}" ]]; then
    check_value GKE_VERSION "${GKE_VERSION}" '^[0-9A-Za-z.+-]+$' "a GKE version"
    args+=(--cluster-version "${GKE_VERSION}")
  fi

  run gcloud "${args[@]}"
  run gcloud container clusters get-credentials "${NAME}" --project "${project}" --zone "${zone}"
  # Istio's install needs cluster-admin; on GKE the IAM user does not get it bound by default.
  local account="ACCOUNT"
  if ! is_dry_run; then
    account="$(bounded gcloud config get-value core/account 2>/dev/null)"
    [[ -n "${account}" ]] || die "gcloud has no active account; run: gcloud auth login"
  fi
  run_pipe kubectl create clusterrolebinding meshperf-cluster-admin \
    --clusterrole=cluster-admin "--user=${account}" --dry-run=client -o yaml \
    '|' kubectl apply -f -
}

create_kind() {
  local workers="${WORKERS:-2}"
  check_value WORKERS "${workers}" '^[0-9]+$' "a number"
  ((workers >= 2)) || usage "WORKERS=${workers}: need at least 2 workers (client and server on different nodes)"
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need kubectl "https://kubernetes.io/docs/tasks/tools/"

  local config="${out_dir}/kind-config.yaml" i
  {
    printf '%s\n' "# kind cluster for meshperf: one control plane, ${workers} workers." \
      "kind: Cluster" "apiVersion: kind.x-k8s.io/v1alpha4" "nodes:" "- role: control-plane"
    for ((i = 1; i <= workers; i++)); do
      printf '%s\n' "- role: worker" "  labels:" "    meshperf/worker: \"${i}\""
    done
  } >"${config}"
  if is_dry_run; then
    printf '# %s:\n' "${config}"
    sed 's/^/#   /' "${config}"
  fi

  local -a args=(create cluster --name "${NAME}" --config "${config}" --wait 5m)
  if [[ -n "${KIND_IMAGE:-}" ]]; then
    check_value KIND_IMAGE "${KIND_IMAGE}" '^[A-Za-z0-9./_:@-]+$' "an image reference"
    args+=(--image "${KIND_IMAGE}")
  fi
  run kind "${args[@]}"
  run kubectl cluster-info --context "kind-${NAME}"
}

case "${CLUSTER_TYPE}" in
  gke) create_gke ;;
  kind) create_kind ;;
  *) usage "CLUSTER_TYPE must be gke or kind, got '${CLUSTER_TYPE}'" ;;
esac

cat <<EOF
Cluster ${NAME} (${CLUSTER_TYPE}) is ready. Next:
  kubectl get nodes
  ${WD}/setup_istio.sh <ISTIO_RELEASE>      # or $(dirname "${WD}")/linkerd/setup_linkerd.sh
EOF
