# shellcheck shell=bash
# Helpers shared by the meshperf set-up scripts (istio-install/, linkerd/, setup_test.sh).
# Sourced, never run. Every script sets `set -Eeuo pipefail` before sourcing it.
#
#   run CMD...            run a command; with DRY_RUN=1 only print it
#   run_pipe A... '|' B...  run A | B (e.g. `linkerd install | kubectl apply -f -`)
#   query CMD...          run a read-only command and print its output; nothing under DRY_RUN
#   die MSG / usage MSG   one-line `prog: error: MSG` on stderr, exit 1 / exit 2
#   need CMD HINT         die unless CMD is on PATH (skipped under DRY_RUN: nothing runs)
#
# Commands are printed as `+ cmd`, quoted with printf %q so that the line can be pasted back
# into a shell: to stdout under DRY_RUN (the output is the plan), to stderr otherwise.

PROG="${PROG:-$(basename "$0")}"

# fd 3 is the script's own stdout, so that commands printed from inside $(...) (query) still
# reach the terminal instead of the variable being assigned.
exec 3>&1

die() {
  printf '%s: error: %s\n' "${PROG}" "$*" >&2
  exit 1
}

usage() {
  printf '%s: error: %s\n' "${PROG}" "$*" >&2
  exit 2
}

note() {
  printf '%s: %s\n' "${PROG}" "$*" >&2
}

case "${DRY_RUN:-0}" in
  0 | 1 | "") ;;
  *) usage "DRY_RUN must be 0 or 1, got '${DRY_RUN}'" ;;
esac

is_dry_run() {
  [[ "${DRY_RUN:-0}" == "1" ]]
}

quote_cmd() {
  local out="" arg
  for arg in "$@"; do
    out+="$(printf '%q' "${arg}") "
  done
  printf '%s' "${out% }"
}

show() {
  if is_dry_run; then
    printf '+ %s\n' "$*" >&3
  else
    printf '+ %s\n' "$*" >&2
  fi
}

need() {
  local cmd="$1" hint="$2"
  is_dry_run && return 0
  command -v "${cmd}" >/dev/null 2>&1 || die "${cmd} not found; install it (${hint}) or put it on PATH"
}

run() {
  show "$(quote_cmd "$@")"
  is_dry_run && return 0
  "$@"
}

run_pipe() {
  local -a left=() right=()
  while (($#)) && [[ "$1" != "|" ]]; do
    left+=("$1")
    shift
  done
  (($#)) || die "internal: run_pipe needs a '|' argument"
  shift
  right=("$@")
  ((${#left[@]} && ${#right[@]})) || die "internal: run_pipe needs commands on both sides of '|'"
  show "$(quote_cmd "${left[@]}") | $(quote_cmd "${right[@]}")"
  is_dry_run && return 0
  "${left[@]}" | "${right[@]}"
}

query() {
  show "$(quote_cmd "$@")"
  is_dry_run && return 0
  "$@"
}

# fetch_verified URL FILE: download URL to FILE and check it against the sha256 digest the
# release publishes at URL.sha256 ("<hex>" or "<hex>  <name>"). A mismatch removes FILE and
# dies: nothing unverified is ever run.
fetch_verified() {
  local url="$1" file="$2"
  need curl "https://curl.se/download.html"
  local -a sha256=(sha256sum)
  # macOS has shasum instead of coreutils' sha256sum.
  if ! command -v sha256sum >/dev/null 2>&1 && command -v shasum >/dev/null 2>&1; then
    sha256=(shasum -a 256)
  fi
  need "${sha256[0]}" "GNU coreutils, or shasum from Perl"
  run curl -fsSL --retry 3 --max-time 300 -o "${file}" "${url}"
  run curl -fsSL --retry 3 --max-time 60 -o "${file}.sha256" "${url}.sha256"
  if is_dry_run; then
    printf '# check: sha256sum %s equals the digest in %s.sha256\n' "${file}" "${file}" >&3
    return 0
  fi
  local want got
  want="$(tr -d '\r' <"${file}.sha256" | awk 'NR == 1 {print tolower($1)}')"
  if [[ ! "${want}" =~ ^[0-9a-f]{64}$ ]]; then
    rm -f "${file}"
    die "${url}.sha256 does not hold a sha256 digest"
  fi
  got="$("${sha256[@]}" "${file}" | awk '{print $1}')"
  if [[ "${got}" != "${want}" ]]; then
    rm -f "${file}"
    die "checksum mismatch for ${url##*/}: expected ${want}, got ${got}; not installing it"
  fi
}

# Values that end up in manifests or command lines are checked against a pattern first.
check_value() {
  local name="$1" value="$2" pattern="$3" what="$4"
  [[ "${value}" =~ ${pattern} ]] || usage "${name}='${value}' is not ${what}"
}

check_bool() {
  local name="$1" value="$2"
  [[ "${value}" == "0" || "${value}" == "1" ]] || usage "${name} must be 0 or 1, got '${value}'"
}

# A DNS-1123 label: namespaces, cluster names. Used by the scripts that source this file.
# shellcheck disable=SC2034
DNS_LABEL_RE='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
