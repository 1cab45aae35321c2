"""The runners in the cluster, as the whole program registers them."""

import base64
import json

import pytest
import yaml

from conftest import GITHUB_TOKEN, is_secret, run_program

NS = "kubernetes:core/v1:Namespace"
SECRET = "kubernetes:core/v1:Secret"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
PROVIDER = "pulumi:providers:kubernetes"


def base_pod(program):
    return program.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]


def env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_in_cluster_resource_uses_the_explicit_provider_built_from_the_cluster(program):
    provider = program.one(PROVIDER)
    assert is_secret(provider.raw_inputs["kubeconfig"])
    assert provider.inputs["deleteUnreachable"] == "true"  # destroy still finishes if the cluster is gone
    assert yaml.safe_load(provider.inputs["kubeconfig"])["users"][0]["user"]["exec"]["command"] == "gke-gcloud-auth-plugin"
    assert program.depends_on(provider, program.one("gcp:container/cluster:Cluster"))
    kubernetes = [r for r in program.resources if r.typ.startswith("kubernetes:")]
    assert len(kubernetes) >= 8
    for resource in kubernetes:
        assert resource.provider.rsplit("::", 1)[0] == provider.urn, resource.name


def test_everything_in_the_cluster_is_named_and_in_the_runner_namespace(program):
    for resource in program.resources:
        if resource.typ.startswith("kubernetes:") and resource.typ != NS:
            assert resource.inputs["metadata"]["namespace"] == "github-runners", resource.name
            assert resource.inputs["metadata"]["name"], resource.name


def test_namespace_follows_config():
    program = run_program({"gke-gpu-runners:namespace": "ci-gpus"})
    assert program.one(NS).inputs["metadata"]["name"] == "ci-gpus"
    assert program.outputs["namespace"] == "ci-gpus"
    assert {r.inputs["metadata"]["namespace"] for r in program.resources if r.typ.startswith("kubernetes:") and r.typ != NS} == {"ci-gpus"}


def test_namespace_enforces_the_restricted_pod_security_standard(program):
    labels = program.one(NS).inputs["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert program.outputs["namespace"] == "github-runners"


def test_pat_secret_holds_the_runner_token_as_a_pulumi_secret(program):
    pat = program.one(SECRET, "-pat")
    assert pat.inputs["metadata"]["name"] == "github-runner-pat"
    assert is_secret(pat.raw_inputs["stringData"])
    assert pat.inputs["stringData"] == {"token": GITHUB_TOKEN}


def test_runner_token_overrides_the_github_token_for_the_runners():
    program = run_program({"gke-gpu-runners:runnerToken": "runner-pat"})
    assert program.one(SECRET, "-pat").inputs["stringData"] == {"token": "runner-pat"}


def test_pull_secret_is_a_ghcr_dockerconfigjson_kept_secret(program):
    pull = program.one(SECRET, "-pull")
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert is_secret(pull.raw_inputs["stringData"])
    auths = json.loads(pull.inputs["stringData"][".dockerconfigjson"])["auths"]
    assert set(auths) == {"ghcr.io"}
    assert base64.b64decode(auths["ghcr.io"]["auth"]).decode() == f"Acme:{GITHUB_TOKEN}"


def test_base_runner_is_a_deployment_of_the_configured_size_on_the_cpu_pool(program):
    deployment = program.one(DEPLOYMENT).inputs
    assert deployment["metadata"]["name"] == "base-runner"
    assert deployment["spec"]["replicas"] == 1
    pod = base_pod(program)
    assert pod["nodeSelector"] == {"gpu": "false"}
    assert not pod.get("tolerations")
    assert run_program({"gke-gpu-runners:baseRunnerReplicas": "3"}).one(DEPLOYMENT).inputs["spec"]["replicas"] == 3


def test_base_runner_runs_the_digest_pinned_image_from_the_private_registry(program):
    pod = base_pod(program)
    (container,) = pod["containers"]
    assert container["image"] == program.outputs["runnerImage"]
    assert "@sha256:" in container["image"]
    assert pod["imagePullSecrets"] == [{"name": "ghcr-pull"}]


def test_base_runner_gets_the_contract_variables_and_the_pat_only_as_a_file(program):
    pod = base_pod(program)
    (container,) = pod["containers"]
    variables = env(container)
    assert variables["RUNNER_REPOSITORY"] == "Acme/Models"
    assert variables["RUNNER_LABELS"] == "base-runner"
    assert variables["RUNNER_EPHEMERAL"] == "false"
    assert variables["RUNNER_TOKEN_FILE"] == "/run/secrets/github-runner/token"
    assert "GITHUB_RUNNER_PAT" not in variables
    assert not any("secretKeyRef" in json.dumps(e) for e in container["env"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/run/secrets/github-runner")
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "github-runner-pat"
    assert volume["secret"]["defaultMode"] & 0o007 == 0, "the PAT file must not be world-readable"


def test_base_runner_is_hardened(program):
    pod = base_pod(program)
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
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
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "registration retries must not count as death"
    assert pod["terminationGracePeriodSeconds"] >= 30


def test_base_runner_waits_for_the_cpu_pool_and_not_for_the_gpu_pool(program):
    deployment = program.one(DEPLOYMENT)
    assert program.depends_on(deployment, program.one("gcp:container/nodePool:NodePool", "cpu-pool"))
    assert not program.depends_on(deployment, program.one("gcp:container/nodePool:NodePool", "gpu-pool"))


def test_gpu_pool_does_not_wait_for_anything_in_the_cluster(program):
    gpu_pool = program.one("gcp:container/nodePool:NodePool", "gpu-pool")
    for resource in program.resources:
        if resource.typ.startswith("kubernetes:"):
            assert not program.depends_on(gpu_pool, resource)


def test_gpu_runner_template_is_published_as_configmap_and_output(program):
    configmap = program.one(CONFIGMAP).inputs
    assert configmap["metadata"]["name"] == "gpu-runner-template"
    assert configmap["data"] == {"runner-gpu.yaml": program.outputs["gpuRunnerTemplate"]}
    job = yaml.safe_load(program.outputs["gpuRunnerTemplate"])
    assert job["kind"] == "Job"
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == program.outputs["runnerImage"]


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


def test_runner_pods_accept_no_ingress(program):
    policy = program.one("kubernetes:networking.k8s.io/v1:NetworkPolicy").inputs
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_runner_service_account_mounts_no_token(program):
    accounts = {a.inputs["metadata"]["name"]: a.inputs for a in program.of_type("kubernetes:core/v1:ServiceAccount")}
    assert accounts["github-runner"]["automountServiceAccountToken"] is False
    assert base_pod(program)["serviceAccountName"] == "github-runner"


def test_runner_pods_match_the_image_user_and_probe_with_a_tool_the_image_installs():
    from components.runner_manifests import RUNNER_UID
    from conftest import ROOT

    dockerfile = (ROOT / "runner_image" / "Dockerfile").read_text()
    assert f"\nUSER {RUNNER_UID}\n" in dockerfile
    assert "procps" in dockerfile  # pgrep, which the probes run
