"""What lands in GitHub, and the least-privilege access it carries."""

import pytest
import yaml

from program_harness import FAKE_CA_B64, FAKE_ENDPOINT, GITHUB_TOKEN, is_secret

SECRET = "github:index/actionsSecret:ActionsSecret"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
EXPECTED = {"GCP_K8S_KUBECONFIG"}
# The tutorial's deploy job reads these; the stack leaves them alone (outputs clusterName, clusterLocation).
DEPLOY_JOBS_SECRETS = {"GCP_K8S_CLUSTER_NAME", "GCP_K8S_CLUSTER_ZONE"}


def actions_secrets(program) -> dict:
    return {s.inputs["secretName"]: s for s in program.of_type(SECRET)}


def test_github_provider_is_explicit_with_the_repository_owner_and_the_secret_token(program):
    provider = program.one("pulumi:providers:github")
    assert provider.inputs["owner"] == "Acme"
    assert is_secret(provider.raw_inputs["token"]) and provider.raw_inputs["token"]["value"] == GITHUB_TOKEN
    for secret in program.of_type(SECRET):
        assert secret.provider.rsplit("::", 1)[0] == provider.urn


def test_exactly_the_contract_secrets_land_in_the_repository(program):
    secrets = actions_secrets(program)
    assert set(secrets) == EXPECTED
    assert {s.inputs["repository"] for s in secrets.values()} == {"Models"}


def test_the_deploy_jobs_cluster_secrets_are_never_written_and_stay_stack_outputs(program):
    written = {s.inputs["secretName"] for s in program.of_type(SECRET)}
    written |= {v.inputs["variableName"] for v in program.of_type("github:index/actionsVariable:ActionsVariable")}
    assert not written & DEPLOY_JOBS_SECRETS
    assert (program.outputs["clusterName"], program.outputs["clusterLocation"]) == ("gpu-runners", "us-central1-a")


def test_every_secret_value_is_a_pulumi_secret_in_the_current_value_argument(program):
    for name, secret in actions_secrets(program).items():
        assert is_secret(secret.raw_inputs["value"]), name
        assert "plaintextValue" not in secret.raw_inputs and "encryptedValue" not in secret.raw_inputs


def ci_kubeconfig(program) -> dict:
    return yaml.safe_load(actions_secrets(program)["GCP_K8S_KUBECONFIG"].inputs["value"])


def test_ci_kubeconfig_carries_endpoint_ca_and_namespace_and_no_credential(program):
    config = ci_kubeconfig(program)
    (cluster,) = config["clusters"]
    assert cluster["cluster"] == {"server": f"https://{FAKE_ENDPOINT}", "certificate-authority-data": FAKE_CA_B64}
    (user,) = config["users"]
    assert set(user["user"]) == {"exec"}  # no token, no certificate, no key
    exec_plugin = user["user"]["exec"]
    assert (exec_plugin["command"], exec_plugin["args"]) == ("gpu-runner", ["credential"])
    assert exec_plugin["interactiveMode"] == "Never"
    (context,) = config["contexts"]
    assert context["context"]["namespace"] == "github-runners"
    assert config["current-context"] == context["name"]


def test_no_long_lived_token_exists_for_ci_in_the_cluster(program):
    for secret in program.of_type("kubernetes:core/v1:Secret"):
        assert secret.inputs.get("type") != "kubernetes.io/service-account-token", secret.name
    accounts = {a.inputs["metadata"]["name"] for a in program.of_type("kubernetes:core/v1:ServiceAccount")}
    assert "ci-runner-launcher" not in accounts


def test_the_workload_identity_provider_and_ci_account_land_as_variables(program):
    variables = {
        v.inputs["variableName"]: v.inputs["value"]
        for v in program.of_type("github:index/actionsVariable:ActionsVariable")
    }
    assert variables == {
        "GKE_GPU_RUNNERS_STACK": "acme/gke-gpu-runners/test",
        "GCP_WORKLOAD_IDENTITY_PROVIDER": "projects/123456789012/locations/global/workloadIdentityPools/"
        "gpu-runners-github/providers/github-actions",
        "GCP_SERVICE_ACCOUNT": "gpu-runners-ci@acme-ml.iam.gserviceaccount.com",
    }


def ci_role(program) -> dict:
    return next(r.inputs for r in program.of_type(ROLE) if r.inputs["metadata"]["name"] == "ci-runner-launcher")


def test_ci_role_only_reads_runners_their_pods_logs_and_events_in_the_namespace(program):
    role = ci_role(program)
    assert role["metadata"]["namespace"] == "github-runners"
    granted = {
        (group, resource, verb)
        for r in role["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    assert granted == {
        (group, resource, verb)
        for group, resource in (("", "pods"), ("", "pods/log"), ("", "events"), ("batch", "jobs"))
        for verb in ("get", "list", "watch")
    }
    assert not [r for r in role["rules"] if "resourceNames" in r]
    flat = [value for rule in role["rules"] for values in rule.values() for value in values]
    assert "*" not in flat
    for forbidden in ("secrets", "escalate", "bind", "impersonate"):
        assert forbidden not in flat


def test_ci_binding_ties_the_role_to_the_ci_account_only(program):
    binding = next(b.inputs for b in program.of_type(BINDING) if b.inputs["metadata"]["name"] == "ci-runner-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ci-runner-launcher"}
    assert binding["subjects"] == [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": "gpu-runners-ci@acme-ml.iam.gserviceaccount.com",
        }
    ]


def test_the_only_cluster_wide_right_is_the_brokers_token_review(program):
    (role,) = program.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
    assert role.inputs["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    (binding,) = program.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding")
    assert binding.inputs["subjects"] == [
        {"kind": "ServiceAccount", "name": "runner-broker", "namespace": "github-runners-system"}
    ]


def test_destroy_removes_everything_in_the_cluster_before_the_cluster(program):
    cluster = program.one("gcp:container/cluster:Cluster")
    for resource in program.resources:
        if resource.typ.startswith("kubernetes:"):
            # Pulumi deletes dependents first: each of these goes before the cluster.
            assert program.depends_on(resource, cluster), resource.name


def test_destroy_stops_the_base_runner_before_its_pool_and_cluster_go(program):
    deployment = program.one("kubernetes:apps/v1:Deployment", "base-runner")
    assert program.depends_on(deployment, program.one("gcp:container/nodePool:NodePool", "cpu-pool"))
    assert program.depends_on(deployment, program.one("gcp:container/cluster:Cluster"))


def test_github_secrets_are_deleted_before_the_cluster_they_describe(program):
    cluster = program.one("gcp:container/cluster:Cluster")
    for secret in program.of_type(SECRET):
        assert program.depends_on(secret, cluster), secret.inputs["secretName"]


# --- never a silent takeover of the repository's secrets -------------------------------


def tutorial_secrets(*names: str) -> list[dict]:
    return [{"name": name, "createdAt": "2025-01-01T00:00:00Z", "updatedAt": "2025-01-01T00:00:00Z"} for name in names]


def test_a_variable_names_this_stack_as_owner_and_every_secret_waits_for_it(program):
    (owner,) = [
        v
        for v in program.of_type("github:index/actionsVariable:ActionsVariable")
        if v.inputs["variableName"] == "GKE_GPU_RUNNERS_STACK"
    ]
    assert owner.inputs == {
        "repository": "Models",
        "variableName": "GKE_GPU_RUNNERS_STACK",
        "value": "acme/gke-gpu-runners/test",
    }
    for written in program.of_type(SECRET) + program.of_type("github:index/actionsVariable:ActionsVariable"):
        if written is not owner:
            assert program.depends_on(written, owner), written.name


def test_secrets_someone_else_wrote_stop_pulumi_up_before_anything_is_created():
    from pulumi import RunError

    from program_harness import run_program

    runs = []
    tutorial = tutorial_secrets("GCP_K8S_KUBECONFIG", *sorted(DEPLOY_JOBS_SECRETS), "GOOGLE_SERVICE_ACCOUNT_KEY")
    clashing_variables = [{"name": "GCP_SERVICE_ACCOUNT", "value": "someone@else"}]
    with pytest.raises(RunError) as refused:
        run_program(repository={"secrets": tutorial, "variables": clashing_variables}, on_run=runs.append)
    message = str(refused.value)
    # Exactly what pulumi up would write, secrets and variables alike; never the deploy job's own.
    assert (
        "- gke-gpu-runners:adoptExistingSecrets: Acme/Models already has the Actions secrets or variables "
        "GCP_K8S_KUBECONFIG, GCP_SERVICE_ACCOUNT, written by something other than this stack"
    ) in message
    assert "pulumi destroy would delete them" in message and "adoptExistingSecrets true" in message
    for untouched in (*DEPLOY_JOBS_SECRETS, "GOOGLE_SERVICE_ACCOUNT_KEY"):
        assert untouched not in message
    assert {r.typ for r in runs[0].resources} <= {"pulumi:providers:gcp", "pulumi:providers:github"}


def test_the_tutorials_deploy_job_secrets_alone_do_not_stop_pulumi_up():
    from program_harness import run_program

    program = run_program(
        repository={"secrets": tutorial_secrets(*sorted(DEPLOY_JOBS_SECRETS), "GOOGLE_SERVICE_ACCOUNT_KEY")}
    )
    assert set(actions_secrets(program)) == EXPECTED


def test_secrets_of_another_stack_are_named_as_such():
    from pulumi import RunError

    from program_harness import run_program

    other = [{"name": "GKE_GPU_RUNNERS_STACK", "value": "acme/gke-gpu-runners/prod"}]
    with pytest.raises(RunError, match="written by stack acme/gke-gpu-runners/prod"):
        run_program(repository={"secrets": tutorial_secrets("GCP_K8S_KUBECONFIG"), "variables": other})


@pytest.mark.parametrize(
    "config, variables",
    [
        ({"gke-gpu-runners:adoptExistingSecrets": "true"}, []),
        ({}, [{"name": "GKE_GPU_RUNNERS_STACK", "value": "acme/gke-gpu-runners/test"}]),  # our own, from before
    ],
)
def test_secrets_are_written_when_adopted_or_already_this_stacks(config, variables):
    from program_harness import run_program

    program = run_program(config, repository={"secrets": tutorial_secrets(*sorted(EXPECTED)), "variables": variables})
    assert set(actions_secrets(program)) == EXPECTED
