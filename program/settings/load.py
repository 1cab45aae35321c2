"""load_settings: every key read and checked at once, before any cloud resource exists."""

import re

import pulumi

from program.catalog.gpus import ACCELERATORS
from program.settings.github import (
    read_registry_token,
    read_repository,
    read_runner_credential,
    read_scale_set,
)
from program.settings.machines import (
    cpu_machine_problem_for,
    default_base_runner_replicas,
    default_cpu_machine,
    default_scale_set_cpu_machine,
    did_you_mean,
    read_gpu_machine,
)
from program.settings.model import PER_RUN, RUNNER_MODES, SCALE_SET, Settings
from program.settings.optional import (
    read_authorized_networks,
    read_data_bucket,
    read_data_write_branch,
    read_deploy_namespace,
    read_deploy_registry,
    read_runner_image_dockerfile,
)
from program.settings.reader import Reader, got

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


def load_settings() -> Settings:
    """Read and check every config key; raise one `pulumi.RunError` listing all problems."""
    read = Reader()

    gcp_project = read.text("gcp:project")
    if gcp_project is None:
        read.problem("gcp:project", "required; accepted: the ID of your GCP project")
    elif gcp_project == SAMPLE_PROJECT:
        read.problem(
            "gcp:project",
            f"is the sample stack's placeholder {SAMPLE_PROJECT!r}; accepted: the ID of your "
            "GCP project (gcloud projects list)",
        )
    existing_cluster = read.text("existingCluster")
    if existing_cluster is not None and not CLUSTER_NAME.match(existing_cluster):
        read.problem(
            "existingCluster",
            f"got {existing_cluster!r}; accepted: the name of a GKE cluster of the project, "
            "as gcloud container clusters list shows it",
        )
    cluster_location, zone, zone_key = read_location(read, existing_cluster)

    cluster_name = read.matching(
        "clusterName", CLUSTER_NAME, "1-40 lowercase letters, digits or '-', starting with a letter", "gpu-runners"
    )
    repository = read_repository(read)
    if repository == SAMPLE_REPOSITORY:
        read.problem(
            "githubRepository",
            f"is the sample stack's placeholder {SAMPLE_REPOSITORY!r}; accepted: "
            "the owner/name of the repository whose workflows the runners serve",
        )
    owner, _, name = repository.partition("/")

    github_token = read.secret("github:token")
    if github_token is None:
        read.problem(
            "github:token",
            "required; accepted: a GitHub token that may write the repository's Actions secrets and "
            "variables (pulumi config set --secret github:token ...)",
        )
    runner_credential = read_runner_credential(read)
    registry_token = read_registry_token(read) or github_token
    if read.secret("registryPullToken") is not None:
        pulumi.log.warn(
            "gke-gpu-runners:registryPullToken is no longer used (the cluster pulls from its own Artifact "
            "Registry repository, with no token); remove it: pulumi config rm registryPullToken"
        )

    gpu_type = read.text("gpuType", "nvidia-tesla-t4")
    if gpu_type not in ACCELERATORS:
        read.problem(
            "gpuType", f"got {gpu_type!r}; {did_you_mean(gpu_type)}accepted: {', '.join(sorted(ACCELERATORS))}"
        )
    gpu_count = read.integer("gpuCount", 1, minimum=1)
    gpu_machine_type = read_gpu_machine(read, gpu_type, gpu_count)
    gpu_min, gpu_max = read.bounds("gpu", 0, DEFAULT_GPU_MAX_NODES, least_max=1)
    gpu_warm_runners = read.integer("gpuWarmRunners", 0, minimum=0)
    if gpu_warm_runners > gpu_max:
        read.problem(
            "gpuWarmRunners", f"got {gpu_warm_runners}; accepted: 0 to {read.qualified('gpuMaxNodes')} ({gpu_max})"
        )

    # 0: one base runner per GPU node, so runs started together never wait for each other's GPU.
    base_runner_replicas = read.integer("baseRunnerReplicas", 0, minimum=0) or default_base_runner_replicas(gpu_max)
    runner_mode = read.choice("runnerMode", RUNNER_MODES, PER_RUN)
    cpu_machine_type = read.matching(
        "cpuMachineType",
        MACHINE_TYPE,
        "a Compute Engine machine type",
        default_scale_set_cpu_machine() if runner_mode == SCALE_SET else default_cpu_machine(base_runner_replicas),
    )
    # Per-run mode's CPU pool holds the base runners and the broker; scale-set mode's, ARC's two small pods.
    if (
        read.text("cpuMachineType")
        and runner_mode == PER_RUN
        and (problem := cpu_machine_problem_for(cpu_machine_type, base_runner_replicas))
    ):
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
        deploy_namespace=read_deploy_namespace(read),
        deploy_registry=read_deploy_registry(read),
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
        namespace=read.matching(
            "namespace",
            NAMESPACE,
            "a DNS label of up to 56 lowercase letters, digits or '-' (the broker's namespace adds '-system')",
            "github-runners",
        ),
        base_runner_replicas=base_runner_replicas,
        gpu_warm_runners=gpu_warm_runners,
        gpu_runner_deadline_minutes=read.integer("gpuRunnerDeadlineMinutes", 240, minimum=5),
        deletion_protection=read.boolean("deletionProtection", False),
        skip_preflight=read.boolean("skipPreflight", False),
        adopt_existing_secrets=read.boolean("adoptExistingSecrets", False),
        data_bucket=read_data_bucket(read),
        data_write_branch=read_data_write_branch(read),
        control_plane_authorized_networks=read_authorized_networks(read),
        runner_image_dockerfile=read_runner_image_dockerfile(read),
        runner_mode=runner_mode,
        **read_scale_set(read, runner_mode, owner),
    )
    if existing_cluster:
        refuse_cluster_settings_with_existing_cluster(read, settings)
    if read.problems:
        listed = "\n".join(f"  - {p}" for p in read.problems)
        raise pulumi.RunError(f"{len(read.problems)} configuration problem(s); nothing was created:\n{listed}")
    return settings


def read_location(read: Reader, existing_cluster: str | None) -> tuple[str, str, str]:
    """(the cluster's location, the zone of the program's pools, the key that zone came from).

    A cluster the program creates is zonal. An existing one may be regional: `location`
    (or `gcp:zone`) names its region, and `gcp:zone` the one zone of it the new pools go in.
    """
    key = "location" if read.text("location") else "gcp:zone"
    value = read.text(key) or ""
    if existing_cluster and REGION.match(value):
        zone = read.text("gcp:zone") or ""
        if key == "gcp:zone" or not (ZONE.match(zone) and zone.rsplit("-", 1)[0] == value):
            read.problem(
                "gcp:zone",
                f"{got(zone)}; existingCluster {existing_cluster} is regional ({value}) and the "
                f"runners' pools go in one zone of it; accepted: location {value} and gcp:zone "
                f"a zone of {value} that offers the GPU, e.g. {value}-a (gcloud compute "
                f"accelerator-types list --filter=zone~{value})",
            )
        return value, zone, "gcp:zone"
    if not ZONE.match(value):
        accepted = (
            f"the zone or region of cluster {existing_cluster} (gcloud container clusters list "
            f"--filter=name={existing_cluster}); set location or gcp:zone"
            if existing_cluster
            else zone_hint(value)
        )
        read.problem(key, f"{got(value)}; accepted: {accepted}")
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


def refuse_cluster_settings_with_existing_cluster(read: Reader, settings: "Settings") -> None:
    """Refuses a setting of a cluster the program creates, set away from its default with existingCluster."""
    changed = {
        "autoscalingProfile": settings.autoscaling_profile != AUTOSCALING_PROFILES[0],
        "controlPlaneAuthorizedNetworks": bool(settings.control_plane_authorized_networks),
        "deletionProtection": settings.deletion_protection,
    }
    for key, fix in CLUSTER_SETTINGS_FIXES.items():
        if changed[key]:
            read.problem(
                key,
                f"is a setting of a cluster the program creates, and existingCluster "
                f"{settings.existing_cluster} keeps its own; accepted: the default "
                f"(pulumi config rm {key}); "
                + fix.format(name=settings.existing_cluster, location=settings.cluster_location),
            )


def zone_hint(value: str) -> str:
    """What a zone looks like, from what was given: a region gets its zones suggested."""
    if re.match(r"^[a-z]+-[a-z]+[0-9]+$", value):
        return (
            f"a zone of that region, such as {value}-a, {value}-b or {value}-c "
            f"(gcloud compute zones list --filter=region:{value}); set location or gcp:zone"
        )
    return "a zone such as us-central1-a (set location or gcp:zone)"
