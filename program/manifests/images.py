"""Where the images live and how they are named: pure functions, no resources."""

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REGISTRY = "ghcr.io"
# Images are built with the repository as their context (the root .dockerignore lets
# only their sources in), so both can copy the shared `runner_contract` package.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent.parent
# The user name Artifact Registry takes with an OAuth access token as the password.
ACCESS_TOKEN_USER = "oauth2accesstoken"


@dataclass(frozen=True)
class ImageSource:
    """One image: its name, its Dockerfile, the folders it is built from, and its build context.

    Paths are relative to the project folder; a user's own image has its own folder as context.
    """

    name: str
    dockerfile: str
    sources: tuple[str, ...]
    context: str = "."


RUNNER_IMAGE = ImageSource("github-runner", "runner_image/Dockerfile", ("runner_image", "runner_contract"))
BROKER_IMAGE = ImageSource("runner-broker", "broker/Dockerfile", ("broker", "runner_contract"))
# A user's image for GPU runners starts from ours, whose digest it is given in this build argument.
BASE_IMAGE_ARG = "RUNNER_IMAGE"
BASE_IMAGE_FROM = re.compile(
    r"^\s*FROM\s+(?:--platform=\S+\s+)?\$\{?RUNNER_IMAGE\}?(?:\s|$)", re.IGNORECASE | re.MULTILINE
)


def custom_runner_image(dockerfile: str) -> ImageSource:
    """The user's GPU runner image: built from the Dockerfile's own folder."""
    folder = str(PurePosixPath(dockerfile).parent)
    return ImageSource("github-runner-custom", dockerfile, (folder,), context=folder)


def custom_dockerfile_problem(text: str) -> str | None:
    """Why a user's Dockerfile cannot be a runner image, or None: it must start FROM ours."""
    first_from = next((line for line in text.splitlines() if line.strip().upper().startswith("FROM")), None)
    if first_from is None or not BASE_IMAGE_FROM.match(first_from):
        return (
            f"its first FROM must be the runner image, given as the build argument {BASE_IMAGE_ARG}, so the "
            f"entrypoint, the non-root user and the runner stay ours: `ARG {BASE_IMAGE_ARG}` then "
            f"`FROM ${{{BASE_IMAGE_ARG}}}`; got {first_from.strip() if first_from else 'no FROM'!r}"
        )
    return None


def context_digest(root: Path, source: ImageSource) -> str:
    """A short hash of what the image is built from, so each change gets its own immutable tag."""
    digest = hashlib.sha256()
    files = [root / source.dockerfile]
    for folder in source.sources:
        files += [p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in sorted(set(files)):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def image_tag(context_tag: str, base_image: str | None) -> str:
    """The content tag, and for an image built on ours, the start of its base's digest too."""
    return f"{context_tag}-{base_image.rsplit(':', 1)[-1][:12]}" if base_image else context_tag


def published_repository(owner: str, repository: str, image: str) -> str:
    """Where GHCR keeps the image, under the repository's owner; GHCR wants lowercase names."""
    return f"{REGISTRY}/{owner}/{repository}/{image}".lower()


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def registry_host(region: str) -> str:
    return f"{region}-docker.pkg.dev"


def cluster_repository(region: str, gcp_project: str, repository_id: str) -> str:
    """The Artifact Registry repository the cluster pulls from, as an image path prefix."""
    return f"{registry_host(region)}/{gcp_project}/{repository_id}"


def pinned(repository: str, image: str, digest: str) -> str:
    """`<repository>/<image>@sha256:...`: what the cluster runs, never a moving tag."""
    if not digest.startswith("sha256:"):
        raise ValueError(f"not a digest: {digest}")
    return f"{repository}/{image}@{digest}"
