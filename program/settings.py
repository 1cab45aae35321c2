"""The stack's configuration, read once, checked all at once, and frozen.

Components never read `pulumi.Config` themselves: they take what they need from the
`Settings` built here, so a bad value is refused before any cloud resource exists.
"""

import difflib
import ipaddress
import json
import re
from dataclasses import dataclass

import pulumi
from pulumi.runtime.config import get_config, is_config_secret

from program.catalog.cpu_machines import cpu_machine_problem, smallest_cpu_machine
from program.catalog.gpus import ACCELERATORS, machine_problem, smallest_machine
from program.manifests import broker, runners, scale_set
from program.manifests.images import REPOSITORY_ROOT, custom_dockerfile_problem

PROJECT = "gke-gpu-runners"
# The placeholders of the sample stack, Pulumi.dev.yaml: they pass every pattern, so name them.
SAMPLE_PROJECT = "my-gcp-project"
SAMPLE_REPOSITORY = "my-org/my-ml-repository"

DRIVER_VERSIONS = ("DEFAULT", "LATEST")
# OPTIMIZE_UTILIZATION removes an idle GPU node within minutes, BALANCED after about twenty.
AUTOSCALING_PROFILES = ("OPTIMIZE_UTILIZATION", "BALANCED")
DEFAULT_GPU_MAX_NODES = 2
ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
CLUSTER_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,38}[a-z0-9])?$")
# A DNS label short enough that `<namespace>-system` is one too.
NAMESPACE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,54}[a-z0-9])?$")
MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
# GHCR accepts only personal access tokens (classic) for pushing packages.
FINE_GRAINED = "github_pat_"
GITHUB_REPOSITORY = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/([A-Za-z0-9._-]{1,100})$")
GITHUB_ORGANIZATION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")

PER_RUN = "per-run"
SCALE_SET = "scale-set"
RUNNER_MODES = (PER_RUN, SCALE_SET)
DEFAULT_SCALE_SET_NAME = "gpu"
# ARC's runnerScaleSetName: at most 45 characters (the chart refuses more), and the name of
# Kubernetes objects and label values; a leading letter keeps YAML from reading it as a number.
SCALE_SET_NAME = re.compile(r"^[a-z](?:[-a-z0-9]{0,43}[a-z0-9])?$")
# The scale set chart writes the group unquoted into YAML: letters first, no ':' or '#'.
RUNNER_GROUP = re.compile(r"^[A-Za-z][A-Za-z0-9 ._-]{0,99}$")


@dataclass(frozen=True)
class RunnerCredential:
    """What the runner broker registers runners with: a PAT, or a GitHub App."""

    pat: pulumi.Output[str] | None = None
    app_id: str | None = None
    app_installation_id: str | None = None
    app_private_key: pulumi.Output[str] | None = None

    @property
    def is_app(self) -> bool:
        return self.app_id is not None

    def secret_data(self) -> dict[str, pulumi.Output[str]]:
        """The credential Secret's keys: the PAT, or the App's private key; IDs are not secret."""
        if self.is_app:
            return {"private-key": pulumi.Output.secret(self.app_private_key)}
        return {"token": pulumi.Output.secret(self.pat)}


def this_stack() -> str:
    """`<organization>/<project>/<stack>`: what the owner variable in GitHub names."""
    return f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"


@dataclass(frozen=True)
class Settings:
    """Everything the program needs to know, validated. Tokens stay Pulumi secrets."""

    gcp_project: str
    zone: str
    zone_key: str
    """Where the zone came from: gcp:zone, or gke-gpu-runners:location."""
    cluster_name: str
    existing_cluster: str | None
    """An existing GKE cluster the program adds its pools and runners to; None: it creates `cluster_name`."""
    cluster_location: str
    """Where the cluster is: `zone`; or, for an existing regional cluster, its region (its new pools go in `zone`)."""
    allow_no_network_policy: bool
    """The user accepts an existing cluster that enforces no NetworkPolicy."""
    deploy_namespace: str | None
    """The namespace a deploy job may deploy to (the deploy identity's Role); None: none."""
    deploy_registry: "ArtifactRepository | None"
    """The Docker repository a deploy job may push to; None: none."""
    github_owner: str
    github_repository: str
    """The repository's name, without its owner."""
    github_token: pulumi.Output[str]
    runner_credential: "RunnerCredential"
    registry_token: pulumi.Output[str]
    """Pushes the runner image to GHCR, where `pulumi up` runs; never in the cluster."""
    allow_public_repository: bool
    cpu_machine_type: str
    cpu_min_nodes: int
    cpu_max_nodes: int
    cpu_spot: bool
    autoscaling_profile: str
    gpu_type: str
    gpu_count: int
    gpu_machine_type: str
    gpu_min_nodes: int
    gpu_max_nodes: int
    gpu_spot: bool
    gpu_driver_version: str
    namespace: str
    base_runner_replicas: int
    gpu_warm_runners: int
    gpu_runner_deadline_minutes: int
    deletion_protection: bool
    skip_preflight: bool
    adopt_existing_secrets: bool
    data_bucket: str | None
    """The GCS bucket training reads and writes; None: no data access."""
    data_write_branch: str | None
    """The branch whose runs may write `data_bucket` (no `refs/heads/`); None: the repository's default branch."""
    control_plane_authorized_networks: tuple[str, ...]
    runner_image_dockerfile: str | None
    """A Dockerfile (relative to the project) building the GPU runners' image FROM ours; None: ours."""
    """CIDRs that may reach the cluster's public endpoint; empty: open."""
    runner_mode: str = PER_RUN
    """per-run: a base runner starts each run's GPU runners; scale-set: GitHub's Actions Runner Controller."""
    github_organization: str | None = None
    """Scale-set mode: the organization whose repositories the runners serve; None: githubRepository alone."""
    runner_group: str | None = None
    """Scale-set mode, with an organization: the runner group the scale set joins; None: the default group."""
    scale_set_name: str = DEFAULT_SCALE_SET_NAME
    """Scale-set mode: the scale set's name, which is the label workflows ask for (`runs-on: gpu`)."""

    @property
    def is_scale_set(self) -> bool:
        return self.runner_mode == SCALE_SET

    @property
    def deploy_identity(self) -> bool:
        """Whether a deploy job's identity is asked for (deployNamespace or deployRegistry)."""
        return bool(self.deploy_namespace or self.deploy_registry)


class _Reader:
    """Reads raw config values, collecting every problem instead of stopping at one."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._configs: dict[str, pulumi.Config] = {}

    def _config(self, namespace: str) -> pulumi.Config:
        return self._configs.setdefault(namespace, pulumi.Config(namespace))

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        namespace, _, name = key.rpartition(":")
        return namespace or PROJECT, name

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.qualified(key)}: {message}")

    def qualified(self, key: str) -> str:
        namespace, name = self._split(key)
        return f"{namespace}:{name}"

    def text(self, key: str, default: str | None = None) -> str | None:
        namespace, name = self._split(key)
        value = self._config(namespace).get(name)
        return default if value in (None, "") else value.strip()

    def secret(self, key: str) -> pulumi.Output[str] | None:
        """A secret value, None when unset or empty (Pulumi.yaml declares "" as unset)."""
        qualified = self.qualified(key)
        if not (get_config(qualified) or "").strip():
            return None
        if not is_config_secret(qualified):
            # Stored in plain text in the stack file: refuse rather than spread it further.
            self.problem(key, f"is stored in plain text in Pulumi.{pulumi.get_stack()}.yaml (rotate the token if "
                              f"that file was committed or shared); accepted: pulumi config set --secret {qualified} ...")
        namespace, name = self._split(key)
        return self._config(namespace).get_secret(name)

    def matching(self, key: str, pattern: re.Pattern, accepted: str, default: str | None = None) -> str:
        value = self.text(key, default)
        if value is None:
            self.problem(key, f"required; accepted: {accepted}")
        elif not pattern.match(value):
            self.problem(key, f"got {value!r}; accepted: {accepted}")
        return value or ""

    def choice(self, key: str, choices: tuple[str, ...] | list[str], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            self.problem(key, f"got {value!r}; accepted: {', '.join(choices)}")
        return value

    def integer(self, key: str, default: int, minimum: int) -> int:
        raw = self.text(key)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problem(key, f"got {raw!r}; accepted: a whole number >= {minimum}")
            return default
        if value < minimum:
            self.problem(key, f"got {value}; accepted: a whole number >= {minimum}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.text(key)
        if raw is None:
            return default
        if raw.lower() not in ("true", "false"):
            self.problem(key, f"got {raw!r}; accepted: true, false")
            return default
        return raw.lower() == "true"

    def bounds(self, prefix: str, default_min: int, default_max: int, least_max: int) -> tuple[int, int]:
        low = self.integer(f"{prefix}MinNodes", default_min, minimum=0)
        high = self.integer(f"{prefix}MaxNodes", default_max, minimum=least_max)
        if low > high:
            self.problem(f"{prefix}MinNodes", f"{low} is above {self.qualified(prefix + 'MaxNodes')} ({high}); accepted: a number <= {high}")
        return low, high


def load_settings() -> Settings:
    """Read and check every config key; raise one `pulumi.RunError` listing all problems."""
    read = _Reader()

    gcp_project = read.text("gcp:project")
    if gcp_project is None:
        read.problem("gcp:project", "required; accepted: the ID of your GCP project")
    elif gcp_project == SAMPLE_PROJECT:
        read.problem("gcp:project", f"is the sample stack's placeholder {SAMPLE_PROJECT!r}; accepted: the ID of your "
                                    "GCP project (gcloud projects list)")
    existing_cluster = read.text("existingCluster")
    if existing_cluster is not None and not CLUSTER_NAME.match(existing_cluster):
        read.problem("existingCluster", f"got {existing_cluster!r}; accepted: the name of a GKE cluster of the project, "
                                        "as gcloud container clusters list shows it")
    cluster_location, zone, zone_key = _location(read, existing_cluster)

    cluster_name = read.matching(
        "clusterName", CLUSTER_NAME, "1-40 lowercase letters, digits or '-', starting with a letter", "gpu-runners"
    )
    repository = _repository(read)
    if repository == SAMPLE_REPOSITORY:
        read.problem("githubRepository", f"is the sample stack's placeholder {SAMPLE_REPOSITORY!r}; accepted: "
                                         "the owner/name of the repository whose workflows the runners serve")
    owner, _, name = repository.partition("/")

    github_token = read.secret("github:token")
    if github_token is None:
        read.problem("github:token", "required; accepted: a GitHub token that may write the repository's Actions secrets and "
                                     "variables (pulumi config set --secret github:token ...)")
    runner_credential = _runner_credential(read)
    registry_token = _registry_token(read) or github_token
    if read.secret("registryPullToken") is not None:
        pulumi.log.warn("gke-gpu-runners:registryPullToken is no longer used (the cluster pulls from its own Artifact "
                        "Registry repository, with no token); remove it: pulumi config rm registryPullToken")

    gpu_type = read.text("gpuType", "nvidia-tesla-t4")
    if gpu_type not in ACCELERATORS:
        read.problem("gpuType", f"got {gpu_type!r}; {did_you_mean(gpu_type)}accepted: {', '.join(sorted(ACCELERATORS))}")
    gpu_count = read.integer("gpuCount", 1, minimum=1)
    gpu_machine_type = _gpu_machine(read, gpu_type, gpu_count)
    gpu_min, gpu_max = read.bounds("gpu", 0, DEFAULT_GPU_MAX_NODES, least_max=1)
    gpu_warm_runners = read.integer("gpuWarmRunners", 0, minimum=0)
    if gpu_warm_runners > gpu_max:
        read.problem("gpuWarmRunners", f"got {gpu_warm_runners}; accepted: 0 to {read.qualified('gpuMaxNodes')} ({gpu_max})")

    # 0: one base runner per GPU node, so runs started together never wait for each other's GPU.
    base_runner_replicas = read.integer("baseRunnerReplicas", 0, minimum=0) or default_base_runner_replicas(gpu_max)
    runner_mode = read.choice("runnerMode", RUNNER_MODES, PER_RUN)
    cpu_machine_type = read.matching("cpuMachineType", MACHINE_TYPE, "a Compute Engine machine type",
                                     default_scale_set_cpu_machine() if runner_mode == SCALE_SET
                                     else default_cpu_machine(base_runner_replicas))
    # Per-run mode's CPU pool holds the base runners and the broker; scale-set mode's, ARC's two small pods.
    if (read.text("cpuMachineType") and runner_mode == PER_RUN
            and (problem := cpu_machine_problem_for(cpu_machine_type, base_runner_replicas))):
        read.problem("cpuMachineType", f"got {cpu_machine_type!r}; {problem}")
    cpu_min, cpu_max = read.bounds("cpu", 1, 3, least_max=1)

    settings = Settings(
        gcp_project=gcp_project or "",
        zone=zone,
        zone_key=read.qualified(zone_key),
        cluster_name=cluster_name,
        existing_cluster=existing_cluster,
        cluster_location=cluster_location,
        allow_no_network_policy=read.boolean("allowNoNetworkPolicy", False),
        deploy_namespace=_deploy_namespace(read),
        deploy_registry=_deploy_registry(read),
        github_owner=owner,
        github_repository=name,
        github_token=github_token,
        runner_credential=runner_credential,
        registry_token=registry_token,
        allow_public_repository=read.boolean("allowPublicRepository", False),
        cpu_machine_type=cpu_machine_type,
        cpu_min_nodes=cpu_min,
        cpu_max_nodes=cpu_max,
        cpu_spot=read.boolean("cpuSpot", False),
        autoscaling_profile=read.choice("autoscalingProfile", AUTOSCALING_PROFILES, "OPTIMIZE_UTILIZATION"),
        gpu_type=gpu_type,
        gpu_count=gpu_count,
        gpu_machine_type=gpu_machine_type,
        gpu_min_nodes=gpu_min,
        gpu_max_nodes=gpu_max,
        gpu_spot=read.boolean("gpuSpot", False),
        gpu_driver_version=read.choice("gpuDriverVersion", DRIVER_VERSIONS, "DEFAULT"),
        namespace=read.matching("namespace", NAMESPACE, "a DNS label of up to 56 lowercase letters, digits or '-' (the broker's namespace adds '-system')", "github-runners"),
        base_runner_replicas=base_runner_replicas,
        gpu_warm_runners=gpu_warm_runners,
        gpu_runner_deadline_minutes=read.integer("gpuRunnerDeadlineMinutes", 240, minimum=5),
        deletion_protection=read.boolean("deletionProtection", False),
        skip_preflight=read.boolean("skipPreflight", False),
        adopt_existing_secrets=read.boolean("adoptExistingSecrets", False),
        data_bucket=_data_bucket(read),
        data_write_branch=_data_write_branch(read),
        control_plane_authorized_networks=_authorized_networks(read),
        runner_image_dockerfile=_runner_image_dockerfile(read),
        runner_mode=runner_mode,
        **_scale_set(read, runner_mode, owner),
    )
    if existing_cluster:
        _cluster_settings_left_alone(read, settings)
    if read.problems:
        listed = "\n".join(f"  - {p}" for p in read.problems)
        raise pulumi.RunError(f"{len(read.problems)} configuration problem(s); nothing was created:\n{listed}")
    return settings


def _location(read: _Reader, existing_cluster: str | None) -> tuple[str, str, str]:
    """(the cluster's location, the zone of the program's pools, the key that zone came from).

    A cluster the program creates is zonal. An existing one may be regional: `location`
    (or `gcp:zone`) names its region, and `gcp:zone` the one zone of it the new pools go in.
    """
    key = "location" if read.text("location") else "gcp:zone"
    value = read.text(key) or ""
    if existing_cluster and REGION.match(value):
        zone = read.text("gcp:zone") or ""
        if key == "gcp:zone" or not (ZONE.match(zone) and zone.rsplit("-", 1)[0] == value):
            read.problem("gcp:zone", f"{_got(zone)}; existingCluster {existing_cluster} is regional ({value}) and the "
                                     f"runners' pools go in one zone of it; accepted: location {value} and gcp:zone "
                                     f"a zone of {value} that offers the GPU, e.g. {value}-a (gcloud compute "
                                     f"accelerator-types list --filter=zone~{value})")
        return value, zone, "gcp:zone"
    if not ZONE.match(value):
        accepted = (f"the zone or region of cluster {existing_cluster} (gcloud container clusters list "
                    f"--filter=name={existing_cluster}); set location or gcp:zone"
                    if existing_cluster else zone_hint(value))
        read.problem(key, f"{_got(value)}; accepted: {accepted}")
    return value, value, key


# Settings of a cluster the program creates; an existing cluster keeps its own.
CLUSTER_SETTINGS_FIXES = {
    "autoscalingProfile": "to change the cluster's own: gcloud container clusters update {name} --location "
                          "{location} --autoscaling-profile=optimize-utilization",
    "controlPlaneAuthorizedNetworks": "to change the cluster's own: gcloud container clusters update {name} "
                                      "--location {location} --enable-master-authorized-networks "
                                      "--master-authorized-networks=CIDR,...",
    "deletionProtection": "nothing protects it better: pulumi destroy never deletes an existing cluster, which is "
                          "not in the stack",
}


def _cluster_settings_left_alone(read: _Reader, settings: "Settings") -> None:
    """Refuses a setting of a cluster the program creates, set away from its default with existingCluster."""
    changed = {
        "autoscalingProfile": settings.autoscaling_profile != AUTOSCALING_PROFILES[0],
        "controlPlaneAuthorizedNetworks": bool(settings.control_plane_authorized_networks),
        "deletionProtection": settings.deletion_protection,
    }
    for key, fix in CLUSTER_SETTINGS_FIXES.items():
        if changed[key]:
            read.problem(key, f"is a setting of a cluster the program creates, and existingCluster "
                              f"{settings.existing_cluster} keeps its own; accepted: the default "
                              f"(pulumi config rm {key}); "
                              + fix.format(name=settings.existing_cluster, location=settings.cluster_location))


@dataclass(frozen=True)
class ArtifactRepository:
    """A Docker repository of Artifact Registry: `<location>-docker.pkg.dev/<project>/<repository>`."""

    location: str
    project: str
    repository: str

    @property
    def path(self) -> str:
        return f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}"


DOCKER_REPOSITORY = re.compile(
    r"^([a-z0-9-]+)-docker\.pkg\.dev/([a-z][a-z0-9-]{4,28}[a-z0-9])/([a-z0-9][a-z0-9._-]{0,62})$"
)
# A Kubernetes namespace: a DNS label.
DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")


def _deploy_namespace(read: _Reader) -> str | None:
    """The namespace a deploy job may deploy to: the user's, never the runners'."""
    value = read.text("deployNamespace")
    if value is None:
        return None
    runner_namespace = read.text("namespace", "github-runners")
    if not DNS_LABEL.match(value):
        read.problem("deployNamespace", f"got {value!r}; accepted: the Kubernetes namespace the deploy job applies "
                                        "its manifests to, e.g. default (the tutorial's)")
    elif value in (runner_namespace, f"{runner_namespace}-system") or value.startswith(("kube-", "gke-")):
        read.problem("deployNamespace", f"got {value!r}, a namespace of the runners or of GKE; accepted: the "
                                        "namespace your model is deployed to, e.g. default (the tutorial's)")
    return value


def _deploy_registry(read: _Reader) -> ArtifactRepository | None:
    value = read.text("deployRegistry")
    if value is None:
        return None
    match = DOCKER_REPOSITORY.match(value.removeprefix("https://").rstrip("/"))
    if not match:
        read.problem("deployRegistry", f"got {value!r}; accepted: an Artifact Registry Docker repository, "
                                       "<location>-docker.pkg.dev/<project>/<repository> (the tutorial's "
                                       "GCP_CONTAINER_REGISTRY_HOST), e.g. europe-west6-docker.pkg.dev/my-project/"
                                       "my-repository")
        return None
    return ArtifactRepository(location=match[1], project=match[2], repository=match[3])


def _got(value: str) -> str:
    return f"got {value!r}" if value else "required"


def zone_hint(value: str) -> str:
    """What a zone looks like, from what was given: a region gets its zones suggested."""
    if re.match(r"^[a-z]+-[a-z]+[0-9]+$", value):
        return (f"a zone of that region, such as {value}-a, {value}-b or {value}-c "
                f"(gcloud compute zones list --filter=region:{value}); set location or gcp:zone")
    return "a zone such as us-central1-a (set location or gcp:zone)"


GPU_MODEL = re.compile(r"^([a-z]+[0-9]+)[a-z]*$")


def gpu_model(gpu_type: str) -> str | None:
    """The GPU's model, letters and number: nvidia-tesla-t4 -> t4, nvidia-a100-80gb -> a100, nvidia-a10g -> a10."""
    return next((match[1] for part in gpu_type.lower().split("-") if (match := GPU_MODEL.match(part))), None)


def did_you_mean(gpu_type: str) -> str:
    """The served GPU type of the same model (nvidia-t4 -> nvidia-tesla-t4, nvidia-a100-80g -> nvidia-a100-80gb).

    Never a guess across models: nvidia-a10g is not a spelling of nvidia-a100-80gb, a far pricier GPU.
    """
    model = gpu_model(gpu_type)
    same_model = [name for name in sorted(ACCELERATORS) if model and gpu_model(name) == model]
    closest = difflib.get_close_matches(gpu_type.lower(), same_model, n=1, cutoff=0.0)
    return f"did you mean {closest[0]}? " if closest else ""


def _repository(read: _Reader) -> str:
    """owner/name; a clone URL or a trailing .git is refused with the owner/name it stands for."""
    accepted = "owner/name, e.g. octo-org/ml-models"
    value = read.text("githubRepository")
    if value is None:
        read.problem("githubRepository", f"required; accepted: {accepted}")
        return ""
    meant = re.sub(r"^(?:https?://github\.com/|git@github\.com:|github\.com/)", "", value).rstrip("/")
    meant = meant.removesuffix(".git")
    if meant != value and GITHUB_REPOSITORY.match(meant):
        read.problem("githubRepository", f"got {value!r}; accepted: owner/name alone, without a URL or .git: {meant}")
    elif not GITHUB_REPOSITORY.match(value):
        read.problem("githubRepository", f"got {value!r}; accepted: {accepted}")
    return value


def _registry_token(read: _Reader) -> pulumi.Output[str] | None:
    """registryToken, refusing a fine-grained token there or, without it, in github:token: GHCR takes neither."""
    token = read.secret("registryToken")
    fix = ("accepted: a personal access token (classic) with write:packages: "
           f"pulumi config set --secret {read.qualified('registryToken')} ghp_...")
    if token is not None and (get_config(read.qualified("registryToken")) or "").strip().startswith(FINE_GRAINED):
        read.problem("registryToken", "is a fine-grained token, which GHCR does not accept for pushing the runner "
                                      f"image; {fix}")
    elif token is None and (get_config("github:token") or "").strip().startswith(FINE_GRAINED):
        read.problem("registryToken", "unset, so the runner image would be pushed to GHCR with github:token, a "
                                      f"fine-grained token, which GHCR does not accept for pushing packages; {fix}")
    return token


# Cloud Storage's naming rules for a bucket without dots: 3-63 characters.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$")


def _data_bucket(read: _Reader) -> str | None:
    value = read.text("dataBucket")
    if value is None:
        return None
    name = value.removeprefix("gs://").rstrip("/")
    if not BUCKET.match(name) or name.startswith("goog") or "google" in name:
        read.problem("dataBucket", f"got {value!r}; accepted: a Cloud Storage bucket name (3-63 lowercase letters, "
                                   "digits, '-' or '_', starting and ending with a letter or digit), e.g. my-dvc-data")
    return name


# What git refuses in a branch name (git check-ref-format --branch).
BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^/|/$|^-|\.$|(^|/)\.|\.lock(/|$)|^@$")


def _data_write_branch(read: _Reader) -> str | None:
    value = read.text("dataWriteBranch")
    if value is None:
        return None
    branch = value.removeprefix("refs/heads/")
    if not branch or BRANCH_FORBIDDEN.search(branch):
        read.problem("dataWriteBranch", f"got {value!r}; accepted: a branch name such as main or release/v2 "
                                        "(empty: the repository's default branch)")
    return branch


def _runner_image_dockerfile(read: _Reader) -> str | None:
    """A project-relative Dockerfile inside the project folder that starts FROM the runner image."""
    value = read.text("runnerImageDockerfile")
    if value is None:
        return None
    project = REPOSITORY_ROOT
    path = (project / value).resolve()
    if not path.is_relative_to(project) or path == project:
        read.problem("runnerImageDockerfile", f"got {value!r}; accepted: a path inside the project folder, e.g. "
                                              "ml-image/Dockerfile (its folder is the build context)")
        return None
    if not path.is_file():
        read.problem("runnerImageDockerfile", f"{value!r} is not a file; accepted: the path of a Dockerfile in the "
                                              "project folder, e.g. ml-image/Dockerfile")
        return None
    problem = custom_dockerfile_problem(path.read_text(errors="replace"))
    if problem:
        read.problem("runnerImageDockerfile", f"{value!r}: {problem}")
    return path.relative_to(project).as_posix()


def _authorized_networks(read: _Reader) -> tuple[str, ...]:
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
            read.problem("controlPlaneAuthorizedNetworks", f"got {value!r}; accepted: IPv4 networks in CIDR form, "
                                                          "e.g. 203.0.113.0/24 (host bits zero)")
    return tuple(networks)


def default_base_runner_replicas(gpu_max_nodes: int) -> int:
    """One per GPU node: each run's start job holds a base runner until its GPU runner is up."""
    return max(1, gpu_max_nodes)


def default_scale_set_cpu_machine() -> str:
    """The smallest machine one node of which holds ARC's controller and listener and GKE's own pods."""
    return smallest_cpu_machine(
        0, 0, 0,
        scale_set.ARC_PODS_CPU_MILLIS, scale_set.ARC_PODS_MEMORY_MIB,
    )


def _scale_set(read: _Reader, runner_mode: str, owner: str) -> dict:
    """The scale-set keys, read in either mode (every declared key is read); per-run mode refuses
    an organization or a runner group, which only a scale set can use."""
    organization = read.text("githubOrganization")
    runner_group = read.text("runnerGroup")
    name = read.matching("scaleSetName", SCALE_SET_NAME, "1-45 lowercase letters, digits or '-', starting with a "
                         "letter (it is the label workflows ask for: runs-on: <scaleSetName>)", DEFAULT_SCALE_SET_NAME)
    if runner_mode != SCALE_SET:
        for key, value in (("githubOrganization", organization), ("runnerGroup", runner_group)):
            if value is not None:
                read.problem(key, f"is only used with runnerMode {SCALE_SET} (per-run runners serve "
                                  f"githubRepository alone); accepted: pulumi config set runnerMode {SCALE_SET}, "
                                  f"or pulumi config rm {key}")
        return {"github_organization": None, "runner_group": None, "scale_set_name": name}
    if organization is not None:
        if not GITHUB_ORGANIZATION.match(organization):
            read.problem("githubOrganization", f"got {organization!r}; accepted: an organization's login, "
                                               "e.g. octo-org")
        elif owner and organization.lower() != owner.lower():
            read.problem("githubOrganization", f"got {organization!r}, but githubRepository belongs to {owner!r}; "
                                               f"accepted: {owner} (the organization whose workflows the runners "
                                               "serve holds githubRepository, where the kubeconfig secret goes)")
    if runner_group is not None:
        if organization is None:
            read.problem("runnerGroup", "needs githubOrganization (a repository's runners have no group); accepted: "
                                        "set githubOrganization, or remove runnerGroup (pulumi config rm runnerGroup)")
        elif not RUNNER_GROUP.match(runner_group):
            read.problem("runnerGroup", f"got {runner_group!r}; accepted: the name of one of the organization's "
                                        "runner groups: a letter, then up to 99 letters, digits, spaces, '.', '_' "
                                        "or '-'")
    return {"github_organization": organization, "runner_group": runner_group, "scale_set_name": name}


def cpu_machine_problem_for(machine_type: str, base_runner_replicas: int) -> str | None:
    """Why one node of `machine_type` cannot hold the base runners, the broker and GKE's pods, or None."""
    return cpu_machine_problem(
        machine_type, base_runner_replicas,
        runners.BASE_RUNNER_CPU_MILLIS, runners.BASE_RUNNER_MEMORY_MIB,
        broker.BROKER_CPU_MILLIS, broker.BROKER_MEMORY_MIB,
    )


def default_cpu_machine(base_runner_replicas: int) -> str:
    """The smallest machine one node of which holds the base runners, the broker and GKE's own pods."""
    return smallest_cpu_machine(
        base_runner_replicas,
        runners.BASE_RUNNER_CPU_MILLIS, runners.BASE_RUNNER_MEMORY_MIB,
        broker.BROKER_CPU_MILLIS, broker.BROKER_MEMORY_MIB,
    )


APP_KEYS = ("githubAppId", "githubAppInstallationId", "githubAppPrivateKey")
NUMERIC_ID = re.compile(r"^[0-9]{1,20}$")


def _runner_credential(read: _Reader) -> RunnerCredential:
    """A GitHub App when all three App keys are set, else the PAT in `runnerToken`; never `github:token`."""
    app_id = read.text("githubAppId")
    installation_id = read.text("githubAppInstallationId")
    private_key = read.secret("githubAppPrivateKey")
    given = [key for key, value in zip(APP_KEYS, (app_id, installation_id, private_key), strict=True) if value is not None]
    pat = read.secret("runnerToken")
    if not given:
        if pat is None:
            read.problem("runnerToken", "required unless a GitHub App is set (it is never taken from github:token, which "
                                        "can do far more); accepted: a fine-grained PAT for this repository alone with "
                                        "Administration read and write and Actions read (pulumi config set --secret "
                                        "runnerToken ...), or all three githubAppId, githubAppInstallationId and "
                                        "githubAppPrivateKey of an App with those permissions")
        return RunnerCredential(pat=pat)
    if len(given) < len(APP_KEYS):
        missing = ", ".join(read.qualified(k) for k in APP_KEYS if k not in given)
        read.problem(given[0], f"a GitHub App needs all three App keys; missing: {missing}; accepted: all of them, or none (a PAT in runnerToken)")
    if pat is not None:
        read.problem("runnerToken", "set together with a GitHub App; accepted: runnerToken or the githubApp* keys, not both")
    for key, value in (("githubAppId", app_id), ("githubAppInstallationId", installation_id)):
        if value is not None and not NUMERIC_ID.match(value):
            read.problem(key, f"got {value!r}; accepted: the numeric ID GitHub shows for the App")
    if private_key is not None and "PRIVATE KEY-----" not in (get_config(read.qualified("githubAppPrivateKey")) or ""):
        read.problem("githubAppPrivateKey", "is not a PEM private key; accepted: the App's key file, pulumi config set --secret githubAppPrivateKey < app.private-key.pem")
    return RunnerCredential(app_id=app_id, app_installation_id=installation_id, app_private_key=private_key)


def _gpu_machine(read: _Reader, gpu_type: str, gpu_count: int) -> str:
    """The configured GPU machine if it can carry the GPUs, else the smallest that can."""
    accelerator = ACCELERATORS.get(gpu_type)
    if accelerator is None or gpu_count < 1:
        return read.text("gpuMachineType", "")
    if gpu_count not in accelerator.counts:
        counts = ", ".join(str(c) for c in accelerator.counts)
        read.problem("gpuCount", f"got {gpu_count}; accepted for {gpu_type}: {counts}")
        return read.text("gpuMachineType", "")
    machine_type = read.text("gpuMachineType")
    if machine_type is None:
        return smallest_machine(gpu_type, gpu_count)
    problem = machine_problem(gpu_type, gpu_count, machine_type)
    if problem:
        read.problem("gpuMachineType", f"got {machine_type!r}; {problem}")
    return machine_type
