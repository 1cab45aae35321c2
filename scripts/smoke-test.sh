#!/usr/bin/env bash
# Checks, after `pulumi up`, that the runners work end to end. See usage() below.
set -Eeuo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/smoke-test.sh

Run from the Pulumi project folder after `pulumi up`. Checks, one line each:
  1. the base runner Deployment is available in the cluster;
  2. a base runner is online in GitHub (runner label `base-runner`); and WARN for
     each runner in that list this stack did not register that could take its
     jobs: one that carries `base-runner` or a `gpu-runner-<run id>` label, or only
     default labels (self-hosted, Linux, X64: it takes `runs-on: self-hosted`);
  3. the runner version in runner_image/Dockerfile is GitHub's latest (WARN if
     not: every cold start would download the update first);
  4. real GPU runners, started and stopped with CI's rights, not yours: as the
     first subject of RoleBinding ci-runner-launcher in the runner namespace
     (kubectl --as; a ServiceAccount, or the User a Google service account signs
     in as), it reads ConfigMap gpu-runner-template, creates SMOKE_GPU_RUNNERS Jobs
     from it (run ids SMOKE_RUN_ID, +1, ..., attempt 1), watches them and their
     pods, and deletes them, as the workflow does. Events, nodes and `nvidia-smi`
     (kubectl exec, which CI may not do) use your own rights. For each Job:
     its runner comes online in GitHub, named after the Job, with the one custom
     label gpu-runner-<run id>; `nvidia-smi -L` in it prints `GPU 0: ...`; once
     the Job is deleted, the runner leaves GitHub. Then it prints each runner's
     cold start, from Kubernetes' own timestamps, as seconds after its Job was
     created. With SMOKE_FOLLOW_NODE=1 it then follows each GPU node until the
     autoscaler removes it and prints the minutes it was billed.
Exits 0 when every check passed (WARN lines do not count), 1 otherwise; each
failure comes with a hint. The Jobs it created are deleted whatever happens.

Needs: pulumi (logged in, stack selected), kubectl, gke-gcloud-auth-plugin and a
gcloud login that may use the cluster and impersonate CI's identity there (e.g.
roles/container.admin), curl, jq, envsubst (gettext).

Environment:
  GITHUB_TOKEN               required for the GitHub checks: a token that may list
                             the repository's self-hosted runners (admin access to
                             the repository; classic PAT `repo` scope, or
                             fine-grained "Administration: read"). With the GitHub CLI:
                               GITHUB_TOKEN="$(gh auth token)" scripts/smoke-test.sh
                             Without it, the GPU runners are checked in the cluster only.
  GITHUB_REPOSITORY          owner/name (default: `pulumi config get githubRepository`)
  GITHUB_API_URL             REST API root (default: https://api.github.com)
  SMOKE_STACK                Pulumi stack to read (default: the selected stack)
  SMOKE_GPU_RUNNERS          GPU runners to start at once (default: 1)
  SMOKE_RUN_ID               run id of the first test GPU runner; the others count
                             up from it (default: 9 followed by the epoch seconds)
  SMOKE_ROLLOUT_TIMEOUT_SECONDS    wait for the base runner Deployment (default: 300)
  SMOKE_RUNNER_TIMEOUT_SECONDS     wait for a base runner to be online (default: 120)
  SMOKE_GPU_TIMEOUT_SECONDS        wait for the GPU runners to be online; the GPU
                                   pool may have to scale up from zero (default: 900)
  SMOKE_DEREGISTER_TIMEOUT_SECONDS wait for a GPU runner to leave GitHub once its
                                   Job is deleted (default: 120)
  SMOKE_FOLLOW_NODE          1: after the Jobs are deleted, follow each GPU node
                             until it is removed and print its billed minutes; takes
                             as long as the autoscaler's scale-down (default: 0)
  SMOKE_NODE_TIMEOUT_SECONDS       how long to follow the GPU nodes (default: 3600)
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
DEREGISTER_TIMEOUT_SECONDS="${SMOKE_DEREGISTER_TIMEOUT_SECONDS:-120}"
NODE_TIMEOUT_SECONDS="${SMOKE_NODE_TIMEOUT_SECONDS:-3600}"
POLL_SECONDS="${SMOKE_POLL_SECONDS:-10}"
GPU_RUNNERS="${SMOKE_GPU_RUNNERS:-1}"
FOLLOW_NODE="${SMOKE_FOLLOW_NODE:-0}"
# GitHub's run ids are far below 9 followed by ten digits, and the epoch makes
# two smoke tests of the same cluster differ.
RUN_ID="${SMOKE_RUN_ID:-9$(date +%s)}"

die() {
  printf 'smoke-test: %s\n' "$*" >&2
  exit 2
}

for setting in ROLLOUT_TIMEOUT_SECONDS RUNNER_TIMEOUT_SECONDS GPU_TIMEOUT_SECONDS \
  DEREGISTER_TIMEOUT_SECONDS NODE_TIMEOUT_SECONDS; do
  [[ "${!setting}" =~ ^[0-9]+$ ]] || die "SMOKE_$setting must be a whole number of seconds, not '${!setting}'"
done
[[ "$POLL_SECONDS" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SMOKE_POLL_SECONDS must be a number of seconds, not '$POLL_SECONDS'"
[[ "$GPU_RUNNERS" =~ ^[1-9][0-9]?$ ]] || die "SMOKE_GPU_RUNNERS must be a whole number from 1 to 99, not '$GPU_RUNNERS'"
[[ "$RUN_ID" =~ ^[1-9][0-9]{0,17}$ ]] || die "SMOKE_RUN_ID must be a positive whole number (at most 18 digits), not '$RUN_ID'"
[[ "$FOLLOW_NODE" =~ ^[01]$ ]] || die "SMOKE_FOLLOW_NODE must be 0 or 1, not '$FOLLOW_NODE'"
for tool in "$PULUMI" "$KUBECTL" curl jq envsubst; do
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

# CI's rights in the runner namespace come from this RoleBinding; the workflow
# reads the GPU runner Job template from this ConfigMap.
CI_BINDING="ci-runner-launcher"
TEMPLATE_CONFIGMAP="gpu-runner-template"
ci_identity="" # CI as kubectl --as spells it, once read from the RoleBinding
ci_kind=""     # ServiceAccount or User

# The GPU runner Jobs, one index per runner. A name is added before its Job is
# created and marked deleted once a delete went through: cleanup deletes the rest.
jobs=()
job_run_ids=()
job_deleted=()
job_state=()  # waiting, online (or up, without GitHub), failed, absent (never created)
job_online=() # epoch seconds of the first poll that saw its runner online
job_seen=()   # 1 once its runner was listed in GitHub
job_pod=()
job_node=()
job_phase=() # none (no pod yet), Pending, Running, Succeeded, Failed
job_gone=() # epoch seconds of the first poll that no longer listed its runner
deleted_at=""

# kubectl with CI's rights: the calls a workflow's start and stop make.
ci_kubectl() {
  "$KUBECTL" --as="$ci_identity" -n "$namespace" "$@"
}

delete_jobs() {
  ci_kubectl delete job "$@" --ignore-not-found --wait=false
}

cleanup() {
  local i leftover=()
  for i in "${!jobs[@]}"; do
    [[ "${job_deleted[i]}" == 1 ]] || leftover+=("${jobs[i]}")
  done
  if ((${#leftover[@]} > 0)); then
    # A test GPU runner must not keep a GPU node alive, whatever happened: if CI
    # may not delete it, the operator's own rights do.
    if delete_jobs "${leftover[@]}" >/dev/null 2>&1; then
      :
    elif "$KUBECTL" -n "$namespace" delete job "${leftover[@]}" --ignore-not-found --wait=false >/dev/null 2>&1; then
      printf 'smoke-test: %s could not delete job(s) %s in namespace %s; deleted them with your own rights\n' \
        "$ci_identity" "${leftover[*]}" "$namespace" >&2
    else
      printf 'smoke-test: could not delete job(s) %s in namespace %s; delete them by hand\n' "${leftover[*]}" "$namespace" >&2
    fi
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

# Worth knowing, never a failure.
warn() {
  printf 'WARN  %s: %s\n' "$1" "$2"
  printf '      hint: %s\n' "$3"
}

skip() {
  printf 'SKIP  %s: %s\n' "$1" "$2"
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

# --- GitHub ----------------------------------------------------------------------------

repo=""
# Cleared when GitHub cannot answer us at all (no token, no repository, token
# refused): the GPU runners are then checked in the cluster only.
github_ok=1
github_reason=""

if [[ -n "${GITHUB_TOKEN:-}" ]]; then
  # The token goes into a private file that curl reads, never onto its command line.
  printf 'Authorization: Bearer %s\n' "$GITHUB_TOKEN" >"$workdir/github-auth.header"
fi

# GET $GITHUB_API_URL$1 into the file $2; prints the HTTP status.
github_get() {
  local auth=(--header 'X-GitHub-Api-Version: 2022-11-28')
  if [[ -f "$workdir/github-auth.header" ]]; then
    auth+=(--header @"$workdir/github-auth.header")
  fi
  curl --silent --show-error --location --max-time 30 \
    "${auth[@]}" \
    --header 'Accept: application/vnd.github+json' \
    --output "$2" --write-out '%{http_code}' \
    "$GITHUB_API_URL$1" 2>"$workdir/curl.err" || true
}

# The repository's runners into $workdir/runners.json; prints the HTTP status.
fetch_runners() {
  github_get "/repos/$repo/actions/runners?per_page=100" "$workdir/runners.json"
}

repository() {
  if [[ -n "${GITHUB_REPOSITORY:-}" ]]; then
    printf '%s\n' "$GITHUB_REPOSITORY"
  else
    "$PULUMI" config get githubRepository "${stack_args[@]}" 2>/dev/null
  fi
}

# How GitHub lists runner $1 now: "offline", "online", or "not listed".
runner_status() {
  jq -r --arg name "$1" '[.runners[]? | select(.name == $name) | .status][0] // "not listed"' \
    "$workdir/runners.json" 2>/dev/null || echo "unknown"
}

runner_list_summary() {
  jq -r '[.runners[]? | "\(.name) \(.status)"] | join(", ") | if . == "" then "no runners" else . end' \
    "$workdir/runners.json" 2>/dev/null || echo "unreadable answer"
}

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

check_base_runner_online() {
  local check="base runner online" status online deadline
  local runner_hint="kubectl -n $namespace-system logs deploy/runner-broker says why GitHub refused a runner (the runner PAT or GitHub App: pulumi config set --secret runnerToken ...); kubectl -n $namespace logs deploy/base-runner"
  if [[ -z "${GITHUB_TOKEN:-}" ]]; then
    github_ok=0
    github_reason="GITHUB_TOKEN is not set"
    fail "$check" "GITHUB_TOKEN is not set" \
      "export a token that may list the repository's runners, e.g. GITHUB_TOKEN=\"\$(gh auth token)\""
    return
  fi
  repo="$(repository)" || repo=""
  if [[ ! "$repo" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$ ]]; then
    github_ok=0
    github_reason="no repository"
    fail "$check" "no repository: GITHUB_REPOSITORY unset and pulumi config githubRepository gives '${repo}'" \
      "export GITHUB_REPOSITORY=owner/name"
    return
  fi
  deadline=$((SECONDS + RUNNER_TIMEOUT_SECONDS))
  while :; do
    status="$(fetch_runners)"
    case "$status" in
      200)
        # Only this stack's base runners count: a foreign one with the label (the
        # tutorial's) is warned about, never taken for ours.
        online="$(jq -r '[.runners[]? | select(.status == "online") | select(.name | startswith("base-runner-"))
          | select(any(.labels[]?; .name == "base-runner")) | .name] | join(", ")' \
          "$workdir/runners.json" 2>/dev/null || true)"
        if [[ -n "$online" ]]; then
          pass "$check" "$repo: $online"
          return
        fi
        ;;
      401)
        github_ok=0
        github_reason="GitHub refused the token"
        fail "$check" "GitHub refused the token (401)" "GITHUB_TOKEN is expired or wrong; try GITHUB_TOKEN=\"\$(gh auth token)\""
        return
        ;;
      403 | 404)
        github_ok=0
        github_reason="GitHub answered $status for the runners"
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
    fail "$check" "no runner labelled base-runner is online in $repo ($(runner_list_summary))" "$runner_hint"
  else
    fail "$check" "no answer from $GITHUB_API_URL (HTTP ${status:-none}: $(one_line <"$workdir/curl.err"))" \
      "check the network and GITHUB_API_URL"
  fi
}

# Runners in the list just fetched that this stack did not register, but that could
# take its jobs. This stack's: base-runner-* with label base-runner, and
# gpu-runner-<run id>-<attempt> with label gpu-runner-<run id>. Any other runner
# that carries base-runner, a gpu-runner-<number> label, or nothing but GitHub's
# default labels (it takes `runs-on: self-hosted`) gets a WARN. GitHub compares
# labels without case.
check_foreign_runners() {
  local id name status labels why
  ((github_ok)) || return 0
  jq -e '.runners | type == "array"' "$workdir/runners.json" >/dev/null 2>&1 || return 0
  while IFS=$'\t' read -r id name status labels why; do
    warn "foreign runner ($name)" "labels $labels (id $id, $status); this stack did not register it, $why" \
      "such a runner (the tutorial's, say) can take this stack's jobs: remove it in $repo's Settings > Actions > Runners, or gh api -X DELETE repos/$repo/actions/runners/$id"
  done < <(jq -r '
    .runners[]
    | (.name // "") as $name
    | [.labels[]?.name | strings] as $labels
    | ($labels | map(ascii_downcase)) as $lower
    | ([$name | capture("^gpu-runner-(?<run>[0-9]+)-[0-9]+$") | .run][0]) as $run
    | select(
        (($name | startswith("base-runner-")) and ($lower | any(. == "base-runner")))
        or ($run != null and ($lower | any(. == "gpu-runner-\($run)")))
        | not)
    | ($lower | map(select(. as $l
        | ["self-hosted", "linux", "x64", "arm", "arm64", "windows", "macos"] | any(. == $l) | not))) as $custom
    | ([$labels[] | select(ascii_downcase | . == "base-runner" or test("^gpu-runner-[0-9]+$"))]) as $stack_labels
    | (if $stack_labels != [] then "yet it carries \($stack_labels | join(", "))"
       elif $custom == [] then "and it has only default labels: it takes any job that asks for self-hosted"
       else empty end) as $why
    | [(.id // "?" | tostring), $name, (.status // "unknown"),
       (if $labels == [] then "none" else $labels | join(", ") end), $why]
    | @tsv' "$workdir/runners.json" 2>/dev/null || true)
}

# --- 3. runner version ------------------------------------------------------------------

# 0 when version $1 (x.y.z) is older than $2.
version_older() {
  local IFS=. i
  local -a a b
  read -r -a a <<<"$1"
  read -r -a b <<<"$2"
  for i in 0 1 2; do
    if ((10#${a[i]:-0} != 10#${b[i]:-0})); then
      ((10#${a[i]:-0} < 10#${b[i]:-0}))
      return
    fi
  done
  return 1
}

check_runner_version() {
  local check="runner version" dockerfile="runner_image/Dockerfile" ours status latest
  ours="$(sed -n 's/^ARG RUNNER_VERSION=\([0-9][0-9.]*\).*/\1/p' "$dockerfile" 2>/dev/null | head -n 1)" || ours=""
  if [[ ! "$ours" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    warn "$check" "no ARG RUNNER_VERSION=x.y.z in $PWD/$dockerfile" \
      "run the script from the project folder to compare the image's runner with GitHub's latest release"
    return
  fi
  status="$(github_get /repos/actions/runner/releases/latest "$workdir/runner-release.json")"
  latest="$(jq -r '.tag_name? // empty | strings' "$workdir/runner-release.json" 2>/dev/null || true)"
  latest="${latest#v}"
  if [[ "$status" != 200 || ! "$latest" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    warn "$check" "could not read GitHub's latest runner release (HTTP ${status:-none}$([[ -s "$workdir/curl.err" ]] && printf ': %s' "$(one_line <"$workdir/curl.err")")); the image has $ours" \
      "compare it by hand with https://github.com/actions/runner/releases/latest"
    return
  fi
  if version_older "$ours" "$latest"; then
    warn "$check" "the image has runner $ours, GitHub's latest is $latest: each GPU runner's cold start then downloads and installs the update before it takes a job" \
      "bump ARG RUNNER_VERSION and ARG RUNNER_SHA256 (from the release's \"SHA-256 Checksums\": https://github.com/actions/runner/releases/tag/v$latest) in $dockerfile, then pulumi up"
  else
    pass "$check" "the image has runner $ours, GitHub's latest release is $latest"
  fi
}

# --- 4. GPU runners ------------------------------------------------------------------------

gpu_check_online() { printf 'GPU runner online (%s)' "${jobs[$1]}"; }
gpu_check_gpu() { printf 'GPU (%s)' "${jobs[$1]}"; }
gpu_check_removed() { printf 'GPU runner removed (%s)' "${jobs[$1]}"; }

pod_file() { printf '%s/%s.pod.json' "$workdir" "${jobs[$1]}"; }

# The Job's pod (or null) into its file; its name, node and phase into job_pod,
# job_node and job_phase.
fetch_pod() {
  local file name="" node="" phase=none
  file="$(pod_file "$1")"
  echo null >"$file"
  if ci_kubectl get pods -l "batch.kubernetes.io/job-name=${jobs[$1]}" -o json \
    >"$file.list" 2>"$workdir/get.err"; then
    # First line: name|node|phase; then the pod itself.
    { IFS='|' read -r name node phase && cat >"$file"; } < <(
      jq -r '(.items | sort_by(.metadata.creationTimestamp) | last) as $pod
        | if $pod == null then "||none" else
            [$pod.metadata.name // "", $pod.spec.nodeName // "", $pod.status.phase // "Pending"] | join("|")
          end,
          ($pod | tojson)' "$file.list" 2>/dev/null || printf '||none\nnull\n'
    ) || true
  fi
  job_pod[$1]="$name"
  job_node[$1]="$node"
  job_phase[$1]="${phase:-none}"
}

# Why the pod is not up yet, in a few words, from its status.
pod_waiting_reason() {
  jq -r '
    if . == null then "no pod yet"
    else
      ([.status.containerStatuses[]?.state.waiting | select(. != null) | "\(.reason): \(.message // "")"][0])
      // ([.status.conditions[]? | select(.type == "PodScheduled" and .status == "False") | .message][0])
      // ([.status.containerStatuses[]?.state.terminated | select(. != null) | "\(.reason // "terminated") (exit \(.exitCode))"][0])
      // "pod \(.status.phase // "Pending")"
    end' "$(pod_file "$1")" 2>/dev/null | one_line || echo pending
}

# The last word of the cluster autoscaler on the pod, if it refused to scale up.
autoscaler_note() {
  [[ -n "${job_pod[$1]}" ]] || return 0
  "$KUBECTL" -n "$namespace" get events --field-selector "involvedObject.name=${job_pod[$1]}" -o json 2>/dev/null |
    jq -r '[.items[]? | select(.reason == "NotTriggerScaleUp" or .reason == "FailedScaleUp")
      | select(.message != null)] | sort_by(.lastTimestamp // .eventTime // "") | last | .message // empty' 2>/dev/null |
    one_line || true
}

pod_hint() {
  local i="$1" reason="$2"
  case "$reason" in
    "no pod yet")
      echo "the Job made no pod: the namespace's GPU quota (gpuMaxNodes x gpuCount) may be spent by other runners; kubectl -n $namespace describe job ${jobs[i]}"
      ;;
    *ImagePull* | *ErrImage*)
      echo "the GPU node cannot pull $runner_image through Artifact Registry: check that registryPullToken (or registryToken) may read the GHCR package and that the image exists in GHCR"
      ;;
    *nodes\ are\ available* | *Unschedulable* | *scale-up* | *scale\ up*)
      echo "the GPU pool did not give a node: check the GPU quota of the region (NVIDIA_*_GPUS and GPUS_ALL_REGIONS), that the zone offers gpuType (gcloud compute accelerator-types list --filter=zone:<zone>), and kubectl -n $namespace get events --field-selector involvedObject.name=${job_pod[i]:-<pod>}"
      ;;
    *)
      echo "kubectl -n $namespace logs ${job_pod[i]:-job/${jobs[i]}} says what the runner did; kubectl -n $namespace-system logs deploy/runner-broker says why it refused the pod or why GitHub refused a runner (the runner PAT or GitHub App)"
      ;;
  esac
}

# What the operator lacks when Kubernetes refuses to let them act as CI.
impersonation_hint() {
  local resource=users
  [[ "$ci_kind" != ServiceAccount ]] || resource=serviceaccounts
  echo "the smoke test starts the GPU runner Jobs with CI's rights, so you need the right to impersonate $ci_identity: e.g. roles/container.admin on the cluster's project (gcloud projects add-iam-policy-binding <project> --member=user:<you> --role=roles/container.admin), or a ClusterRole with verb impersonate on $resource bound to you"
}

# CI's identity: the first subject of RoleBinding ci-runner-launcher, as kubectl
# --as spells it, into ci_identity and ci_kind. Returns 1 after a FAIL.
resolve_ci_identity() {
  local check="CI identity" binding="$workdir/ci-binding.json" name subject_namespace
  if ! "$KUBECTL" -n "$namespace" get rolebinding "$CI_BINDING" -o json >"$binding" 2>"$workdir/ci-binding.err"; then
    if grep -q NotFound "$workdir/ci-binding.err"; then
      fail "$check" "RoleBinding $CI_BINDING not found in namespace $namespace" \
        "the RoleBinding that gives CI its rights is missing: run pulumi up"
    else
      fail "$check" "could not read RoleBinding $CI_BINDING in namespace $namespace: $(one_line <"$workdir/ci-binding.err")" \
        "kubectl -n $namespace get rolebinding $CI_BINDING must work with your own rights (gcloud auth login; e.g. roles/container.admin); if the RoleBinding is missing, run pulumi up"
    fi
    return 1
  fi
  ci_kind="$(jq -r '.subjects[0].kind // empty | strings' "$binding" 2>/dev/null)" || ci_kind=""
  name="$(jq -r '.subjects[0].name // empty | strings' "$binding" 2>/dev/null)" || name=""
  subject_namespace="$(jq -r '.subjects[0].namespace // empty | strings' "$binding" 2>/dev/null)" || subject_namespace=""
  if [[ -z "$ci_kind" || ! "$name" =~ ^[^[:space:]]+$ ]]; then
    fail "$check" "RoleBinding $CI_BINDING in namespace $namespace names no subject" \
      "its first subject must be the identity CI signs in as: run pulumi up"
    return 1
  fi
  case "$ci_kind" in
    ServiceAccount) ci_identity="system:serviceaccount:${subject_namespace:-$namespace}:$name" ;;
    User) ci_identity="$name" ;;
    *)
      fail "$check" "the first subject of RoleBinding $CI_BINDING is $ci_kind $name: only a ServiceAccount or a User can be impersonated" \
        "make the identity CI signs in as the RoleBinding's first subject: run pulumi up"
      return 1
      ;;
  esac
}

# The GPU runner Job template, read from the cluster with CI's rights, as the
# workflow reads it. Returns 1 after a FAIL.
read_template_as_ci() {
  local template="$workdir/gpu-runner-template.yaml" err="$workdir/template.err"
  if ci_kubectl get configmap "$TEMPLATE_CONFIGMAP" -o 'jsonpath={.data.runner-gpu\.yaml}' >"$template" 2>"$err" &&
    [[ -s "$template" ]]; then
    return 0
  fi
  if grep -q "cannot impersonate" "$err"; then
    fail "CI identity" "you may not act as $ci_identity ($ci_kind of RoleBinding $CI_BINDING): $(one_line <"$err")" \
      "$(impersonation_hint)"
  elif grep -q NotFound "$err"; then
    fail "GPU runner template" "ConfigMap $TEMPLATE_CONFIGMAP not found in namespace $namespace" "run pulumi up"
  elif grep -q Forbidden "$err"; then
    fail "GPU runner template" "$ci_identity may not read ConfigMap $TEMPLATE_CONFIGMAP: $(one_line <"$err")" \
      "CI's Role $CI_BINDING must allow get on ConfigMap $TEMPLATE_CONFIGMAP, as the workflow reads it: run pulumi up"
  elif [[ -s "$err" ]]; then
    fail "GPU runner template" "could not read ConfigMap $TEMPLATE_CONFIGMAP as $ci_identity: $(one_line <"$err")" \
      "kubectl --as=$ci_identity -n $namespace get configmap $TEMPLATE_CONFIGMAP"
  else
    fail "GPU runner template" "ConfigMap $TEMPLATE_CONFIGMAP in namespace $namespace has no key runner-gpu.yaml" \
      "run pulumi up"
  fi
  return 1
}

create_gpu_runners() {
  local check="GPU runner jobs" i run_id job hint created=()
  for ((i = 0; i < GPU_RUNNERS; i++)); do
    run_id=$((RUN_ID + i))
    job="gpu-runner-$run_id-1"
    jobs+=("$job")
    job_run_ids+=("$run_id")
    job_deleted+=(0)
    job_state+=(waiting)
    job_online+=("")
    job_seen+=(0)
    job_pod+=("")
    job_node+=("")
    job_phase+=(none)
    job_gone+=("")
    : >"$workdir/create.out"
    # Only these two variables: any other `$` text of the template reaches the
    # cluster untouched, as in the workflow that creates these Jobs.
    # shellcheck disable=SC2016 # envsubst wants the variable names, unexpanded
    if GITHUB_RUN_ID="$run_id" GITHUB_RUN_ATTEMPT=1 envsubst '${GITHUB_RUN_ID} ${GITHUB_RUN_ATTEMPT}' \
      <"$workdir/gpu-runner-template.yaml" >"$workdir/$job.yaml" &&
      ci_kubectl create -f - <"$workdir/$job.yaml" >"$workdir/create.out" 2>&1; then
      created+=("$job")
    else
      job_state[i]=absent
      if grep -q "cannot impersonate" "$workdir/create.out"; then
        hint="$(impersonation_hint)"
      else
        hint="the template no longer matches the cluster (pulumi up), or the namespace's Pod Security (restricted) or CI's Role $CI_BINDING refused it; kubectl -n $namespace get events"
      fi
      fail "$check" "kubectl create $job as $ci_identity was refused: $(one_line <"$workdir/create.out")" "$hint"
    fi
  done
  if ((${#created[@]} > 0)); then
    pass "$check" "created ${created[*]} in namespace $namespace as $ci_identity (CI: the $ci_kind of RoleBinding $CI_BINDING)"
  fi
}

# How GitHub lists runner $1 (from $workdir/runners.json): "absent", or its status
# and, when its labels are wrong, why, tab-separated.
github_view() {
  jq -r --arg name "${jobs[$1]}" --arg want "gpu-runner-${job_run_ids[$1]}" '
    [.runners[]? | select(.name == $name)][0]
    | if . == null then "absent"
      else
        [.labels[]?.name | select(ascii_downcase as $l | any("self-hosted", "linux", "x64"; . == $l) | not)] as $custom
        | [(.status // "unknown"),
           (if $custom == [$want] then ""
            else "registered with labels \([.labels[]?.name] | join(", ")); expected \($want) alone (besides self-hosted, Linux, X64)"
            end)] | @tsv
      end' "$workdir/runners.json" 2>/dev/null || echo absent
}

# One poll: every waiting runner's pod, then GitHub's runner list once.
poll_gpu_runners() {
  local i status="" listed problem phase now
  for i in "${!jobs[@]}"; do
    if [[ "${job_state[i]}" == waiting ]]; then
      fetch_pod "$i"
    fi
  done
  if ((github_ok)); then
    status="$(fetch_runners)"
    last_status="$status"
  fi
  now="$(date +%s)"
  for i in "${!jobs[@]}"; do
    [[ "${job_state[i]}" == waiting ]] || continue
    phase="${job_phase[i]}"
    if ((github_ok)) && [[ "$status" == 200 ]]; then
      IFS=$'\t' read -r listed problem <<<"$(github_view "$i")" || true
      if [[ "$listed" != absent ]]; then
        job_seen[i]=1
        if [[ -n "$problem" ]]; then
          job_state[i]=failed
          fail "$(gpu_check_online "$i")" "$problem" \
            "the broker alone chooses a runner's labels (gpu-runner-<run id> for a GPU runner): is kubectl -n $namespace-system get deploy/runner-broker running this project's image? Is another runner named ${jobs[i]} registered in $repo?"
          continue
        fi
        if [[ "$listed" == online ]]; then
          job_state[i]=online
          job_online[i]="$now"
          pass "$(gpu_check_online "$i")" "online in $repo with label gpu-runner-${job_run_ids[i]}, on node ${job_node[i]:-?}"
          continue
        fi
      fi
    elif ! ((github_ok)) && [[ "$phase" == Running ]]; then
      job_state[i]=up
      continue
    fi
    case "$phase" in
      Succeeded | Failed)
        job_state[i]=failed
        fail "$(gpu_check_online "$i")" "its pod ended ($phase: $(pod_waiting_reason "$i")) before its runner was online" \
          "$(pod_hint "$i" ended)"
        ;;
    esac
  done
}

# The failure of a runner still waiting at the deadline.
fail_not_online() {
  local i="$1" reason note where
  reason="$(pod_waiting_reason "$i")"
  if [[ "${job_phase[i]}" == Pending && "$reason" != *ImagePull* && "$reason" != *ErrImage* ]]; then
    note="$(autoscaler_note "$i")"
    [[ -z "$note" ]] || reason="$reason; autoscaler: $note"
  fi
  if ! ((github_ok)); then
    where="its pod is not running ($reason)"
  elif [[ "$last_status" != 200 ]]; then
    where="no answer from GitHub's runner list (HTTP ${last_status:-none}: $(one_line <"$workdir/curl.err")); pod: $reason"
  elif [[ "${job_phase[i]}" == Running ]]; then
    if ((job_seen[i])); then
      where="registered in $repo but $(runner_status "${jobs[i]}")"
    else
      where="its pod runs, but no runner named ${jobs[i]} is registered in $repo"
    fi
    reason="running"
  else
    where="$reason"
  fi
  fail "$(gpu_check_online "$i")" "not online after ${GPU_TIMEOUT_SECONDS}s: $where" "$(pod_hint "$i" "$reason")"
}

wait_for_gpu_runners() {
  local deadline i waiting=0
  last_status=""
  for i in "${!jobs[@]}"; do
    if [[ "${job_state[i]}" == waiting ]]; then
      waiting=$((waiting + 1))
    fi
  done
  printf 'Waiting up to %ss for %s GPU runner(s); the GPU pool may have to scale up from zero first.\n' \
    "$GPU_TIMEOUT_SECONDS" "$waiting"
  deadline=$((SECONDS + GPU_TIMEOUT_SECONDS))
  while :; do
    poll_gpu_runners
    waiting=0
    for i in "${!jobs[@]}"; do
      if [[ "${job_state[i]}" == waiting ]]; then
        waiting=$((waiting + 1))
      fi
    done
    ((waiting > 0)) || return 0
    ((SECONDS < deadline)) || break
    sleep "$POLL_SECONDS"
  done
  for i in "${!jobs[@]}"; do
    if [[ "${job_state[i]}" == waiting ]]; then
      job_state[i]=failed
      fail_not_online "$i"
    fi
  done
}

# What the cold start table needs, read before the Jobs are deleted.
collect_timings() {
  local i base
  for i in "${!jobs[@]}"; do
    [[ "${job_state[i]}" != absent ]] || continue
    base="$workdir/${jobs[i]}"
    fetch_pod "$i"
    ci_kubectl get job "${jobs[i]}" -o json >"$base.job.json" 2>/dev/null || echo null >"$base.job.json"
    echo null >"$base.events.json"
    if [[ -n "${job_pod[i]}" ]]; then
      "$KUBECTL" -n "$namespace" get events --field-selector "involvedObject.name=${job_pod[i]}" -o json \
        >"$base.events.json" 2>/dev/null || echo null >"$base.events.json"
    fi
    echo null >"$base.node.json"
    if [[ -n "${job_node[i]}" ]]; then
      "$KUBECTL" get node "${job_node[i]}" -o json >"$base.node.json" 2>/dev/null || echo null >"$base.node.json"
    fi
  done
}

check_gpus() {
  local i container log gpu_line
  for i in "${!jobs[@]}"; do
    [[ "${job_state[i]}" != absent ]] || continue
    if [[ "${job_phase[i]}" != Running ]]; then
      skip "$(gpu_check_gpu "$i")" "its pod is not running"
      continue
    fi
    container="$(jq -r '.spec.containers[0].name // "runner"' "$(pod_file "$i")" 2>/dev/null || echo runner)"
    log="$workdir/${jobs[i]}.nvidia-smi"
    if "$KUBECTL" -n "$namespace" exec "${job_pod[i]}" -c "$container" -- nvidia-smi -L >"$log" 2>&1; then
      gpu_line="$(grep -m 1 '^GPU 0:' "$log" || true)"
    else
      gpu_line=""
    fi
    if [[ -n "$gpu_line" ]]; then
      pass "$(gpu_check_gpu "$i")" "$gpu_line"
    else
      fail "$(gpu_check_gpu "$i")" "nvidia-smi -L in ${job_pod[i]} printed no 'GPU 0:' line: $(one_line <"$log")" \
        "the node has no working driver or device plugin: check gpuDriverVersion, and kubectl -n kube-system get pods -l k8s-app=nvidia-gpu-device-plugin"
    fi
  done
}

delete_gpu_runners() {
  local i names=()
  for i in "${!jobs[@]}"; do
    if [[ "${job_state[i]}" != absent ]]; then
      names+=("${jobs[i]}")
    fi
  done
  ((${#names[@]} > 0)) || return 0
  deleted_at="$(date +%s)"
  if delete_jobs "${names[@]}" >"$workdir/delete.out" 2>&1; then
    for i in "${!jobs[@]}"; do
      if [[ "${job_state[i]}" != absent ]]; then
        job_deleted[i]=1
      fi
    done
  else
    fail "GPU runner jobs deleted" "kubectl delete job ${names[*]} as $ci_identity failed: $(one_line <"$workdir/delete.out")" \
      "CI's Role $CI_BINDING must allow delete on Jobs (pulumi up); on exit the script tries again with your own rights, else delete them by hand: kubectl -n $namespace delete job ${names[*]}"
  fi
}

wait_for_deregistration() {
  local i deadline status pending now
  if ! ((github_ok)); then
    for i in "${!jobs[@]}"; do
      [[ "${job_state[i]}" == absent ]] || skip "$(gpu_check_removed "$i")" "$github_reason"
    done
    return
  fi
  # Only runners that were seen, whose Jobs were deleted, can be seen leaving.
  pending=0
  for i in "${!jobs[@]}"; do
    if ((job_seen[i])) && [[ "${job_deleted[i]}" == 1 ]]; then
      pending=$((pending + 1))
    fi
  done
  deadline=$((SECONDS + DEREGISTER_TIMEOUT_SECONDS))
  while ((pending > 0)); do
    pending=0
    status="$(fetch_runners)"
    now="$(date +%s)"
    for i in "${!jobs[@]}"; do
      ((job_seen[i])) && [[ -z "${job_gone[i]}" && "${job_deleted[i]}" == 1 ]] || continue
      if [[ "$status" == 200 ]] &&
        ! jq -e --arg name "${jobs[i]}" 'any(.runners[]?; .name == $name)' "$workdir/runners.json" >/dev/null 2>&1; then
        job_gone[i]="$now"
        pass "$(gpu_check_removed "$i")" "left $repo $((now - deleted_at))s after its Job was deleted"
      else
        pending=$((pending + 1))
      fi
    done
    ((pending > 0)) || break
    if ((SECONDS >= deadline)); then
      for i in "${!jobs[@]}"; do
        ((job_seen[i])) && [[ -z "${job_gone[i]}" && "${job_deleted[i]}" == 1 ]] || continue
        fail "$(gpu_check_removed "$i")" "still registered in $repo ${DEREGISTER_TIMEOUT_SECONDS}s after its Job was deleted ($(if [[ "$status" == 200 ]]; then runner_status "${jobs[i]}"; else echo "HTTP ${status:-none}"; fi))" \
          "the broker removes a runner once its pod is gone, and sweeps every 30 s: kubectl -n $namespace-system logs deploy/runner-broker; remove it by hand in the repository's Settings > Actions > Runners"
      done
      break
    fi
    sleep "$POLL_SECONDS"
  done
  for i in "${!jobs[@]}"; do
    if [[ "${job_state[i]}" != absent && "${job_seen[i]}" == 0 ]]; then
      skip "$(gpu_check_removed "$i")" "its runner never registered"
    fi
  done
}

# Kubernetes timestamps (RFC 3339, with or without fraction) as epoch seconds.
JQ_EPOCH='def epoch: if type == "string" and . != ""
  then sub("\\.[0-9]+"; "") | sub("[+]00:00$"; "Z") | fromdateiso8601 else null end;'

# One table row: runner, pod-created, scale-up, node-ready, scheduled, pulled,
# pulled-from-cache flag, started, online; "-" where it did not happen.
cold_start_row() {
  local i="$1" base="$workdir/${jobs[$1]}"
  jq -r -n \
    --arg name "${jobs[i]}" --argjson online "${job_online[i]:-null}" \
    --slurpfile job "$base.job.json" --slurpfile pod "$(pod_file "$i")" \
    --slurpfile events "$base.events.json" --slurpfile node "$base.node.json" \
    "$JQ_EPOCH"'
    def since($t0): if . == null or $t0 == null then "-" else (. - $t0 | floor | tostring) end;
    ($job[0] // {}) as $j | ($pod[0] // {}) as $p | ($node[0] // {}) as $n
    | [($events[0] // {}).items[]?] as $ev
    | ($j.metadata.creationTimestamp | epoch) as $t0
    | ([$ev[] | select(.reason == "Pulled")] | sort_by(.lastTimestamp // .eventTime // "") | last) as $pulled
    | [ $name,
        ($p.metadata.creationTimestamp | epoch | since($t0)),
        ([$ev[] | select(.reason == "TriggeredScaleUp")
          | (.firstTimestamp // .eventTime // .lastTimestamp // .metadata.creationTimestamp) | epoch] | min | since($t0)),
        ([$n.status.conditions[]? | select(.type == "Ready" and .status == "True") | .lastTransitionTime][0]
          | epoch | since($t0)),
        ([$p.status.conditions[]? | select(.type == "PodScheduled" and .status == "True") | .lastTransitionTime][0]
          | epoch | since($t0)),
        (($pulled // {}) | (.lastTimestamp // .eventTime // .firstTimestamp) | epoch | since($t0)),
        (if (($pulled // {}).message // "") | test("already present") then "1" else "0" end),
        ([$p.status.containerStatuses[]?] | (map(select(.name == "runner")) + .)[0]
          | (.state.running.startedAt // .state.terminated.startedAt) | epoch | since($t0)),
        ($online | since($t0))
      ] | @tsv'
}

print_cold_start_table() {
  local i value width=6 name created scaleup ready scheduled pulled cached started online rows=() row
  local any_cached=0 any_negative=0
  for i in "${!jobs[@]}"; do
    [[ "${job_state[i]}" != absent ]] || continue
    row="$(cold_start_row "$i" 2>/dev/null)" || row="${jobs[i]}	-	-	-	-	-	0	-	-"
    rows+=("$row")
    ((${#jobs[i]} <= width)) || width=${#jobs[i]}
  done
  ((${#rows[@]} > 0)) || return 0
  printf '\nGPU runner cold start, seconds after its Job was created:\n'
  printf '%-*s  %11s  %8s  %10s  %9s  %7s  %7s  %6s\n' "$width" runner \
    pod-created scale-up node-ready scheduled pulled started online
  for row in "${rows[@]}"; do
    IFS=$'\t' read -r name created scaleup ready scheduled pulled cached started online <<<"$row"
    if [[ "$cached" == 1 && "$pulled" != - ]]; then
      pulled="$pulled*"
      any_cached=1
    fi
    for value in "$created" "$scaleup" "$ready" "$scheduled" "$pulled" "$started" "$online"; do
      [[ "$value" != -[0-9]* ]] || any_negative=1
    done
    printf '%-*s  %11s  %8s  %10s  %9s  %7s  %7s  %6s\n' "$width" "$name" \
      "$created" "$scaleup" "$ready" "$scheduled" "$pulled" "$started" "$online"
  done
  printf -- '-: did not happen or not seen. online: the first poll (every %ss) that found the runner online in GitHub.\n' "$POLL_SECONDS"
  if ((any_cached)); then
    printf '* the image was already present (image streaming or a cached image): nothing was pulled\n'
  fi
  if ((any_negative)); then
    printf 'negative: before the Job was created (the node was already up)\n'
  fi
}

# --- 5. billed minutes of the GPU nodes (SMOKE_FOLLOW_NODE=1) ---------------------------

follow_nodes() {
  local i j node nodes=() created=() gone=() deadline pending now width=4 billed stayed
  for i in "${!jobs[@]}"; do
    node="${job_node[i]}"
    [[ -n "$node" ]] || continue
    for j in "${!nodes[@]}"; do
      [[ "${nodes[j]}" != "$node" ]] || continue 2
    done
    nodes+=("$node")
    created+=("$(jq -r "$JQ_EPOCH"' .metadata.creationTimestamp | epoch // empty' "$workdir/${jobs[i]}.node.json" 2>/dev/null || true)")
    gone+=("")
    ((${#node} <= width)) || width=${#node}
  done
  if ((${#nodes[@]} == 0)); then
    skip "GPU node billing" "no GPU runner got a node"
    return
  fi
  printf '\nFollowing %s GPU node(s) until the autoscaler removes them (up to %ss).\n' "${#nodes[@]}" "$NODE_TIMEOUT_SECONDS"
  deadline=$((SECONDS + NODE_TIMEOUT_SECONDS))
  while :; do
    pending=0
    for j in "${!nodes[@]}"; do
      [[ -z "${gone[j]}" ]] || continue
      if "$KUBECTL" get node "${nodes[j]}" -o name >/dev/null 2>"$workdir/node.err"; then
        pending=$((pending + 1))
      elif grep -q NotFound "$workdir/node.err"; then
        gone[j]="$(date +%s)"
      else
        pending=$((pending + 1)) # the API did not answer: try again
      fi
    done
    ((pending > 0)) || break
    ((SECONDS < deadline)) || break
    sleep "$POLL_SECONDS"
  done
  now="$(date +%s)"
  printf '\nGPU node billing (per started minute, from creation to removal):\n'
  printf '%-*s  %-20s  %-20s  %10s  %s\n' "$width" node created removed billed "idle after its runner"
  for j in "${!nodes[@]}"; do
    if [[ -z "${created[j]}" ]]; then
      printf '%-*s  %-20s  %-20s  %10s  %s\n' "$width" "${nodes[j]}" - "$([[ -n "${gone[j]}" ]] && jq -rn --argjson t "${gone[j]}" '$t | todate' || echo -)" - -
      continue
    fi
    if [[ -n "${gone[j]}" ]]; then
      billed="$(((gone[j] - created[j] + 59) / 60)) min"
      stayed="$((gone[j] - deleted_at))s"
      printf '%-*s  %-20s  %-20s  %10s  %s\n' "$width" "${nodes[j]}" \
        "$(jq -rn --argjson t "${created[j]}" '$t | todate')" "$(jq -rn --argjson t "${gone[j]}" '$t | todate')" "$billed" "$stayed"
    else
      billed=">=$(((now - created[j] + 59) / 60)) min"
      printf '%-*s  %-20s  %-20s  %10s  %s\n' "$width" "${nodes[j]}" \
        "$(jq -rn --argjson t "${created[j]}" '$t | todate')" "still there" "$billed" ">=$((now - deleted_at))s"
    fi
  done
  for j in "${!nodes[@]}"; do
    if [[ -z "${gone[j]}" ]]; then
      warn "GPU node removed (${nodes[j]})" "still in the cluster ${NODE_TIMEOUT_SECONDS}s after its runner ended" \
        "expected while gpuMinNodes or gpuWarmRunners keeps a GPU node; otherwise see why the autoscaler keeps it: kubectl get pods -A --field-selector spec.nodeName=${nodes[j]}, and the cluster autoscaler's events (autoscalingProfile OPTIMIZE_UTILIZATION removes idle nodes sooner)"
    fi
  done
}

check_gpu_runners() {
  local i
  if ! resolve_ci_identity || ! read_template_as_ci; then
    return 0 # no Job was started: nothing else to check
  fi
  create_gpu_runners
  if [[ " ${job_state[*]} " == *" waiting "* ]]; then
    wait_for_gpu_runners
    if ! ((github_ok)); then
      for i in "${!jobs[@]}"; do
        [[ "${job_state[i]}" != up ]] || skip "$(gpu_check_online "$i")" "$github_reason; its pod runs on node ${job_node[i]:-?}"
      done
    fi
  fi
  collect_timings
  check_gpus
  delete_gpu_runners
  wait_for_deregistration
  print_cold_start_table
  if ((FOLLOW_NODE)); then
    follow_nodes
  fi
}

check_base_runner_deployment
check_base_runner_online
check_foreign_runners
check_runner_version
check_gpu_runners

if ((${#failures[@]} > 0)); then
  summary="$(printf '%s, ' "${failures[@]}")"
  printf '\n%d check(s) failed: %s\n' "${#failures[@]}" "${summary%, }"
  exit 1
fi
printf '\nAll checks passed.\n'
