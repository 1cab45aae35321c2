"""The runner image: `runner_image/` built for linux/amd64 and pushed to GHCR."""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

REGISTRY = "ghcr.io"
IMAGE_DIR = Path(__file__).resolve().parent.parent / "runner_image"


def context_digest(directory: Path) -> str:
    """A short hash of the build context, so each change gets its own immutable tag."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def image_repository(owner: str, repository: str) -> str:
    """Where the image lives; GHCR wants lowercase names."""
    return f"{REGISTRY}/{owner}/{repository}/github-runner".lower()


@dataclass(frozen=True)
class RunnerImageArgs:
    github_owner: str
    """Owner of the repository; the image is pushed under it, and logs in as it."""
    github_repository: str
    """The repository's name; the image is `ghcr.io/<owner>/<repository>/github-runner`."""
    registry_token: pulumi.Input[str]
    """A token with write:packages; kept a secret."""
    context: Path = IMAGE_DIR


class RunnerImage(pulumi.ComponentResource):
    """Builds the runner image and pushes it to GHCR, where it stays private.

    Needs: a Docker engine with buildx where `pulumi up` runs, and a token that may
    write packages for the repository's owner. Gives `image`: the pushed image pinned
    by digest. It depends on nothing in GCP, so it builds while the cluster is created.
    """

    image: pulumi.Output[str]
    """`ghcr.io/<owner>/<repository>/github-runner@sha256:...`"""

    def __init__(self, name: str, args: RunnerImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:RunnerImage", name, None, opts)
        tag = context_digest(args.context)
        # Relative, so the state does not change with the folder the project sits in.
        context = os.path.relpath(args.context)
        built = docker.Image(
            f"{name}-image",
            image_name=f"{image_repository(args.github_owner, args.github_repository)}:{tag}",
            build=docker.DockerBuildArgs(
                context=context,
                dockerfile=os.path.join(context, "Dockerfile"),
                platform="linux/amd64",
            ),
            registry=docker.RegistryArgs(
                server=REGISTRY,
                username=args.github_owner,
                password=pulumi.Output.secret(args.registry_token),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image = built.repo_digest
        self.register_outputs({"image": self.image})
