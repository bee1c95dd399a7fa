#!/usr/bin/env bash
# Install meshperf's Prometheus (istio-install/prometheus.yaml): namespace istio-prometheus,
# RBAC to read cAdvisor through the API server proxy, 15 s scrapes. Mesh-independent, so
# setup_istio.sh and linkerd/setup_linkerd.sh both call it.
#
# usage: setup_prometheus.sh
#   WAIT_TIMEOUT   how long to wait for the Prometheus pod, default 300s
#   DRY_RUN=1      print the commands instead of running them
#   KUBECTL_TIMEOUT, CLI_TIMEOUT  time limits of kubectl calls (default 60s per request)
#                    and of istioctl/linkerd/gcloud/kind (default 20m); see docs/cluster.md
set -Eeuo pipefail

WD="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${WD}/lib.sh"

(($# == 0)) || usage "no arguments expected; usage: ${PROG}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-300s}"
check_value WAIT_TIMEOUT "${WAIT_TIMEOUT}" '^[1-9][0-9]*[sm]$' "a duration like 300s or 5m"
need kubectl "https://kubernetes.io/docs/tasks/tools/"

run kubectl apply -f "${WD}/prometheus.yaml"
run kubectl -n istio-prometheus rollout status deployment/prometheus "--timeout=${WAIT_TIMEOUT}"

cat <<'EOT'
Prometheus is running in namespace istio-prometheus. To read CPU/memory with fortio.py:
  kubectl -n istio-prometheus port-forward svc/prometheus 9090:9090 &
  export PROMETHEUS_URL=http://localhost:9090
EOT
