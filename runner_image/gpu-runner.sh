#!/usr/bin/env bash
# Starts, guards and stops this workflow run's GPU runner, from a base runner.
#
#   gpu-runner start   creates Job gpu-runner-<run id>-<attempt> from the cluster's
#                      template and waits until its runner is up. Fails at once,
#                      with the reason and the pod's events and log, when the pod
#                      fails or the GPU pool cannot grow; waits only while the
#                      autoscaler is bringing a node or every GPU node is busy.
#   gpu-runner guard   waits until the runner has taken a job; cancels the run if
#                      the runner goes first, so no job waits a day for it.
#   gpu-runner stop    deletes the Job (its pod stops, the broker removes the runner).
#   gpu-runner credential
#                      what the CI kubeconfig runs for credentials (kubectl's exec
#                      plugin): trades the job's GitHub OIDC token for a 15-minute
#                      token of CI's Google service account, as an ExecCredential.
#
# Variables:
#   GCP_K8S_KUBECONFIG           kubeconfig text (the Actions secret; no credential in
#                                it); written to a private file for the duration, else
#                                $KUBECONFIG is used
#   GCP_WORKLOAD_IDENTITY_PROVIDER, GCP_SERVICE_ACCOUNT  the Actions variables: where
#                                to trade the OIDC token, and for whom
#   ACTIONS_ID_TOKEN_REQUEST_URL, ACTIONS_ID_TOKEN_REQUEST_TOKEN  set by GitHub for a
#                                job with `permissions: id-token: write`
#   GCP_STS_URL, GCP_IAM_CREDENTIALS_URL  Google's token endpoints (for test doubles)
#   GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT  set by GitHub Actions
#   GPU_RUNNER_TIMEOUT_SECONDS   longest wait for capacity (default 1200)
#   GPU_RUNNER_POLL_SECONDS      pause between looks (default 5)
#   GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL  for `guard` to cancel the run
#
# On a runner inside the cluster (KUBERNETES_SERVICE_HOST is set) kubectl talks to the
# API server from inside, at kubernetes.default.svc, so control-plane authorized
# networks, which guard the public endpoint, do not stand in its way.
#
# Exit status: 0 done; 1 the runner failed or never came (the reason is printed);
# 2 bad usage or variables.
set -Eeuo pipefail

# As the exec plugin (`credential`), stdout is kubectl's: messages go to stderr.
die() { printf '::error::%s\n' "$*" >&"$message_fd"; exit "${code:-1}"; }
note() { printf '%s gpu-runner: %s\n' "$(date -u +%H:%M:%S)" "$*"; }

command=${1:-}
message_fd=1
[[ $command != credential ]] || message_fd=2
[[ $command =~ ^(start|guard|stop|credential)$ ]] || code=2 die "usage: gpu-runner start|guard|stop|credential"
[[ ${GITHUB_RUN_ID:-} =~ ^[0-9]+$ && ${GITHUB_RUN_ATTEMPT:-} =~ ^[0-9]+$ ]] ||
  code=2 die "GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT must be set (by GitHub Actions)"
timeout=${GPU_RUNNER_TIMEOUT_SECONDS:-1200} poll=${GPU_RUNNER_POLL_SECONDS:-5}
[[ $timeout =~ ^[0-9]+$ && $poll =~ ^[0-9]+([.][0-9]+)?$ ]] ||
  code=2 die "GPU_RUNNER_TIMEOUT_SECONDS and GPU_RUNNER_POLL_SECONDS must be numbers of seconds"
job="gpu-runner-$GITHUB_RUN_ID-$GITHUB_RUN_ATTEMPT"
selector="batch.kubernetes.io/job-name=$job"

umask 077 # what this writes (the kubeconfig, tokens, answers) is for this user alone
work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
if [[ -n ${GCP_K8S_KUBECONFIG:-} ]]; then
  printf '%s\n' "$GCP_K8S_KUBECONFIG" >"$work/kubeconfig"
  export KUBECONFIG="$work/kubeconfig"
fi
unset GCP_K8S_KUBECONFIG
# kubectl runs `gpu-runner credential` for each call: one token serves them all.
export GPU_RUNNER_CREDENTIAL_CACHE=${GPU_RUNNER_CREDENTIAL_CACHE:-$work/credential.json}
server=()
[[ -z ${KUBERNETES_SERVICE_HOST:-} ]] || server=(--server=https://kubernetes.default.svc)
kube() { kubectl "${server[@]}" "$@"; }

# What the pod and its events say, as one line: "<verdict> <reason>", where the verdict
# is ready, failed, waiting (for capacity) or starting.
read_state() {
  kube get pods --selector="$selector" -o json >"$work/pods.json"
  local pod
  pod=$(jq -r '.items[0].metadata.name // empty' "$work/pods.json")
  if [[ -z $pod ]]; then
    kube get events --field-selector "involvedObject.name=$job" -o json >"$work/events.json"
  else
    kube get events --field-selector "involvedObject.name=$pod" -o json >"$work/events.json"
  fi
  jq -nr --slurpfile pods "$work/pods.json" --slurpfile events "$work/events.json" '
    ($pods[0].items[0] // null) as $pod
    | [$events[0].items[] | select(.type == "Warning" or .reason == "TriggeredScaleUp")]
      | sort_by(.lastTimestamp // .eventTime // "") | last as $event
    | ([$pod.status.containerStatuses[]?.state.waiting.reason] | first) as $waiting
    | if $pod == null then
        if ($event.reason // "") == "FailedCreate" then "failed \($event.message)" else "starting no pod yet" end
      elif $pod.status.phase == "Failed" or $pod.status.phase == "Succeeded" then
        "failed pod \($pod.status.phase): \($pod.status.reason // ([$pod.status.containerStatuses[]?.state.terminated.reason] | first) // "ended")"
      elif any($pod.status.conditions[]?; .type == "Ready" and .status == "True") then "ready"
      elif ($waiting // "") | test("ErrImagePull|ImagePullBackOff|InvalidImageName|CreateContainer|CrashLoopBackOff") then
        "failed container \($waiting): \([$pod.status.containerStatuses[]?.state.waiting.message] | first // "")"
      elif ($event.reason // "") == "FailedScaleUp" then "failed \($event.message)"
      elif ($event.reason // "") == "NotTriggerScaleUp" then
        if ($event.message | test("max node group size reached")) then "waiting every GPU node is busy: \($event.message)"
        else "failed the GPU pool cannot grow: \($event.message)" end
      elif ($event.reason // "") == "TriggeredScaleUp" then "waiting a GPU node is on its way"
      elif $pod.spec.nodeName then "starting on \($pod.spec.nodeName)"
      else "waiting to be scheduled" end'
}

explain() {
  note "the pod's events:"
  jq -r '.items | sort_by(.lastTimestamp // .eventTime // "") | .[-15:][]
    | "  \(.lastTimestamp // .eventTime // "-") \(.type) \(.reason): \(.message)"' "$work/events.json" || true
  local pod
  pod=$(jq -r '.items[0].metadata.name // empty' "$work/pods.json")
  if [[ -n $pod ]]; then
    note "the runner's last log lines:"
    kube logs "$pod" --container=runner --tail=30 2>&1 | sed 's/^/  /' || true
  fi
}

start() {
  local template state last='' deadline=$((SECONDS + timeout + 1)) # SECONDS counts whole seconds: wait at least `timeout`
  template=$(kube get configmap gpu-runner-template -o 'jsonpath={.data.runner-gpu\.yaml}')
  [[ -n $template ]] || die "ConfigMap gpu-runner-template has no key runner-gpu.yaml: run pulumi up"
  # Only these two: the template may hold other `$` text that must reach the cluster as is.
  # shellcheck disable=SC2016 # envsubst wants the names, unexpanded
  printf '%s\n' "$template" | envsubst '${GITHUB_RUN_ID} ${GITHUB_RUN_ATTEMPT}' | kube create -f -
  while :; do
    state=$(read_state)
    [[ $state == "$last" ]] || note "$job: $state"
    last=$state
    case $state in
      ready) note "runner $job is up"; return 0 ;;
      failed*) explain; die "GPU runner $job ${state#failed }" ;;
    esac
    if ((SECONDS >= deadline)); then
      explain
      die "GPU runner $job not up after ${timeout}s (${state}); check the GPU quota of the region and that the zone offers the GPU type"
    fi
    sleep "$poll"
  done
}

cancel_run() {
  [[ -n ${GITHUB_TOKEN:-} && -n ${GITHUB_REPOSITORY:-} ]] || return 0
  curl --silent --show-error --fail --config - --request POST \
    "${GITHUB_API_URL:-https://api.github.com}/repos/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID/cancel" \
    >/dev/null <<EOF || note "could not cancel the run"
header = "Authorization: Bearer $GITHUB_TOKEN"
header = "Accept: application/vnd.github+json"
EOF
}

guard() {
  local pod deadline=$((SECONDS + timeout + 1))
  while ((SECONDS < deadline)); do
    kube get pods --selector="$selector" -o json >"$work/pods.json"
    pod=$(jq -r '.items[] | select(.metadata.deletionTimestamp == null and .status.phase == "Running") | .metadata.name' \
      "$work/pods.json" | head -n 1)
    if [[ -z $pod ]]; then
      cancel_run
      die "GPU runner $job is gone before it took a job: the run is cancelled rather than left waiting for it"
    fi
    if kube logs "$pod" --container=runner 2>/dev/null | grep -q 'Running job:'; then
      note "runner $job has taken its job"
      return 0
    fi
    sleep "$poll"
  done
  cancel_run
  die "GPU runner $job took no job in ${timeout}s: the run is cancelled"
}

stop() {
  # Its pod gets SIGTERM; the runner stops and the broker removes it from GitHub.
  kube delete "job/$job" --ignore-not-found --wait=false
}

# --------------------------------------------------------------- credential --

# post_json URL BEARER: a POST of the JSON body in $work/body, the answer on stdout;
# the bearer token goes through curl's config on stdin, never on a command line.
post_json() {
  curl --silent --show-error --fail-with-body --max-time 30 --config - --request POST \
    --header 'Content-Type: application/json' --data "@$work/body" "$1" <<EOF
header = "Authorization: Bearer $2"
EOF
}

credential() {
  local now cache=$GPU_RUNNER_CREDENTIAL_CACHE oidc federated access audience
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  if [[ -s $cache ]] && jq -e --arg now "$now" '.status.expirationTimestamp > $now' "$cache" >/dev/null 2>&1; then
    cat "$cache"
    return 0
  fi
  [[ -n ${ACTIONS_ID_TOKEN_REQUEST_URL:-} && -n ${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-} ]] ||
    code=2 die "no GitHub OIDC token to trade: give the job permissions: id-token: write"
  [[ ${GCP_WORKLOAD_IDENTITY_PROVIDER:-} =~ ^projects/[0-9]+/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+$ ]] ||
    code=2 die "GCP_WORKLOAD_IDENTITY_PROVIDER must be the provider's full name (vars.GCP_WORKLOAD_IDENTITY_PROVIDER)"
  [[ ${GCP_SERVICE_ACCOUNT:-} =~ ^[^@/[:space:]]+@[^@/[:space:]]+$ ]] ||
    code=2 die "GCP_SERVICE_ACCOUNT must be CI's service account email (vars.GCP_SERVICE_ACCOUNT)"
  audience="//iam.googleapis.com/$GCP_WORKLOAD_IDENTITY_PROVIDER"

  # 1. This job's OIDC token from GitHub, for the provider's audience.
  oidc=$(curl --silent --show-error --fail --max-time 30 --get --data-urlencode "audience=$audience" \
    --config - "$ACTIONS_ID_TOKEN_REQUEST_URL" <<EOF | jq -r '.value // empty'
header = "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN"
EOF
  ) || true
  [[ -n $oidc ]] || die "GitHub gave this job no OIDC token"
  # 2. A federated token from Google's STS, if the provider's condition admits the job's claims.
  jq -n --arg audience "$audience" --arg token "$oidc" '{
      grant_type: "urn:ietf:params:oauth:grant-type:token-exchange", audience: $audience,
      scope: "https://www.googleapis.com/auth/cloud-platform",
      requested_token_type: "urn:ietf:params:oauth:token-type:access_token",
      subject_token_type: "urn:ietf:params:oauth:token-type:jwt", subject_token: $token}' >"$work/body"
  oidc=''
  federated=$(curl --silent --show-error --fail-with-body --max-time 30 --request POST \
    --header 'Content-Type: application/json' --data "@$work/body" "${GCP_STS_URL:-https://sts.googleapis.com/v1/token}" |
    jq -r '.access_token // empty') || true
  [[ -n $federated ]] || die "Google's STS refused this job's OIDC token: does the provider trust this repository?"
  # 3. A token of CI's service account, for 15 minutes.
  jq -n '{scope: ["https://www.googleapis.com/auth/cloud-platform"], lifetime: "900s"}' >"$work/body"
  access=$(post_json "${GCP_IAM_CREDENTIALS_URL:-https://iamcredentials.googleapis.com}/v1/projects/-/serviceAccounts/$GCP_SERVICE_ACCOUNT:generateAccessToken" \
    "$federated") || die "IAM would not let this job act as $GCP_SERVICE_ACCOUNT"
  rm -f "$work/body"
  jq -ce 'select(.accessToken and .expireTime) | {apiVersion: "client.authentication.k8s.io/v1", kind: "ExecCredential",
      status: {token: .accessToken, expirationTimestamp: .expireTime}}' <<<"$access" >"$cache.new" ||
    die "IAM answered without a token"
  mv "$cache.new" "$cache"
  cat "$cache"
}

"$command"
