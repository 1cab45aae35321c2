"""Where the images live and how they are named: pure functions, no resources."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "ghcr.io"
# Images are built with the repository as their context (the root .dockerignore lets
# only their sources in), so both can copy the shared `runner_contract` package.
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent.parent
# The user name Artifact Registry takes with an OAuth access token as the password.
ACCESS_TOKEN_USER = "oauth2accesstoken"


@dataclass(frozen=True)
class ImageSource:
    """One image of the project: its name, its Dockerfile, and the folders it is built from."""

    name: str
    dockerfile: str
    sources: tuple[str, ...]


RUNNER_IMAGE = ImageSource("github-runner", "runner_image/Dockerfile", ("runner_image", "runner_contract"))
BROKER_IMAGE = ImageSource("runner-broker", "broker/Dockerfile", ("broker", "runner_contract"))


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
