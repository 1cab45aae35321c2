"""The runner broker, the image registry and the repository check, as the whole program registers them."""

import json

import pytest
import yaml
from pulumi import RunError

from program_harness import GITHUB_TOKEN, RUNNER_TOKEN, is_secret, run_program

P = "gke-gpu-runners"
SYSTEM_NS = "github-runners-system"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEfake\n-----END RSA PRIVATE KEY-----\n"
APP = {f"{P}:githubAppId": "123456", f"{P}:githubAppInstallationId": "7890123", f"{P}:githubAppPrivateKey": PEM}


def broker(program):
    return program.one(DEPLOYMENT, "broker")


def broker_container(program):
    (container,) = broker(program).inputs["spec"]["template"]["spec"]["containers"]
    return container


def broker_env(program):
    return {e["name"]: e["value"] for e in broker_container(program)["env"]}


def credential(program):
    return next(s for s in program.of_type(SECRET) if s.inputs["metadata"]["name"] == "runner-credential")


# ----------------------------------------------------------------- the broker --


def test_broker_runs_its_own_image_in_its_own_namespace_on_the_cpu_pool(program):
    deployment = broker(program).inputs
    assert deployment["metadata"]["namespace"] == SYSTEM_NS
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "false"}
    container = broker_container(program)
    assert container["image"] == program.outputs["brokerImage"] != program.outputs["clusterRunnerImage"]
    assert "command" not in container  # the image's own entrypoint: python3 -m runner_broker


def test_broker_gets_the_contract_variables(program):
    assert broker_env(program) == {
        "BROKER_REPOSITORY": "Acme/Models",
        "BROKER_RUNNER_NAMESPACE": "github-runners",
        "BROKER_AUDIENCE": "runner-broker.gke-gpu-runners",
        "BROKER_LISTEN": "0.0.0.0:8080",
        "BROKER_HEALTH_LISTEN": "0.0.0.0:8081",
        "BROKER_BASE_RUNNER_DEPLOYMENT": "base-runner",
        "BROKER_RUNNER_SERVICE_ACCOUNT": "github-runner",
        "BROKER_GPU_RUNNER_TEMPLATE_FILE": "/etc/runner-broker/gpu-runner-job.json",
        "BROKER_MAX_GPU_RUNNERS_PER_RUN": "2",
        "BROKER_SWEEP_SECONDS": "30",
        "GITHUB_TOKEN_FILE": "/run/secrets/runner-credential/token",
    }


def test_the_most_gpu_runners_a_run_may_ask_for_is_the_gpu_pools_size():
    program = run_program({f"{P}:gpuMaxNodes": "5"})
    assert broker_env(program)["BROKER_MAX_GPU_RUNNERS_PER_RUN"] == "5"


def test_the_broker_reads_the_programs_gpu_runner_job_as_json_from_its_own_namespace(program):
    (configmap,) = [
        c for c in program.of_type("kubernetes:core/v1:ConfigMap") if c.inputs["metadata"]["name"] == "gpu-runner-job"
    ]
    assert configmap.inputs["metadata"]["namespace"] == SYSTEM_NS  # out of CI's reach
    job = json.loads(configmap.inputs["data"]["gpu-runner-job.json"])
    # The same Job the program publishes as the read-only template.
    assert job == yaml.safe_load(program.outputs["gpuRunnerTemplate"])
    pod = broker(program).inputs["spec"]["template"]["spec"]
    mount = next(m for m in broker_container(program)["volumeMounts"] if m["name"] == "gpu-runner-job")
    volume = next(v for v in pod["volumes"] if v["name"] == "gpu-runner-job")
    assert mount == {"name": "gpu-runner-job", "mountPath": "/etc/runner-broker", "readOnly": True}
    assert volume["configMap"]["name"] == "gpu-runner-job"
    assert program.depends_on(broker(program), configmap)


def test_the_runner_credential_lives_in_the_broker_namespace_as_a_pulumi_secret(program):
    secret = credential(program)
    assert secret.inputs["metadata"]["namespace"] == SYSTEM_NS
    assert is_secret(secret.raw_inputs["stringData"])
    assert secret.inputs["stringData"] == {"token": RUNNER_TOKEN}


def test_the_broker_never_falls_back_to_the_github_token():
    with pytest.raises(RunError) as refused:
        run_program(drop=(f"{P}:runnerToken",))
    (line,) = [line for line in str(refused.value).splitlines() if "runnerToken:" in line]
    assert "never taken from github:token" in line
    assert "Administration read and write and Actions read" in line and "githubAppId" in line


def test_a_github_app_replaces_the_pat_and_only_its_key_is_secret():
    program = run_program(APP, drop=(f"{P}:runnerToken",))
    assert credential(program).inputs["stringData"] == {"private-key": PEM}
    assert is_secret(credential(program).raw_inputs["stringData"])
    variables = broker_env(program)
    assert variables["GITHUB_APP_ID"] == "123456"
    assert variables["GITHUB_APP_INSTALLATION_ID"] == "7890123"
    assert variables["GITHUB_APP_PRIVATE_KEY_FILE"] == "/run/secrets/runner-credential/private-key"
    assert "GITHUB_TOKEN_FILE" not in variables
    assert GITHUB_TOKEN not in json.dumps(credential(program).inputs)


def test_the_credential_is_mounted_whole_read_only_so_rotation_reaches_the_broker(program):
    pod = broker(program).inputs["spec"]["template"]["spec"]
    mount = next(m for m in broker_container(program)["volumeMounts"] if m["name"] == "credential")
    volume = next(v for v in pod["volumes"] if v["name"] == "credential")
    assert mount == {"name": "credential", "mountPath": "/run/secrets/runner-credential", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount is never updated by the kubelet
    assert volume["secret"]["secretName"] == "runner-credential"
    assert volume["secret"]["defaultMode"] & 0o007 == 0


def test_broker_is_hardened_and_probed_on_its_health_endpoint(program):
    pod = broker(program).inputs["spec"]["template"]["spec"]
    container = broker_container(program)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # On their own port, so that clients holding the API's connections cannot fail the probes.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 8081}
    assert pod["terminationGracePeriodSeconds"] >= 30  # its final sweep


def test_broker_mounts_an_api_token_of_its_own_and_no_other_secret(program):
    pod = broker(program).inputs["spec"]["template"]["spec"]
    kube_api = next(v for v in pod["volumes"] if v["name"] == "kube-api")
    sources = kube_api["projected"]["sources"]
    assert {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}} in sources
    assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == ["runner-credential"]
    assert pod["serviceAccountName"] == "runner-broker"


def test_only_pods_of_the_runner_namespace_reach_the_broker_and_only_on_its_port(program):
    policy = next(
        p.inputs
        for p in program.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.inputs["metadata"]["namespace"] == SYSTEM_NS
    )
    assert policy["spec"]["podSelector"] == {"matchLabels": broker(program).inputs["spec"]["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "github-runners"}}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    service = program.one("kubernetes:core/v1:Service").inputs
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]


def test_broker_rbac_is_token_review_and_the_runner_namespace_role_only(program):
    names = {
        (r.typ.rsplit(":", 1)[1], r.inputs["metadata"]["name"])
        for r in program.resources
        if r.typ.startswith("kubernetes:rbac")
    }
    assert names == {
        ("ClusterRole", "github-runners-system-runner-broker-token-review"),
        ("ClusterRoleBinding", "github-runners-system-runner-broker-token-review"),
        ("Role", "runner-broker"),
        ("RoleBinding", "runner-broker"),
        ("Role", "ci-runner-launcher"),
        ("RoleBinding", "ci-runner-launcher"),
    }
    for rule in [
        r for role in program.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role") for r in role.inputs["rules"]
    ]:
        assert "secrets" not in rule["resources"] and "*" not in rule["verbs"]


# ------------------------------------------------------------------ teardown --


def test_destroy_removes_every_runner_object_before_the_broker(program):
    """Pulumi deletes dependents first: the runner namespace and all in it go, then the broker runs its final sweep."""
    deployment = broker(program)
    for resource in program.resources:
        namespace = resource.inputs.get("metadata", {}).get("namespace")
        is_runner_namespace = (
            resource.typ == "kubernetes:core/v1:Namespace" and resource.inputs["metadata"]["name"] == "github-runners"
        )
        if namespace == "github-runners" or is_runner_namespace:
            assert program.depends_on(resource, deployment), resource.name


def test_destroy_keeps_what_the_broker_needs_until_the_broker_is_gone(program):
    deployment = broker(program)
    for typ in (
        "kubernetes:core/v1:Secret",
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
        "kubernetes:core/v1:Service",
    ):
        needed = [r for r in program.of_type(typ) if r.inputs["metadata"].get("namespace", SYSTEM_NS) == SYSTEM_NS]
        assert needed, typ
        for resource in needed:
            assert program.depends_on(deployment, resource), resource.name
    assert program.depends_on(deployment, program.one("gcp:container/nodePool:NodePool", "cpu-pool"))
    assert deployment.inputs["metadata"]["annotations"] == {"pulumi.com/deletionPropagationPolicy": "foreground"}


# --------------------------------------------------------- configured refusals --


@pytest.mark.parametrize(
    "keys, named, words",
    [
        (
            {f"{P}:githubAppId": "123456"},
            f"{P}:githubAppId",
            f"missing: {P}:githubAppInstallationId, {P}:githubAppPrivateKey",
        ),
        (
            {f"{P}:githubAppId": "123456", f"{P}:githubAppPrivateKey": PEM},
            f"{P}:githubAppId",
            f"missing: {P}:githubAppInstallationId",
        ),
        ({**APP, f"{P}:runnerToken": "pat"}, f"{P}:runnerToken", "not both"),
        ({**APP, f"{P}:githubAppId": "my-app"}, f"{P}:githubAppId", "numeric ID"),
        ({**APP, f"{P}:githubAppPrivateKey": "not a key"}, f"{P}:githubAppPrivateKey", "PEM private key"),
        ({f"{P}:namespace": "n" * 57}, f"{P}:namespace", "up to 56"),
    ],
)
def test_bad_runner_credential_settings_are_refused_before_any_resource(keys, named, words):
    runs = []
    with pytest.raises(RunError) as refused:
        run_program(keys, on_run=runs.append)
    line = next((entry for entry in str(refused.value).splitlines() if entry.strip().startswith(f"- {named}:")), "")
    assert words in line, str(refused.value)
    assert runs[0].resources == []


def test_a_public_repository_is_refused_before_any_cloud_resource():
    runs = []
    with pytest.raises(RunError) as refused:
        run_program(repository={"visibility": "public", "private": False}, on_run=runs.append)
    message = str(refused.value)
    assert f"{P}:githubRepository: Acme/Models is public" in message and "allowPublicRepository" in message
    assert {r.typ for r in runs[0].resources} == {"pulumi:providers:gcp", "pulumi:providers:github"}


def test_a_public_repository_is_accepted_when_allowed_explicitly():
    program = run_program({f"{P}:allowPublicRepository": "true"}, repository={"visibility": "public"})
    assert program.one(DEPLOYMENT, "broker")


def test_the_repository_is_looked_up_by_its_full_name_with_the_github_provider(program):
    (call,) = [c for c in program.calls if c[0] == "github:index/getRepository:getRepository"]
    assert call[1]["fullName"] == "Acme/Models"
    assert call[2].startswith(program.one("pulumi:providers:github").urn)


# ------------------------------------------------------------- the image registry --


def test_the_cluster_pulls_from_a_standard_repository_that_only_its_nodes_may_read(program):
    repository = program.one("gcp:artifactregistry/repository:Repository").inputs
    assert repository["location"] == "us-central1"
    assert repository["format"] == "DOCKER" and repository.get("mode", "STANDARD_REPOSITORY") == "STANDARD_REPOSITORY"
    assert "remoteRepositoryConfig" not in repository
    (reader,) = program.of_type("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    assert reader.inputs["role"] == "roles/artifactregistry.reader"
    assert reader.inputs["repository"] == repository["repositoryId"]
    assert reader.inputs["member"] == "serviceAccount:gpu-runners-nodes@acme-ml.iam.gserviceaccount.com"
    project_roles = {m.inputs["role"] for m in program.of_type("gcp:projects/iAMMember:IAMMember")}
    assert not any(role.startswith("roles/artifactregistry.") for role in project_roles)


def test_no_registry_token_is_kept_anywhere_in_google_cloud(program):
    assert not [r for r in program.resources if r.typ.startswith("gcp:secretmanager")]
    everything = json.dumps([r.inputs for r in program.resources if r.typ.startswith(("gcp:", "kubernetes:"))])
    assert GITHUB_TOKEN not in everything


def test_a_stack_that_still_sets_the_pull_token_is_told_in_one_line_it_is_no_longer_used(caplog):
    program = run_program({f"{P}:registryPullToken": "read-only-token"})
    (warning,) = [r.getMessage() for r in caplog.records if "registryPullToken" in r.getMessage()]
    assert "no longer used" in warning and "pulumi config rm registryPullToken" in warning and "\n" not in warning
    assert "read-only-token" not in warning
    assert "read-only-token" not in json.dumps([r.inputs for r in program.resources])
    caplog.clear()
    run_program()
    assert not [r for r in caplog.records if "registryPullToken" in r.getMessage()]


def test_apis_are_enabled_before_what_uses_them_and_left_enabled_on_destroy(program):
    services = {s.inputs["service"]: s for s in program.of_type("gcp:projects/service:Service")}
    assert set(services) == {
        "container.googleapis.com",
        "containerfilesystem.googleapis.com",
        "artifactregistry.googleapis.com",
        "iam.googleapis.com",
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
    }
    for service in services.values():
        assert service.inputs["disableOnDestroy"] is False
    users = {
        "container.googleapis.com": program.one("gcp:container/cluster:Cluster"),
        "containerfilesystem.googleapis.com": program.one("gcp:container/cluster:Cluster"),
        "iam.googleapis.com": program.one("gcp:serviceaccount/account:Account", "gke-nodes"),
        "sts.googleapis.com": program.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool"),
        "iamcredentials.googleapis.com": program.one("gcp:serviceaccount/account:Account", "github-oidc"),
        "artifactregistry.googleapis.com": program.one("gcp:artifactregistry/repository:Repository"),
    }
    for api, user in users.items():
        assert program.depends_on(user, services[api]), api


def test_image_streaming_is_on_for_both_pools(program):
    for pool in program.of_type("gcp:container/nodePool:NodePool"):
        assert pool.inputs["nodeConfig"]["gcfsConfig"] == {"enabled": True}, pool.name


def test_an_image_is_pinned_only_by_a_digest():
    from program.manifests.images import pinned

    digest = "sha256:" + "b" * 64
    assert pinned("europe-west4-docker.pkg.dev/p/r", "github-runner", digest) == (
        f"europe-west4-docker.pkg.dev/p/r/github-runner@{digest}"
    )
    with pytest.raises(ValueError):
        pinned("europe-west4-docker.pkg.dev/p/r", "github-runner", "latest")


def test_outputs_include_both_images_and_the_template_is_plain_yaml(program):
    assert program.outputs["clusterRunnerImage"].endswith(program.outputs["runnerImage"].split("@")[1])
    assert yaml.safe_load(program.outputs["gpuRunnerTemplate"])["kind"] == "Job"


def test_the_broker_runs_as_its_images_own_user_not_the_runners(program):
    from program_harness import ROOT
    from runner_contract import BROKER_UID, RUNNER_UID

    dockerfile = (ROOT / "broker" / "Dockerfile").read_text()
    assert f"\nUSER {BROKER_UID}:{BROKER_UID}\n" in dockerfile
    pod = broker(program).inputs["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == BROKER_UID != RUNNER_UID
    assert broker_container(program)["securityContext"]["runAsUser"] == BROKER_UID


def test_the_broker_has_time_for_its_final_sweep_before_it_is_killed(program):
    # 12 s for requests in flight and up to 120 s retrying busy runners (BROKER_FINAL_SWEEP_SECONDS).
    assert broker(program).inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 12 + 120 + 30
