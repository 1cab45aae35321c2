"""Keyless access: the Workload Identity pool and provider, who may act as CI's account, and the data bucket.

The provider's attribute condition is evaluated for real, with a CEL implementation, against
GitHub OIDC claims shaped as GitHub issues them.
"""

import celpy
import pytest
from pulumi import RunError

from conftest import run_program

P = "gke-gpu-runners"
POOL = "projects/123456789012/locations/global/workloadIdentityPools/gpu-runners-github"
REPOSITORY_SET = f"principalSet://iam.googleapis.com/{POOL}/attribute.repository_id/424242"
CI_ACCOUNT = "gpu-runners-ci@acme-ml.iam.gserviceaccount.com"


def provider(program):
    return program.one("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider").inputs


def claims(**changes) -> dict:
    """A GitHub Actions OIDC token's claims for a push to main of Acme/Models (IDs are strings)."""
    base = {
        "iss": "https://token.actions.githubusercontent.com",
        "sub": "repo:Acme/Models:ref:refs/heads/main",
        "repository": "Acme/Models", "repository_id": "424242",
        "repository_owner": "Acme", "repository_owner_id": "9919",
        "ref": "refs/heads/main", "event_name": "push", "workflow": "GPU training",
    }
    return {**base, **changes}


def admits(condition: str, token_claims: dict) -> bool:
    environment = celpy.Environment()
    program = environment.program(environment.compile(condition))
    return bool(program.evaluate({"assertion": celpy.json_to_cel(token_claims)}))


# ------------------------------------------------------------------- the condition --

@pytest.fixture(scope="module")
def condition(program) -> str:
    return provider(program)["attributeCondition"]


@pytest.mark.parametrize("token", [
    claims(),
    claims(sub="repo:Acme/Models:pull_request", ref="refs/pull/7/merge", event_name="pull_request"),
    claims(sub="repo:Acme/Models:ref:refs/heads/feature", ref="refs/heads/feature", event_name="workflow_dispatch"),
], ids=["push", "pull request", "dispatch"])
def test_the_condition_admits_this_repositorys_runs(condition, token):
    assert admits(condition, token)


@pytest.mark.parametrize("token", [
    claims(repository="Acme/Other", repository_id="515151", sub="repo:Acme/Other:ref:refs/heads/main"),
    claims(repository_id="777777"),  # deleted and re-created under the same name
    claims(repository="forker/Models", repository_id="818181", repository_owner="forker",
           repository_owner_id="31337", sub="repo:forker/Models:ref:refs/heads/main"),
    claims(repository_owner_id="31337"),  # the owner account was replaced
    claims(repository="acme/models"),  # the name is compared as GitHub spells it
], ids=["another repository of the owner", "same name, another ID", "a fork", "another owner ID", "other spelling"])
def test_the_condition_refuses_every_other_repository(condition, token):
    assert not admits(condition, token)


def test_the_condition_uses_the_ids_and_name_github_reports(condition):
    assert condition == ("assertion.repository_id == '424242' && assertion.repository_owner_id == '9919' && "
                         "assertion.repository == 'Acme/Models'")


# ------------------------------------------------------------- pool and provider --

def test_the_provider_trusts_githubs_issuer_and_maps_the_claims_it_checks(program):
    trusted = provider(program)
    assert trusted["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com"}
    assert trusted["attributeMapping"] == {
        "google.subject": "assertion.sub",
        "attribute.repository": "assertion.repository",
        "attribute.repository_id": "assertion.repository_id",
        "attribute.repository_owner_id": "assertion.repository_owner_id",
    }
    pool = program.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool").inputs
    assert trusted["workloadIdentityPoolId"] == pool["workloadIdentityPoolId"] == "gpu-runners-github"


# ----------------------------------------------------------------- IAM bindings --

def iam_bindings(program) -> list[tuple[str, str, str]]:
    """(resource type, role, member) of every IAM binding the program makes."""
    kinds = ("gcp:projects/iAMMember:IAMMember", "gcp:serviceaccount/iAMMember:IAMMember",
             "gcp:storage/bucketIAMMember:BucketIAMMember",
             "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember")
    return sorted((r.typ.split(":")[1], r.inputs["role"], r.inputs["member"]) for kind in kinds for r in program.of_type(kind))


def test_every_iam_binding_and_its_member(program):
    nodes = "serviceAccount:gpu-runners-nodes@acme-ml.iam.gserviceaccount.com"
    assert iam_bindings(program) == sorted([
        *[("projects/iAMMember", role, nodes) for role in (
            "roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer",
            "roles/stackdriver.resourceMetadata.writer", "roles/autoscaling.metricsWriter")],
        ("artifactregistry/repositoryIamMember", "roles/artifactregistry.reader", nodes),
        ("projects/iAMMember", "roles/container.clusterViewer", f"serviceAccount:{CI_ACCOUNT}"),
        ("serviceaccount/iAMMember", "roles/iam.workloadIdentityUser", REPOSITORY_SET),
    ])


def test_only_this_repositorys_workflows_may_act_as_ci_and_nothing_else_may(program):
    (binding,) = program.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert binding.inputs["serviceAccountId"] == f"projects/acme-ml/serviceAccounts/{CI_ACCOUNT}"
    assert binding.inputs["member"] == REPOSITORY_SET


def test_cis_kubernetes_rights_are_bound_to_its_google_account(program):
    binding = next(b.inputs for b in program.of_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
                   if b.inputs["metadata"]["name"] == "ci-runner-launcher")
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CI_ACCOUNT}]
    assert binding["metadata"]["namespace"] == "github-runners"


# ------------------------------------------------------------------------- data --

def test_without_a_data_bucket_there_is_no_data_access(program):
    assert program.of_type("gcp:storage/bucketIAMMember:BucketIAMMember") == []


def test_a_data_bucket_gives_the_repositorys_workflows_object_access_to_it_alone():
    program = run_program({f"{P}:dataBucket": "gs://acme-dvc-data/"})
    (binding,) = program.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert binding.inputs == {"bucket": "acme-dvc-data", "role": "roles/storage.objectUser", "member": REPOSITORY_SET}
    project_roles = {r.inputs["role"] for r in program.of_type("gcp:projects/iAMMember:IAMMember")}
    assert not [role for role in project_roles if role.startswith("roles/storage")]


@pytest.mark.parametrize("key, value, accepted", [
    ("dataBucket", "My_Bucket", "Cloud Storage bucket name"),
    ("dataBucket", "googlebucket", "Cloud Storage bucket name"),
    ("dataBucket", "ab", "3-63"),
    ("controlPlaneAuthorizedNetworks", '["203.0.113.7/24"]', "CIDR form"),
    ("controlPlaneAuthorizedNetworks", '["not-a-network"]', "CIDR form"),
    ("controlPlaneAuthorizedNetworks", '["2001:db8::/32"]', "IPv4"),
])
def test_bad_data_and_network_settings_are_refused_naming_the_key(key, value, accepted):
    runs = []
    with pytest.raises(RunError) as refused:
        run_program({f"{P}:{key}": value}, on_run=runs.append)
    line = next(l for l in str(refused.value).splitlines() if f"{P}:{key}:" in l)
    assert accepted in line
    assert runs[0].resources == []


# --------------------------------------------------------------- control plane --

def test_the_control_plane_is_open_by_default_and_restricted_when_asked(program):
    cluster = program.one("gcp:container/cluster:Cluster").inputs
    assert "masterAuthorizedNetworksConfig" not in cluster
    restricted = run_program({f"{P}:controlPlaneAuthorizedNetworks": '["203.0.113.0/24", "198.51.100.8/32"]'})
    blocks = restricted.one("gcp:container/cluster:Cluster").inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"]
    assert [b["cidrBlock"] for b in blocks] == ["203.0.113.0/24", "198.51.100.8/32"]
