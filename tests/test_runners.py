"""The runners in the cluster, as the whole program registers them."""

import json

import yaml

from program_harness import GITHUB_TOKEN, RUNNER_TOKEN, is_secret, run_program

NS = "kubernetes:core/v1:Namespace"
SECRET = "kubernetes:core/v1:Secret"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
PROVIDER = "pulumi:providers:kubernetes"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
RUNNER_NS = "github-runners"
SYSTEM_NS = "github-runners-system"
BROKER_URL = "http://runner-broker.github-runners-system.svc.cluster.local:80"


def base_runner(program):
    return program.one(DEPLOYMENT, "base-runner")


def base_pod(program):
    return base_runner(program).inputs["spec"]["template"]["spec"]


def gpu_pod(program):
    return yaml.safe_load(program.outputs["gpuRunnerTemplate"])["spec"]["template"]["spec"]


def env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def in_namespace(program, namespace):
    return [
        r
        for r in program.resources
        if r.typ.startswith("kubernetes:") and r.inputs.get("metadata", {}).get("namespace") == namespace
    ]


def test_every_in_cluster_resource_uses_the_explicit_provider_built_from_the_cluster(program):
    provider = program.one(PROVIDER)
    assert is_secret(provider.raw_inputs["kubeconfig"])
    assert provider.inputs["deleteUnreachable"] == "true"  # destroy still finishes if the cluster is gone
    assert (
        yaml.safe_load(provider.inputs["kubeconfig"])["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    )
    assert program.depends_on(provider, program.one("gcp:container/cluster:Cluster"))
    kubernetes = [r for r in program.resources if r.typ.startswith("kubernetes:")]
    assert len(kubernetes) >= 18
    for resource in kubernetes:
        assert resource.provider.rsplit("::", 1)[0] == provider.urn, resource.name


def test_everything_namespaced_is_in_the_runner_or_the_broker_namespace(program):
    cluster_scoped = (
        NS,
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole",
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
    )
    for resource in program.resources:
        if resource.typ.startswith("kubernetes:") and resource.typ not in cluster_scoped:
            assert resource.inputs["metadata"]["namespace"] in (RUNNER_NS, SYSTEM_NS), resource.name
            assert resource.inputs["metadata"]["name"], resource.name


def test_namespaces_follow_config():
    program = run_program({"gke-gpu-runners:namespace": "ci-gpus"})
    assert {n.inputs["metadata"]["name"] for n in program.of_type(NS)} == {"ci-gpus", "ci-gpus-system"}
    assert program.outputs["namespace"] == "ci-gpus"
    assert env(base_pod(program)["containers"][0])["RUNNER_BROKER_URL"] == (
        "http://runner-broker.ci-gpus-system.svc.cluster.local:80"
    )


def test_both_namespaces_enforce_the_restricted_pod_security_standard(program):
    for namespace in program.of_type(NS):
        assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert program.outputs["namespace"] == RUNNER_NS


def test_no_secret_in_the_runner_namespace_holds_any_configured_token():
    tokens = {"github": "gh-token", "runner": "runner-pat", "registry": "push-token", "pull": "pull-token"}
    program = run_program(
        {
            "github:token": tokens["github"],
            "gke-gpu-runners:runnerToken": tokens["runner"],
            "gke-gpu-runners:registryToken": tokens["registry"],
            "gke-gpu-runners:registryPullToken": tokens["pull"],  # no longer used: it must land nowhere
        }
    )
    runner_namespace = json.dumps([r.inputs for r in in_namespace(program, RUNNER_NS)])
    for token in tokens.values():
        assert token not in runner_namespace
    assert [s for s in program.of_type(SECRET) if s.inputs["metadata"]["namespace"] == RUNNER_NS] == []


def test_no_registry_credential_anywhere_in_the_cluster(program):
    for secret in program.of_type(SECRET):
        assert secret.inputs["type"] != "kubernetes.io/dockerconfigjson", secret.name
    for pod in (base_pod(program), gpu_pod(program)):
        assert "imagePullSecrets" not in pod


def test_runner_pods_mount_no_credential_and_carry_the_projected_broker_token(program):
    for pod in (base_pod(program), gpu_pod(program)):
        (container,) = pod["containers"]
        assert pod["automountServiceAccountToken"] is False
        assert not [v for v in pod["volumes"] if "secret" in v]
        assert not [e for e in container["env"] if "valueFrom" in e]
        assert {k: v for k, v in env(container).items() if k != "GPU_RUNNER_RUN_ID"} == {
            "RUNNER_BROKER_URL": BROKER_URL,
            "RUNNER_BROKER_TOKEN_FILE": "/run/secrets/runner-broker/token",
        }
        (token,) = [v for v in pod["volumes"] if "projected" in v]
        assert token["projected"]["sources"] == [
            {
                "serviceAccountToken": {
                    "audience": "runner-broker.gke-gpu-runners",
                    "expirationSeconds": 600,
                    "path": "token",
                }
            }
        ]


def test_base_runner_is_a_deployment_of_the_configured_size_on_the_cpu_pool(program):
    deployment = base_runner(program).inputs
    assert deployment["metadata"]["name"] == "base-runner"
    assert deployment["spec"]["replicas"] == 2  # one per GPU node: runs started together do not queue
    pod = base_pod(program)
    assert pod["nodeSelector"] == {"gpu": "false"}
    # Only the CPU pool's own taint (it has one in an existing cluster); never the GPU pool's.
    assert pod["tolerations"] == [
        {"key": "gke-gpu-runners/pool", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}
    ]
    assert base_runner(run_program({"gke-gpu-runners:baseRunnerReplicas": "3"})).inputs["spec"]["replicas"] == 3


def test_runners_run_the_published_digest_as_the_cluster_pulls_it(program):
    published = program.outputs["runnerImage"]
    pulled = program.outputs["clusterRunnerImage"]
    assert published.startswith("ghcr.io/acme/models/github-runner@sha256:")
    assert pulled == "us-central1-docker.pkg.dev/acme-ml/gpu-runners-images/github-runner@" + published.split("@")[1]
    assert base_pod(program)["containers"][0]["image"] == pulled
    assert gpu_pod(program)["containers"][0]["image"] == pulled


def test_base_runner_is_hardened(program):
    pod = base_pod(program)
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["runAsUser"] >= 10000
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) >= {"cpu", "memory"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["pgrep", "-f", "Runner.Listener"], probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "broker retries must not count as death"
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_base_runner_waits_for_the_cpu_pool_and_not_for_the_gpu_pool(program):
    deployment = base_runner(program)
    assert program.depends_on(deployment, program.one("gcp:container/nodePool:NodePool", "cpu-pool"))
    assert not program.depends_on(deployment, program.one("gcp:container/nodePool:NodePool", "gpu-pool"))


def test_gpu_pool_does_not_wait_for_anything_in_the_cluster(program):
    gpu_pool = program.one("gcp:container/nodePool:NodePool", "gpu-pool")
    for resource in program.resources:
        if resource.typ.startswith("kubernetes:"):
            assert not program.depends_on(gpu_pool, resource)


def test_gpu_runner_template_is_published_as_configmap_and_output(program):
    configmap = program.one(CONFIGMAP, "gpu-runner-template").inputs
    assert configmap["metadata"]["name"] == "gpu-runner-template"
    assert configmap["data"] == {"runner-gpu.yaml": program.outputs["gpuRunnerTemplate"]}
    job = yaml.safe_load(program.outputs["gpuRunnerTemplate"])
    assert job["kind"] == "Job"
    assert job["metadata"]["name"] == "gpu-runner-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT}"


def test_gpu_runner_template_follows_gpu_count_and_deadline():
    program = run_program({"gke-gpu-runners:gpuCount": "2", "gke-gpu-runners:gpuRunnerDeadlineMinutes": "90"})
    job = yaml.safe_load(program.outputs["gpuRunnerTemplate"])
    limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "2"
    assert job["spec"]["activeDeadlineSeconds"] == 90 * 60


def test_gpu_runner_is_sized_to_the_gpu_machine():
    job = yaml.safe_load(run_program({"gke-gpu-runners:gpuType": "nvidia-tesla-a100"}).outputs["gpuRunnerTemplate"])
    requests = job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert requests["cpu"] == "10900m"  # a2-highgpu-1g: 12 vCPUs, less GKE's share
    assert int(requests["memory"].removesuffix("Mi")) > 70 * 1024


def test_the_runner_namespace_may_request_no_more_gpus_than_the_pool_holds(program):
    (quota,) = program.of_type("kubernetes:core/v1:ResourceQuota")
    assert quota.inputs["metadata"]["namespace"] == RUNNER_NS
    assert quota.inputs["spec"] == {"hard": {"requests.nvidia.com/gpu": "2"}}  # gpuMaxNodes 2 x gpuCount 1
    bigger = run_program(
        {"gke-gpu-runners:gpuMaxNodes": "3", "gke-gpu-runners:gpuType": "nvidia-l4", "gke-gpu-runners:gpuCount": "4"}
    )
    assert bigger.one("kubernetes:core/v1:ResourceQuota").inputs["spec"]["hard"]["requests.nvidia.com/gpu"] == "12"


def test_runner_pods_accept_no_ingress(program):
    policy = next(
        p.inputs
        for p in program.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.inputs["metadata"]["namespace"] == RUNNER_NS
    )
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_runner_service_account_mounts_no_token_and_has_no_rights(program):
    accounts = {a.inputs["metadata"]["name"]: a.inputs for a in program.of_type("kubernetes:core/v1:ServiceAccount")}
    assert accounts["github-runner"]["automountServiceAccountToken"] is False
    assert base_pod(program)["serviceAccountName"] == "github-runner"
    for binding in program.of_type(BINDING) + program.of_type(
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
    ):
        assert "github-runner" not in [s["name"] for s in binding.inputs["subjects"]], binding.name


def test_brokers_rights_in_the_runner_namespace_are_exactly_the_calls_the_contract_lists(program):
    role = next(r.inputs for r in program.of_type(ROLE) if r.inputs["metadata"]["name"] == "runner-broker")
    assert role["metadata"]["namespace"] == RUNNER_NS
    assert sorted((tuple(r["apiGroups"]), tuple(r["resources"]), tuple(sorted(r["verbs"]))) for r in role["rules"]) == [
        (("",), ("events",), ("list",)),
        (("",), ("pods",), ("delete", "get", "list", "patch")),  # patch: the grant annotation
        (("apps",), ("replicasets",), ("get",)),
        (("batch",), ("jobs",), ("create", "delete", "get", "list")),
    ]
    assert not [r for r in role["rules"] if "secrets" in r["resources"]]
    binding = next(b.inputs for b in program.of_type(BINDING) if b.inputs["metadata"]["name"] == "runner-broker")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runner-broker"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "runner-broker", "namespace": SYSTEM_NS}]


def test_runner_pods_match_the_image_user_and_probe_with_a_tool_the_image_installs():
    from program.manifests.runners import RUNNER_UID
    from program_harness import ROOT

    dockerfile = (ROOT / "runner_image" / "Dockerfile").read_text()
    assert f"\nUSER {RUNNER_UID}\n" in dockerfile
    assert "procps" in dockerfile  # pgrep, which the probes run


def test_the_github_token_is_used_only_by_the_github_provider_and_the_image_push(program):
    holders = {r.typ for r in program.resources if GITHUB_TOKEN in json.dumps(r.inputs)}
    # Not the broker: its credential is runnerToken alone, never a fallback to github:token.
    assert holders == {"pulumi:providers:github", "docker:index/image:Image"}
    (holder,) = [s for s in program.of_type(SECRET) if RUNNER_TOKEN in json.dumps(s.inputs)]
    assert holder.inputs["metadata"]["namespace"] == SYSTEM_NS
