# shellcheck shell=bash
# Helpers shared by the meshperf set-up scripts (istio-install/, linkerd/, setup_test.sh).
# Sourced, never run. Every script sets `set -Eeuo pipefail` before sourcing it.
#
#   run CMD...            run a command; with DRY_RUN=1 only print it
#   run_pipe A... '|' B...  run A | B (e.g. `linkerd install | kubectl apply -f -`); B runs only
#                         if A succeeded
#   query CMD...          run a read-only command and print its output; nothing under DRY_RUN
#   die MSG / usage MSG   one-line `prog: error: MSG` on stderr, exit 1 / exit 2
#   need CMD HINT         die unless CMD is on PATH (skipped under DRY_RUN: nothing runs)
#   bounded CMD...        run a command under its time limit, unprinted (see below)
#   fetch_verified URL FILE, fetch_release_asset REPO TAG ASSET FILE
#                         downloads checked against the release's sha256 digests
#
# Commands are printed as `+ cmd`, quoted with printf %q so that the line can be pasted back
# into a shell: to stdout under DRY_RUN (the output is the plan), to stderr otherwise.
#
# Time limits: a hung API server or cloud API must not hang a script forever. run, run_pipe,
# query and bounded put every command that talks to a cluster or a cloud under a limit, and
# the printed line is the limited command, so that pasting the plan keeps the limits:
#   kubectl    --request-timeout=$KUBECTL_TIMEOUT (default 60s) on every call (each API request
#              gives up after that long), and coreutils `timeout` around the whole call at twice
#              that (a call makes several requests). `rollout status --timeout=T` and
#              `wait --timeout=T` keep their own --timeout (a request timeout would cut their
#              watch) and get `timeout` at T + KUBECTL_TIMEOUT.
#   istioctl, linkerd, helm, gcloud, kind and anything else not below: coreutils `timeout` at
#              $CLI_TIMEOUT (default 20m): `istioctl install` waits up to 5 min for readiness,
#              `gcloud container clusters create` of a 4-node cluster takes several minutes.
#   curl has its own --max-time; local tools (tar, mkdir, install) run as they are.
# A command that hits its limit ends the script with one line `prog: error: ... timed out`.

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

# fd 4 is the script's own stderr: a time-out is reported even from a command whose stderr
# the caller silenced (`query kubectl get crd ... >/dev/null 2>&1`).
exec 4>&2

# Durations as kubectl and coreutils timeout both read them: N, Ns, Nm or Nh, N > 0 (0 would
# mean "no limit" to kubectl).
DURATION_RE='^[1-9][0-9]*[smh]?$'
KUBECTL_TIMEOUT="${KUBECTL_TIMEOUT:-60s}"
[[ "${KUBECTL_TIMEOUT}" =~ ${DURATION_RE} ]] || usage "KUBECTL_TIMEOUT='${KUBECTL_TIMEOUT}' is not a duration like 60s or 2m"
CLI_TIMEOUT="${CLI_TIMEOUT:-20m}"
[[ "${CLI_TIMEOUT}" =~ ${DURATION_RE} ]] || usage "CLI_TIMEOUT='${CLI_TIMEOUT}' is not a duration like 20m or 1h"
# Grace between the TERM that `timeout` sends and a KILL.
KILL_AFTER=10s
# macOS has coreutils' timeout as gtimeout (brew install coreutils).
TIMEOUT_CMD=timeout
if ! command -v timeout >/dev/null 2>&1 && command -v gtimeout >/dev/null 2>&1; then
  TIMEOUT_CMD=gtimeout
fi

# seconds DURATION: the duration in seconds.
seconds() {
  local d="$1" n="${1%[smh]}"
  case "${d}" in
    *m) echo $((n * 60)) ;;
    *h) echo $((n * 3600)) ;;
    *) echo "${n}" ;;
  esac
}

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

# limit CMD...: sets LIMITED to CMD under its time limit (see the top of this file).
LIMITED=()
limit() {
  local name="${1##*/}" arg wait=""
  case "${name}" in
    curl | tar | mkdir | install)
      LIMITED=("$@")
      return
      ;;
  esac
  is_dry_run || command -v "${TIMEOUT_CMD}" >/dev/null 2>&1 ||
    die "timeout not found; install GNU coreutils (on macOS: brew install coreutils) or put it on PATH"
  case "${name}" in
    kubectl)
      for arg in "$@"; do
        [[ "${arg}" == --timeout=* ]] && wait="${arg#--timeout=}"
      done
      if [[ -n "${wait}" && ("$*" == *" rollout status "* || "$*" == *" wait "*) ]]; then
        [[ "${wait}" =~ ${DURATION_RE} ]] || die "internal: kubectl --timeout=${wait} is not a duration"
        LIMITED=("${TIMEOUT_CMD}" --foreground -k "${KILL_AFTER}" "$(($(seconds "${wait}") + $(seconds "${KUBECTL_TIMEOUT}")))s" "$@")
      else
        LIMITED=("${TIMEOUT_CMD}" --foreground -k "${KILL_AFTER}" "$((2 * $(seconds "${KUBECTL_TIMEOUT}")))s"
          "$1" "--request-timeout=${KUBECTL_TIMEOUT}" "${@:2}")
      fi
      ;;
    *) LIMITED=("${TIMEOUT_CMD}" --foreground -k "${KILL_AFTER}" "${CLI_TIMEOUT}" "$@") ;;
  esac
}

# check_timeout RC CMD...: a one-line error if CMD (as limit made it) ran out of time.
# Other failures are left to the caller: the command printed its own error.
check_timeout() {
  local rc="$1"
  shift
  # coreutils timeout: 124 after TERM, 128+9 after the KILL that follows an ignored TERM.
  if ((rc == 124 || rc == 137)) && [[ "$1" == "${TIMEOUT_CMD}" ]]; then
    # "$@" is: timeout --foreground -k GRACE LIMIT CMD...
    local limit="$5" knob=CLI_TIMEOUT
    [[ "${6##*/}" == kubectl ]] && knob=KUBECTL_TIMEOUT
    printf '%s: error: %s timed out after %s (a hung API server? raise %s if the cluster is just slow)\n' \
      "${PROG}" "$(quote_cmd "${@:6}")" "${limit}" "${knob}" >&4
    exit 1
  fi
  return 0
}

# exec_limited: run the command limit left in LIMITED; a time-out is a one-line error.
exec_limited() {
  local rc=0
  "${LIMITED[@]}" || rc=$?
  check_timeout "${rc}" "${LIMITED[@]}"
  return "${rc}"
}

# bounded CMD...: run CMD under its time limit without printing it (plumbing reads).
bounded() {
  limit "$@"
  exec_limited
}

# run CMD...: print CMD as it will run (limits included) and, unless DRY_RUN, run it.
run() {
  limit "$@"
  show "$(quote_cmd "${LIMITED[@]}")"
  is_dry_run && return 0
  exec_limited
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
  limit "${left[@]}"
  left=("${LIMITED[@]}")
  limit "${right[@]}"
  right=("${LIMITED[@]}")
  show "$(quote_cmd "${left[@]}") | $(quote_cmd "${right[@]}")"
  is_dry_run && return 0
  # A cut-short manifest must never be applied: B gets A's output only once A has succeeded.
  # It is kept in a variable, not a file: `linkerd install` prints the identity issuer's key.
  local text rc=0
  text="$("${left[@]}")" || rc=$?
  check_timeout "${rc}" "${left[@]}"
  ((rc == 0)) || return "${rc}"
  printf '%s\n' "${text}" | "${right[@]}" || rc=$?
  check_timeout "${rc}" "${right[@]}"
  return "${rc}"
}

# query CMD...: a read (kubectl get, ...). It runs like `run`; the name says that the call
# changes nothing in the cluster.
query() {
  run "$@"
}

# fetch_verified URL FILE: download URL to FILE and check it against the sha256 digest the
# release publishes at URL.sha256 ("<hex>" or "<hex>  <name>"). A mismatch removes FILE and
# dies: nothing unverified is ever run.
fetch_verified() {
  local url="$1" file="$2"
  need curl "https://curl.se/download.html"
  sha256_cmd
  run curl -fsSL --retry 3 --max-time 300 -o "${file}" "${url}"
  run curl -fsSL --retry 3 --max-time 60 -o "${file}.sha256" "${url}.sha256"
  if is_dry_run; then
    printf '# check: sha256sum %s equals the digest in %s.sha256\n' "${file}" "${file}" >&3
    return 0
  fi
  local want
  want="$(tr -d '\r' <"${file}.sha256" | awk 'NR == 1 {print tolower($1)}')"
  if [[ ! "${want}" =~ ^[0-9a-f]{64}$ ]]; then
    rm -f "${file}"
    die "${url}.sha256 does not hold a sha256 digest"
  fi
  check_sha256 "${file}" "${want}" "${url##*/}"
}

# sha256_cmd: sets SHA256 to the sha256 tool of this machine (macOS has shasum, not sha256sum).
SHA256=()
sha256_cmd() {
  SHA256=(sha256sum)
  if ! command -v sha256sum >/dev/null 2>&1 && command -v shasum >/dev/null 2>&1; then
    SHA256=(shasum -a 256)
  fi
  need "${SHA256[0]}" "GNU coreutils, or shasum from Perl"
}

# check_sha256 FILE HEX NAME: FILE's sha256 must be HEX, else FILE is removed and we die.
check_sha256() {
  local file="$1" want="$2" name="$3" got
  sha256_cmd
  got="$("${SHA256[@]}" "${file}" | awk '{print $1}')"
  if [[ "${got}" != "${want}" ]]; then
    rm -f "${file}"
    die "checksum mismatch for ${name}: expected ${want}, got ${got}; not installing it"
  fi
}

# fetch_release_asset REPO TAG ASSET FILE: download the asset ASSET of the GitHub release TAG
# of REPO (owner/name) to FILE, verified against the sha256 digest GitHub's release API lists
# for it (`assets[].digest`, "sha256:<hex>", in GET /repos/REPO/releases/tags/TAG). Linkerd
# stopped publishing <asset>.sha256 files in edge-25.9.4 (linkerd2 commit da4e1940c); older
# releases whose metadata lists no digest are checked against their <asset>.sha256 instead.
# A release that offers neither cannot be verified and is not installed.
fetch_release_asset() {
  local repo="$1" tag="$2" asset="$3" file="$4"
  local api="https://api.github.com/repos/${repo}/releases/tags/${tag}"
  local url="https://github.com/${repo}/releases/download/${tag}/${asset}"
  need curl "https://curl.se/download.html"
  need python3 "any Python 3.8+; it reads the release metadata"
  run curl -fsSL --retry 3 --max-time 60 -H 'Accept: application/vnd.github+json' \
    -o "${file}.release.json" "${api}" ||
    die "cannot read release ${tag} of ${repo} (${api}): no such release, or no network"
  if is_dry_run; then
    run curl -fsSL --retry 3 --max-time 300 -o "${file}" "${url}"
    printf '# check: sha256sum %s equals the digest %s lists for %s (else %s.sha256)\n' \
      "${file}" "${api}" "${asset}" "${url}" >&3
    return 0
  fi
  local want rc=0
  want="$(python3 -c '
import json, sys
try:
    release = json.load(open(sys.argv[1], encoding="utf-8"))
except ValueError:
    sys.exit(5)
for a in release.get("assets") or []:
    if isinstance(a, dict) and a.get("name") == sys.argv[2]:
        digest = a.get("digest") or ""
        if digest.startswith("sha256:"):
            print(digest[len("sha256:"):].lower())
            sys.exit(0)
        sys.exit(4)
sys.exit(3)
' "${file}.release.json" "${asset}")" || rc=$?
  case "${rc}" in
    0) ;;
    3) die "release ${tag} of ${repo} has no asset ${asset} (${api})" ;;
    4)
      # No digest in the metadata: a release from before GitHub listed them. Its .sha256 then.
      # -S left out: a missing .sha256 is expected here, and the next line says it in one line.
      run curl -fsL --retry 3 --max-time 60 -o "${file}.sha256" "${url}.sha256" ||
        die "cannot verify ${asset} of ${repo} ${tag}: the release lists no sha256 digest for it and publishes no ${asset}.sha256; not installing it (check a download yourself and pass it in, e.g. LINKERD=/path/to/linkerd)"
      want="$(tr -d '\r' <"${file}.sha256" | awk 'NR == 1 {print tolower($1)}')"
      ;;
    *) die "the release metadata of ${repo} ${tag} (${api}) is not JSON" ;;
  esac
  [[ "${want}" =~ ^[0-9a-f]{64}$ ]] || die "the sha256 digest listed for ${asset} of ${repo} ${tag} is malformed: '${want}'"
  run curl -fsSL --retry 3 --max-time 300 -o "${file}" "${url}"
  check_sha256 "${file}" "${want}" "${asset}"
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
