#!/usr/bin/env bash
# Switch Istio's telemetry (standard metrics and access logs in every proxy) off or on, mesh-wide.
# Today's form of the 2019 README's "disable Mixer": a Telemetry resource in istio-system
# (istio-install/telemetry-off.yaml). Proxies pick the change up over xDS; no restart.
#
# usage: telemetry.sh off|on
#   off   apply telemetry-off.yaml; run the matrix with --labels=notelemetry
#   on    delete it again (Istio's defaults: Prometheus metrics on, access log as installed)
#   DRY_RUN=1   print the commands instead of running them
#   KUBECTL_TIMEOUT, CLI_TIMEOUT  time limits of kubectl calls (default 60s per request)
#                    and of istioctl/linkerd/gcloud/kind (default 20m); see docs/cluster.md
set -Eeuo pipefail

WD="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "${WD}/lib.sh"

(($# == 1)) || usage "expected one argument; usage: ${PROG} off|on"
need kubectl "https://kubernetes.io/docs/tasks/tools/"

case "$1" in
  off)
    run kubectl apply -f "${WD}/telemetry-off.yaml"
    cat <<'EOT'
Telemetry is off mesh-wide. Label the runs so they are told apart, e.g.:
  python runner/runner.py 16,64 1000 180 --baseline --labels=notelemetry
Switch it back on with: istio-install/telemetry.sh on
EOT
    ;;
  on)
    run kubectl delete --ignore-not-found -f "${WD}/telemetry-off.yaml"
    echo "Telemetry is back to Istio's defaults."
    ;;
  *) usage "expected off or on, got '$1'; usage: ${PROG} off|on" ;;
esac
