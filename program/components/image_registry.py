"""The Artifact Registry repository the cluster pulls its images from."""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from program.manifests.images import cluster_repository, region_of

READER = "roles/artifactregistry.reader"


@dataclass(frozen=True)
class ImageRegistryArgs:
    gcp_project: str
    zone: str
    """The cluster's zone; the repository lives in its region, next to the nodes."""
    name_prefix: str
    """Names the repository, e.g. the cluster's name."""
    node_account_member: pulumi.Input[str]
    """The nodes' service account (`serviceAccount:...`): the one reader of the repository."""
    services: tuple[pulumi.Resource, ...] = ()
    """The APIs that must be enabled first."""


class ImageRegistry(pulumi.ComponentResource):
    """A standard Docker repository in the cluster's region, which the nodes' service account
    alone may read (no project-wide reader role, no upstream credential, no Secret Manager).

    `pulumi up` pushes the images here with the Google credentials it already has; the
    cluster pulls them by digest, with image streaming. Gives `repository`: the image path
    prefix `<region>-docker.pkg.dev/<project>/<repository id>`.
    """

    repository: pulumi.Output[str]

    def __init__(self, name: str, args: ImageRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:ImageRegistry", name, None, opts)
        region = region_of(args.zone)
        repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            project=args.gcp_project,
            location=region,
            repository_id=f"{args.name_prefix}-images",
            description="The GKE GPU runners' images, pulled by digest",
            format="DOCKER",
            docker_config={"immutable_tags": True},
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.services)),
        )
        gcp.artifactregistry.RepositoryIamMember(
            f"{name}-nodes-read",
            project=args.gcp_project,
            location=region,
            repository=repository.repository_id,
            role=READER,
            member=args.node_account_member,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repository = repository.repository_id.apply(
            lambda repository_id: cluster_repository(region, args.gcp_project, repository_id)
        )
        self.register_outputs({"repository": self.repository})
