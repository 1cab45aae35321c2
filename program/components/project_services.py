"""The Google APIs the program uses, enabled as resources so a new project needs no manual step."""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

CONTAINER = "container.googleapis.com"
IMAGE_STREAMING = "containerfilesystem.googleapis.com"
ARTIFACT_REGISTRY = "artifactregistry.googleapis.com"
IAM = "iam.googleapis.com"
# GitHub's OIDC token is traded at STS, then for CI's service account at IAM credentials.
TOKEN_EXCHANGE = "sts.googleapis.com"
IMPERSONATION = "iamcredentials.googleapis.com"
APIS = (CONTAINER, IMAGE_STREAMING, ARTIFACT_REGISTRY, IAM, TOKEN_EXCHANGE, IMPERSONATION)


@dataclass(frozen=True)
class ProjectServicesArgs:
    gcp_project: str


class ProjectServices(pulumi.ComponentResource):
    """Enables each API in `APIS`. Destroy leaves them enabled: other work in the
    project may use them, and an enabled API costs nothing."""

    apis: dict[str, gcp.projects.Service]
    """By API name, so each resource can wait for the APIs it needs and no other."""

    def __init__(self, name: str, args: ProjectServicesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:ProjectServices", name, None, opts)
        self.apis = {
            api: gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.gcp_project,
                service=api,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in APIS
        }
        self.register_outputs({})
