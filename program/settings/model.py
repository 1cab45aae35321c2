"""What the program knows once the configuration is read: frozen, validated values."""

from dataclasses import dataclass

import pulumi

PER_RUN = "per-run"
SCALE_SET = "scale-set"
RUNNER_MODES = (PER_RUN, SCALE_SET)
DEFAULT_SCALE_SET_NAME = "gpu"


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
    """CIDRs that may reach the cluster's public endpoint; empty: open."""
    runner_image_dockerfile: str | None
    """A Dockerfile (relative to the project) building the GPU runners' image FROM ours; None: ours."""
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


@dataclass(frozen=True)
class ArtifactRepository:
    """A Docker repository of Artifact Registry: `<location>-docker.pkg.dev/<project>/<repository>`."""

    location: str
    project: str
    repository: str

    @property
    def path(self) -> str:
        return f"{self.location}-docker.pkg.dev/{self.project}/{self.repository}"
