"""Kubernetes documents for the runners, as plain dicts built from the settings.

The base runner's pod and the GPU runner Job share one container shape, so a
hardening fixed here is fixed for both. Neither holds a credential: each asks the
runner broker for a single-use JIT runner, proving which pod it is with a token
bound to the pod. The GPU runner is published as a YAML
template: `${GITHUB_RUN_ID}` and `${GITHUB_RUN_ATTEMPT}` are left for the
workflow's `envsubst`, which makes one uniquely named runner per run attempt.
"""

from dataclasses import dataclass, field

import yaml

from program.catalog.gpus import RunnerShare, runner_share
from runner_contract import (
    APP_NAME_LABEL,
    BROKER_AUDIENCE,
    BROKER_TOKEN_DIR,
    BROKER_TOKEN_KEY,
    CPU_POOL_LABELS,
    CPU_POOL_TAINT,
    GPU_POOL_LABELS,
    GPU_RESOURCE,
    GPU_RUNNER,
    GPU_RUNNER_RUN_ID,
    PART_OF,
    PART_OF_LABEL,
    RUN_ATTEMPT_LABEL,
    RUN_ATTEMPT_PLACEHOLDER,
    RUN_ID_LABEL,
    RUN_ID_PLACEHOLDER,
    RUNNER_ACCOUNT,
    RUNNER_BROKER_TOKEN_FILE,
    RUNNER_BROKER_URL,
    RUNNER_UID,
    broker_url,
    gpu_runner_job_name,
)

# Runner pods meet the `restricted` Pod Security Standard; enforce it so nothing
# weaker can be started in our namespaces.
POD_SECURITY = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "audit", "warn")}

GPU_RUNNER_JOB = gpu_runner_job_name(RUN_ID_PLACEHOLDER, RUN_ATTEMPT_PLACEHOLDER)

# A runner pod proves who it is to the broker with a token the kubelet projects
# for BROKER_AUDIENCE alone: the API server refuses it, and it dies with the pod.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# What runs on the CPU pool tolerates the taint it has in an existing cluster.
CPU_POOL_TOLERATION = {"operator": "Equal", **CPU_POOL_TAINT}

# The shortest lifetime Kubernetes allows; the kubelet renews the file before then.
BROKER_TOKEN_SECONDS = 600

# On SIGTERM the runner stops its listener and tells the broker, which removes
# it from GitHub; a job being cancelled needs a little of this too.
TERMINATION_GRACE_SECONDS = 90
# A finished GPU runner's Job stays this long for its logs, then goes.
FINISHED_JOB_TTL_SECONDS = 3600

BASE_RUNNER_CPU_MILLIS = 250
BASE_RUNNER_MEMORY_MIB = 512
BASE_RESOURCES = {
    "requests": {"cpu": f"{BASE_RUNNER_CPU_MILLIS}m", "memory": f"{BASE_RUNNER_MEMORY_MIB}Mi"},
    "limits": {"cpu": "1", "memory": "2Gi"},
}


def gpu_resources(gpu_count: int, share: RunnerShare) -> dict:
    """The whole node for the GPU runner: its GPUs and all the CPU and memory GKE leaves.

    Requests equal limits (Guaranteed QoS), so a long training run is the last pod
    the kubelet would evict, and no other workload squeezes in beside it.
    """
    amounts = {"cpu": f"{share.cpu_millis}m", "memory": f"{share.memory_mib}Mi", GPU_RESOURCE: str(gpu_count)}
    return {"requests": amounts, "limits": dict(amounts)}


def app_labels(name: str) -> dict:
    return {APP_NAME_LABEL: name, PART_OF_LABEL: PART_OF}


def pod_security_context(uid: int = RUNNER_UID) -> dict:
    """Non-root as the image's numeric user; fsGroup makes the projected files readable to it."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(read_only_root: bool, uid: int = RUNNER_UID) -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
    }


def _listener_probe(period_seconds: int, failure_threshold: int) -> dict:
    """Healthy while the runner's listener process runs."""
    return {
        "exec": {"command": ["pgrep", "-f", "Runner.Listener"]},
        "periodSeconds": period_seconds,
        "timeoutSeconds": 5,
        "failureThreshold": failure_threshold,
    }


def listener_probes() -> dict:
    """A runner container's probes. Getting a runner may take a while (the broker retries
    GitHub; ARC's runner waits for its node): liveness only counts once the listener has started."""
    return {
        "startupProbe": _listener_probe(period_seconds=10, failure_threshold=60),
        "livenessProbe": _listener_probe(period_seconds=30, failure_threshold=3),
        "readinessProbe": _listener_probe(period_seconds=10, failure_threshold=1),
    }


SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def shm_volume(share: RunnerShare) -> dict:
    """Data loaders share tensors through /dev/shm; the container default is 64 MiB.
    It is memory the runner's limit counts, so it gets a quarter of it."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{share.memory_mib // 4}Mi"}}


@dataclass(frozen=True)
class RunnerPod:
    """What differs between one kind of runner pod and another."""

    image: str
    broker_url: str
    resources: dict
    node_selector: dict
    extra_env: tuple[dict, ...] = ()
    extra_spec: dict = field(default_factory=dict)
    extra_volumes: tuple[dict, ...] = ()
    extra_mounts: tuple[dict, ...] = ()


def runner_container(pod: RunnerPod) -> dict:
    """The runner container: it holds no credential, only a token that says which pod it is."""
    return {
        "name": "runner",
        "image": pod.image,
        "imagePullPolicy": "IfNotPresent",
        "env": [
            {"name": RUNNER_BROKER_URL, "value": pod.broker_url},
            {"name": RUNNER_BROKER_TOKEN_FILE, "value": f"{BROKER_TOKEN_DIR}/{BROKER_TOKEN_KEY}"},
            *pod.extra_env,
        ],
        "resources": pod.resources,
        # Jobs install tools and write their workspace inside the container; it is
        # thrown away with the pod after one job.
        "securityContext": container_security_context(read_only_root=False),
        "volumeMounts": [{"name": "broker-token", "mountPath": BROKER_TOKEN_DIR, "readOnly": True}, *pod.extra_mounts],
        **listener_probes(),
    }


def broker_token_volume() -> dict:
    """A pod-bound ServiceAccount token for the broker's audience alone, short-lived."""
    return {
        "name": "broker-token",
        "projected": {
            "defaultMode": 0o440,
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": BROKER_AUDIENCE,
                        "expirationSeconds": BROKER_TOKEN_SECONDS,
                        "path": BROKER_TOKEN_KEY,
                    }
                }
            ],
        },
    }


def runner_pod_spec(pod: RunnerPod) -> dict:
    """A pod spec for a runner: hardened, no Kubernetes API token, no secret of any kind."""
    return {
        "serviceAccountName": RUNNER_ACCOUNT,
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "nodeSelector": pod.node_selector,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [runner_container(pod)],
        "volumes": [broker_token_volume(), *pod.extra_volumes],
        **pod.extra_spec,
    }


def base_runner_pod_spec(image: str, broker_url: str) -> dict:
    """A base runner: one job on the CPU pool, then the broker replaces its pod with a fresh one."""
    return runner_pod_spec(
        RunnerPod(
            image=image,
            broker_url=broker_url,
            resources=BASE_RESOURCES,
            node_selector=CPU_POOL_LABELS,
            extra_spec={"tolerations": [CPU_POOL_TOLERATION]},
        )
    )


def gpu_runner_labels() -> dict:
    return {**app_labels(GPU_RUNNER), RUN_ID_LABEL: RUN_ID_PLACEHOLDER, RUN_ATTEMPT_LABEL: RUN_ATTEMPT_PLACEHOLDER}


def gpu_runner_job(image: str, namespace: str, gpu_count: int, gpu_machine_type: str, deadline_minutes: int) -> dict:
    """The GPU runner Job for one run attempt, with the run's IDs left as placeholders.

    The broker fills them in, names the Job and its runner, and labels the runner
    `gpu-runner-<run id>` from the Job's own label: nothing in the pod chooses either.
    The runner's job-started hook refuses any job of another run.
    """
    share = runner_share(gpu_machine_type)
    labels = gpu_runner_labels()
    pod_spec = runner_pod_spec(
        RunnerPod(
            image=image,
            broker_url=broker_url(namespace),
            resources=gpu_resources(gpu_count, share),
            extra_env=({"name": GPU_RUNNER_RUN_ID, "value": RUN_ID_PLACEHOLDER},),
            node_selector=GPU_POOL_LABELS,
            extra_spec={
                "restartPolicy": "Never",
                "tolerations": [GPU_TOLERATION],
            },
            extra_volumes=(shm_volume(share),),
            extra_mounts=(SHM_MOUNT,),
        )
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

    def ignore_aliases(self, _data) -> bool:
        return True  # a template is read by people and envsubst: no &anchors


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if "${" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_TemplateDumper.add_representer(str, _represent_str)


def render_template(document: dict) -> str:
    return yaml.dump(document, Dumper=_TemplateDumper, sort_keys=False)
