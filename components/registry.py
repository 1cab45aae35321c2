"""Artifact Registry in front of GHCR: the cluster pulls the runner image with no registry credential of its own."""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from components.runner_image import REGISTRY

UPSTREAM = f"https://{REGISTRY}"
# Only Artifact Registry's service agent may read the upstream token.
SECRET_ACCESSOR = "roles/secretmanager.secretAccessor"


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def cluster_image(published: str, region: str, gcp_project: str, repository_id: str) -> str:
    """`ghcr.io/<path>@sha256:...` as the remote repository serves it: the same path, the same digest."""
    prefix = f"{REGISTRY}/"
    if not published.startswith(prefix):
        raise ValueError(f"not a {REGISTRY} image: {published}")
    return f"{region}-docker.pkg.dev/{gcp_project}/{repository_id}/{published[len(prefix):]}"


@dataclass(frozen=True)
class PullThroughRegistryArgs:
    gcp_project: str
    zone: str
    """The cluster's zone; the repository lives in its region, next to the nodes."""
    name_prefix: str
    """Names the repository and the secret, e.g. the cluster's name."""
    github_owner: str
    """The GHCR user the upstream credential belongs to."""
    pull_token: pulumi.Input[str]
    """A token that may read the image from GHCR; kept a secret, in Secret Manager."""
    services: tuple[pulumi.Resource, ...] = ()
    """The APIs that must be enabled first."""


class PullThroughRegistry(pulumi.ComponentResource):
    """An Artifact Registry remote repository (Docker, upstream ghcr.io) in the cluster's
    region, whose upstream credential is a Secret Manager secret readable only by
    Artifact Registry's service agent.

    The nodes' service account reads Artifact Registry, so runner pods need no pull
    secret, and GKE image streaming works. `image_for(published)` maps the GHCR image
    to the same digest through this repository.
    """

    repository: gcp.artifactregistry.Repository

    def __init__(self, name: str, args: PullThroughRegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:PullThroughRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.services))
        self._args = args
        self._region = region_of(args.zone)

        secret = gcp.secretmanager.Secret(
            f"{name}-upstream-token",
            project=args.gcp_project,
            secret_id=f"{args.name_prefix}-ghcr-pull-token",
            replication={"user_managed": {"replicas": [{"location": self._region}]}},
            opts=child,
        )
        version = gcp.secretmanager.SecretVersion(
            f"{name}-upstream-token",
            secret=secret.id,
            secret_data=pulumi.Output.secret(args.pull_token),
            opts=pulumi.ResourceOptions(parent=self),
        )
        agent = gcp.projects.ServiceIdentity(
            f"{name}-agent", project=args.gcp_project, service="artifactregistry.googleapis.com", opts=child
        )
        reader = gcp.secretmanager.SecretIamMember(
            f"{name}-agent-reads-token",
            project=args.gcp_project,
            secret_id=secret.secret_id,
            role=SECRET_ACCESSOR,
            member=agent.member,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            project=args.gcp_project,
            location=self._region,
            repository_id=f"{args.name_prefix}-ghcr",
            description=f"Pull-through cache of {UPSTREAM} for the GKE runners",
            format="DOCKER",
            mode="REMOTE_REPOSITORY",
            remote_repository_config={
                "description": "GHCR",
                "docker_repository": {"custom_repository": {"uri": UPSTREAM}},
                "upstream_credentials": {
                    "username_password_credentials": {
                        "username": args.github_owner,
                        "password_secret_version": version.name,
                    }
                },
            },
            # Artifact Registry checks the upstream credential when it is set.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[reader, *args.services]),
        )
        self.register_outputs({"repository": self.repository.id})

    def image_for(self, published: pulumi.Input[str]) -> pulumi.Output[str]:
        return pulumi.Output.all(published, self.repository.repository_id).apply(
            lambda values: cluster_image(values[0], self._region, self._args.gcp_project, values[1])
        )
