"""GitHub's Actions Runner Controller (ARC) in runner scale-set mode, as plain dicts.

ARC's listener takes this scale set's jobs from GitHub's queue and asks its controller for
one ephemeral runner pod per job, from the pod template below, each with a single-use JIT
configuration. Both charts are installed from GitHub's OCI registry at one pinned version.

Every values key here is a key of that version's charts, as documented in their values
files: gha-runner-scale-set-controller 0.14.2 and gha-runner-scale-set 0.14.2,
https://github.com/actions/actions-runner-controller/blob/gha-runner-scale-set-0.14.2/charts/gha-runner-scale-set-controller/values.yaml
https://github.com/actions/actions-runner-controller/blob/gha-runner-scale-set-0.14.2/charts/gha-runner-scale-set/values.yaml
"""

from program.catalog.gpus import runner_share
from program.manifests import runners as m
from runner_contract import APP_NAME_LABEL, CPU_POOL_LABELS, GPU_POOL_LABELS, PART_OF, PART_OF_LABEL, RUNNER_ACCOUNT

CHART_REPOSITORY = "oci://ghcr.io/actions/actions-runner-controller-charts"
CONTROLLER_CHART = f"{CHART_REPOSITORY}/gha-runner-scale-set-controller"
SCALE_SET_CHART = f"{CHART_REPOSITORY}/gha-runner-scale-set"
# Both charts move together: the controller serves scale sets of its own version.
CHART_VERSION = "0.14.2"

CONTROLLER_RELEASE = "arc"
# Named here, not discovered: the scale set chart would look the controller up in the
# cluster while rendering, which pulumi-kubernetes cannot do (pulumi/pulumi-kubernetes#2766).
CONTROLLER_ACCOUNT = "arc-controller"
# Where the controller reads the GitHub credential: the scale set's own namespace (ARC looks
# the githubConfigSecret up beside the AutoscalingRunnerSet, and nowhere else).
CREDENTIAL_SECRET = "github-config"
RUNNER_POD = "scale-set-runner"

# The runner as our image installs it (runner_image/Dockerfile: RUNNER_HOME); ARC's own image
# keeps it in /home/runner. ARC hands the pod its JIT configuration in
# ACTIONS_RUNNER_INPUT_JITCONFIG, which run.sh reads: no entrypoint of ours runs.
RUNNER_HOME = "/home/runner/actions-runner"
# tini as PID 1 forwards SIGTERM to run.sh and reaps what job steps leave behind.
RUNNER_COMMAND = ["/usr/bin/tini", "--", f"{RUNNER_HOME}/run.sh"]
# ARC fills in the JIT configuration of the container of this name, and of no other.
RUNNER_CONTAINER = "runner"
LISTENER_CONTAINER = "listener"

METRICS_PORT = 8080
METRICS_PATH = "/metrics"
METRICS_PORT_NAME = "metrics"
SCRAPE_INTERVAL = "30s"

# The controller image (which also runs the listener) is distroless, user 65532.
ARC_UID = 65532
CONTROLLER_CPU_MILLIS = 100
CONTROLLER_MEMORY_MIB = 128
LISTENER_CPU_MILLIS = 50
LISTENER_MEMORY_MIB = 64
# What ARC keeps on the CPU pool for one scale set: its controller and the scale set's listener.
ARC_PODS_CPU_MILLIS = CONTROLLER_CPU_MILLIS + LISTENER_CPU_MILLIS
ARC_PODS_MEMORY_MIB = CONTROLLER_MEMORY_MIB + LISTENER_MEMORY_MIB
# The listener keeps ARC's own grace period, which a listener template would otherwise clear.
LISTENER_GRACE_SECONDS = 60

# The pods ARC labels as its controller and as a scale set's listener (ARC 0.14.2:
# the controller chart's deployment.yaml; resourcebuilder.go for the listener).
CONTROLLER_POD_LABELS = {
    "app.kubernetes.io/part-of": "gha-rs-controller",
    "app.kubernetes.io/component": "controller-manager",
}
LISTENER_POD_LABELS = {
    "app.kubernetes.io/part-of": "gha-runner-scale-set",
    "app.kubernetes.io/component": "runner-scale-set-listener",
}

# Keys of the githubConfigSecret, as the scale set chart names them.
GITHUB_TOKEN = "github_token"
GITHUB_APP_ID = "github_app_id"
GITHUB_APP_INSTALLATION_ID = "github_app_installation_id"
GITHUB_APP_PRIVATE_KEY = "github_app_private_key"


def _resources(cpu_millis: int, memory_mib: int) -> dict:
    return {
        "requests": {"cpu": f"{cpu_millis}m", "memory": f"{memory_mib}Mi"},
        "limits": {"cpu": f"{cpu_millis * 5}m", "memory": f"{memory_mib * 4}Mi"},
    }


def _arc_pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": ARC_UID,
        "runAsGroup": ARC_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _arc_container_security_context(read_only_root: bool) -> dict:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
    }


def github_config_url(owner: str, repository: str, organization: str | None) -> str:
    """Where the scale set registers: the organization, or the repository alone."""
    return f"https://github.com/{organization}" if organization else f"https://github.com/{owner}/{repository}"


def github_config_secret(secret: object, app_id: str | None = None, app_installation_id: str | None = None) -> dict:
    """The githubConfigSecret's data: a PAT, or a GitHub App's IDs and private key (`secret`)."""
    if app_id is None:
        return {GITHUB_TOKEN: secret}
    return {GITHUB_APP_ID: app_id, GITHUB_APP_INSTALLATION_ID: app_installation_id, GITHUB_APP_PRIVATE_KEY: secret}


def controller_values(runner_namespace: str) -> dict:
    """The controller, on the CPU pool, under Pod Security `restricted`, watching the runner namespace alone."""
    return {
        "serviceAccount": {"create": True, "name": CONTROLLER_ACCOUNT},
        "flags": {
            # Namespaced Roles instead of a ClusterRole: the controller reaches its own
            # namespace and the runners', nothing else.
            "watchSingleNamespace": runner_namespace,
            # An upgrade waits for running jobs instead of starting a second set of GPU runners.
            "updateStrategy": "eventual",
            "logLevel": "info",
            "logFormat": "json",
        },
        "metrics": {
            "controllerManagerAddr": f":{METRICS_PORT}",
            "listenerAddr": f":{METRICS_PORT}",
            "listenerEndpoint": METRICS_PATH,
        },
        "podSecurityContext": _arc_pod_security_context(),
        # The chart mounts an emptyDir on /tmp, the one place the controller writes.
        "securityContext": _arc_container_security_context(read_only_root=True),
        "resources": _resources(CONTROLLER_CPU_MILLIS, CONTROLLER_MEMORY_MIB),
        "nodeSelector": CPU_POOL_LABELS,
        # In a user's existing cluster the program's CPU pool is tainted for its own pods.
        "tolerations": [m.CPU_POOL_TOLERATION],
    }


def listener_template() -> dict:
    """The listener pod ARC starts in the controller's namespace: on the CPU pool, `restricted`.

    ARC merges this into its own pod (resourcebuilder.go, mergeListenerPodWithTemplate):
    the pod's security context, node selector and grace period are replaced, not merged.
    """
    return {
        "spec": {
            "securityContext": _arc_pod_security_context(),
            "nodeSelector": CPU_POOL_LABELS,
            "tolerations": [m.CPU_POOL_TOLERATION],
            "terminationGracePeriodSeconds": LISTENER_GRACE_SECONDS,
            "containers": [
                {
                    "name": LISTENER_CONTAINER,
                    "securityContext": _arc_container_security_context(read_only_root=False),
                    "resources": _resources(LISTENER_CPU_MILLIS, LISTENER_MEMORY_MIB),
                }
            ],
        }
    }


def runner_labels() -> dict:
    return {APP_NAME_LABEL: RUNNER_POD, PART_OF_LABEL: PART_OF}


def gpu_runner_pod_template(image: str, gpu_count: int, gpu_machine_type: str, deadline_minutes: int) -> dict:
    """The pod of one GPU runner, for one job: a whole GPU node, hardened, no credential of ours.

    ARC adds to the `runner` container the JIT configuration of this one runner (a Secret of
    its own, single-use); nothing else reaches the pod. The deadline stops a job that would
    hold a GPU node forever; an idle warm runner that reaches it is replaced by ARC.
    """
    share = runner_share(gpu_machine_type)
    container = {
        "name": RUNNER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": RUNNER_COMMAND,
        "resources": m.gpu_resources(gpu_count, share),
        # Jobs install tools and write their workspace inside the container; it is
        # thrown away with the pod after one job.
        "securityContext": m.container_security_context(read_only_root=False),
        "volumeMounts": [m.SHM_MOUNT],
        **m.listener_probes(),
    }
    return {
        "metadata": {"labels": runner_labels()},
        "spec": {
            "serviceAccountName": RUNNER_ACCOUNT,
            "automountServiceAccountToken": False,
            "securityContext": m.pod_security_context(),
            "nodeSelector": GPU_POOL_LABELS,
            "tolerations": [m.GPU_TOLERATION],
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline_minutes * 60,
            "terminationGracePeriodSeconds": m.TERMINATION_GRACE_SECONDS,
            "containers": [container],
            "volumes": [m.shm_volume(share)],
        },
    }


def scale_set_values(
    name: str,
    config_url: str,
    runner_group: str | None,
    min_runners: int,
    max_runners: int,
    controller_namespace: str,
    runner_template: dict,
) -> dict:
    """One GPU scale set: `runs-on: <name>`, from `min_runners` idle runners up to `max_runners`.

    containerMode stays unset: no privileged Docker-in-Docker, no Kubernetes-mode hooks,
    only the pod template as written.
    """
    values = {
        "githubConfigUrl": config_url,
        "githubConfigSecret": CREDENTIAL_SECRET,
        "runnerScaleSetName": name,
        "minRunners": min_runners,
        "maxRunners": max_runners,
        "controllerServiceAccount": {"name": CONTROLLER_ACCOUNT, "namespace": controller_namespace},
        "listenerTemplate": listener_template(),
        "template": runner_template,
    }
    if runner_group:
        values["runnerGroup"] = runner_group
    return values


def pod_monitoring_specs() -> dict[str, dict]:
    """Google Cloud Managed Service for Prometheus scrapes, by PodMonitoring name: ARC's controller
    and the listener, each on its named metrics port, in the controller's namespace."""

    def spec(labels: dict) -> dict:
        return {
            "selector": {"matchLabels": labels},
            "endpoints": [{"port": METRICS_PORT_NAME, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        }

    return {"arc-controller": spec(CONTROLLER_POD_LABELS), "arc-listener": spec(LISTENER_POD_LABELS)}


def runner_pod(template: dict, name: str, namespace: str) -> dict:
    """A runner pod as ARC makes it from the scale set's template, for checks that take whole objects."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **template.get("metadata", {})},
        "spec": template["spec"],
    }
