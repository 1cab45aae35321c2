#!/usr/bin/env bash
# Entrypoint of the runner image. It holds no GitHub credential: it asks the
# runner broker for a just-in-time runner configuration, proving
# which pod it is with the pod's projected ServiceAccount token, runs that one
# runner, then tells the broker the runner has ended, so that the broker
# removes it from GitHub (and replaces a base runner's pod).
#
# Variables (the README's table documents them for users):
#   RUNNER_BROKER_URL              required: the broker's http(s) URL
#   RUNNER_BROKER_TOKEN_FILE       required: file holding the projected token,
#                                  read again for each request (kubelet rotates it)
#   RUNNER_HOME                    folder holding run.sh (default /home/runner/actions-runner)
#   RUNNER_BROKER_RETRIES          retries after a 5xx other than 502, a refused
#                                  connection or a timeout (default 30)
#   RUNNER_BROKER_BACKOFF_SECONDS  first wait between attempts, doubled after
#                                  each one up to 10 s (default 2)
#   RUNNER_BROKER_TIMEOUT_SECONDS  time limit of one request (default 15)
#   GPU_RUNNER_RUN_ID              a GPU runner's one run (set by its Job's template):
#                                  the runner then runs job-started.sh before each job,
#                                  which fails any job of another run
#
# Exit status: run.sh's own when it ends by itself; 143 after SIGTERM, 130
# after SIGINT; 2 for a missing or invalid variable; 3 when the broker refuses
# (401, 403, 409, 502, any other 4xx) or answers without a runner; 4 when the
# retries are spent; 5 when a GPU runner refused a job of another run (its Job then
# fails, and the run's `gpu-runner guard` cancels the run, saying why).
#
# The token and the JIT config live only in unexported shell variables: curl
# reads the token from a here-document on stdin, run.sh gets the JIT config in
# ACTIONS_RUNNER_INPUT_JITCONFIG (its --jitconfig, which the listener drops
# from its environment), and nothing prints either. Whatever may block runs in
# the background followed by `wait`: bash defers traps while a foreground
# command runs.

set -Eeuo pipefail

readonly EXIT_CONFIG=2 EXIT_REFUSED=3 EXIT_GAVE_UP=4 EXIT_FOREIGN_JOB=5

log() { printf '%s startup.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
warn() { log "$@" >&2; }
die() { warn "error: $2"; exit "$1"; }
check() { [[ $2 =~ $3 ]] || die "$EXIT_CONFIG" "$1 must be $4, got '$2'"; }

# An inherited value would reach the runner as an argument unseen (it reads
# these names in any case).
while IFS= read -r inherited; do
  [[ ${inherited^^} != ACTIONS_RUNNER_INPUT_* ]] || unset "$inherited"
done < <(compgen -e)

broker_url=${RUNNER_BROKER_URL:-}
check RUNNER_BROKER_URL "$broker_url" '^https?://[^[:space:]"\\]+$' "the broker's http(s) URL"
broker_url=${broker_url%/}
token_file=${RUNNER_BROKER_TOKEN_FILE:-}
[[ -n $token_file && -f $token_file && -r $token_file && -s $token_file ]] ||
  die "$EXIT_CONFIG" "RUNNER_BROKER_TOKEN_FILE must name a readable, non-empty file (the token), got '$token_file'"
runner_home=${RUNNER_HOME:-/home/runner/actions-runner}
[[ -f $runner_home/run.sh && -x $runner_home/run.sh ]] ||
  die "$EXIT_CONFIG" "RUNNER_HOME ($runner_home) has no executable run.sh; it must be the runner's folder"
retries=${RUNNER_BROKER_RETRIES:-30} backoff=${RUNNER_BROKER_BACKOFF_SECONDS:-2}
timeout=${RUNNER_BROKER_TIMEOUT_SECONDS:-15}
check RUNNER_BROKER_RETRIES "$retries" '^(0|[1-9][0-9]{0,3})$' "a whole number from 0 to 9999"
check RUNNER_BROKER_BACKOFF_SECONDS "$backoff" '^(0|[1-9][0-9]{0,3})$' "whole seconds from 0 to 9999"
check RUNNER_BROKER_TIMEOUT_SECONDS "$timeout" '^[1-9][0-9]{0,3}$' "whole seconds from 1 to 9999"
run_id=${GPU_RUNNER_RUN_ID:-}
[[ -z $run_id ]] || check GPU_RUNNER_RUN_ID "$run_id" '^[1-9][0-9]{0,19}$' "a workflow run id"
hook=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/job-started.sh
[[ -z $run_id || -r $hook ]] || die "$EXIT_CONFIG" "the job-started hook $hook is missing"
max_wait=$((backoff > 10 ? backoff : 10))

# A private folder (mktemp -d: 0700) for the answers, the JIT config included.
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/startup.XXXXXX")
if [[ -n $run_id ]]; then # a GPU runner: only its own run's jobs (see job-started.sh)
  export ACTIONS_RUNNER_HOOK_JOB_STARTED=$hook GPU_RUNNER_REFUSED_JOB_FILE=$work_dir/refused-job
fi
phase=starting # -> running (run.sh started) -> finishing
child_pid='' runner_pid='' caught='' exit_code='' forwarded='' signals=0 waited=0

# shellcheck disable=SC2329 # run by the EXIT trap
on_exit() {
  [[ -z $child_pid ]] || kill "$child_pid" 2>/dev/null || true
  rm -rf "$work_dir"
}
trap on_exit EXIT

forward_signal() {
  [[ -n $caught && -n $runner_pid && -z $forwarded ]] || return 0
  forwarded=1
  log "passing SIG$caught to run.sh (pid $runner_pid) and waiting for it to end"
  kill -s "$caught" "$runner_pid" 2>/dev/null || true
}

# shellcheck disable=SC2329 # run by the TERM and INT traps
on_signal() {
  signals=$((signals + 1))
  if [[ -n $caught || $phase == finishing ]]; then
    log "SIG$1 ignored: already stopping"
  elif [[ $phase == starting ]]; then
    log "SIG$1 before the runner started; exiting"
    exit "$2"
  else
    caught=$1 exit_code=$2
    forward_signal
  fi
}
trap 'on_signal TERM 143' TERM
trap 'on_signal INT 130' INT

# Waits for a background child, leaving its status in `waited`. A trapped
# signal ends `wait` early; bash keeps the child's status for the next `wait`.
wait_for() {
  local seen=-1
  while ((seen != signals)); do
    seen=$signals waited=0
    wait "$1" || waited=$?
  done
}

pause() {
  sleep "$1" &
  child_pid=$!
  wait_for "$child_pid"
  child_pid=''
}

# post PATH TIMEOUT: one POST to the broker. Sets `outcome` (ok, retry,
# refused or config) and, unless ok, `reason`.
post() {
  local token status
  token=$(<"$token_file") || token=''
  if [[ -z $token || $token =~ [[:space:]\"\\] ]]; then
    outcome=config reason="RUNNER_BROKER_TOKEN_FILE ($token_file) is empty, unreadable or no token"
    return 0
  fi
  rm -f "$work_dir/body"
  curl --config - --silent --show-error --proto =http,https --max-time "$2" \
    --header 'Content-Type: application/json' --data '{}' --output "$work_dir/body" \
    --write-out '%{http_code}' "$broker_url/v1/$1" >"$work_dir/status" 2>"$work_dir/error" <<EOF &
header = "Authorization: Bearer $token"
EOF
  child_pid=$! token=''
  wait_for "$child_pid"
  child_pid='' status=$(<"$work_dir/status") reason='' answered=$status
  if ((waited != 0)); then
    case $waited in
      5 | 6 | 7 | 16 | 18 | 28 | 35 | 52 | 55 | 56) outcome=retry ;; # no answer (yet)
      *) outcome=refused ;;
    esac
    reason="failed: $(head -c 300 "$work_dir/error" | tr -d '\n')"
    return 0
  fi
  [[ $status != 2?? ]] || { outcome=ok; return 0; }
  case $status in
    502) outcome=refused ;;
    5??) outcome=retry ;;
    *) outcome=refused ;;
  esac
  reason=$(jq -r '.error? // empty | tostring' "$work_dir/body" 2>/dev/null | head -c 300 | tr -d '\n') || true
  reason="answered HTTP $status: ${reason:-(no error message)}"
}

# Tells the broker this pod's runner has ended, so that it removes it from GitHub
# (and replaces a base runner's pod); should it not hear of it, its sweep does so
# once the pod is gone. Short, to fit the grace period.
tell_broker_finished() {
  local attempt
  for attempt in 1 2 3; do
    post finished $((timeout < 5 ? timeout : 5))
    [[ $outcome != ok ]] || return 0
    warn "POST $broker_url/v1/finished $reason (attempt $attempt of 3)"
    [[ $outcome == retry && $attempt -lt 3 ]] || return 1
    pause $((backoff < 1 ? backoff : 1))
  done
  return 1
}

delay=$backoff answered=''
for ((attempt = 1; ; attempt++)); do
  post jitconfig "$timeout"
  case $outcome in
    ok) break ;;
    config) die "$EXIT_CONFIG" "$reason" ;;
    refused)
      refusal="the broker refused a runner: POST $broker_url/v1/jitconfig $reason"
      # 409: this pod already had its runner (an answer lost on the way, or a
      # container restarted): let the broker remove it and replace the pod.
      [[ $answered != 409 ]] || tell_broker_finished || true
      die "$EXIT_REFUSED" "$refusal"
      ;;
  esac
  ((attempt <= retries)) || die "$EXIT_GAVE_UP" \
    "POST $broker_url/v1/jitconfig $reason; gave up after $attempt attempts (RUNNER_BROKER_RETRIES=$retries)"
  log "POST $broker_url/v1/jitconfig $reason; attempt $attempt of $((retries + 1)), retrying in ${delay}s"
  pause "$delay"
  delay=$((delay * 2 < max_wait ? delay * 2 : max_wait))
done

mapfile -t fields < <(jq -r 'select((.name | strings | length > 0) and (.encodedJitConfig | strings | length > 0))
  | .name, (.labels // [] | map(tostring) | join(",")), .encodedJitConfig' "$work_dir/body" 2>/dev/null)
rm -f "$work_dir/body"
((${#fields[@]} == 3)) || die "$EXIT_REFUSED" "the broker's answer holds no runner name and JIT config"
runner_name=${fields[0]} labels=${fields[1]} jit_config=${fields[2]}
fields=()

# RUNNER_MANUALLY_TRAP_SIG makes run.sh pass SIGTERM/SIGINT on to the listener
# instead of leaving it behind. Bash starts background commands with SIGINT
# ignored, which run.sh could not trap, hence --default-signal.
log "starting runner '$runner_name' (labels: $labels)"
phase=running
ACTIONS_RUNNER_INPUT_JITCONFIG=$jit_config RUNNER_MANUALLY_TRAP_SIG=1 \
  env --default-signal=INT "$runner_home/run.sh" &
runner_pid=$! jit_config=''
forward_signal # a signal may have come while run.sh was being started
wait_for "$runner_pid"
phase=finishing exit_code=${exit_code:-$waited}
log "run.sh ended with status $waited"
if [[ -n $run_id && -e $work_dir/refused-job && -z $caught ]]; then
  warn "this runner refused a job of another run; ending with $EXIT_FOREIGN_JOB: run $run_id gets no job from it"
  exit_code=$EXIT_FOREIGN_JOB
fi

if tell_broker_finished; then
  log "told the broker that runner '$runner_name' has ended"
fi
exit "$exit_code"
