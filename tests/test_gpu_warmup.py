"""What the program puts on GPU nodes besides runners: the image preloader and warm-capacity placeholders."""

import yaml

from program_harness import run_program

P = "gke-gpu-runners"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
PRIORITY = "kubernetes:scheduling.k8s.io/v1:PriorityClass"
SYSTEM_NS = "github-runners-system"


def preloader(program) -> dict:
    return program.one(DAEMONSET).inputs


def pod_of(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def placeholder(program) -> dict:
    return program.one(DEPLOYMENT, "placeholder").inputs


def gpu_runner_pod(program) -> dict:
    return yaml.safe_load(program.outputs["gpuRunnerTemplate"])["spec"]["template"]["spec"]


def all_pod_specs(program) -> list[dict]:
    workloads = program.of_type(DEPLOYMENT) + program.of_type(DAEMONSET)
    return [pod_of(w.inputs) for w in workloads] + [gpu_runner_pod(program)]


def test_the_preloader_runs_on_every_gpu_node_tolerating_its_taint(program):
    daemonset = preloader(program)
    assert daemonset["metadata"] == {
        "name": "gpu-image-preloader",
        "namespace": SYSTEM_NS,
        "labels": {"app.kubernetes.io/name": "gpu-image-preloader", "app.kubernetes.io/part-of": "gke-gpu-runners"},
    }
    pod = pod_of(daemonset)
    assert pod["nodeSelector"] == {"gpu": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_the_preloader_pulls_the_runner_image_asks_for_little_and_never_for_a_gpu(program):
    (container,) = pod_of(preloader(program))["containers"]
    assert container["image"] == program.outputs["clusterRunnerImage"]
    assert container["command"] == ["sleep", "infinity"]
    for kind in ("requests", "limits"):
        assert "nvidia.com/gpu" not in container["resources"][kind]
    assert container["resources"]["requests"] == {"cpu": "1m", "memory": "8Mi"}
    assert container["resources"]["limits"] == {"cpu": "10m", "memory": "16Mi"}


def test_the_preloader_meets_the_restricted_pod_security_standard(program):
    pod = pod_of(preloader(program))
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_placeholder_and_no_priority_class_without_warm_runners(program):
    assert not program.of_type(PRIORITY)
    assert [d.inputs["metadata"]["name"] for d in program.of_type(DEPLOYMENT)] == ["runner-broker", "base-runner"]


def test_warm_runners_are_placeholders_a_gpu_runner_preempts():
    program = run_program({f"{P}:gpuWarmRunners": "2"})
    (priority,) = program.of_type(PRIORITY)
    assert priority.inputs["value"] < 0
    assert priority.inputs["preemptionPolicy"] == "Never"
    assert priority.inputs["globalDefault"] is False
    deployment = placeholder(program)
    assert deployment["spec"]["replicas"] == 2
    pod = pod_of(deployment)
    assert (
        pod["priorityClassName"] == priority.inputs["metadata"]["name"] == "github-runners-system-gpu-warm-placeholder"
    )
    assert "priorityClassName" not in gpu_runner_pod(program)  # runners keep the default priority, 0
    assert pod["terminationGracePeriodSeconds"] <= 1


def test_a_placeholder_holds_exactly_the_node_a_gpu_runner_needs():
    program = run_program({f"{P}:gpuWarmRunners": "1", f"{P}:gpuType": "nvidia-l4", f"{P}:gpuCount": "2"})
    (hold,) = pod_of(placeholder(program))["containers"]
    (runner,) = gpu_runner_pod(program)["containers"]
    assert hold["resources"] == runner["resources"]
    assert hold["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod_of(placeholder(program))["tolerations"] == gpu_runner_pod(program)["tolerations"]
    assert pod_of(placeholder(program))["nodeSelector"] == {"gpu": "true"}


def test_placeholders_live_outside_the_runner_namespace_and_its_gpu_quota():
    program = run_program({f"{P}:gpuWarmRunners": "2"})
    assert placeholder(program)["metadata"]["namespace"] == SYSTEM_NS
    (quota,) = program.of_type("kubernetes:core/v1:ResourceQuota")
    assert quota.inputs["metadata"]["namespace"] == "github-runners"


def test_every_pod_the_program_runs_pulls_from_artifact_registry_by_digest():
    program = run_program({f"{P}:gpuWarmRunners": "1"})
    runner, broker = program.outputs["clusterRunnerImage"], program.outputs["brokerImage"]
    for pulled in (runner, broker):
        assert pulled.startswith("us-central1-docker.pkg.dev/") and "@sha256:" in pulled
    specs = all_pod_specs(program)
    assert len(specs) == 5  # broker, base runner, placeholder, preloader, GPU runner
    images = []
    for spec in specs:
        assert "imagePullSecrets" not in spec
        images += [container["image"] for container in spec["containers"]]
    assert sorted(images) == sorted([broker] + [runner] * 4)


def test_nothing_on_a_gpu_node_keeps_it_alive_once_idle():
    """The autoscaler removes a node whose pods are all DaemonSet pods, finished, or movable by eviction."""
    program = run_program()
    assert not program.of_type("kubernetes:policy/v1:PodDisruptionBudget")
    runner_job = yaml.safe_load(program.outputs["gpuRunnerTemplate"])
    # A finished runner's pod blocks nothing; it is gone after the TTL anyway.
    assert runner_job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert runner_job["spec"]["ttlSecondsAfterFinished"] > 0
    annotations = runner_job["spec"]["template"].get("metadata", {}).get("annotations", {})
    assert annotations.get("cluster-autoscaler.kubernetes.io/safe-to-evict") != "false"
    # Without warm runners, the only other pod on a GPU node is the preloader, a DaemonSet.
    on_gpu_nodes = [
        w
        for w in program.of_type(DEPLOYMENT) + program.of_type(DAEMONSET)
        if pod_of(w.inputs).get("nodeSelector") == {"gpu": "true"}
    ]
    assert [w.typ for w in on_gpu_nodes] == [DAEMONSET]
