#!/usr/bin/env bash
# Entrypoint of the runner image: registers one GitHub Actions runner with a
# repository, runs it, and deregisters it when the pod is told to stop.
#
# Variables (the contract; the README documents them for users):
#   RUNNER_REPOSITORY   required, owner/name to register with
#   RUNNER_TOKEN_FILE   file holding the PAT (a mounted Secret); preferred
#   GITHUB_RUNNER_PAT   the PAT itself, when no file is given
#   RUNNER_LABELS       comma-separated labels (default self-hosted;
#                       GITHUB_RUNNER_LABEL is read when RUNNER_LABELS is unset)
#   RUNNER_NAME         runner name (default: the host name)
#   RUNNER_EPHEMERAL    true: take one job, then exit (default false)
#   GITHUB_API_URL      REST API root (default https://api.github.com)
#   GITHUB_SERVER_URL   server the runner registers with (default https://github.com)
#   RUNNER_HOME         folder holding config.sh and run.sh
#                       (default /home/runner/actions-runner)
#
# Tuning knobs for the token requests (each optional):
#   RUNNER_API_RETRIES                 retries after the first attempt on 5xx, 429
#                                      or a network failure/timeout (default 5)
#   RUNNER_API_TIMEOUT_SECONDS         whole-request limit per attempt, may be
#                                      fractional (default 30)
#   RUNNER_API_CONNECT_TIMEOUT_SECONDS connection limit per attempt, may be
#                                      fractional (default 10)
#   RUNNER_API_BACKOFF_SECONDS         first wait between attempts, doubled after
#                                      each retry, may be fractional (default 2)
#   RUNNER_API_BACKOFF_MAX_SECONDS     cap on any one wait, Retry-After included,
#                                      may be fractional (default 60)
#
# Exit status: run.sh's own status when it ends by itself; 143 after SIGTERM,
# 130 after SIGINT; 2 for a missing or invalid variable; 3 when GitHub refuses
# the request or answers without a token; 4 when retries are exhausted.
#
# Tokens (PAT, registration, removal) live only in unexported shell variables:
# curl reads them from a here-document on stdin, config.sh from
# ACTIONS_RUNNER_INPUT_TOKEN set for that one command, and nothing prints them.
# Commands that can block run in the background followed by `wait`, because bash
# delays a trap until a foreground command returns and the pod must react to
# SIGTERM within its grace period.

set -Eeuo pipefail

readonly EXIT_CONFIG=2 EXIT_REFUSED=3 EXIT_GAVE_UP=4

log() { printf '%s startup.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
err() { printf '%s startup.sh: error: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  local code=$1
  shift
  err "$@"
  exit "$code"
}

# A value inherited from outside would reach config.sh, and through the
# listener's environment the jobs, without this script knowing.
for inherited in "${!ACTIONS_RUNNER_INPUT_@}"; do
  unset "$inherited"
done
unset inherited

# ---------------------------------------------------------------- settings ---

is_uint() { [[ $1 =~ ^[0-9]{1,9}$ ]]; }
uint_at_most() { is_uint "$1" && ((10#$1 <= $2)); }
is_seconds() { [[ $1 =~ ^[0-9]{1,6}([.][0-9]+)?$ ]]; }
is_positive_seconds() { is_seconds "$1" && [[ ! $1 =~ ^0+([.]0+)?$ ]]; }

# Waits are kept in milliseconds so that bash's integer arithmetic can double
# and compare them.
to_ms() {
  local whole=${1%%.*} fraction=000
  [[ $1 != *.* ]] || fraction=${1#*.}000
  printf '%d' "$((10#$whole * 1000 + 10#${fraction:0:3}))"
}
seconds_at_most() { is_seconds "$1" && (($(to_ms "$1") <= $2 * 1000)); }
ms_to_seconds() { printf '%d.%03d' "$(($1 / 1000))" "$(($1 % 1000))"; }

trim() {
  local value=$1
  value=${value#"${value%%[![:space:]]*}"}
  value=${value%"${value##*[![:space:]]}"}
  printf '%s' "$value"
}

api_retries=${RUNNER_API_RETRIES:-5}
api_timeout=${RUNNER_API_TIMEOUT_SECONDS:-30}
api_connect_timeout=${RUNNER_API_CONNECT_TIMEOUT_SECONDS:-10}
api_backoff=${RUNNER_API_BACKOFF_SECONDS:-2}
api_backoff_max=${RUNNER_API_BACKOFF_MAX_SECONDS:-60}

uint_at_most "$api_retries" 100 ||
  die "$EXIT_CONFIG" "RUNNER_API_RETRIES must be a whole number from 0 to 100, got '$api_retries'"
is_positive_seconds "$api_timeout" ||
  die "$EXIT_CONFIG" "RUNNER_API_TIMEOUT_SECONDS must be a positive number of seconds, got '$api_timeout'"
is_positive_seconds "$api_connect_timeout" ||
  die "$EXIT_CONFIG" "RUNNER_API_CONNECT_TIMEOUT_SECONDS must be a positive number of seconds, got '$api_connect_timeout'"
seconds_at_most "$api_backoff" 3600 ||
  die "$EXIT_CONFIG" "RUNNER_API_BACKOFF_SECONDS must be a number of seconds from 0 to 3600, got '$api_backoff'"
seconds_at_most "$api_backoff_max" 3600 ||
  die "$EXIT_CONFIG" "RUNNER_API_BACKOFF_MAX_SECONDS must be a number of seconds from 0 to 3600, got '$api_backoff_max'"
api_retries=$((10#$api_retries))
backoff_ms=$(to_ms "$api_backoff")
backoff_max_ms=$(to_ms "$api_backoff_max")

repository=${RUNNER_REPOSITORY:-}
[[ -n $repository ]] ||
  die "$EXIT_CONFIG" "RUNNER_REPOSITORY is not set; it must name the repository to serve, as owner/name"
[[ $repository =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ && ! $repository =~ (^|/)[.]{1,2}(/|$) ]] ||
  die "$EXIT_CONFIG" "RUNNER_REPOSITORY must be owner/name (letters, digits, '-', '_', '.'), got '$repository'"

api_url=${GITHUB_API_URL:-https://api.github.com}
api_url=${api_url%/}
url_pattern='^https?://[^[:space:]"\\]+$'
[[ $api_url =~ $url_pattern ]] ||
  die "$EXIT_CONFIG" "GITHUB_API_URL must be an http(s) URL, got '$api_url'"

server_url=${GITHUB_SERVER_URL:-https://github.com}
server_url=${server_url%/}
[[ $server_url =~ $url_pattern ]] ||
  die "$EXIT_CONFIG" "GITHUB_SERVER_URL must be an http(s) URL, got '$server_url'"

if [[ -n ${RUNNER_LABELS:-} ]]; then
  labels=$RUNNER_LABELS
elif [[ -n ${GITHUB_RUNNER_LABEL:-} ]]; then
  labels=$GITHUB_RUNNER_LABEL
else
  labels=self-hosted
fi
[[ ! $labels =~ [[:space:]] ]] ||
  die "$EXIT_CONFIG" "RUNNER_LABELS must be comma-separated labels without spaces, got '$labels'"

runner_name=${RUNNER_NAME:-${HOSTNAME:-}}
[[ -n $runner_name ]] || runner_name=$(hostname)
[[ -n $runner_name && ! $runner_name =~ [[:space:]] ]] ||
  die "$EXIT_CONFIG" "RUNNER_NAME must be a name without spaces, got '$runner_name'"

case ${RUNNER_EPHEMERAL:-false} in
  [Tt][Rr][Uu][Ee] | 1) ephemeral=true ;;
  [Ff][Aa][Ll][Ss][Ee] | 0 | '') ephemeral=false ;;
  *) die "$EXIT_CONFIG" "RUNNER_EPHEMERAL must be true or false, got '$RUNNER_EPHEMERAL'" ;;
esac

runner_home=${RUNNER_HOME:-/home/runner/actions-runner}
runner_home=${runner_home%/}
for script in config.sh run.sh; do
  [[ -f $runner_home/$script && -x $runner_home/$script ]] ||
    die "$EXIT_CONFIG" "RUNNER_HOME ($runner_home) has no executable $script; it must be the runner's install folder"
done

# The PAT is read into a plain shell variable; the exported copy, if any, is
# dropped at once so that no child, run.sh least of all, inherits it.
pat=''
if [[ -n ${RUNNER_TOKEN_FILE:-} ]]; then
  [[ -f $RUNNER_TOKEN_FILE && -r $RUNNER_TOKEN_FILE ]] ||
    die "$EXIT_CONFIG" "RUNNER_TOKEN_FILE ($RUNNER_TOKEN_FILE) is not a readable file"
  pat=$(<"$RUNNER_TOKEN_FILE")
  pat=$(trim "$pat")
  [[ -n $pat ]] || die "$EXIT_CONFIG" "RUNNER_TOKEN_FILE ($RUNNER_TOKEN_FILE) is empty"
  pat_source=RUNNER_TOKEN_FILE
elif [[ -n ${GITHUB_RUNNER_PAT:-} ]]; then
  pat=$(trim "$GITHUB_RUNNER_PAT")
  pat_source=GITHUB_RUNNER_PAT
fi
export -n GITHUB_RUNNER_PAT 2>/dev/null || true
unset GITHUB_RUNNER_PAT
[[ -n $pat ]] ||
  die "$EXIT_CONFIG" "no PAT: set RUNNER_TOKEN_FILE to a file holding it (preferred) or GITHUB_RUNNER_PAT"
unsafe_pattern='[[:space:]"\\]'
[[ ! $pat =~ $unsafe_pattern ]] ||
  die "$EXIT_CONFIG" "the PAT from $pat_source contains spaces, quotes or backslashes; it cannot be a GitHub token"

# API answers (tokens included) land here: mktemp -d makes it private (0700).
# No global umask: run.sh and the jobs inherit this shell's.
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/startup.XXXXXX")

# ------------------------------------------------------------------- state ---

phase=starting     # starting -> configuring -> running -> stopping
child_pid=''       # the background command this script is waiting on
runner_pid=''      # run.sh
signals_seen=0     # bumped by every trapped signal, to tell an interrupted wait
token=''           # the last token fetched; never exported
wait_status=0

# shellcheck disable=SC2329 # run by the EXIT trap
on_exit() {
  if [[ -n $child_pid ]] && kill -0 "$child_pid" 2>/dev/null; then
    kill -s TERM "$child_pid" 2>/dev/null || true
  fi
  rm -rf "$work_dir"
}
trap on_exit EXIT

# Waits for a background child and leaves its exit status in wait_status.
# A trapped signal makes `wait` return early; bash keeps the status of a
# reaped child, so waiting again still yields the child's own status.
wait_child() {
  local pid=$1 seen
  while :; do
    seen=$signals_seen
    wait_status=0
    wait "$pid" || wait_status=$?
    ((signals_seen != seen)) || return 0
  done
}

sleep_interruptibly() {
  sleep "$1" &
  child_pid=$!
  wait_child "$child_pid"
  child_pid=''
}

# ------------------------------------------------------------ GitHub's API ---

# Escapes a value for a double-quoted string in a curl config file.
curl_quote() {
  local value=${1//\\/\\\\}
  printf '"%s"' "${value//\"/\\\"}"
}

retry_after_ms() {
  local line name value=''
  [[ -f $work_dir/headers ]] || return 0
  while IFS= read -r line; do
    line=${line%$'\r'}
    name=${line%%:*}
    if [[ ${name,,} == retry-after ]]; then
      value=$(trim "${line#*:}")
    fi
  done <"$work_dir/headers"
  # Only the delay-seconds form; an HTTP date falls back to the backoff.
  if [[ -n $value ]] && uint_at_most "$value" 86400; then
    printf '%d' "$((10#$value * 1000))"
  fi
}

# request_token KIND: POSTs to .../actions/runners/KIND (registration-token or
# remove-token) and leaves the answer's token in `token`. Returns 0 on success,
# EXIT_REFUSED when GitHub says no or answers without a token, EXIT_GAVE_UP
# when the retries are spent.
request_token() {
  local kind=$1 attempt=0 delay_ms=$backoff_ms wait_ms status curl_status hint reason
  local url="$api_url/repos/$repository/actions/runners/$kind"
  token=''
  while :; do
    attempt=$((attempt + 1))
    rm -f "$work_dir/body" "$work_dir/headers" "$work_dir/status" "$work_dir/curl.err"
    curl --config - >"$work_dir/status" 2>"$work_dir/curl.err" <<EOF &
url = $(curl_quote "$url")
request = "POST"
silent
show-error
proto = "=http,https"
max-time = $api_timeout
connect-timeout = $api_connect_timeout
output = $(curl_quote "$work_dir/body")
dump-header = $(curl_quote "$work_dir/headers")
write-out = "%{http_code}"
header = "Accept: application/vnd.github+json"
header = "X-GitHub-Api-Version: 2022-11-28"
header = $(curl_quote "Authorization: Bearer $pat")
EOF
    child_pid=$!
    wait_child "$child_pid"
    child_pid=''
    curl_status=$wait_status
    status=$(<"$work_dir/status") || status=''
    [[ $status =~ ^[0-9]{3}$ ]] || status=000

    wait_ms=''
    if ((curl_status != 0)); then
      case $curl_status in
        1 | 2 | 3)
          err "POST $url could not be sent (curl exit $curl_status): $(head -c 300 "$work_dir/curl.err"); check GITHUB_API_URL"
          return "$EXIT_REFUSED"
          ;;
        28) reason="timed out (RUNNER_API_TIMEOUT_SECONDS=$api_timeout)" ;;
        *) reason="failed: $(head -c 300 "$work_dir/curl.err" | tr -d '\n')" ;;
      esac
    else
      case $status in
        2??)
          token=$(jq -r 'if type == "object" then (.token // "") | tostring else "" end' \
            "$work_dir/body" 2>/dev/null) || token=''
          rm -f "$work_dir/body"
          if [[ -z $token || $token == null || $token =~ [[:space:]] ]]; then
            token=''
            err "GitHub answered $kind with HTTP $status but without a token"
            return "$EXIT_REFUSED"
          fi
          return 0
          ;;
        401) hint="the PAT is invalid, expired or revoked" ;;
        403) hint="the PAT lacks the permission to manage this repository's runners (classic PAT: repo scope; fine-grained: Administration read and write), or its API rate limit is spent" ;;
        404) hint="RUNNER_REPOSITORY ($repository) does not exist or the PAT cannot see it" ;;
        429 | 5??)
          reason="answered HTTP $status"
          wait_ms=$(retry_after_ms)
          ;;
        *) hint="unexpected answer" ;;
      esac
      if [[ -z ${reason:-} ]]; then
        err "POST $url answered HTTP $status: $hint"
        return "$EXIT_REFUSED"
      fi
    fi

    if ((attempt > api_retries)); then
      err "POST $url $reason; gave up after $attempt attempts (RUNNER_API_RETRIES=$api_retries)"
      return "$EXIT_GAVE_UP"
    fi
    if [[ -z $wait_ms ]]; then
      wait_ms=$delay_ms
      delay_ms=$((delay_ms * 2))
    fi
    ((wait_ms <= backoff_max_ms)) || wait_ms=$backoff_max_ms
    ((delay_ms <= backoff_max_ms)) || delay_ms=$backoff_max_ms
    log "POST $url $reason; attempt $attempt of $((api_retries + 1)), retrying in $(ms_to_seconds "$wait_ms")s"
    reason=''
    sleep_interruptibly "$(ms_to_seconds "$wait_ms")"
  done
}

# ------------------------------------------------------ stopping on signal ---

# shellcheck disable=SC2329 # called from on_signal, which the traps run
deregister() {
  local code=$1 signal=$2 status=0
  if [[ -n $runner_pid ]] && kill -0 "$runner_pid" 2>/dev/null; then
    log "passing SIG$signal to run.sh (pid $runner_pid) and waiting for it to end"
    kill -s "$signal" "$runner_pid" 2>/dev/null || true
    wait_child "$runner_pid"
    log "run.sh ended with status $wait_status"
  fi
  log "fetching a removal token to deregister runner '$runner_name'"
  request_token remove-token || status=$?
  if ((status != 0)); then
    err "could not fetch a removal token; runner '$runner_name' stays registered (offline) until --replace or GitHub's cleanup"
    exit "$code"
  fi
  ACTIONS_RUNNER_INPUT_TOKEN=$token "$runner_home/config.sh" remove --unattended &
  child_pid=$!
  token=''
  wait_child "$child_pid"
  child_pid=''
  if ((wait_status == 0)); then
    log "runner '$runner_name' deregistered"
  else
    err "config.sh remove failed with status $wait_status"
  fi
  exit "$code"
}

# shellcheck disable=SC2329 # run by the TERM and INT traps
on_signal() {
  local signal=$1 code=$2
  signals_seen=$((signals_seen + 1))
  case $phase in
    stopping)
      log "SIG$signal received while already stopping; ignored"
      return 0
      ;;
    starting)
      phase=stopping
      log "SIG$signal received before registration; exiting without deregistering"
      exit "$code"
      ;;
    configuring)
      # Leaving config.sh mid-way could leave a runner registered on GitHub
      # with no local record of it: wait for it (a signal sent to the whole
      # process group reaches it too), then undo the registration if it went
      # through.
      phase=stopping
      log "SIG$signal received during registration; waiting for config.sh"
      # The trap may run between `config.sh &` and the assignment of its pid.
      child_pid=${child_pid:-$!}
      wait_child "$child_pid"
      child_pid=''
      if ((wait_status != 0)); then
        exit "$code"
      fi
      deregister "$code" "$signal"
      ;;
    running)
      phase=stopping
      log "SIG$signal received; deregistering runner '$runner_name'"
      runner_pid=${runner_pid:-$!}
      deregister "$code" "$signal"
      ;;
  esac
}
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT

# -------------------------------------------------------------------- main ---

log "registering runner '$runner_name' with $server_url/$repository (labels: $labels, ephemeral: $ephemeral, PAT from $pat_source)"
request_status=0
request_token registration-token || request_status=$?
((request_status == 0)) || exit "$request_status"

config_args=(--unattended --url "$server_url/$repository" --name "$runner_name"
  --labels "$labels" --work _work --replace)
[[ $ephemeral == false ]] || config_args+=(--ephemeral)

phase=configuring
ACTIONS_RUNNER_INPUT_TOKEN=$token "$runner_home/config.sh" "${config_args[@]}" &
child_pid=$!
token=''
wait_child "$child_pid"
child_pid=''
((wait_status == 0)) || die "$wait_status" "config.sh failed with status $wait_status"

# The PAT stays in this shell for the removal token; run.sh inherits only the
# exported environment, which never held a token.
# RUNNER_MANUALLY_TRAP_SIG makes run.sh pass SIGTERM/SIGINT on to the listener
# instead of dying and leaving it behind. Bash starts background commands with
# SIGINT ignored, and an ignored signal cannot be trapped, hence
# --default-signal.
phase=running
RUNNER_MANUALLY_TRAP_SIG=${RUNNER_MANUALLY_TRAP_SIG:-1} \
  env --default-signal=INT "$runner_home/run.sh" &
runner_pid=$!
log "runner '$runner_name' started (run.sh pid $runner_pid)"
wait_child "$runner_pid"
run_status=$wait_status
runner_pid=''
phase=stopping
log "run.sh exited with status $run_status"
exit "$run_status"
