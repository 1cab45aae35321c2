"""The real scheduler on the fake nodes: the GPU pool's taint, label and `nvidia.com/gpu`
capacity, and priority preemption of warm placeholders."""

import uuid

from realkube.cluster import CPU_NODE, GPU_NODES, pod_manifest, pod_spec, wait_until
from runner_contract import GPU_POOL_LABELS


def pod(kube, namespace, name):
    return kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def node_of(kube, namespace, name):
    return pod(kube, namespace, name)["spec"].get("nodeName")


def scheduled_node(kube, namespace, name):
    return wait_until(lambda: node_of(kube, namespace, name), f"{name} to be scheduled")


def unschedulable(kube, namespace, name):
    conditions = pod(kube, namespace, name).get("status", {}).get("conditions", [])
    return any(c["type"] == "PodScheduled" and c["reason"] == "Unschedulable" for c in conditions)


def test_gpu_pods_land_on_gpu_nodes_and_other_pods_never_do(kube, namespace):
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, pod_manifest("gpu", gpus=1, nodeSelector=dict(GPU_POOL_LABELS)))
    for i in range(3):
        kube.create(pods, pod_manifest(f"cpu-{i}"))
    # Asks for the GPU pool but does not tolerate its taint.
    kube.create(pods, pod_manifest("intolerant", gpus=1, tolerations=[], nodeSelector=dict(GPU_POOL_LABELS)))

    assert scheduled_node(kube, namespace, "gpu") in GPU_NODES
    for i in range(3):
        assert scheduled_node(kube, namespace, f"cpu-{i}") == CPU_NODE
    wait_until(lambda: unschedulable(kube, namespace, "intolerant"), "the intolerant pod to be refused a node")
    assert node_of(kube, namespace, "intolerant") is None


def test_a_runner_pod_preempts_a_warm_placeholder(kube, namespace):
    placeholder_class = f"placeholder-{uuid.uuid4().hex[:6]}"
    classes = "/apis/scheduling.k8s.io/v1/priorityclasses"
    kube.create(
        classes,
        {
            "metadata": {"name": placeholder_class},
            "value": -10,
            "preemptionPolicy": "Never",
            "description": "warm GPU node placeholders",
        },
    )
    try:
        # One placeholder per GPU node, each holding the node's GPU, as a Deployment keeps them.
        kube.create(
            f"/apis/apps/v1/namespaces/{namespace}/replicasets",
            {
                "metadata": {"name": "placeholder"},
                "spec": {
                    "replicas": len(GPU_NODES),
                    "selector": {"matchLabels": {"app": "placeholder"}},
                    "template": {
                        "metadata": {"labels": {"app": "placeholder"}},
                        "spec": pod_spec(
                            gpus=1, priorityClassName=placeholder_class, nodeSelector=dict(GPU_POOL_LABELS)
                        ),
                    },
                },
            },
        )

        def placeholders():
            return kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=placeholder")["items"]

        def all_placed():
            found = placeholders()
            return len(found) == len(GPU_NODES) and all(p["spec"].get("nodeName") for p in found) and found

        placed = wait_until(all_placed, "a placeholder on every GPU node", timeout_seconds=60)
        assert sorted(p["spec"]["nodeName"] for p in placed) == sorted(GPU_NODES)
        assert {p["spec"]["priority"] for p in placed} == {-10}

        kube.create(
            f"/api/v1/namespaces/{namespace}/pods", pod_manifest("runner", gpus=1, nodeSelector=dict(GPU_POOL_LABELS))
        )

        node = wait_until(
            lambda: node_of(kube, namespace, "runner"), "the runner to preempt a placeholder", timeout_seconds=60
        )
        assert node in GPU_NODES

        def settled():
            found = placeholders()
            bound = [p for p in found if p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]
            waiting = [p for p in found if not p["spec"].get("nodeName")]
            return (len(bound), len(waiting)) == (len(GPU_NODES) - 1, 1) and (bound, waiting)

        bound, waiting = wait_until(settled, "the preempted placeholder's replacement to wait")
        assert node not in {p["spec"]["nodeName"] for p in bound}
        # A placeholder never preempts anything: its replacement waits for a node.
        wait_until(
            lambda: unschedulable(kube, namespace, waiting[0]["metadata"]["name"]),
            "the replacement placeholder to be refused a node",
        )
    finally:
        kube.delete(f"{classes}/{placeholder_class}")
