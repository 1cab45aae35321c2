"""Authentication and authorization as the real API server does them: RBAC's escalation
check, and ServiceAccount tokens bound to a pod and an audience."""

import pytest

from realkube.cluster import ApiError, pod_manifest, wait_until
from runner_contract import BROKER_AUDIENCE

RBAC = "/apis/rbac.authorization.k8s.io/v1"
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"


def role(name, *rules):
    return {
        "metadata": {"name": name},
        "rules": [{"apiGroups": [group], "resources": [resource], "verbs": verbs} for group, resource, verbs in rules],
    }


def test_a_role_cannot_grant_what_its_creator_lacks(kube, namespace):
    roles = f"{RBAC}/namespaces/{namespace}/roles"
    kube.create(
        roles,
        role(
            "role-writer",
            ("rbac.authorization.k8s.io", "roles", ["create"]),
            ("rbac.authorization.k8s.io", "rolebindings", ["create"]),
            ("", "pods", ["get", "list"]),
        ),
    )
    kube.create(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": "alice"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "role-writer"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        },
    )
    alice = kube.as_user("alice")

    alice.create(roles, role("pod-reader", ("", "pods", ["get"])))
    for rules in ([("", "secrets", ["get"])], [("", "pods", ["delete"])], [("", "pods", ["*"])]):
        with pytest.raises(ApiError) as refused:
            alice.create(roles, role("more", *rules))
        assert refused.value.status == 403
        assert "attempting to grant RBAC permissions not currently held" in refused.value.message
    with pytest.raises(ApiError) as refused:
        alice.create(
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            {
                "metadata": {"name": "admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
            },
        )
    assert refused.value.status == 403
    with pytest.raises(ApiError) as refused:
        alice.get(f"/api/v1/namespaces/{namespace}/secrets")
    assert refused.value.status == 403


def review(kube, token, audience):
    return kube.create(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [audience]},
        },
    )["status"]


def test_a_pod_bound_token_is_good_for_its_audience_only_and_only_while_the_pod_exists(kube, namespace):
    kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "runner"}})
    pod = kube.create(f"/api/v1/namespaces/{namespace}/pods", pod_manifest("runner-0", serviceAccountName="runner"))
    uid = pod["metadata"]["uid"]
    token = kube.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/runner/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [BROKER_AUDIENCE],
                "expirationSeconds": 600,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "runner-0", "uid": uid},
            },
        },
    )["status"]["token"]

    granted = review(kube, token, BROKER_AUDIENCE)
    assert granted["authenticated"] is True
    assert granted["audiences"] == [BROKER_AUDIENCE]
    assert granted["user"]["username"] == f"system:serviceaccount:{namespace}:runner"
    assert granted["user"]["extra"][POD_NAME_CLAIM] == ["runner-0"]
    assert granted["user"]["extra"][POD_UID_CLAIM] == [uid]

    other = review(kube, token, "someone-else")
    assert not other.get("authenticated")
    assert "audience" in other["error"]
    with pytest.raises(ApiError) as refused:  # nor is it good for the API server itself
        kube.with_token(token).get(f"/api/v1/namespaces/{namespace}/pods")
    assert refused.value.status == 401

    kube.delete(f"/api/v1/namespaces/{namespace}/pods/runner-0", grace_period_seconds=0)

    def refusal():
        status = review(kube, token, BROKER_AUDIENCE)
        return None if status.get("authenticated") else status

    # The API server may answer from its cache of recent successful reviews for a few seconds.
    gone = wait_until(refusal, "the deleted pod's token to be refused")
    assert "token has been invalidated" in gone["error"], gone
