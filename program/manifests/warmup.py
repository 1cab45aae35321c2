"""Pods that shorten GPU cold starts, as plain dicts: an image preloader and warm-node placeholders."""

from program.catalog.gpus import runner_share
from program.manifests import runners as m
from runner_contract import GPU_POOL_LABELS

PRELOADER = "gpu-image-preloader"
PLACEHOLDER = "gpu-warm-placeholder"
# Below every pod's default of 0, so any GPU runner preempts a placeholder at once;
# a placeholder itself never preempts anything.
PLACEHOLDER_PRIORITY = -10

PRELOADER_RESOURCES = {"requests": {"cpu": "1m", "memory": "8Mi"}, "limits": {"cpu": "10m", "memory": "16Mi"}}


def _idle_container(name: str, image: str, resources: dict) -> dict:
    """A container that only sleeps: it is there for its image or for the room it holds."""
    always = {"exec": {"command": ["true"]}, "periodSeconds": 60, "timeoutSeconds": 5}
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sleep", "infinity"],
        "resources": resources,
        "securityContext": m.container_security_context(read_only_root=True),
        "readinessProbe": always,
        "livenessProbe": always,
    }


def _gpu_node_pod_spec(container: dict, extra: dict | None = None) -> dict:
    return {
        "automountServiceAccountToken": False,
        "securityContext": m.pod_security_context(),
        "nodeSelector": GPU_POOL_LABELS,
        "tolerations": [m.GPU_TOLERATION],
        # Nothing to clean up: a preempted placeholder should free its node at once.
        "terminationGracePeriodSeconds": 1,
        "containers": [container],
        **(extra or {}),
    }


def preloader_pod_spec(image: str) -> dict:
    """On every GPU node as soon as it joins; asks for no GPU, so it runs while the driver installs."""
    return _gpu_node_pod_spec(_idle_container("preload", image, PRELOADER_RESOURCES))


def placeholder_pod_spec(image: str, gpu_count: int, gpu_machine_type: str, priority_class: str) -> dict:
    """Holds a whole GPU node, as a GPU runner would, until a runner preempts it."""
    resources = m.gpu_resources(gpu_count, runner_share(gpu_machine_type))
    return _gpu_node_pod_spec(
        _idle_container("hold", image, resources),
        {"priorityClassName": priority_class},
    )
