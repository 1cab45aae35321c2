"""The real ReplicaSet, Job, TTL-after-finished and garbage collector controllers."""

from realkube.cluster import pod_manifest, pod_spec, wait_until
from runner_contract import JOB_NAME_LABEL


def pods(kube, namespace, **labels):
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    return kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector)["items"]


def controller_of(pod):
    owners = [owner for owner in pod["metadata"].get("ownerReferences", []) if owner.get("controller")]
    return owners[0] if len(owners) == 1 else None


def test_the_replicaset_controller_owns_its_pods_and_replaces_a_deleted_one(kube, namespace):
    rs = kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/replicasets",
        {
            "metadata": {"name": "runners"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "runners"}},
                "template": {"metadata": {"labels": {"app": "runners"}}, "spec": pod_spec()},
            },
        },
    )

    def two_pods():
        found = pods(kube, namespace, app="runners")
        return found if len(found) == 2 else None

    made = wait_until(two_pods, "the ReplicaSet's two pods")
    for pod in made:
        owner = controller_of(pod)
        assert owner and (owner["kind"], owner["name"], owner["uid"]) == (
            "ReplicaSet",
            "runners",
            rs["metadata"]["uid"],
        )
    gone = made[0]["metadata"]["name"]
    kube.delete(f"/api/v1/namespaces/{namespace}/pods/{gone}")

    def replaced():
        names = {pod["metadata"]["name"] for pod in pods(kube, namespace, app="runners")}
        return len(names) == 2 and gone not in names

    wait_until(replaced, "a new pod in place of the deleted one")


def test_the_job_controller_makes_a_pod_and_a_finished_job_is_cleaned_up(kube, namespace):
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    job = kube.create(
        jobs,
        {
            "metadata": {"name": "gpu-runner-1-1"},
            "spec": {
                "backoffLimit": 0,
                "ttlSecondsAfterFinished": 0,
                "template": {"spec": pod_spec(restartPolicy="Never")},
            },
        },
    )

    (pod,) = wait_until(lambda: pods(kube, namespace, **{JOB_NAME_LABEL: "gpu-runner-1-1"}), "the Job's pod")
    owner = controller_of(pod)
    assert owner and (owner["kind"], owner["uid"]) == ("Job", job["metadata"]["uid"])

    # No kubelet: play its part and report the pod's container finished.
    name = pod["metadata"]["name"]
    kube.patch(f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": {"phase": "Succeeded"}})

    wait_until(lambda: not kube.exists(f"{jobs}/gpu-runner-1-1"), "the TTL controller to delete the finished Job")
    wait_until(
        lambda: not kube.exists(f"/api/v1/namespaces/{namespace}/pods/{name}"),
        "the garbage collector to delete the Job's pod",
    )


def test_a_deleted_namespace_goes_away_with_its_bound_pods(kube, namespace):
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods_path, pod_manifest("bound"))
    wait_until(lambda: kube.get(f"{pods_path}/bound")["spec"].get("nodeName"), "the pod to be scheduled")

    kube.delete(f"/api/v1/namespaces/{namespace}")

    wait_until(
        lambda: not kube.exists(f"/api/v1/namespaces/{namespace}"),
        "the namespace controller to finish the namespace",
        timeout_seconds=60,
    )
