#!/usr/bin/env bash
# Prepare this checkout: a project virtualenv (.venv) from Pipfile.lock, and with
# --system-deps the Debian packages the tests need (Prometheus, Chromium, shellcheck, wrk, h2load, perf, kubectl).
# Safe to re-run: it only does what is missing.
set -Eeuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

system_deps=0
for arg in "$@"; do
  case "$arg" in
    --system-deps) system_deps=1 ;;
    *) echo "bootstrap.sh: error: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "bootstrap.sh: error: $PYTHON not found; install Python 3.11+" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "bootstrap.sh: error: Python 3.11+ is needed, $PYTHON is $("$PYTHON" -V 2>&1)" >&2; exit 1; }

if [ "$system_deps" = 1 ]; then
  # Debian package -> a command it provides.
  declare -A want=([prometheus]=promtool [chromium]=chromium [chromium-driver]=chromedriver
                   [shellcheck]=shellcheck [wrk]=wrk [linux-perf]=perf [nghttp2-client]=h2load
                   [kubernetes-client]=kubectl)
  missing=()
  for pkg in "${!want[@]}"; do
    command -v "${want[$pkg]}" >/dev/null || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      echo "bootstrap.sh: error: missing ${missing[*]} and no apt-get; install them by hand" >&2; exit 1
    fi
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    echo "bootstrap.sh: installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# The venv is rebuilt only when Pipfile.lock changes.
stamp=".venv/.meshperf-lock.sha256"
want_hash="$(sha256sum Pipfile.lock | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want_hash" ]; then
  echo "bootstrap.sh: installing Python packages into .venv from Pipfile.lock"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check pipenv
  PIPENV_VENV_IN_PROJECT=1 PIPENV_VERBOSITY=-1 PIPENV_NOSPIN=1 PIPENV_YES=1 \
    .venv/bin/python -m pipenv sync --dev
  echo "$want_hash" > "$stamp"
fi
