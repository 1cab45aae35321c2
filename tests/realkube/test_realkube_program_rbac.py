"""Who may do what in the cluster, asked of the real RBAC authorizer after the program's objects are applied.

The mocked tests (test_broker_program, test_ci_access...) read the Roles the program
registers and compare rules; here the real kube-apiserver of `scripts/kube-env` stands in
for GKE's authorizer, so aggregation, the default bindings every authenticated user has,
cluster-scoped grants and namespace edges all count. Each row of ACCESS is asked with a
SubjectAccessReview; then each identity's own SelfSubjectRulesReview (as the admin
impersonating it) shows it holds nothing beyond its rows: exactly the contract's list for
the broker, reads for CI, nothing for runners and the GPU node pods.

GKE names CI's Google service account to RBAC as a User with that email; the pods'
identities are ServiceAccounts, as the API server names them.
"""

import pytest

from realkube.cluster import ApiError, wait_until
from program.manifests.broker import CREDENTIAL_SECRET
from realkube.program_objects import deployed, gpu_runner_job
from runner_contract import APP_NAME_LABEL, BASE_RUNNER, BROKER, RUN_ID_LABEL, RUNNER_ANNOTATION

RUNNERS = "github-runners"
SYSTEM = "github-runners-system"
CLUSTER = ""  # cluster-wide
READ = ("get", "list", "watch")

# (who, verb, API group, resource[/subresource], namespace) -> allowed
ACCESS: list[tuple[str, str, str, str, str, bool]] = [
    # CI only reads the runners: their pods, logs, events and GPU runner Jobs.
    *[("ci", verb, "", "pods", RUNNERS, True) for verb in READ],
    ("ci", "get", "", "pods/log", RUNNERS, True),
    *[("ci", verb, "", "events", RUNNERS, True) for verb in READ],
    *[("ci", verb, "batch", "jobs", RUNNERS, True) for verb in READ],
    ("ci", "create", "batch", "jobs", RUNNERS, False),
    ("ci", "delete", "batch", "jobs", RUNNERS, False),
    ("ci", "create", "", "pods", RUNNERS, False),
    ("ci", "delete", "", "pods", RUNNERS, False),
    ("ci", "create", "", "pods/exec", RUNNERS, False),
    ("ci", "get", "", "secrets", RUNNERS, False),
    ("ci", "get", "", "configmaps", RUNNERS, False),
    ("ci", "list", "", "pods", SYSTEM, False),
    ("ci", "get", "", "secrets", SYSTEM, False),
    ("ci", "get", "", "configmaps", SYSTEM, False),
    ("ci", "list", "batch", "jobs", SYSTEM, False),
    ("ci", "list", "", "pods", CLUSTER, False),
    ("ci", "create", "authentication.k8s.io", "tokenreviews", CLUSTER, False),
    # The broker: exactly the contract's list.
    ("broker", "create", "authentication.k8s.io", "tokenreviews", CLUSTER, True),
    *[("broker", verb, "", "pods", RUNNERS, True) for verb in ("get", "list", "patch", "delete")],
    ("broker", "list", "", "events", RUNNERS, True),
    *[("broker", verb, "batch", "jobs", RUNNERS, True) for verb in ("get", "list", "create", "delete")],
    ("broker", "get", "apps", "replicasets", RUNNERS, True),
    ("broker", "create", "", "pods", RUNNERS, False),
    ("broker", "update", "", "pods", RUNNERS, False),
    ("broker", "create", "", "pods/exec", RUNNERS, False),
    ("broker", "get", "", "secrets", RUNNERS, False),
    ("broker", "get", "", "secrets", SYSTEM, False),
    ("broker", "list", "", "secrets", CLUSTER, False),
    ("broker", "get", "", "configmaps", SYSTEM, False),
    ("broker", "list", "", "pods", SYSTEM, False),
    ("broker", "get", "", "pods", "default", False),
    ("broker", "list", "", "pods", CLUSTER, False),
    ("broker", "create", "batch", "jobs", SYSTEM, False),
    ("broker", "patch", "batch", "jobs", RUNNERS, False),
    ("broker", "list", "apps", "replicasets", RUNNERS, False),
    ("broker", "get", "apps", "deployments", RUNNERS, False),
    ("broker", "create", "", "serviceaccounts/token", RUNNERS, False),
    ("broker", "create", "authorization.k8s.io", "subjectaccessreviews", CLUSTER, False),
    # Runners hold nothing.
    ("runner", "get", "", "pods", RUNNERS, False),
    ("runner", "list", "", "events", RUNNERS, False),
    ("runner", "create", "batch", "jobs", RUNNERS, False),
    ("runner", "get", "", "secrets", RUNNERS, False),
    ("runner", "get", "", "configmaps", RUNNERS, False),
    ("runner", "get", "", "secrets", SYSTEM, False),
    ("runner", "create", "", "pods/exec", RUNNERS, False),
    ("runner", "create", "authentication.k8s.io", "tokenreviews", CLUSTER, False),
    # Nor do the preloader's and the placeholders' pods (their namespace's default ServiceAccount).
    ("gpu-node-pods", "get", "", "secrets", SYSTEM, False),
    ("gpu-node-pods", "list", "", "secrets", SYSTEM, False),
    ("gpu-node-pods", "get", "", "configmaps", SYSTEM, False),
    ("gpu-node-pods", "list", "", "pods", SYSTEM, False),
    ("gpu-node-pods", "list", "", "pods", RUNNERS, False),
    ("gpu-node-pods", "create", "authentication.k8s.io", "tokenreviews", CLUSTER, False),
]

# What each identity holds in each namespace beyond what every authenticated user holds:
# (API group, resource, verb); the broker's TokenReview right is cluster-wide, so it shows in both.
TOKEN_REVIEW = {("authentication.k8s.io", "tokenreviews", "create")}
HOLDS = {
    ("ci", RUNNERS): {
        (group, resource, verb)
        for group, resources in (("", ("pods", "pods/log", "events")), ("batch", ("jobs",)))
        for resource in resources
        for verb in READ
    },
    ("ci", SYSTEM): set(),
    ("broker", RUNNERS): TOKEN_REVIEW
    | {("", "pods", verb) for verb in ("get", "list", "patch", "delete")}
    | {("", "events", "list"), ("apps", "replicasets", "get")}
    | {("batch", "jobs", verb) for verb in ("get", "list", "create", "delete")},
    ("broker", SYSTEM): TOKEN_REVIEW,
    ("runner", RUNNERS): set(),
    ("runner", SYSTEM): set(),
    ("gpu-node-pods", RUNNERS): set(),
    ("gpu-node-pods", SYSTEM): set(),
}


def service_account(namespace: str, name: str) -> tuple[str, tuple[str, ...]]:
    return (
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


@pytest.fixture(scope="module")
def deployment(kube):
    with deployed(kube, "defaults") as applied:
        assert (applied.runner_namespace, applied.system_namespace) == (RUNNERS, SYSTEM)
        assert all(o.status < 400 for o in applied.outcomes), [str(o) for o in applied.outcomes]
        yield applied


@pytest.fixture(scope="module")
def identities(deployment) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each identity as the API server sees it, read from the objects the program applied."""
    rendered = deployment.rendered
    (ci_subject,) = rendered.one("RoleBinding", "ci-runner-launcher")["subjects"]
    assert ci_subject["kind"] == "User"
    (broker_subject,) = rendered.one("RoleBinding", "runner-broker")["subjects"]
    runner_pods = rendered.one("Deployment", "base-runner")["spec"]["template"]["spec"]
    gpu_node_accounts = {
        w["spec"]["template"]["spec"].get("serviceAccountName", "default")
        for w in (
            rendered.one("DaemonSet", "gpu-image-preloader"),
            *[d for d in rendered.of_kind("Deployment") if d["metadata"]["name"] == "gpu-warm-placeholder"],
        )
    }
    assert gpu_node_accounts == {"default"}
    return {
        "ci": (ci_subject["name"], ("system:authenticated",)),
        "broker": service_account(broker_subject["namespace"], broker_subject["name"]),
        "runner": service_account(RUNNERS, runner_pods["serviceAccountName"]),
        "gpu-node-pods": service_account(SYSTEM, "default"),
    }


def access_review(kube, user, groups, verb, group, resource, namespace) -> dict:
    resource, _, subresource = resource.partition("/")
    attributes = {
        "verb": verb,
        "group": group,
        "resource": resource,
        "subresource": subresource,
        "namespace": namespace,
    }
    return kube.create(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": list(groups), "resourceAttributes": attributes},
        },
    )["status"]


def held(kube, user, groups, namespace) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) the identity may use in `namespace`, by its own rules review."""
    review = kube.as_user(user, tuple(g for g in groups if g != "system:authenticated")).create(
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": namespace}},
    )["status"]
    assert not review.get("incomplete"), review
    return {
        (group, resource, verb)
        for rule in review["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_real_authorizer_answers_every_row_of_the_table(kube, identities):
    answers, wrong = [], []
    for who, verb, group, resource, namespace, expected in ACCESS:
        user, groups = identities[who]
        status = access_review(kube, user, groups, verb, group, resource, namespace)
        allowed = bool(status.get("allowed"))
        answers.append(
            (
                who,
                verb,
                f"{group}/{resource}" if group else resource,
                namespace or "(cluster)",
                "allowed" if allowed else "refused",
            )
        )
        if allowed != expected:
            wrong.append(
                f"{who} {verb} {group}/{resource} in {namespace or '(cluster)'}: "
                f"{'allowed' if allowed else 'refused'} ({status.get('reason', '')})"
            )
    widths = [max(len(row[i]) for row in answers) for i in range(5)]
    print(f"\nwho is {', '.join(f'{who}={user}' for who, (user, _) in identities.items())}")
    for row in answers:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    assert not wrong, "\n".join(wrong)


def test_no_identity_holds_more_than_its_rows(kube, identities):
    nobody = held(kube, "nobody@example.com", (), RUNNERS)  # what every authenticated user may do
    for (who, namespace), expected in HOLDS.items():
        user, groups = identities[who]
        assert held(kube, user, groups, namespace) - nobody == expected, f"{who} in {namespace}"


def projected_token(pod: dict, volume: str) -> dict:
    """The serviceAccountToken source of one of the pod's projected volumes."""
    sources = next(v for v in pod["spec"]["volumes"] if v["name"] == volume)["projected"]["sources"]
    return next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)


def kubelet_token(kube, pod: dict, volume: str) -> str:
    """What the kubelet writes into the pod's projected token file: a TokenRequest bound to the pod."""
    source = projected_token(pod, volume)
    spec = {
        "expirationSeconds": source["expirationSeconds"],
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        },
    }
    if "audience" in source:
        spec["audiences"] = [source["audience"]]
    meta = pod["metadata"]
    return kube.create(
        f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{pod['spec']['serviceAccountName']}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )["status"]["token"]


def test_the_broker_makes_every_call_of_its_contract_with_its_own_pods_token(kube, deployment):
    """CONTRACT.md's list of the broker's Kubernetes calls, each made as the broker makes it, with the token the
    program's pod spec would have the kubelet write for it, about a runner pod holding the token its spec gives."""

    def first_pod(namespace, name):
        found = kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"{APP_NAME_LABEL}={name}")
        return found["items"][0] if found["items"] else None

    runner = wait_until(lambda: first_pod(RUNNERS, BASE_RUNNER), "a base runner pod")
    broker_pod = wait_until(lambda: first_pod(SYSTEM, BROKER), "the broker's pod")
    broker = kube.with_token(kubelet_token(kube, broker_pod, "kube-api"))
    audience = projected_token(runner, "broker-token")["audience"]
    name, uid = runner["metadata"]["name"], runner["metadata"]["uid"]
    pods, jobs = f"/api/v1/namespaces/{RUNNERS}/pods", f"/apis/batch/v1/namespaces/{RUNNERS}/jobs"

    review = broker.create(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": kubelet_token(kube, runner, "broker-token"), "audiences": [audience]},
        },
    )["status"]
    assert review.get("authenticated") is True, review
    assert review["user"]["username"] == f"system:serviceaccount:{RUNNERS}:github-runner"
    assert review["user"]["extra"]["authentication.kubernetes.io/pod-uid"] == [uid]

    assert broker.get(f"{pods}/{name}")["metadata"]["uid"] == uid
    (owner,) = runner["metadata"]["ownerReferences"]
    assert broker.get(f"/apis/apps/v1/namespaces/{RUNNERS}/replicasets/{owner['name']}")["metadata"]["ownerReferences"]
    assert name in {
        p["metadata"]["name"] for p in broker.get(pods, labelSelector=f"{APP_NAME_LABEL}={BASE_RUNNER}")["items"]
    }
    broker.get(f"/api/v1/namespaces/{RUNNERS}/events", fieldSelector=f"involvedObject.name={name}")
    granted = broker.patch(f"{pods}/{name}", {"metadata": {"uid": uid, "annotations": {RUNNER_ANNOTATION: name}}})
    assert granted["metadata"]["annotations"][RUNNER_ANNOTATION] == name

    job = gpu_runner_job(deployment.rendered.gpu_runner_template, RUNNERS, run_id="6001")
    created = broker.create(jobs, job)
    assert broker.get(f"{jobs}/{job['metadata']['name']}")["metadata"]["uid"] == created["metadata"]["uid"]
    assert [j["metadata"]["name"] for j in broker.get(jobs, labelSelector=f"{RUN_ID_LABEL}=6001")["items"]] == [
        job["metadata"]["name"]
    ]
    broker.request(
        "DELETE",
        f"{jobs}/{job['metadata']['name']}",
        {"propagationPolicy": "Background", "preconditions": {"uid": created["metadata"]["uid"]}},
    )
    broker.request("DELETE", f"{pods}/{name}", {"preconditions": {"uid": uid}})

    with pytest.raises(ApiError) as refused:
        broker.get(f"/api/v1/namespaces/{SYSTEM}/secrets/{CREDENTIAL_SECRET}")
    assert refused.value.status == 403
