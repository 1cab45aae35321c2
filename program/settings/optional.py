"""The optional keys: data access, a deploy identity, network limits, the GPU runners' own image."""

import ipaddress
import json
import re

from program.manifests.images import REPOSITORY_ROOT, custom_dockerfile_problem
from program.settings.model import ArtifactRepository
from program.settings.reader import Reader

DOCKER_REPOSITORY = re.compile(
    r"^([a-z0-9-]+)-docker\.pkg\.dev/([a-z][a-z0-9-]{4,28}[a-z0-9])/([a-z0-9][a-z0-9._-]{0,62})$"
)
# A Kubernetes namespace: a DNS label.
DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")


def read_deploy_namespace(read: Reader) -> str | None:
    """The namespace a deploy job may deploy to: the user's, never the runners'."""
    value = read.text("deployNamespace")
    if value is None:
        return None
    runner_namespace = read.text("namespace", "github-runners")
    if not DNS_LABEL.match(value):
        read.problem(
            "deployNamespace",
            f"got {value!r}; accepted: the Kubernetes namespace the deploy job applies "
            "its manifests to, e.g. default (the tutorial's)",
        )
    elif value in (runner_namespace, f"{runner_namespace}-system") or value.startswith(("kube-", "gke-")):
        read.problem(
            "deployNamespace",
            f"got {value!r}, a namespace of the runners or of GKE; accepted: the "
            "namespace your model is deployed to, e.g. default (the tutorial's)",
        )
    return value


def read_deploy_registry(read: Reader) -> ArtifactRepository | None:
    value = read.text("deployRegistry")
    if value is None:
        return None
    match = DOCKER_REPOSITORY.match(value.removeprefix("https://").rstrip("/"))
    if not match:
        read.problem(
            "deployRegistry",
            f"got {value!r}; accepted: an Artifact Registry Docker repository, "
            "<location>-docker.pkg.dev/<project>/<repository> (the tutorial's "
            "GCP_CONTAINER_REGISTRY_HOST), e.g. europe-west6-docker.pkg.dev/my-project/"
            "my-repository",
        )
        return None
    return ArtifactRepository(location=match[1], project=match[2], repository=match[3])


# Cloud Storage's naming rules for a bucket without dots: 3-63 characters.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")


def read_data_bucket(read: Reader) -> str | None:
    value = read.text("dataBucket")
    if value is None:
        return None
    name = value.removeprefix("gs://").rstrip("/")
    if not BUCKET.match(name) or name.startswith("goog") or "google" in name:
        read.problem(
            "dataBucket",
            f"got {value!r}; accepted: a Cloud Storage bucket name (3-63 lowercase letters, "
            "digits, '-' or '_', starting and ending with a letter or digit), e.g. my-dvc-data",
        )
    return name


# What git refuses in a branch name (git check-ref-format --branch).
BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|^-|\.$|(^|/)\.|\.lock(/|$)|^@$")


def read_data_write_branch(read: Reader) -> str | None:
    value = read.text("dataWriteBranch")
    if value is None:
        return None
    branch = value.removeprefix("refs/heads/")
    if not branch or BRANCH_FORBIDDEN.search(branch):
        read.problem(
            "dataWriteBranch",
            f"got {value!r}; accepted: a branch name such as main or release/v2 "
            "(empty: the repository's default branch)",
        )
    return branch


def read_runner_image_dockerfile(read: Reader) -> str | None:
    """A project-relative Dockerfile inside the project folder that starts FROM the runner image."""
    value = read.text("runnerImageDockerfile")
    if value is None:
        return None
    project = REPOSITORY_ROOT
    path = (project / value).resolve()
    if not path.is_relative_to(project) or path == project:
        read.problem(
            "runnerImageDockerfile",
            f"got {value!r}; accepted: a path inside the project folder, e.g. "
            "ml-image/Dockerfile (its folder is the build context)",
        )
        return None
    if not path.is_file():
        read.problem(
            "runnerImageDockerfile",
            f"{value!r} is not a file; accepted: the path of a Dockerfile in the "
            "project folder, e.g. ml-image/Dockerfile",
        )
        return None
    problem = custom_dockerfile_problem(path.read_text(errors="replace"))
    if problem:
        read.problem("runnerImageDockerfile", f"{value!r}: {problem}")
    return path.relative_to(project).as_posix()


def read_authorized_networks(read: Reader) -> tuple[str, ...]:
    """A JSON list of CIDRs (pulumi config set --path 'controlPlaneAuthorizedNetworks[0]' 203.0.113.0/24)."""
    raw = read.text("controlPlaneAuthorizedNetworks")
    if raw is None:
        return ()
    try:
        values = json.loads(raw)
    except ValueError:
        values = [part.strip() for part in raw.split(",")]
    if not isinstance(values, list):
        values = [values]
    networks = []
    for value in values:
        try:
            network = ipaddress.ip_network(str(value), strict=True)
            if network.version != 4:
                raise ValueError("GKE's authorized networks are IPv4")
            networks.append(str(network))
        except ValueError:
            read.problem(
                "controlPlaneAuthorizedNetworks",
                f"got {value!r}; accepted: IPv4 networks in CIDR form, e.g. 203.0.113.0/24 (host bits zero)",
            )
    return tuple(networks)
