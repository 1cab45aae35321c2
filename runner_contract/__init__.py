"""The names the program, the runner broker, the runner-side commands and the tests share.

Standard library only: the broker's and the runner's images copy this package as it
is. Change a name here and every side changes with it; the README and CONTRACT.md
name the same strings for users.
"""

PART_OF = "gke-gpu-runners"

# --- Kubernetes labels and annotations --------------------------------------------
APP_NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
RUN_ID_LABEL = "gke-gpu-runners/run-id"
RUN_ATTEMPT_LABEL = "gke-gpu-runners/run-attempt"
RUN_INDEX_LABEL = "gke-gpu-runners/run-index"
# Set by the broker, with a PATCH, on a pod it granted a runner: any broker instance,
# after any restart, refuses that pod a second one.
RUNNER_ANNOTATION = "gke-gpu-runners/runner"
GRANTED_AT_ANNOTATION = "gke-gpu-runners/granted-at"
"""When the broker recorded the grant (UTC, RFC 3339): the sweep leaves a pod granted moments ago alone."""
# The label the Job controller puts on a Job's pods.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
# On the GPU runner Jobs the smoke test makes, with the operator's rights, for run ids no
# workflow run has: the broker's sweep must leave them alone (the smoke test deletes them).
SMOKE_TEST_LABEL = "gke-gpu-runners/smoke-test"

# --- Runners ----------------------------------------------------------------------
BASE_RUNNER = "base-runner"
"""The base runners' Deployment, and their one runner label."""
GPU_RUNNER = "gpu-runner"
"""`app.kubernetes.io/name` of GPU runner Jobs, and the prefix of their names and label."""
RUNNER_ACCOUNT = "github-runner"
"""The ServiceAccount of every runner pod; it has no rights."""
RUNNER_UID = 10001
BROKER_UID = 10002
"""The broker image's user: not the runners', so no runner's file is the broker's."""
GPU_RUNNER_RUN_ID = "GPU_RUNNER_RUN_ID"
"""Set in a GPU runner's container: the run it serves. Its job-started hook fails any other run's job."""

# --- Nodes ------------------------------------------------------------------------
POOL_LABEL = "gpu"
CPU_POOL_LABELS = {POOL_LABEL: "false"}
GPU_POOL_LABELS = {POOL_LABEL: "true"}
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
CPU_POOL_TAINT = {"key": "gke-gpu-runners/pool", "value": "cpu", "effect": "NoSchedule"}
"""On the CPU pool added to an existing cluster, so that cluster's own workloads stay on its own nodes
(where they can pull their images); the base runners and the broker tolerate it everywhere."""

# --- The GPU runner template ------------------------------------------------------
TEMPLATE_CONFIGMAP = "gpu-runner-template"
TEMPLATE_KEY = "runner-gpu.yaml"
RUN_ID_PLACEHOLDER = "${GITHUB_RUN_ID}"
RUN_ATTEMPT_PLACEHOLDER = "${GITHUB_RUN_ATTEMPT}"

# --- The runner broker ------------------------------------------------------------
BROKER = "runner-broker"
BROKER_AUDIENCE = "runner-broker.gke-gpu-runners"
BROKER_PORT = 8080
BROKER_HEALTH_PORT = 8081
BROKER_SERVICE_PORT = 80
BROKER_TOKEN_DIR = "/run/secrets/runner-broker"
BROKER_TOKEN_KEY = "token"
JITCONFIG_PATH = "/v1/jitconfig"
FINISHED_PATH = "/v1/finished"
GPU_RUNNERS_PATH = "/v1/gpu-runners"
HEALTH_PATH = "/healthz"
BROKER_TEMPLATE_FILE = "/etc/runner-broker/gpu-runner-job.json"
"""Where the broker's Deployment mounts the GPU runner Job template (JSON); its BROKER_GPU_RUNNER_TEMPLATE_FILE."""

# What a runner pod's container is told about the broker.
RUNNER_BROKER_URL = "RUNNER_BROKER_URL"
RUNNER_BROKER_TOKEN_FILE = "RUNNER_BROKER_TOKEN_FILE"

# --- CI's access -----------------------------------------------------------------
CI_ROLE = "ci-runner-launcher"
"""CI's read-only Role in the runner namespace, and the RoleBinding whose first subject is CI."""

# --- GPU runners as the broker reports them (GET /v1/gpu-runners/<run>/<attempt>) ----
GPU_RUNNER_STATES = ("pending", "scheduling", "starting", "online", "busy", "finished", "failed")
"""`state` of each runner: no pod yet; waiting for a node; on a node, not yet registered;
registered and idle; running a job; its pod ended after its job; its Job failed."""

# The GPU runner container's environment variable naming the one run it serves (the
# template sets it to RUN_ID_PLACEHOLDER): its job-started hook refuses any other run's job.

# --- What lands in GitHub ---------------------------------------------------------
KUBECONFIG_SECRET = "GCP_K8S_KUBECONFIG"
WORKLOAD_IDENTITY_PROVIDER_VARIABLE = "GCP_WORKLOAD_IDENTITY_PROVIDER"
SERVICE_ACCOUNT_VARIABLE = "GCP_SERVICE_ACCOUNT"
OWNER_VARIABLE = "GKE_GPU_RUNNERS_STACK"
"""Names the stack that owns the secrets and variables above."""
DEPLOY_SERVICE_ACCOUNT_VARIABLE = "GCP_DEPLOY_SERVICE_ACCOUNT"
"""The service account a deploy job on the default branch may act as (deployNamespace, deployRegistry)."""

# --- The deploy identity, in the user's own namespace -----------------------------
DEPLOY_ROLE = "gke-gpu-runners-deployer"
"""The Role and RoleBinding that let the deploy identity apply a model's manifests there."""


def fill_run(value, run_id: str, run_attempt: str):
    """A copy of `value` (the GPU runner template, or any part of it) with this run's IDs in its
    placeholders: every string, however deep in dicts and lists, and nothing else."""
    if isinstance(value, str):
        return value.replace(RUN_ID_PLACEHOLDER, run_id).replace(RUN_ATTEMPT_PLACEHOLDER, run_attempt)
    if isinstance(value, dict):
        return {key: fill_run(item, run_id, run_attempt) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_run(item, run_id, run_attempt) for item in value]
    return value


def system_namespace(runner_namespace: str) -> str:
    """Where the broker and the runner credential live, beside the runner namespace."""
    return f"{runner_namespace}-system"


def gpu_runner_label(run_id: str | int) -> str:
    """The one label of a run's GPU runners: no other run's job asks for it."""
    return f"{GPU_RUNNER}-{run_id}"


def gpu_runner_job_name(run_id: str | int, run_attempt: str | int, index: int = 0) -> str:
    """`gpu-runner-<run id>-<attempt>`, and `-<i>` after it for a run's second runner on."""
    name = f"{GPU_RUNNER}-{run_id}-{run_attempt}"
    return f"{name}-{index}" if index else name


def broker_url(runner_namespace: str) -> str:
    """The broker's Service as runner pods reach it."""
    return f"http://{BROKER}.{system_namespace(runner_namespace)}.svc.cluster.local:{BROKER_SERVICE_PORT}"
