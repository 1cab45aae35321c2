"""Keyless access: the Workload Identity pool and provider, who may act as CI's account, and the data bucket.

The provider's attribute condition is evaluated for real, with a CEL implementation, against
GitHub OIDC claims shaped as GitHub issues them for each event.
"""

import celpy
import pytest
from pulumi import RunError

from conftest import run_program
from program.components.workload_identity import attribute_condition, cel_string

P = "gke-gpu-runners"
POOL = "projects/123456789012/locations/global/workloadIdentityPools/gpu-runners-github"
REPOSITORY_SET = f"principalSet://iam.googleapis.com/{POOL}/attribute.repository_id/424242"
CI_ACCOUNT = "gpu-runners-ci@acme-ml.iam.gserviceaccount.com"
WORKFLOW = "Acme/Models/.github/workflows/train-and-report.yml"


def provider(program):
    return program.one("gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider").inputs


def claims(event_name: str = "push", ref: str = "refs/heads/main", **changes) -> dict:
    """A GitHub Actions OIDC token's claims for a run of Acme/Models (IDs are strings), as GitHub
    shapes them: `sub` names the pull request or the ref, `workflow_ref` the file at that ref."""
    pull_request = event_name.startswith("pull_request")
    base = {
        "iss": "https://token.actions.githubusercontent.com",
        "aud": "https://github.com/Acme",
        "sub": "repo:Acme/Models:pull_request" if pull_request else f"repo:Acme/Models:ref:{ref}",
        "repository": "Acme/Models", "repository_id": "424242",
        "repository_owner": "Acme", "repository_owner_id": "9919",
        "repository_visibility": "private",
        "actor": "octocat", "actor_id": "12",
        "event_name": event_name, "ref": ref, "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "head_ref": "feature" if pull_request else "", "base_ref": "main" if pull_request else "",
        "workflow": "Train and report", "workflow_ref": f"{WORKFLOW}@{ref}",
        "run_id": "4242", "run_number": "7", "run_attempt": "1", "runner_environment": "self-hosted",
    }
    return {**base, **changes}


def evaluate(expression: str, token_claims: dict):
    environment = celpy.Environment()
    return environment.program(environment.compile(expression)).evaluate({"assertion": celpy.json_to_cel(token_claims)})


def admits(condition: str, token_claims: dict) -> bool:
    """As Google does: admitted only if the condition is true; an error (a missing claim) refuses."""
    try:
        result = evaluate(condition, token_claims)
    except celpy.CELEvalError:
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)


# What each admitted event looks like, and whether it runs on main.
ADMITTED = {
    "push to main": (claims("push", "refs/heads/main"), True),
    "push to a branch": (claims("push", "refs/heads/feature"), False),
    "pull request from a branch of the repository": (claims("pull_request", "refs/pull/7/merge"), False),
    "dispatch on main": (claims("workflow_dispatch", "refs/heads/main"), True),
    "dispatch on a branch": (claims("workflow_dispatch", "refs/heads/feature"), False),
    "schedule": (claims("schedule", "refs/heads/main"), True),
}
REFUSED = {
    # A workflow run in the fork itself (its own pull request there, or a push): its IDs. A fork's
    # pull request that runs here carries this repository's claims, and no claim names its head
    # repository: what refuses it is GitHub, which gives a fork's pull_request no id-token.
    "a fork's pull request": claims("pull_request", "refs/pull/3/merge", repository="forker/Models",
                                    repository_id="818181", repository_owner="forker", repository_owner_id="31337",
                                    sub="repo:forker/Models:pull_request"),
    "a fork's push": claims(repository="forker/Models", repository_id="818181", repository_owner="forker",
                            repository_owner_id="31337", sub="repo:forker/Models:ref:refs/heads/main"),
    # Runs here, with this repository's claims, on a stranger's pull request, comment or run.
    "pull_request_target": claims("pull_request_target", "refs/heads/main"),
    "issue_comment": claims("issue_comment", "refs/heads/main"),
    "workflow_run": claims("workflow_run", "refs/heads/main"),
    "release": claims("release", "refs/tags/v1.0.0"),
    "pull_request_review": claims("pull_request_review", "refs/pull/7/merge"),
    "merge_group": claims("merge_group", "refs/heads/gh-readonly-queue/main/pr-7-0123abc"),
    "no event_name claim": {k: v for k, v in claims().items() if k != "event_name"},
    "another repository of the owner": claims(repository="Acme/Other", repository_id="515151",
                                              sub="repo:Acme/Other:ref:refs/heads/main"),
    "same name, another ID": claims(repository_id="777777"),  # deleted and re-created under the same name
    "another owner ID": claims(repository_owner_id="31337"),  # the owner account was replaced
    "other spelling": claims(repository="acme/models"),  # the name is compared as GitHub spells it
}


# ------------------------------------------------------------------- the condition --

@pytest.fixture(scope="module")
def condition(program) -> str:
    return provider(program)["attributeCondition"]


@pytest.mark.parametrize("token", [token for token, _ in ADMITTED.values()], ids=list(ADMITTED))
def test_the_condition_admits_this_repositorys_runs_of_the_example_events(condition, token):
    assert admits(condition, token)


@pytest.mark.parametrize("token", list(REFUSED.values()), ids=list(REFUSED))
def test_the_condition_refuses_other_events_and_every_other_repository(condition, token):
    assert not admits(condition, token)


def test_the_condition_uses_the_ids_and_name_github_reports_and_the_example_events(condition):
    assert condition == ("assertion.repository_id == '424242' && assertion.repository_owner_id == '9919' && "
                         "assertion.repository == 'Acme/Models' && "
                         "assertion.event_name in ['push', 'pull_request', 'workflow_dispatch', 'schedule']")


def test_a_quote_in_a_value_cannot_change_the_condition():
    condition = attribute_condition("1", "2", "o/x' || true || 'y")
    assert not admits(condition, claims(repository_id="1", repository_owner_id="2", repository="o/other"))
    assert admits(condition, claims(repository_id="1", repository_owner_id="2", repository="o/x' || true || 'y"))
    for value in ("a'b", "a\\'b", "a\\", "\\' || true || \\'"):
        assert str(evaluate(cel_string(value), {})) == value


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


def test_only_this_repositorys_admitted_runs_may_act_as_ci_and_nothing_else_may(program):
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
