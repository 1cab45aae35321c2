"""Keyless Google access for this repository's workflows: GitHub's OIDC token, traded for short-lived credentials."""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
# Lets an identity through GKE's front door; what it may do inside is Kubernetes RBAC's to say.
CLUSTER_ENTRY_ROLE = "roles/container.clusterViewer"
# The events the example workflows run on (pull_request, workflow_dispatch) and the two that
# run only what was pushed here (push, schedule): each runs code of people who may push here.
# Never pull_request_target, issue_comment, workflow_run or any other: they run with this
# repository's claims for a stranger's pull request, comment or run, and no example needs them.
ADMITTED_EVENTS = ("push", "pull_request", "workflow_dispatch", "schedule")
# Every admitted run reads the data; only runs on the data branch add to it. DVC's remote is
# content-addressed (an object's name is its hash), so a push lists, reads and creates
# objects but never replaces or deletes one: objectCreator holds no delete, so no run,
# not even the data branch's, can overwrite or remove what is there.
DATA_READ_ROLE = "roles/storage.objectViewer"
DATA_WRITE_ROLE = "roles/storage.objectCreator"
# The derived attribute that says a run is on the data branch: "true" or "false", a plain
# value a principal set can name whatever the branch is called.
DATA_WRITER = "data_writer"


def cel_string(value: str) -> str:
    """`value` as a CEL string literal, whatever it holds (a branch name may contain a quote)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def attribute_condition(
    repository_id: str, owner_id: str, full_name: str, events: tuple[str, ...] = ADMITTED_EVENTS
) -> str:
    """CEL over GitHub's OIDC claims: this repository only, by its immutable IDs and its name,
    and only runs of the admitted events.

    A repository renamed, or deleted and re-created under the same name, has another ID and
    gets nothing; a fork has its own repository and owner IDs. A fork's pull request that runs
    here carries this repository's claims (GitHub has no claim naming the head repository), so
    what keeps it out is GitHub, not this condition: a `pull_request` from a fork gets no
    id-token, unless a private repository turns on "Send write tokens to workflows from pull
    requests".
    """
    return (
        f"assertion.repository_id == {cel_string(repository_id)} && "
        f"assertion.repository_owner_id == {cel_string(owner_id)} && "
        f"assertion.repository == {cel_string(full_name)} && "
        f"assertion.event_name in [{', '.join(cel_string(event) for event in events)}]"
    )


def attribute_mapping(data_write_branch: str) -> dict[str, str]:
    """The claims IAM may name, and `attribute.data_writer`: "true" for a run on `data_write_branch`.

    `ref` is `refs/heads/<branch>` for a push, a dispatch or a schedule on that branch, and
    `refs/pull/<n>/merge` for a pull request, so no pull request is ever a data writer.
    """
    on_data_branch = f"assertion.ref == {cel_string(f'refs/heads/{data_write_branch}')}"
    return {
        "google.subject": "assertion.sub",
        "attribute.repository": "assertion.repository",
        "attribute.repository_id": "assertion.repository_id",
        "attribute.repository_owner_id": "assertion.repository_owner_id",
        "attribute.event_name": "assertion.event_name",
        "attribute.ref": "assertion.ref",
        # The workflow file and the ref it ran from, for a principal set that names one workflow.
        "attribute.workflow_ref": "assertion.workflow_ref",
        f"attribute.{DATA_WRITER}": f"{on_data_branch} ? 'true' : 'false'",
    }


def repository_principal_set(pool_name: str, repository_id: str) -> str:
    """Every admitted workflow run of the repository, as IAM names it."""
    return f"principalSet://iam.googleapis.com/{pool_name}/attribute.repository_id/{repository_id}"


def data_writer_principal_set(pool_name: str) -> str:
    """The admitted runs on the data branch, as IAM names them."""
    return f"principalSet://iam.googleapis.com/{pool_name}/attribute.{DATA_WRITER}/true"


@dataclass(frozen=True)
class GitHubWorkloadIdentityArgs:
    gcp_project: str
    name_prefix: str
    """Names the pool (`<prefix>-github`) and CI's service account (`<prefix>-ci`)."""
    repository_full_name: str
    """owner/name as GitHub spells it (claims compare case-sensitively)."""
    repository_id: str
    owner_id: str
    data_bucket: str | None = None
    """A GCS bucket the repository's training jobs may read and add to; None: no data access."""
    data_write_branch: str = ""
    """The branch whose runs may add objects to `data_bucket` (without `refs/heads/`); empty: none may."""
    services: tuple[pulumi.Resource, ...] = ()


class GitHubWorkloadIdentity(pulumi.ComponentResource):
    """Creates a Workload Identity pool with an OIDC provider for GitHub Actions that admits this
    repository's runs of the admitted events alone; service account `<prefix>-ci`, which those
    runs may act as, with only the role that lets it into GKE (RBAC gives it the runner
    namespace, read-only); and, with a data bucket, object read on that bucket for those runs
    themselves and object creation for those on the data branch.

    Gives `provider_name` (GCP_WORKLOAD_IDENTITY_PROVIDER) and `ci_account_email` (GCP_SERVICE_ACCOUNT).
    """

    provider_name: pulumi.Output[str]
    ci_account_email: pulumi.Output[str]

    def __init__(self, name: str, args: GitHubWorkloadIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:GitHubWorkloadIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.services))

        pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-pool",
            project=args.gcp_project,
            workload_identity_pool_id=f"{args.name_prefix[:25].rstrip('-')}-github",
            display_name="GitHub Actions",
            description=f"Workflows of {args.repository_full_name}",
            opts=child,
        )
        provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-provider",
            project=args.gcp_project,
            workload_identity_pool_id=pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="github-actions",
            display_name="GitHub Actions OIDC",
            oidc={"issuer_uri": GITHUB_ISSUER},
            attribute_mapping=attribute_mapping(args.data_write_branch),
            attribute_condition=attribute_condition(args.repository_id, args.owner_id, args.repository_full_name),
            opts=pulumi.ResourceOptions(parent=self),
        )
        workflows = pool.name.apply(lambda pool_name: repository_principal_set(pool_name, args.repository_id))

        # CI reaches the cluster with a token of this account. `gpu-runner credential` trades the
        # job's GitHub OIDC token (GitHub's expire 5 minutes after issue) at Google's STS for a
        # federated token, which expires with it, then asks IAM Credentials' generateAccessToken
        # for a token of this account with the shortest lifetime Google documents, 300s (service
        # account access tokens: 5 minutes to 12 hours, over 1 hour only where an organization
        # policy allows it; federated tokens: the external token's expiry), see
        # https://cloud.google.com/docs/authentication/token-types. The lifetime is the caller's
        # choice, so a job with id-token: write could ask for up to an hour; this account can only
        # enter GKE and read the runner namespace, and that is all an hour would buy.
        ci_account = gcp.serviceaccount.Account(
            f"{name}-ci",
            project=args.gcp_project,
            account_id=f"{args.name_prefix[:27].rstrip('-')}-ci",
            display_name=f"CI of {args.repository_full_name}: reads the runner namespace",
            opts=child,
        )
        # Only the admitted runs reach this binding: the provider's condition refuses every
        # other event before a federated token exists.
        gcp.serviceaccount.IAMMember(
            f"{name}-ci-from-github",
            service_account_id=ci_account.name,
            role="roles/iam.workloadIdentityUser",
            member=workflows,
            opts=pulumi.ResourceOptions(parent=self),
        )
        gcp.projects.IAMMember(
            f"{name}-ci-enters-gke",
            project=args.gcp_project,
            role=CLUSTER_ENTRY_ROLE,
            member=ci_account.email.apply(lambda email: f"serviceAccount:{email}"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        if args.data_bucket:
            gcp.storage.BucketIAMMember(
                f"{name}-data-read",
                bucket=args.data_bucket,
                role=DATA_READ_ROLE,
                member=workflows,
                opts=pulumi.ResourceOptions(parent=self),
            )
            # Runs on the data branch also read through the binding above: they are admitted runs.
            gcp.storage.BucketIAMMember(
                f"{name}-data-write",
                bucket=args.data_bucket,
                role=DATA_WRITE_ROLE,
                member=pool.name.apply(data_writer_principal_set),
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.provider_name = provider.name
        self.ci_account_email = ci_account.email
        self.register_outputs({"provider_name": self.provider_name, "ci_account_email": self.ci_account_email})
