"""The smoke test's one way into the cluster (`scripts/smoke/cluster.py`), with the real
kubectl against a real API server: CI's Role as the program writes it passes the smoke
test's read-only check, asked as CI with `kubectl auth can-i --as`; a CI that may write is
caught; and the reads and writes the smoke test makes answer as it expects."""

import shutil

import pytest

from program.components.ci_access import CI_RULES
from realkube.cluster import wait_until
from runner_contract import CI_ROLE, JOB_NAME_LABEL
from scripts.smoke.ci_access import MUST_ALLOW, MUST_REFUSE
from scripts.smoke.cluster import Kubectl

CI = "ci@acme-ml.iam.gserviceaccount.com"
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
def cluster(admin_kubeconfig) -> Kubectl:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not on PATH (scripts/kube-env build puts one in its cache's bin folder)")
    return Kubectl(kubectl, admin_kubeconfig)


def bind_ci(kube, namespace: str, rules: list[dict]) -> None:
    kube.create(f"{RBAC}/namespaces/{namespace}/roles", {"metadata": {"name": CI_ROLE}, "rules": rules})
    kube.create(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": CI_ROLE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CI_ROLE},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CI}],
        },
    )


def test_cis_role_as_the_program_writes_it_reads_and_writes_nothing(kube, namespace, cluster):
    system = f"{namespace}-system"
    kube.create("/api/v1/namespaces", {"metadata": {"name": system}})
    try:
        bind_ci(kube, namespace, CI_RULES)
        where = {"runner": namespace, "system": system}

        assert cluster.get("rolebinding", CI_ROLE, namespace)["subjects"][0]["name"] == CI
        assert [f"{v} {r}" for v, r in MUST_ALLOW if not cluster.can_i(v, r, namespace, CI)] == []
        assert [f"{v} {r} in {p}" for v, r, p in MUST_REFUSE if cluster.can_i(v, r, where[p], CI)] == []
        assert cluster.can_i("list", "pods", namespace, "someone-else@acme.com") is False
    finally:
        kube.delete(f"/api/v1/namespaces/{system}")


def test_a_ci_that_may_write_is_caught(kube, namespace, cluster):
    bind_ci(
        kube,
        namespace,
        [
            *CI_RULES,
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        ],
    )

    refused_rights = {f"{v} {r}" for v, r, p in MUST_REFUSE if p == "runner" and cluster.can_i(v, r, namespace, CI)}
    assert refused_rights == {"create jobs.batch", "create pods/exec"}


def test_the_smoke_tests_reads_and_writes_answer_as_it_expects(kube, namespace, cluster):
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gpu-runner-9-1", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "runner", "image": "registry.invalid/runner:1"}],
                }
            },
        },
    }

    created = cluster.create(job)
    assert created["metadata"]["creationTimestamp"] and created["metadata"]["uid"]
    assert cluster.get("job", "gpu-runner-9-1", namespace)["metadata"]["uid"] == created["metadata"]["uid"]
    assert cluster.get("configmap", "gpu-runner-template", namespace) is None
    pods = wait_until(
        lambda: cluster.list("pods", namespace, labels=f"{JOB_NAME_LABEL}=gpu-runner-9-1"),
        "the Job controller makes its pod",
    )
    events = cluster.list("events", namespace, fields=f"involvedObject.name={pods[0]['metadata']['name']}")
    assert isinstance(events, list)
    cluster.delete_jobs(["gpu-runner-9-1", "never-was"], namespace)
    wait_until(lambda: cluster.get("job", "gpu-runner-9-1", namespace) is None, "the Job is gone")
