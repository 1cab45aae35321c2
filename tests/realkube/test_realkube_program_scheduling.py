"""The program's own pods on nodes shaped like its node pools, placed by the real scheduler.

What the mocked tests can only read off the manifests (node selectors, tolerations, the
placeholders' PriorityClass, the GPU quota), the real kube-scheduler, ResourceQuota
admission and Job, ReplicaSet and DaemonSet controllers of `scripts/kube-env` act on here,
with the program's objects applied as-is (warm runners on, `gpuMaxNodes: 2`). FakeNodes
stands in for GKE's pools: a CPU node, and two GPU nodes with the pool's label, taint and
one `nvidia.com/gpu` each, and for their kubelets (Leases, finishing deletions); a test
plays the kubelet's part when a runner's container ends. GPU runner Jobs are created
with the broker's rights, from its template, as the broker creates them.
"""

from dataclasses import dataclass

import pytest

from realkube.cluster import CPU_NODE, GPU_NODES, GPUS_PER_NODE, wait_until
from realkube.program_objects import deployed, gpu_runner_job
from runner_contract import BROKER, GPU_RESOURCE, JOB_NAME_LABEL


@pytest.fixture(scope="module")
def deployment(kube, nodes):
    with deployed(kube, "warm-runners") as applied:
        assert all(o.status < 400 for o in applied.outcomes), [str(o) for o in applied.outcomes]
        yield applied


def pods_of(kube, workload: dict) -> list[dict]:
    labels = ",".join(f"{k}={v}" for k, v in workload["spec"]["selector"]["matchLabels"].items())
    return kube.get(f"/api/v1/namespaces/{workload['metadata']['namespace']}/pods", labelSelector=labels)["items"]


def live(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def placed(kube, workload: dict, count: int) -> list[dict]:
    """The workload's `count` live pods, once every one of them is bound to a node."""

    def bound():
        found = live(pods_of(kube, workload))
        return len(found) == count and all(p["spec"].get("nodeName") for p in found) and found

    return wait_until(bound, f"{count} pods of {workload['metadata']['name']} on nodes", timeout_seconds=60)


def unschedulable(pod: dict) -> bool:
    return any(
        c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in pod.get("status", {}).get("conditions", [])
    )


def test_each_of_the_programs_pods_lands_in_its_pool(kube, deployment):
    rendered = deployment.rendered
    for name in ("base-runner", "runner-broker"):
        workload = rendered.one("Deployment", name)
        nodes = {p["spec"]["nodeName"] for p in placed(kube, workload, workload["spec"]["replicas"])}
        assert nodes == {CPU_NODE}, name
    placeholder = rendered.one("Deployment", "gpu-warm-placeholder")
    assert {p["spec"]["nodeName"] for p in placed(kube, placeholder, 1)} <= set(GPU_NODES)
    preloader = rendered.one("DaemonSet", "gpu-image-preloader")
    assert sorted(p["spec"]["nodeName"] for p in placed(kube, preloader, len(GPU_NODES))) == sorted(GPU_NODES)


@dataclass
class Runners:
    namespace: str
    jobs_path: str
    placeholder: dict
    """The warm placeholder as it was before any GPU runner asked for a node."""
    pods: dict[str, dict]
    """Each GPU runner Job's pod, by Job name, once scheduled."""


def runner_pod(kube, namespace: str, job: str) -> dict | None:
    found = live(kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"{JOB_NAME_LABEL}={job}")["items"])
    return found[0] if len(found) == 1 else None


def scheduled_runner(kube, namespace: str, job: str) -> dict:
    return wait_until(
        lambda: (pod := runner_pod(kube, namespace, job)) and pod["spec"].get("nodeName") and pod,
        f"GPU runner {job} to be scheduled",
        timeout_seconds=90,
    )


@pytest.fixture(scope="module")
def runners(kube, deployment) -> Runners:
    """As many GPU runners as the quota allows (`gpuMaxNodes`: 2), one after the other, as the broker makes them."""
    namespace = deployment.runner_namespace
    hard = kube.get(f"/api/v1/namespaces/{namespace}/resourcequotas/gpu-runners")["spec"]["hard"]
    assert hard == {f"requests.{GPU_RESOURCE}": str(len(GPU_NODES) * GPUS_PER_NODE)}
    (placeholder,) = placed(kube, deployment.rendered.one("Deployment", "gpu-warm-placeholder"), 1)
    broker = kube.as_user(
        f"system:serviceaccount:{deployment.system_namespace}:{BROKER}",
        ("system:serviceaccounts", f"system:serviceaccounts:{deployment.system_namespace}"),
    )
    jobs_path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    pods = {}
    for run_id in ("5001", "5002"):
        job = gpu_runner_job(deployment.rendered.gpu_runner_template, namespace, run_id)
        broker.create(jobs_path, job)
        pods[job["metadata"]["name"]] = scheduled_runner(kube, namespace, job["metadata"]["name"])
    return Runners(namespace, jobs_path, placeholder, pods)


def test_gpu_runners_land_on_gpu_nodes_the_second_by_preempting_the_warm_placeholder(kube, deployment, runners):
    nodes = [pod["spec"]["nodeName"] for pod in runners.pods.values()]
    assert sorted(nodes) == sorted(GPU_NODES)
    # The first took the free GPU node; the second, the placeholder's, by real preemption.
    assert nodes[1] == runners.placeholder["spec"]["nodeName"]
    system = deployment.system_namespace
    preempted = kube.get(
        f"/api/v1/namespaces/{system}/events",
        fieldSelector=",".join((f"involvedObject.name={runners.placeholder['metadata']['name']}", "reason=Preempted")),
    )["items"]
    assert preempted, "no Preempted event for the placeholder"
    assert runners.pods and list(runners.pods.values())[1]["metadata"]["uid"] in preempted[0]["message"]
    assert runners.placeholder["spec"]["priority"] < list(runners.pods.values())[1]["spec"].get("priority", 0)

    # The Deployment asks for a new placeholder at once; it waits and preempts nothing.
    placeholder = deployment.rendered.one("Deployment", "gpu-warm-placeholder")
    (waiting,) = wait_until(
        lambda: [p for p in live(pods_of(kube, placeholder)) if unschedulable(p)],
        "the new placeholder to wait for a node",
    )
    assert waiting["spec"]["preemptionPolicy"] == "Never"
    assert not waiting["spec"].get("nodeName")


def test_the_quota_holds_the_runner_beyond_gpu_max_nodes_until_one_finishes(kube, deployment, runners):
    namespace = runners.namespace
    broker = kube.as_user(
        f"system:serviceaccount:{deployment.system_namespace}:{BROKER}",
        ("system:serviceaccounts", f"system:serviceaccounts:{deployment.system_namespace}"),
    )
    job = gpu_runner_job(deployment.rendered.gpu_runner_template, namespace, "5003")
    name = job["metadata"]["name"]
    broker.create(runners.jobs_path, job)  # the Job is admitted; its pod is not

    def refusal():
        events = kube.get(
            f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name},reason=FailedCreate"
        )["items"]
        return events and events[0]["message"]

    message = wait_until(refusal, f"Job {name} to be refused a pod")
    assert "exceeded quota: gpu-runners" in message, message
    assert runner_pod(kube, namespace, name) is None

    # One runner's job ends: its container exits, and the kubelet (played here) says so.
    finished_job, finished = next(iter(runners.pods.items()))
    kube.patch(
        f"/api/v1/namespaces/{namespace}/pods/{finished['metadata']['name']}/status", {"status": {"phase": "Succeeded"}}
    )

    pod = scheduled_runner(kube, namespace, name)
    assert pod["spec"]["nodeName"] in GPU_NODES
    assert kube.get(f"{runners.jobs_path}/{finished_job}")["status"].get("succeeded") == 1
