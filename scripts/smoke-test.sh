#!/usr/bin/env bash
# Checks, after `pulumi up`, that the runners work end to end. See usage() below.
set -Eeuo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/smoke-test.sh

Run from the Pulumi project folder after `pulumi up`. Checks, one line each:
  1. the base runner Deployment is available in the cluster;
  2. a base runner is online in GitHub (runner label `base-runner`);
  3. a pod on the GPU pool sees a GPU (`nvidia-smi -L` prints `GPU 0: ...`).
Exits 0 when every check passed, 1 otherwise; each failure comes with a hint.

Needs: pulumi (logged in, stack selected), kubectl, gke-gcloud-auth-plugin and a
gcloud login that may use the cluster, curl, jq.

Environment:
  GITHUB_TOKEN               required for check 2: a token that may list the
                             repository's self-hosted runners (admin access to the
                             repository; classic PAT `repo` scope, or fine-grained
                             "Administration: read"). With the GitHub CLI:
                               GITHUB_TOKEN="$(gh auth token)" scripts/smoke-test.sh
  GITHUB_REPOSITORY          owner/name (default: `pulumi config get githubRepository`)
  GITHUB_API_URL             REST API root (default: https://api.github.com)
  SMOKE_STACK                Pulumi stack to read (default: the selected stack)
  SMOKE_ROLLOUT_TIMEOUT_SECONDS  wait for the base runner Deployment (default: 300)
  SMOKE_RUNNER_TIMEOUT_SECONDS   wait for a base runner to be online (default: 120)
  SMOKE_GPU_TIMEOUT_SECONDS      wait for the GPU pod; the GPU pool may have to
                                 scale up from zero first (default: 900)
  SMOKE_POLL_SECONDS         pause between polls (default: 10)
  PULUMI, KUBECTL            the tools to run (default: pulumi, kubectl)
EOF
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  "") ;;
  *)
    usage >&2
    exit 2
    ;;
esac

PULUMI="${PULUMI:-pulumi}"
KUBECTL="${KUBECTL:-kubectl}"
GITHUB_API_URL="${GITHUB_API_URL:-https://api.github.com}"
GITHUB_API_URL="${GITHUB_API_URL%/}"
ROLLOUT_TIMEOUT_SECONDS="${SMOKE_ROLLOUT_TIMEOUT_SECONDS:-300}"
RUNNER_TIMEOUT_SECONDS="${SMOKE_RUNNER_TIMEOUT_SECONDS:-120}"
GPU_TIMEOUT_SECONDS="${SMOKE_GPU_TIMEOUT_SECONDS:-900}"
POLL_SECONDS="${SMOKE_POLL_SECONDS:-10}"

die() {
  printf 'smoke-test: %s\n' "$*" >&2
  exit 2
}

for setting in ROLLOUT_TIMEOUT_SECONDS RUNNER_TIMEOUT_SECONDS; do
  [[ "${!setting}" =~ ^[0-9]+$ ]] || die "SMOKE_$setting must be a whole number of seconds, not '${!setting}'"
done
# It is also the pod's activeDeadlineSeconds, which must be positive.
[[ "$GPU_TIMEOUT_SECONDS" =~ ^[1-9][0-9]*$ ]] ||
  die "SMOKE_GPU_TIMEOUT_SECONDS must be a positive whole number of seconds, not '$GPU_TIMEOUT_SECONDS'"
[[ "$POLL_SECONDS" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SMOKE_POLL_SECONDS must be a number of seconds, not '$POLL_SECONDS'"
for tool in "$PULUMI" "$KUBECTL" curl jq; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done

stack_args=()
if [[ -n "${SMOKE_STACK:-}" ]]; then
  stack_args=(--stack "$SMOKE_STACK")
fi

# Everything private lands here: the kubeconfig, the GitHub auth header, answers.
umask 077
workdir="$(mktemp -d "${TMPDIR:-/tmp}/gpu-runners-smoke.XXXXXX")"
namespace=""
gpu_pod=""

cleanup() {
  if [[ -n "$gpu_pod" ]]; then
    # The test pod must not keep a GPU node alive, whatever happened.
    "$KUBECTL" -n "$namespace" delete pod "$gpu_pod" --ignore-not-found --wait=false >/dev/null 2>&1 ||
      printf 'smoke-test: could not delete pod %s in namespace %s; delete it by hand\n' "$gpu_pod" "$namespace" >&2
  fi
  rm -rf -- "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failures=()

pass() {
  printf 'PASS  %s: %s\n' "$1" "$2"
}

fail() {
  printf 'FAIL  %s: %s\n' "$1" "$2"
  printf '      hint: %s\n' "$3"
  failures+=("$1")
}

# One line of text, for reasons quoted from tool output.
one_line() {
  tr '\n' ' ' | sed -e 's/  */ /g' -e 's/ $//' | cut -c 1-300
}

# --- stack outputs ---------------------------------------------------------------

if ! "$PULUMI" stack output --json --show-secrets "${stack_args[@]}" >"$workdir/outputs.json" 2>"$workdir/pulumi.err"; then
  fail "stack outputs" "pulumi stack output failed: $(one_line <"$workdir/pulumi.err")" \
    "run from the project folder, with the stack selected (pulumi stack select) and deployed (pulumi up)"
  exit 1
fi

output() {
  jq -j --arg name "$1" '.[$name] // empty | strings' "$workdir/outputs.json" 2>/dev/null || true
}

namespace="$(output namespace)"
runner_image="$(output clusterRunnerImage)"
output kubeconfig >"$workdir/kubeconfig"
missing=()
[[ -n "$namespace" ]] || missing+=(namespace)
[[ -n "$runner_image" ]] || missing+=(clusterRunnerImage)
[[ -s "$workdir/kubeconfig" ]] || missing+=(kubeconfig)
if ((${#missing[@]} > 0)); then
  fail "stack outputs" "missing: ${missing[*]}" "run pulumi up to completion, then try again"
  exit 1
fi
pass "stack outputs" "namespace $namespace, image $runner_image"
export KUBECONFIG="$workdir/kubeconfig"

# --- 1. base runner Deployment ------------------------------------------------------

check_base_runner_deployment() {
  local check="base runner deployment"
  if "$KUBECTL" -n "$namespace" rollout status deployment/base-runner \
    --timeout="${ROLLOUT_TIMEOUT_SECONDS}s" >"$workdir/rollout.out" 2>&1; then
    pass "$check" "deployment/base-runner is available in namespace $namespace"
  else
    fail "$check" "not available after ${ROLLOUT_TIMEOUT_SECONDS}s: $(one_line <"$workdir/rollout.out")" \
      "kubectl -n $namespace describe deploy/base-runner; kubectl -n $namespace logs deploy/base-runner; kubectl -n $namespace-system logs deploy/runner-broker (image pull through Artifact Registry? gke-gcloud-auth-plugin and gcloud login?)"
  fi
}

# --- 2. base runner online in GitHub --------------------------------------------------

repository() {
  if [[ -n "${GITHUB_REPOSITORY:-}" ]]; then
    printf '%s\n' "$GITHUB_REPOSITORY"
  else
    "$PULUMI" config get githubRepository "${stack_args[@]}" 2>/dev/null
  fi
}

# GET the repository's runners into $workdir/runners.json; prints the HTTP status.
fetch_runners() {
  local repo="$1"
  # The token goes into a private file that curl reads, never onto its command line.
  printf 'Authorization: Bearer %s\n' "$GITHUB_TOKEN" >"$workdir/github-auth.header"
  curl --silent --show-error --location --max-time 30 \
    --header @"$workdir/github-auth.header" \
    --header 'Accept: application/vnd.github+json' \
    --header 'X-GitHub-Api-Version: 2022-11-28' \
    --output "$workdir/runners.json" --write-out '%{http_code}' \
    "$GITHUB_API_URL/repos/$repo/actions/runners?per_page=100" 2>"$workdir/curl.err" || true
}

check_base_runner_online() {
  local check="base runner online" repo status online deadline
  local runner_hint="kubectl -n $namespace-system logs deploy/runner-broker says why GitHub refused a runner (the runner PAT or GitHub App: pulumi config set --secret runnerToken ...); kubectl -n $namespace logs deploy/base-runner"
  if [[ -z "${GITHUB_TOKEN:-}" ]]; then
    fail "$check" "GITHUB_TOKEN is not set" \
      "export a token that may list the repository's runners, e.g. GITHUB_TOKEN=\"\$(gh auth token)\""
    return
  fi
  repo="$(repository)" || repo=""
  if [[ ! "$repo" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
    fail "$check" "no repository: GITHUB_REPOSITORY unset and pulumi config githubRepository gives '${repo}'" \
      "export GITHUB_REPOSITORY=owner/name"
    return
  fi
  deadline=$((SECONDS + RUNNER_TIMEOUT_SECONDS))
  while :; do
    status="$(fetch_runners "$repo")"
    case "$status" in
      200)
        online="$(jq -r '[.runners[]? | select(.status == "online")
          | select(any(.labels[]?; .name == "base-runner")) | .name] | join(", ")' \
          "$workdir/runners.json" 2>/dev/null || true)"
        if [[ -n "$online" ]]; then
          pass "$check" "$repo: $online"
          return
        fi
        ;;
      401)
        fail "$check" "GitHub refused the token (401)" "GITHUB_TOKEN is expired or wrong; try GITHUB_TOKEN=\"\$(gh auth token)\""
        return
        ;;
      403 | 404)
        fail "$check" "GitHub answered $status for $repo's runners: $(jq -r '.message? // empty' "$workdir/runners.json" 2>/dev/null | one_line)" \
          "the token needs admin access to $repo (classic PAT: repo scope; fine-grained: Administration read), and the name must be right"
        return
        ;;
    esac
    if ((SECONDS >= deadline)); then
      break
    fi
    sleep "$POLL_SECONDS"
  done
  if [[ "$status" == 200 ]]; then
    fail "$check" "no runner labelled base-runner is online in $repo ($(jq -r '[.runners[]? | "\(.name) \(.status)"] | join(", ") | if . == "" then "no runners" else . end' "$workdir/runners.json" 2>/dev/null || echo "unreadable answer"))" \
      "$runner_hint"
  else
    fail "$check" "no answer from $GITHUB_API_URL (HTTP ${status:-none}: $(one_line <"$workdir/curl.err"))" \
      "check the network and GITHUB_API_URL"
  fi
}

# --- 3. a pod on the GPU pool sees a GPU ----------------------------------------------------

gpu_pod_manifest() {
  jq -n \
    --arg name "$gpu_pod" \
    --arg namespace "$namespace" \
    --arg image "$runner_image" \
    --argjson deadline "$GPU_TIMEOUT_SECONDS" \
    '{
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: $name,
        namespace: $namespace,
        labels: {"app.kubernetes.io/name": "gpu-smoke-test", "app.kubernetes.io/part-of": "gke-gpu-runners"}
      },
      spec: {
        restartPolicy: "Never",
        activeDeadlineSeconds: $deadline,
        automountServiceAccountToken: false,
        nodeSelector: {gpu: "true"},
        tolerations: [{key: "nvidia.com/gpu", operator: "Equal", value: "present", effect: "NoSchedule"}],
        securityContext: {runAsNonRoot: true, runAsUser: 10001, seccompProfile: {type: "RuntimeDefault"}},
        containers: [{
          name: "nvidia-smi",
          image: $image,
          command: ["nvidia-smi", "-L"],
          resources: {
            requests: {cpu: "100m", memory: "128Mi"},
            limits: {"nvidia.com/gpu": 1, memory: "256Mi"}
          },
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 10001,
            allowPrivilegeEscalation: false,
            capabilities: {drop: ["ALL"]},
            seccompProfile: {type: "RuntimeDefault"}
          }
        }]
      }
    }'
}

# Why the pod is not done yet, in a few words, from its status.
pod_waiting_reason() {
  jq -r '
    ([.status.containerStatuses[]?.state.waiting | select(. != null) | "\(.reason): \(.message // "")"][0])
    // ([.status.conditions[]? | select(.type == "PodScheduled" and .status == "False") | .message][0])
    // "pending"' "$workdir/pod.json" 2>/dev/null | one_line || echo pending
}

gpu_hint() {
  case "$1" in
    *ImagePull* | *ErrImage*)
      echo "the GPU node cannot pull $runner_image through Artifact Registry: check that registryPullToken (or registryToken) may read the GHCR package and that the image exists in GHCR"
      ;;
    *)
      echo "the GPU pool did not give a node: check the GPU quota of the region (NVIDIA_*_GPUS and GPUS_ALL_REGIONS), that the zone offers gpuType (gcloud compute accelerator-types list --filter=zone:<zone>), and kubectl -n $namespace get events --field-selector involvedObject.name=$gpu_pod"
      ;;
  esac
}

check_gpu_pod() {
  local check="GPU pod" phase="" reason="pending" deadline gpu_line
  gpu_pod="gpu-smoke-test-$(date +%s)-$$"
  if ! gpu_pod_manifest | "$KUBECTL" -n "$namespace" create -f - >"$workdir/create.out" 2>&1; then
    fail "$check" "kubectl create was refused: $(one_line <"$workdir/create.out")" \
      "the namespace's Pod Security (restricted) or RBAC refused the pod; kubectl -n $namespace get events"
    return
  fi
  deadline=$((SECONDS + GPU_TIMEOUT_SECONDS))
  while :; do
    if "$KUBECTL" -n "$namespace" get pod "$gpu_pod" -o json >"$workdir/pod.json" 2>"$workdir/get.err"; then
      phase="$(jq -r '.status.phase // "Pending"' "$workdir/pod.json" 2>/dev/null || echo Unknown)"
      case "$phase" in
        Succeeded | Failed) break ;;
      esac
      reason="$(pod_waiting_reason)"
    else
      reason="kubectl get pod failed: $(one_line <"$workdir/get.err")"
    fi
    if ((SECONDS >= deadline)); then
      fail "$check" "not done after ${GPU_TIMEOUT_SECONDS}s ($reason)" "$(gpu_hint "$reason")"
      return
    fi
    sleep "$POLL_SECONDS"
  done
  if ! "$KUBECTL" -n "$namespace" logs "pod/$gpu_pod" >"$workdir/pod.log" 2>&1; then
    fail "$check" "pod $phase, no logs: $(one_line <"$workdir/pod.log")" \
      "kubectl -n $namespace describe pod $gpu_pod (before the script ends)"
    return
  fi
  gpu_line="$(grep -m 1 '^GPU 0:' "$workdir/pod.log" || true)"
  if [[ "$phase" == Succeeded && -n "$gpu_line" ]]; then
    pass "$check" "$gpu_line"
  else
    fail "$check" "pod $phase, nvidia-smi -L printed no 'GPU 0:' line: $(one_line <"$workdir/pod.log")" \
      "the node has no working driver or device plugin: check gpuDriverVersion, and kubectl -n kube-system get pods -l k8s-app=nvidia-gpu-device-plugin"
  fi
}

check_base_runner_deployment
check_base_runner_online
check_gpu_pod

if ((${#failures[@]} > 0)); then
  summary="$(printf '%s, ' "${failures[@]}")"
  printf '\n%d check(s) failed: %s\n' "${#failures[@]}" "${summary%, }"
  exit 1
fi
printf '\nAll checks passed.\n'
