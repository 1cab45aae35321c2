"""Kubernetes documents for the runners, as plain dicts built from the settings.

The base runner's pod and the GPU runner Job share one container shape, so a
hardening fixed here is fixed for both. The GPU runner is published as a YAML
template: `${GITHUB_RUN_ID}` and `${GITHUB_RUN_ATTEMPT}` are left for the
workflow's `envsubst`, which makes one uniquely named runner per run attempt.
"""

from dataclasses import dataclass

import yaml

from components.gpu_catalog import RunnerShare

RUNNER_UID = 10001
PAT_SECRET = "github-runner-pat"
PAT_KEY = "token"
PAT_DIR = "/run/secrets/github-runner"
PULL_SECRET = "ghcr-pull"
RUNNER_ACCOUNT = "github-runner"
BASE_RUNNER = "base-runner"
GPU_RUNNER = "gpu-runner"
TEMPLATE_CONFIGMAP = "gpu-runner-template"
TEMPLATE_KEY = "runner-gpu.yaml"
GPU_RESOURCE = "nvidia.com/gpu"

RUN_ID = "${GITHUB_RUN_ID}"
RUN_ATTEMPT = "${GITHUB_RUN_ATTEMPT}"
GPU_RUNNER_JOB = f"{GPU_RUNNER}-{RUN_ID}-{RUN_ATTEMPT}"

# Deregistering asks GitHub for a removal token and runs config.sh remove; give it
# time for a few short tries (see API_TIMEOUT_SECONDS).
TERMINATION_GRACE_SECONDS = 90
# Each token request may take this long before the entrypoint retries it.
API_TIMEOUT_SECONDS = 10
# A finished GPU runner's Job stays this long for its logs, then goes.
FINISHED_JOB_TTL_SECONDS = 3600

BASE_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}


def gpu_resources(gpu_count: int, share: RunnerShare) -> dict:
    """The whole node for the GPU runner: its GPUs and all the CPU and memory GKE leaves.

    Requests equal limits (Guaranteed QoS), so a long training run is the last pod
    the kubelet would evict, and no other workload squeezes in beside it.
    """
    amounts = {"cpu": f"{share.cpu_millis}m", "memory": f"{share.memory_mib}Mi", GPU_RESOURCE: str(gpu_count)}
    return {"requests": amounts, "limits": dict(amounts)}


@dataclass(frozen=True)
class RunnerSpec:
    """What differs between one kind of runner and another."""

    image: str
    repository: str
    """owner/name"""
    labels: tuple[str, ...]
    ephemeral: bool
    resources: dict
    name: str | None = None
    """The runner's name; None: the pod's name."""


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
        "fsGroup": RUNNER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNNER_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        # Jobs install tools and write their workspace inside the container.
        "readOnlyRootFilesystem": False,
    }


def _listener_probe(period_seconds: int, failure_threshold: int) -> dict:
    """Healthy while the runner's listener process runs."""
    return {
        "exec": {"command": ["pgrep", "-f", "Runner.Listener"]},
        "periodSeconds": period_seconds,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def runner_container(spec: RunnerSpec, extra_mounts: tuple[dict, ...] = ()) -> dict:
    """The runner container: the PAT as a read-only file, never in the environment."""
    name_env = (
        {"name": "RUNNER_NAME", "value": spec.name}
        if spec.name
        else {"name": "RUNNER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    return {
        "name": "runner",
        "image": spec.image,
        "imagePullPolicy": "Always",
        "env": [
            {"name": "RUNNER_REPOSITORY", "value": spec.repository},
            {"name": "RUNNER_TOKEN_FILE", "value": f"{PAT_DIR}/{PAT_KEY}"},
            {"name": "RUNNER_LABELS", "value": ",".join(spec.labels)},
            {"name": "RUNNER_EPHEMERAL", "value": "true" if spec.ephemeral else "false"},
            {"name": "RUNNER_API_TIMEOUT_SECONDS", "value": str(API_TIMEOUT_SECONDS)},
            name_env,
        ],
        "resources": spec.resources,
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "github-pat", "mountPath": PAT_DIR, "readOnly": True}, *extra_mounts],
        # Registration may retry for minutes while GitHub is unwell: liveness only
        # counts once the listener has started.
        "startupProbe": _listener_probe(period_seconds=10, failure_threshold=60),
        "livenessProbe": _listener_probe(period_seconds=30, failure_threshold=3),
        "readinessProbe": _listener_probe(period_seconds=10, failure_threshold=1),
    }


def runner_pod_spec(spec: RunnerSpec, node_selector: dict, extra: dict | None = None,
                    extra_volumes: tuple[dict, ...] = (), extra_mounts: tuple[dict, ...] = ()) -> dict:
    """A pod spec for a runner: hardened, no API token, a private image."""
    return {
        "serviceAccountName": RUNNER_ACCOUNT,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "imagePullSecrets": [{"name": PULL_SECRET}],
        "nodeSelector": node_selector,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [runner_container(spec, extra_mounts)],
        "volumes": [
            {
                "name": "github-pat",
                "secret": {"secretName": PAT_SECRET, "defaultMode": 0o440, "items": [{"key": PAT_KEY, "path": PAT_KEY}]},
            },
            *extra_volumes,
        ],
        **(extra or {}),
    }


def app_labels(name: str) -> dict:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "gke-gpu-runners"}


def base_runner_pod_spec(image: str, repository: str) -> dict:
    """The long-lived runner that starts and stops GPU runners: on the CPU pool only."""
    return runner_pod_spec(
        RunnerSpec(image=image, repository=repository, labels=(BASE_RUNNER,), ephemeral=False, resources=BASE_RESOURCES),
        node_selector={"gpu": "false"},
    )


def gpu_runner_job(image: str, repository: str, namespace: str, gpu_count: int,
                   share: RunnerShare, deadline_minutes: int) -> dict:
    """The GPU runner Job for one run attempt, with the run's IDs left as placeholders."""
    labels = {**app_labels(GPU_RUNNER), "gke-gpu-runners/run": f"run-{RUN_ID}-{RUN_ATTEMPT}"}
    spec = RunnerSpec(
        image=image,
        repository=repository,
        labels=(GPU_RUNNER, f"{GPU_RUNNER}-{RUN_ID}"),
        ephemeral=True,
        resources=gpu_resources(gpu_count, share),
        name=GPU_RUNNER_JOB,
    )
    pod_spec = runner_pod_spec(
        spec,
        node_selector={"gpu": "true"},
        extra={
            "restartPolicy": "Never",
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        },
        # Data loaders share tensors through /dev/shm; the container default is 64 MiB.
        # It is memory the runner's limit counts, so it gets a quarter of it.
        extra_volumes=({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{share.memory_mib // 4}Mi"}},),
        extra_mounts=({"name": "dshm", "mountPath": "/dev/shm"},),
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": GPU_RUNNER_JOB, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_minutes * 60,
            "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


class _TemplateDumper(yaml.SafeDumper):
    """Quotes every string holding a placeholder, so `12345` stays a string after envsubst."""

    def ignore_aliases(self, data) -> bool:
        return True  # a template is read by people and envsubst: no &anchors


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if "${" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_TemplateDumper.add_representer(str, _represent_str)


def render_template(document: dict) -> str:
    return yaml.dump(document, Dumper=_TemplateDumper, sort_keys=False)
