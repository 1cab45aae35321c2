"""Keyless access for the repository's deploy job (the tutorial's `publish-and-deploy`), opt-in.

That job pushes the model's image to the user's Artifact Registry repository and applies
its manifests to the user's namespace of the cluster, today with a service account key.
This identity lets it do the same with a short-lived token from GitHub's OIDC, on the
default branch alone, and nothing more, so the key can be deleted.
"""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

from program.manifests.runners import app_labels
from program.settings import ArtifactRepository
from runner_contract import DEPLOY_ROLE

# Lets the identity through GKE's front door (get-gke-credentials); inside, RBAC decides.
CLUSTER_ENTRY_ROLE = "roles/container.clusterViewer"
REGISTRY_WRITER = "roles/artifactregistry.writer"
# `dvc pull` of the trained model: read the objects, never write or delete them.
DATA_READER = "roles/storage.objectViewer"

READ = ["get", "list", "watch"]
WRITE = [*READ, "create", "update", "patch", "delete"]
# What `kubectl apply` of a model's Deployment, Service and the like, and a rollout's
# watch, need in one namespace. No Secrets, no exec or attach, no ServiceAccounts, no RBAC.
DEPLOY_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": WRITE},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": READ},
    {"apiGroups": [""], "resources": ["services", "configmaps", "persistentvolumeclaims"], "verbs": WRITE},
    {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": READ},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": WRITE},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": WRITE},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": WRITE},
]


def branch_subject(repository_full_name: str, branch: str) -> str:
    """GitHub's OIDC `sub` for a run on `branch` (push or workflow_dispatch, no environment)."""
    return f"repo:{repository_full_name}:ref:refs/heads/{branch}"


def pool_of(provider_name: str) -> str:
    """The Workload Identity pool's resource name, from its provider's."""
    return provider_name.split("/providers/", 1)[0]


def branch_principal(provider_name: str, subject: str) -> str:
    """Exactly the runs whose token carries `subject`, as IAM names them."""
    return f"principal://iam.googleapis.com/{pool_of(provider_name)}/subject/{subject}"


@dataclass(frozen=True)
class DeployIdentityArgs:
    gcp_project: str
    name_prefix: str
    """Names the service account `<prefix>-deploy`."""
    repository_full_name: str
    """owner/name as GitHub spells it: the OIDC subject compares case-sensitively."""
    default_branch: str
    workload_identity_provider: pulumi.Input[str]
    """The provider that admits this repository's OIDC tokens (GCP_WORKLOAD_IDENTITY_PROVIDER)."""
    namespace: str | None = None
    """The user's namespace the model is deployed to; None: no cluster rights."""
    registry: ArtifactRepository | None = None
    """The Artifact Registry Docker repository the job pushes to; None: no registry rights."""
    data_bucket: str | None = None
    """The DVC bucket the job pulls the trained model from; None: no data rights."""
    services: tuple[pulumi.Resource, ...] = ()


class DeployIdentity(pulumi.ComponentResource):
    """Service account `<prefix>-deploy`, which runs of the repository's default branch alone may act
    as; with `namespace`, the right to enter the cluster and a Role (`gke-gpu-runners-deployer`)
    to apply a model's workloads in that namespace only; with a registry, write on that one
    repository; with a data bucket, read of its objects.

    Needs the GCP and the Kubernetes providers. Gives `email` (GCP_DEPLOY_SERVICE_ACCOUNT).
    The namespace is the user's: it is neither created nor deleted here.
    """

    email: pulumi.Output[str]

    def __init__(self, name: str, args: DeployIdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:DeployIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        account = gcp.serviceaccount.Account(
            f"{name}-account",
            project=args.gcp_project,
            account_id=f"{args.name_prefix[:23].rstrip('-')}-deploy",
            display_name=f"Deploy job of {args.repository_full_name} ({args.default_branch} only)",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.services)),
        )
        member = account.email.apply(lambda email: f"serviceAccount:{email}")
        subject = branch_subject(args.repository_full_name, args.default_branch)
        gcp.serviceaccount.IAMMember(
            f"{name}-from-github",
            service_account_id=account.name,
            role="roles/iam.workloadIdentityUser",
            member=pulumi.Output.from_input(args.workload_identity_provider).apply(
                lambda provider: branch_principal(provider, subject)
            ),
            opts=child,
        )
        if args.registry:
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-push",
                project=args.registry.project,
                location=args.registry.location,
                repository=args.registry.repository,
                role=REGISTRY_WRITER,
                member=member,
                opts=child,
            )
        if args.data_bucket:
            gcp.storage.BucketIAMMember(
                f"{name}-data", bucket=args.data_bucket, role=DATA_READER, member=member, opts=child
            )
        if args.namespace:
            gcp.projects.IAMMember(
                f"{name}-enters-gke", project=args.gcp_project, role=CLUSTER_ENTRY_ROLE, member=member, opts=child
            )
            metadata = {"name": DEPLOY_ROLE, "namespace": args.namespace, "labels": app_labels(DEPLOY_ROLE)}
            role = k8s.rbac.v1.Role(f"{name}-role", metadata=metadata, rules=DEPLOY_RULES, opts=child)
            k8s.rbac.v1.RoleBinding(
                f"{name}-binding",
                metadata=metadata,
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
                # GKE names a Google service account to RBAC by its email.
                subjects=[{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": account.email}],
                opts=child,
            )

        self.email = account.email
        self.register_outputs({"email": self.email})
