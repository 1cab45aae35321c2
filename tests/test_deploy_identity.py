"""The deploy identity: the tutorial's publish-and-deploy job, keyless, on the default branch alone."""

import pytest
from pulumi import RunError

from program_harness import run_program

P = "gke-gpu-runners"
DEPLOY = {
    f"{P}:deployNamespace": "default",
    f"{P}:deployRegistry": "europe-west6-docker.pkg.dev/acme-ml/celestial-bodies",
    f"{P}:dataBucket": "acme-dvc",
}
EMAIL = "gpu-runners-deploy@acme-ml.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{EMAIL}"
POOL = "projects/123456789012/locations/global/workloadIdentityPools/gpu-runners-github"
VARIABLE = "github:index/actionsVariable:ActionsVariable"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
SA_BINDING = "gcp:serviceaccount/iAMMember:IAMMember"


@pytest.fixture(scope="module")
def deploying():
    return run_program(DEPLOY)


def variables(program) -> dict:
    return {v.inputs["variableName"]: v.inputs["value"] for v in program.of_type(VARIABLE)}


def deployer(program, typ) -> list:
    return [r for r in program.of_type(typ) if r.inputs["metadata"]["name"] == "gke-gpu-runners-deployer"]


def test_no_deploy_identity_unless_asked(program):
    assert not [r for r in program.resources if r.typ == "gke-gpu-runners:index:DeployIdentity"]
    assert "GCP_DEPLOY_SERVICE_ACCOUNT" not in variables(program)


def test_only_the_default_branchs_runs_may_act_as_it(deploying):
    account = deploying.one("gcp:serviceaccount/account:Account", "deploy-account")
    assert account.inputs["accountId"] == "gpu-runners-deploy"
    (binding,) = [b for b in deploying.of_type(SA_BINDING) if b.name == "deploy-from-github"]
    assert binding.inputs["role"] == "roles/iam.workloadIdentityUser"
    assert (
        binding.inputs["member"]
        == f"principal://iam.googleapis.com/{POOL}/subject/repo:Acme/Models:ref:refs/heads/main"
    )
    assert binding.inputs["serviceAccountId"] == f"projects/acme-ml/serviceAccounts/{EMAIL}"


def test_the_default_branch_is_the_one_github_names():
    program = run_program(DEPLOY, repository={"defaultBranch": "trunk"})
    (binding,) = [b for b in program.of_type(SA_BINDING) if b.name == "deploy-from-github"]
    assert binding.inputs["member"].endswith("/subject/repo:Acme/Models:ref:refs/heads/trunk")


def test_it_may_push_to_that_one_repository_and_read_the_data_bucket(deploying):
    (push,) = [
        r
        for r in deploying.of_type("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
        if r.inputs["member"] == MEMBER
    ]
    assert {k: push.inputs[k] for k in ("project", "location", "repository", "role")} == {
        "project": "acme-ml",
        "location": "europe-west6",
        "repository": "celestial-bodies",
        "role": "roles/artifactregistry.writer",
    }
    (data,) = [
        r for r in deploying.of_type("gcp:storage/bucketIAMMember:BucketIAMMember") if r.inputs["member"] == MEMBER
    ]
    assert (data.inputs["bucket"], data.inputs["role"]) == ("acme-dvc", "roles/storage.objectViewer")
    project_roles = {
        r.inputs["role"] for r in deploying.of_type("gcp:projects/iAMMember:IAMMember") if r.inputs["member"] == MEMBER
    }
    assert project_roles == {"roles/container.clusterViewer"}  # into GKE; RBAC says where


def test_in_the_cluster_it_may_apply_workloads_in_that_namespace_only(deploying):
    (role,) = deployer(deploying, ROLE)
    (binding,) = deployer(deploying, BINDING)
    assert role.inputs["metadata"]["namespace"] == binding.inputs["metadata"]["namespace"] == "default"
    for cluster_wide in deploying.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"):
        assert EMAIL not in str(cluster_wide.inputs["subjects"])
    granted = {
        (group, resource, verb)
        for rule in role.inputs["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for needed in (("apps", "deployments", "patch"), ("", "services", "create"), ("apps", "replicasets", "get")):
        assert needed in granted
    flat = {value for rule in role.inputs["rules"] for values in rule.values() for value in values}
    for forbidden in (
        "*",
        "secrets",
        "pods/exec",
        "pods/attach",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "escalate",
        "bind",
        "impersonate",
    ):
        assert forbidden not in flat
    assert binding.inputs["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": EMAIL}]
    assert binding.inputs["roleRef"]["name"] == "gke-gpu-runners-deployer"
    # The namespace is the user's: the program neither creates nor deletes it.
    namespaces = {n.inputs["metadata"]["name"] for n in deploying.of_type("kubernetes:core/v1:Namespace")}
    assert "default" not in namespaces


def test_its_account_lands_in_github_as_a_variable(deploying):
    assert variables(deploying)["GCP_DEPLOY_SERVICE_ACCOUNT"] == EMAIL


def test_a_registry_alone_gives_no_cluster_rights():
    program = run_program({f"{P}:deployRegistry": "europe-west6-docker.pkg.dev/acme-ml/celestial-bodies"})
    assert not deployer(program, ROLE) and not deployer(program, BINDING)
    assert not [r for r in program.of_type("gcp:projects/iAMMember:IAMMember") if r.inputs["member"] == MEMBER]
    assert variables(program)["GCP_DEPLOY_SERVICE_ACCOUNT"] == EMAIL


def test_it_works_the_same_in_an_existing_cluster():
    program = run_program({**DEPLOY, f"{P}:existingCluster": "mlops-kubernetes"})
    assert deployer(program, ROLE) and variables(program)["GCP_DEPLOY_SERVICE_ACCOUNT"] == EMAIL


def test_the_takeover_guard_names_the_deploy_variable_only_when_it_would_be_written():
    from test_github_wiring import tutorial_secrets

    existing = {
        "secrets": tutorial_secrets("GOOGLE_SERVICE_ACCOUNT_KEY"),
        "variables": [{"name": "GCP_DEPLOY_SERVICE_ACCOUNT", "value": "someone@else"}],
    }
    assert run_program(repository=existing)  # not ours to write: no clash
    with pytest.raises(RunError, match="secrets or variables GCP_DEPLOY_SERVICE_ACCOUNT, written by something"):
        run_program(DEPLOY, repository=existing)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("deployRegistry", "gcr.io/acme-ml", "<location>-docker.pkg.dev/<project>/<repository>"),
        ("deployRegistry", "europe-west6-docker.pkg.dev/acme-ml", "<location>-docker.pkg.dev/<project>/<repository>"),
        ("deployNamespace", "github-runners", "a namespace of the runners or of GKE"),
        ("deployNamespace", "kube-system", "a namespace of the runners or of GKE"),
        ("deployNamespace", "Models!", "e.g. default"),
    ],
)
def test_bad_deploy_settings_are_refused_before_anything(key, value, words):
    runs = []
    with pytest.raises(RunError) as refused:
        run_program({f"{P}:{key}": value}, on_run=runs.append)
    line = next(line for line in str(refused.value).splitlines() if f"- {P}:{key}:" in line)
    assert words in line
    assert runs[0].resources == []
