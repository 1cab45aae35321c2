"""Admission as the real API server does it: Pod Security and ResourceQuota."""

import pytest

from realkube.cluster import ApiError, pod_manifest, wait_until
from runner_contract import GPU_RESOURCE

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def label_restricted(kube, namespace):
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": RESTRICTED}})


def privileged_pod(name):
    pod = pod_manifest(name)
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    return pod


def test_a_restricted_namespace_refuses_a_privileged_pod_and_admits_a_restricted_one(kube, namespace):
    label_restricted(kube, namespace)
    pods = f"/api/v1/namespaces/{namespace}/pods"

    with pytest.raises(ApiError) as refused:
        kube.create(pods, privileged_pod("privileged"))

    assert refused.value.status == 403
    assert 'violates PodSecurity "restricted:latest"' in refused.value.message
    assert "privileged" in refused.value.message
    assert kube.create(pods, pod_manifest("restricted"))["metadata"]["name"] == "restricted"


def test_a_controller_cannot_create_what_pod_security_refuses(kube, namespace):
    """A workload object is only warned about; the pods its controller makes are refused."""
    label_restricted(kube, namespace)
    template = {"metadata": {"labels": {"app": "privileged"}}, "spec": privileged_pod("x")["spec"]}
    kube.create(
        f"/apis/apps/v1/namespaces/{namespace}/replicasets",
        {
            "metadata": {"name": "privileged"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "privileged"}}, "template": template},
        },
    )

    def failure():
        rs = kube.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets/privileged")
        return [c for c in rs.get("status", {}).get("conditions", []) if c["type"] == "ReplicaFailure"]

    (condition,) = wait_until(failure, "the ReplicaSet to report it cannot create its pod")
    assert condition["reason"] == "FailedCreate"
    assert "violates PodSecurity" in condition["message"]
    assert kube.get(f"/api/v1/namespaces/{namespace}/pods")["items"] == []


def test_a_gpu_quota_refuses_the_pod_beyond_it(kube, namespace):
    quotas = f"/api/v1/namespaces/{namespace}/resourcequotas"
    kube.create(quotas, {"metadata": {"name": "gpus"}, "spec": {"hard": {f"requests.{GPU_RESOURCE}": "1"}}})
    # Admission refuses every pod until the quota controller has computed the quota's usage.
    wait_until(lambda: kube.get(f"{quotas}/gpus").get("status", {}).get("hard"), "the quota's status")
    pods = f"/api/v1/namespaces/{namespace}/pods"
    # No toleration: these pods stay unscheduled and hold no node's GPU.
    first = pod_manifest("first", gpus=1, tolerations=[])

    kube.create(pods, first)
    with pytest.raises(ApiError) as refused:
        kube.create(pods, pod_manifest("second", gpus=1, tolerations=[]))

    assert refused.value.status == 403
    assert "exceeded quota: gpus" in refused.value.message
    assert f"requests.{GPU_RESOURCE}=1" in refused.value.message
    assert kube.create(pods, pod_manifest("cpu-only"))


def test_the_quota_admits_the_next_pod_once_one_is_gone(kube, namespace):
    quotas = f"/api/v1/namespaces/{namespace}/resourcequotas"
    kube.create(quotas, {"metadata": {"name": "gpus"}, "spec": {"hard": {f"requests.{GPU_RESOURCE}": "1"}}})
    wait_until(lambda: kube.get(f"{quotas}/gpus").get("status", {}).get("hard"), "the quota's status")
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, pod_manifest("first", gpus=1, tolerations=[]))

    kube.delete(f"{pods}/first")

    def admitted():
        # The quota controller frees the deleted pod's GPU in the quota's usage shortly after.
        try:
            return kube.create(pods, pod_manifest("second", gpus=1, tolerations=[]))
        except ApiError as error:
            assert "exceeded quota" in error.message, error
            return None

    wait_until(admitted, "the quota to admit the second pod")
