"""One of the project's images, built for linux/amd64, published to GHCR and pushed to the cluster's registry."""

import os
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from program.manifests.images import (
    ACCESS_TOKEN_USER,
    BASE_IMAGE_ARG,
    REGISTRY,
    REPOSITORY_ROOT,
    ImageSource,
    context_digest,
    image_tag,
    pinned,
    published_repository,
)


@dataclass(frozen=True)
class ContainerImageArgs:
    source: ImageSource
    """Which image: its name, Dockerfile and source folders."""
    github_owner: str
    """Owner of the repository; the image is published under it, and logs in to GHCR as it."""
    github_repository: str
    """The repository's name; the image is `ghcr.io/<owner>/<repository>/<image>`."""
    registry_token: pulumi.Input[str]
    """A token with write:packages, used where `pulumi up` runs; kept a secret."""
    cluster_repository: pulumi.Input[str]
    """The Artifact Registry repository the cluster pulls from (`<region>-docker.pkg.dev/<project>/<id>`)."""
    cluster_registry_token: pulumi.Input[str]
    """A short-lived Google access token of the credentials `pulumi up` runs with; never stored."""
    base_image: pulumi.Input[str] | None = None
    """For an image built on ours: our image by digest, passed as the build argument RUNNER_IMAGE."""


class ContainerImage(pulumi.ComponentResource):
    """Builds the image with the repository as context, publishes it to GHCR (as the tutorial
    does), and pushes the same image to the cluster's Artifact Registry repository.

    Needs: a Docker engine with buildx where `pulumi up` runs. Gives `image` (GHCR, pinned
    by digest) and `cluster_image` (Artifact Registry, the same digest). It depends on
    nothing in GKE, so it builds while the cluster is created.
    """

    image: pulumi.Output[str]
    """`ghcr.io/<owner>/<repository>/<image>@sha256:...`"""
    cluster_image: pulumi.Output[str]
    """`<region>-docker.pkg.dev/<project>/<id>/<image>@sha256:...`, as the cluster pulls it."""

    def __init__(self, name: str, args: ContainerImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:ContainerImage", name, None, opts)
        source = args.source
        # Each change of what it is built from, its base included, gets its own immutable tag.
        tag = pulumi.Output.from_input(args.base_image or "").apply(
            lambda base: image_tag(context_digest(REPOSITORY_ROOT, source), base or None)
        )
        published = published_repository(args.github_owner, args.github_repository, source.name)
        # Relative, so the state does not change with the folder the project sits in.
        context = os.path.relpath(REPOSITORY_ROOT / source.context)
        built = docker.Image(
            f"{name}-build",
            image_name=tag.apply(lambda t: f"{published}:{t}"),
            build=docker.DockerBuildArgs(
                context=context,
                dockerfile=os.path.relpath(REPOSITORY_ROOT / source.dockerfile),
                platform="linux/amd64",
                args={BASE_IMAGE_ARG: args.base_image} if args.base_image is not None else None,
            ),
            registry=docker.RegistryArgs(
                server=REGISTRY,
                username=args.github_owner,
                password=pulumi.Output.secret(args.registry_token),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        target = pulumi.Output.all(args.cluster_repository, tag).apply(lambda v: f"{v[0]}/{source.name}:{v[1]}")
        copy = docker.Tag(
            f"{name}-cluster-tag",
            source_image=built.image_name,
            target_image=target,
            opts=pulumi.ResourceOptions(parent=self),
        )
        pushed = docker.RegistryImage(
            f"{name}-cluster-push",
            name=copy.target_image,
            auth_config=docker.RegistryImageAuthConfigArgs(
                address=pulumi.Output.from_input(args.cluster_repository).apply(
                    lambda repository: repository.split("/")[0]
                ),
                username=ACCESS_TOKEN_USER,
                password=pulumi.Output.secret(args.cluster_registry_token),
            ),
            # The registry keeps what the cluster may still run; the repository goes with the stack.
            keep_remotely=True,
            triggers={"digest": built.repo_digest},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image = built.repo_digest
        self.cluster_image = pulumi.Output.all(args.cluster_repository, pushed.sha256_digest).apply(
            lambda values: pinned(values[0], source.name, values[1])
        )
        self.register_outputs({"image": self.image, "cluster_image": self.cluster_image})
