"""Everything the program renders, admitted by a real API server, and the pods its workloads make.

Where the suite checks the program's Kubernetes objects against schemas
(test_kubernetes_schema: kubernetes-validate's OpenAPI documents) and rules
(test_checkov), here the real kube-apiserver of `scripts/kube-env` stands in for GKE's:
its validation, defaulting, server-side apply, Pod Security and ResourceQuota admission
decide, and the real Deployment, ReplicaSet, DaemonSet and Job controllers make the pods,
which the same admission must let through. FakeNodes stands in for GKE's node pools (a
CPU node and GPU nodes with the pool's label, taint and `nvidia.com/gpu`); no kubelet
runs, so images are never pulled and pods stay Pending on their node.
"""

import pytest

from realkube.cluster import GPU_NODES, ApiError, pod_manifest, wait_until
from realkube.program_objects import CONFIGURATIONS, Discovery, apply, apply_order, deployed, gpu_runner_job, rendered
from runner_contract import BROKER, JOB_NAME_LABEL

RESTRICTED = "pod-security.kubernetes.io/enforce"


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def deployment(request, kube, nodes):
    """One configuration at a time on the control plane, removed before the next."""
    with deployed(kube, request.param) as applied:
        yield applied


def selector(labels: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in labels.items())


def pods(kube, namespace, labels):
    return kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector(labels))["items"]


def failed_creates(kube, namespace):
    events = kube.get(f"/api/v1/namespaces/{namespace}/events", fieldSelector="reason=FailedCreate")["items"]
    return [f"{e['involvedObject']['kind']} {e['involvedObject']['name']}: {e['message']}" for e in events]


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS))
def test_the_apply_order_is_the_programs_dependency_order(configuration):
    program = rendered(configuration).program
    ordered = apply_order(program)
    assert len(ordered) == len(rendered(configuration).objects)
    for i, resource in enumerate(ordered):
        assert not any(program.depends_on(resource, later) for later in ordered[i + 1 :]), resource.name
    # The runner namespace waits for the broker, so that destroy removes the runners first.
    names = [r.name for r in ordered]
    assert names.index("broker-deployment") < names.index("runners-namespace")


def test_every_object_is_admitted_without_a_refusal_or_a_warning(deployment):
    refused = [str(o) for o in deployment.outcomes if o.status >= 400]
    warned = [str(o) for o in deployment.outcomes if o.warnings]
    print(f"{len(deployment.outcomes)} objects applied, {len(refused)} refused, {len(warned)} warned")

    assert not refused, "\n".join(refused)
    assert not warned, "\n".join(warned)
    assert {o.kind for o in deployment.outcomes} >= {
        "Namespace",
        "Deployment",
        "DaemonSet",
        "Secret",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ResourceQuota",
    }


def test_the_namespaces_carry_the_labels_the_program_gives_them(kube, deployment):
    for namespace in deployment.rendered.of_kind("Namespace"):
        name = namespace["metadata"]["name"]
        labels = kube.get(f"/api/v1/namespaces/{name}")["metadata"]["labels"]
        assert labels.items() >= namespace["metadata"]["labels"].items()
        assert labels[RESTRICTED] == "restricted"
    assert set(deployment.rendered.namespaces) == {deployment.runner_namespace, deployment.system_namespace}


def test_a_privileged_pod_is_refused_in_both_namespaces(kube, deployment):
    for namespace in (deployment.runner_namespace, deployment.system_namespace):
        pod = pod_manifest("privileged")
        pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
        with pytest.raises(ApiError) as refused:
            kube.create(f"/api/v1/namespaces/{namespace}/pods", pod)
        assert refused.value.status == 403
        assert 'violates PodSecurity "restricted:latest"' in refused.value.message


def test_every_pod_the_controllers_make_is_admitted(kube, deployment):
    """Base runners, the broker, placeholders (warm runners only) and the preloader on each GPU node."""
    expected = []
    for workload in deployment.rendered.of_kind("Deployment"):
        expected.append((workload, workload["spec"]["replicas"]))
    for daemon_set in deployment.rendered.of_kind("DaemonSet"):
        expected.append((daemon_set, len(GPU_NODES)))  # one on each GPU node, none on the CPU node
    assert {w["metadata"]["name"] for w, _ in expected} >= {"base-runner", "runner-broker", "gpu-image-preloader"}

    for workload, count in expected:
        meta = workload["metadata"]
        labels = workload["spec"]["selector"]["matchLabels"]
        made = wait_until(
            lambda meta=meta, labels=labels, count=count: (
                len(found := pods(kube, meta["namespace"], labels)) == count and found
            ),
            f"{count} pods of {workload['kind']} {meta['name']}",
        )
        assert all(not p["metadata"].get("deletionTimestamp") for p in made)

    for namespace in (deployment.runner_namespace, deployment.system_namespace):
        replica_sets = kube.get(f"/apis/apps/v1/namespaces/{namespace}/replicasets")["items"]
        failures = [
            c
            for rs in replica_sets
            for c in rs.get("status", {}).get("conditions", [])
            if c["type"] == "ReplicaFailure"
        ]
        assert not failures, failures
        assert not failed_creates(kube, namespace)
    preloader = deployment.rendered.one("DaemonSet", "gpu-image-preloader")["metadata"]
    status = kube.get(f"/apis/apps/v1/namespaces/{preloader['namespace']}/daemonsets/{preloader['name']}")["status"]
    assert (status["desiredNumberScheduled"], status["currentNumberScheduled"]) == (len(GPU_NODES), len(GPU_NODES))


def written(meta: dict) -> str:
    """What changes when someone writes the object: its spec's generation, or for objects without one, its version.
    (A controller's status update bumps the version of a workload, not its generation.)"""
    return str(meta.get("generation", meta["resourceVersion"]))


def test_applying_it_all_again_changes_nothing(kube, deployment):
    """An update with nothing new is a no-op, so `pulumi up` shows no drift from the server's defaults."""
    objects = deployment.rendered.objects
    discovery = Discovery(kube)
    before = {discovery.path(o): kube.get(discovery.path(o))["metadata"] for o in objects}

    outcomes = apply(kube, objects)

    assert [str(o) for o in outcomes if o.status != 200 or o.warnings] == []
    after = {path: kube.get(path)["metadata"] for path in before}
    changed = [path for path in before if written(after[path]) != written(before[path])]
    assert not changed


def test_a_gpu_runner_the_broker_makes_from_the_template_is_admitted_and_lands_on_a_gpu_node(kube, deployment):
    """Created and deleted with the broker's own rights, as the broker does it."""
    broker = kube.as_user(
        f"system:serviceaccount:{deployment.system_namespace}:{BROKER}",
        ("system:serviceaccounts", f"system:serviceaccounts:{deployment.system_namespace}"),
    )
    namespace = deployment.runner_namespace
    job = gpu_runner_job(deployment.rendered.gpu_runner_template, namespace, run_id="4242")
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    broker.create(jobs, job)
    name = job["metadata"]["name"]
    try:
        (pod,) = wait_until(lambda: pods(kube, namespace, {JOB_NAME_LABEL: name}), "the Job controller's pod")
        node = wait_until(
            lambda: kube.get(f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")["spec"].get("nodeName"),
            "the GPU runner to be scheduled",
            timeout_seconds=60,
        )
        assert node in GPU_NODES
        assert not failed_creates(kube, namespace)
    finally:
        # Its GPU goes back before the next configuration asks for one.
        broker.request("DELETE", f"{jobs}/{name}", {"propagationPolicy": "Background"})
        wait_until(lambda: not pods(kube, namespace, {JOB_NAME_LABEL: name}), "the GPU runner's pod to go")


def test_the_apply_reports_the_warnings_and_refusals_it_is_given(kube, namespace):
    """The checks above can fail: a pod template Pod Security would refuse is warned about, an unknown field refused."""
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {RESTRICTED: "restricted"}}})
    template = pod_manifest("x")
    template["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    privileged = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "privileged", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": template["spec"]},
        },
    }
    misspelt = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "misspelt", "namespace": namespace},
        "dataa": {"key": "value"},
    }

    warned, refused = apply(kube, [privileged, misspelt])

    assert warned.status == 201
    assert any("would violate PodSecurity" in w and "restricted:latest" in w for w in warned.warnings), warned
    # Server-side apply answers 500 to a field the schema lacks, where a create would answer 400.
    assert refused.status >= 400
    assert ".dataa: field not declared in schema" in refused.message, refused
