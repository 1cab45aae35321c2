"""Keyless access: the Workload Identity pool and provider, who may act as CI's account, and the data bucket.

The provider's attribute condition and attribute mapping are evaluated for real, with a CEL
implementation, against GitHub OIDC claims shaped as GitHub issues them for each event; the
principal sets of the IAM bindings are then matched against the attributes the mapping gives.
"""

import celpy
import pytest
from pulumi import RunError

from program_harness import run_program
from program.components.workload_identity import attribute_condition, attribute_mapping, cel_string

P = "gke-gpu-runners"
BUCKET = "acme-dvc-data"
POOL = "projects/123456789012/locations/global/workloadIdentityPools/gpu-runners-github"
REPOSITORY_SET = f"principalSet://iam.googleapis.com/{POOL}/attribute.repository_id/424242"
WRITER_SET = f"principalSet://iam.googleapis.com/{POOL}/attribute.data_writer/true"
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
        "repository": "Acme/Models",
        "repository_id": "424242",
        "repository_owner": "Acme",
        "repository_owner_id": "9919",
        "repository_visibility": "private",
        "actor": "octocat",
        "actor_id": "12",
        "event_name": event_name,
        "ref": ref,
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
        "head_ref": "feature" if pull_request else "",
        "base_ref": "main" if pull_request else "",
        "workflow": "Train and report",
        "workflow_ref": f"{WORKFLOW}@{ref}",
        "run_id": "4242",
        "run_number": "7",
        "run_attempt": "1",
        "runner_environment": "self-hosted",
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


def attributes(mapping: dict[str, str], token_claims: dict) -> dict[str, str]:
    """What the provider's mapping makes of the claims: `google.subject` and `attribute.*`, as strings."""
    return {name: str(evaluate(expression, token_claims)) for name, expression in mapping.items()}


def in_principal_set(principal_set: str, attributes_: dict[str, str]) -> bool:
    """Whether a federated identity with these attributes is in `.../attribute.NAME/VALUE`."""
    prefix = f"principalSet://iam.googleapis.com/{POOL}/attribute."
    assert principal_set.startswith(prefix), principal_set
    name, _, value = principal_set.removeprefix(prefix).partition("/")
    return attributes_.get(f"attribute.{name}") == value


# What each admitted event looks like, and whether it runs on the data branch (main).
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
    "a fork's pull request": claims(
        "pull_request",
        "refs/pull/3/merge",
        repository="forker/Models",
        repository_id="818181",
        repository_owner="forker",
        repository_owner_id="31337",
        sub="repo:forker/Models:pull_request",
    ),
    "a fork's push": claims(
        repository="forker/Models",
        repository_id="818181",
        repository_owner="forker",
        repository_owner_id="31337",
        sub="repo:forker/Models:ref:refs/heads/main",
    ),
    # Runs here, with this repository's claims, on a stranger's pull request, comment or run.
    "pull_request_target": claims("pull_request_target", "refs/heads/main"),
    "issue_comment": claims("issue_comment", "refs/heads/main"),
    "workflow_run": claims("workflow_run", "refs/heads/main"),
    "release": claims("release", "refs/tags/v1.0.0"),
    "pull_request_review": claims("pull_request_review", "refs/pull/7/merge"),
    "merge_group": claims("merge_group", "refs/heads/gh-readonly-queue/main/pr-7-0123abc"),
    "no event_name claim": {k: v for k, v in claims().items() if k != "event_name"},
    "another repository of the owner": claims(
        repository="Acme/Other", repository_id="515151", sub="repo:Acme/Other:ref:refs/heads/main"
    ),
    "same name, another ID": claims(repository_id="777777"),  # deleted and re-created under the same name
    "another owner ID": claims(repository_owner_id="31337"),  # the owner account was replaced
    "other spelling": claims(repository="acme/models"),  # the name is compared as GitHub spells it
}


@pytest.fixture(scope="module")
def with_data():
    """The program with a data bucket: every binding it can make."""
    return run_program({f"{P}:dataBucket": f"gs://{BUCKET}/"})


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
    assert condition == (
        "assertion.repository_id == '424242' && assertion.repository_owner_id == '9919' && "
        "assertion.repository == 'Acme/Models' && "
        "assertion.event_name in ['push', 'pull_request', 'workflow_dispatch', 'schedule']"
    )


def test_a_quote_in_a_value_cannot_change_the_condition():
    condition = attribute_condition("1", "2", "o/x' || true || 'y")
    assert not admits(condition, claims(repository_id="1", repository_owner_id="2", repository="o/other"))
    assert admits(condition, claims(repository_id="1", repository_owner_id="2", repository="o/x' || true || 'y"))
    for value in ("a'b", "a\\'b", "a\\", "\\' || true || \\'"):
        assert str(evaluate(cel_string(value), {})) == value


# ---------------------------------------------------------------- the mapping --


@pytest.fixture(scope="module")
def mapping(program) -> dict[str, str]:
    return provider(program)["attributeMapping"]


def test_the_provider_trusts_githubs_issuer_and_maps_the_claims_iam_names(program, mapping):
    trusted = provider(program)
    assert trusted["oidc"] == {"issuerUri": "https://token.actions.githubusercontent.com"}
    assert mapping == {
        "google.subject": "assertion.sub",
        "attribute.repository": "assertion.repository",
        "attribute.repository_id": "assertion.repository_id",
        "attribute.repository_owner_id": "assertion.repository_owner_id",
        "attribute.event_name": "assertion.event_name",
        "attribute.ref": "assertion.ref",
        "attribute.workflow_ref": "assertion.workflow_ref",
        "attribute.data_writer": "assertion.ref == 'refs/heads/main' ? 'true' : 'false'",
    }
    pool = program.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool").inputs
    assert trusted["workloadIdentityPoolId"] == pool["workloadIdentityPoolId"] == "gpu-runners-github"


@pytest.mark.parametrize("token, on_main", list(ADMITTED.values()), ids=list(ADMITTED))
def test_the_mapping_gives_every_admitted_run_its_claims_and_says_which_run_on_the_data_branch(mapping, token, on_main):
    mapped = attributes(mapping, token)
    assert mapped == {
        "google.subject": token["sub"],
        "attribute.repository": "Acme/Models",
        "attribute.repository_id": "424242",
        "attribute.repository_owner_id": "9919",
        "attribute.event_name": token["event_name"],
        "attribute.ref": token["ref"],
        "attribute.workflow_ref": token["workflow_ref"],
        "attribute.data_writer": "true" if on_main else "false",
    }
    # The principal sets the bindings name, matched against these attributes.
    assert in_principal_set(REPOSITORY_SET, mapped)
    assert in_principal_set(WRITER_SET, mapped) is on_main


def test_the_data_branch_is_the_repositorys_default_branch_as_github_reports_it():
    mapping = provider(run_program(repository={"defaultBranch": "trunk"}))["attributeMapping"]
    writers = [
        ref
        for ref in ("refs/heads/trunk", "refs/heads/main", "refs/heads/trunk2", "refs/tags/trunk")
        if attributes(mapping, claims("push", ref))["attribute.data_writer"] == "true"
    ]
    assert writers == ["refs/heads/trunk"]


@pytest.mark.parametrize(
    "configured, branch",
    [
        ("release/v2", "release/v2"),
        ("refs/heads/release/v2", "release/v2"),  # the full ref is accepted too
    ],
)
def test_data_write_branch_overrides_the_default_branch(configured, branch):
    program = run_program({f"{P}:dataBucket": BUCKET, f"{P}:dataWriteBranch": configured})
    mapping = provider(program)["attributeMapping"]
    assert attributes(mapping, claims("push", f"refs/heads/{branch}"))["attribute.data_writer"] == "true"
    assert attributes(mapping, claims("push", "refs/heads/main"))["attribute.data_writer"] == "false"
    # The bindings do not change with the branch: the principal set names the derived attribute.
    bindings = program.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
    members = {binding.inputs["role"]: binding.inputs["member"] for binding in bindings}
    assert members["roles/storage.objectCreator"] == WRITER_SET


def test_a_branch_name_with_a_quote_is_matched_literally():
    mapping = attribute_mapping("it's")
    assert attributes(mapping, claims("push", "refs/heads/it's"))["attribute.data_writer"] == "true"
    assert attributes(mapping, claims("push", "refs/heads/it"))["attribute.data_writer"] == "false"


# ----------------------------------------------------------------- IAM bindings --


def iam_bindings(program) -> list[tuple[str, str, str]]:
    """(resource type, role, member) of every IAM binding the program makes."""
    kinds = (
        "gcp:projects/iAMMember:IAMMember",
        "gcp:serviceaccount/iAMMember:IAMMember",
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
    )
    return sorted(
        (r.typ.split(":")[1], r.inputs["role"], r.inputs["member"]) for kind in kinds for r in program.of_type(kind)
    )


def test_every_iam_binding_and_its_member(program, with_data):
    nodes = "serviceAccount:gpu-runners-nodes@acme-ml.iam.gserviceaccount.com"
    without_data = [
        *[
            ("projects/iAMMember", role, nodes)
            for role in (
                "roles/logging.logWriter",
                "roles/monitoring.metricWriter",
                "roles/monitoring.viewer",
                "roles/stackdriver.resourceMetadata.writer",
                "roles/autoscaling.metricsWriter",
            )
        ],
        ("artifactregistry/repositoryIamMember", "roles/artifactregistry.reader", nodes),
        ("projects/iAMMember", "roles/container.clusterViewer", f"serviceAccount:{CI_ACCOUNT}"),
        ("serviceaccount/iAMMember", "roles/iam.workloadIdentityUser", REPOSITORY_SET),
    ]
    assert iam_bindings(program) == sorted(without_data)
    assert iam_bindings(with_data) == sorted(
        [
            *without_data,
            ("storage/bucketIAMMember", "roles/storage.objectViewer", REPOSITORY_SET),
            ("storage/bucketIAMMember", "roles/storage.objectCreator", WRITER_SET),
        ]
    )


def test_only_this_repositorys_admitted_runs_may_act_as_ci_and_nothing_else_may(program):
    (binding,) = program.of_type("gcp:serviceaccount/iAMMember:IAMMember")
    assert binding.inputs["serviceAccountId"] == f"projects/acme-ml/serviceAccounts/{CI_ACCOUNT}"
    assert binding.inputs["member"] == REPOSITORY_SET


def test_cis_kubernetes_rights_are_bound_to_its_google_account(program):
    binding = next(
        b.inputs
        for b in program.of_type("kubernetes:rbac.authorization.k8s.io/v1:RoleBinding")
        if b.inputs["metadata"]["name"] == "ci-runner-launcher"
    )
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": CI_ACCOUNT}]
    assert binding["metadata"]["namespace"] == "github-runners"


# ------------------------------------------------------------------------- data --


def test_without_a_data_bucket_there_is_no_data_access(program):
    assert program.of_type("gcp:storage/bucketIAMMember:BucketIAMMember") == []


def test_every_admitted_run_reads_the_bucket_and_only_the_data_branchs_runs_add_to_it(with_data):
    bindings = sorted((b.name, b.inputs) for b in with_data.of_type("gcp:storage/bucketIAMMember:BucketIAMMember"))
    assert bindings == [
        ("github-oidc-data-read", {"bucket": BUCKET, "role": "roles/storage.objectViewer", "member": REPOSITORY_SET}),
        ("github-oidc-data-write", {"bucket": BUCKET, "role": "roles/storage.objectCreator", "member": WRITER_SET}),
    ]
    # Nothing on the project's storage, and no role that deletes or overwrites an object.
    project_roles = {r.inputs["role"] for r in with_data.of_type("gcp:projects/iAMMember:IAMMember")}
    assert not [role for role in project_roles if role.startswith("roles/storage")]
    assert not {"roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"} & {
        inputs["role"] for _, inputs in bindings
    }


@pytest.mark.parametrize(
    "key, value, accepted",
    [
        ("dataBucket", "My_Bucket", "Cloud Storage bucket name"),
        ("dataWriteBranch", "feature..x", "a branch name"),
        ("dataWriteBranch", "my branch", "a branch name"),
        ("dataWriteBranch", "refs/heads/", "a branch name"),
        ("dataBucket", "googlebucket", "Cloud Storage bucket name"),
        ("dataBucket", "ab", "3-63"),
        ("controlPlaneAuthorizedNetworks", '["203.0.113.7/24"]', "CIDR form"),
        ("controlPlaneAuthorizedNetworks", '["not-a-network"]', "CIDR form"),
        ("controlPlaneAuthorizedNetworks", '["2001:db8::/32"]', "IPv4"),
    ],
)
def test_bad_data_and_network_settings_are_refused_naming_the_key(key, value, accepted):
    runs = []
    with pytest.raises(RunError) as refused:
        run_program({f"{P}:{key}": value}, on_run=runs.append)
    line = next(entry for entry in str(refused.value).splitlines() if f"{P}:{key}:" in entry)
    assert accepted in line
    assert runs[0].resources == []


# --------------------------------------------------------------- control plane --


def test_the_control_plane_is_open_by_default_and_restricted_when_asked(program):
    cluster = program.one("gcp:container/cluster:Cluster").inputs
    assert "masterAuthorizedNetworksConfig" not in cluster
    restricted = run_program({f"{P}:controlPlaneAuthorizedNetworks": '["203.0.113.0/24", "198.51.100.8/32"]'})
    blocks = restricted.one("gcp:container/cluster:Cluster").inputs["masterAuthorizedNetworksConfig"]["cidrBlocks"]
    assert [b["cidrBlock"] for b in blocks] == ["203.0.113.0/24", "198.51.100.8/32"]
