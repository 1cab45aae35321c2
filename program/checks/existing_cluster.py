"""The existing cluster the runners join (`existingCluster`), read and judged before anything is created.

The runners' safety rests on three things a cluster the program creates always has and an
existing one may lack: Workload Identity (a job reaches GKE's metadata server, never the
node's own credentials), NetworkPolicy enforcement (nothing reaches a runner pod, only
runner pods reach the broker), and a GKE version that installs the GPU driver itself.
Every shortfall is reported at once, each with the `gcloud` command that fixes it.
"""

import re
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from program.settings import Settings

KEY = "gke-gpu-runners:existingCluster"
OPT_OUT_KEY = "gke-gpu-runners:allowNoNetworkPolicy"
# GKE installs the GPU driver of a node pool that asks (gpu_driver_installation_config)
# from this version on; before it, the pool would come up with no driver.
MANAGED_GPU_DRIVER_SINCE = "1.27.2-gke.1200"
DATAPLANE_V2 = "ADVANCED_DATAPATH"
GKE_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)-gke\.(\d+)")


@dataclass(frozen=True)
class ExistingCluster:
    """What GKE says of the cluster, as far as the runners care."""

    name: str
    location: str
    endpoint: str
    ca_certificate: str
    """The cluster CA, base64-encoded PEM, as kubeconfigs carry it."""
    workload_pool: str | None
    datapath_provider: str | None
    network_policy_enabled: bool
    master_version: str | None
    autopilot: bool
    managed_prometheus: bool = False
    """Managed collection for Google Cloud Managed Service for Prometheus, which scale-set mode's metrics use."""


def gke_version(text: str | None) -> tuple[int, ...] | None:
    """1.30.3-gke.1969001 -> (1, 30, 3, 1969001); None for anything else."""
    match = GKE_VERSION.match(text or "")
    return tuple(int(part) for part in match.groups()) if match else None


def cluster_problems(
    cluster: ExistingCluster, gcp_project: str, allow_no_network_policy: bool, needs_managed_prometheus: bool = False
) -> list[str]:
    """What the runners' security needs and the cluster lacks, each with its fix or its opt-out."""
    name, location = cluster.name, cluster.location
    update = f"gcloud container clusters update {name} --location {location} --project {gcp_project}"
    if cluster.autopilot:
        return [
            f"{KEY}: {name} is an Autopilot cluster, to which node pools cannot be added; accepted: a Standard "
            "cluster, or no existingCluster (the program creates one)"
        ]
    problems = []
    if not cluster.workload_pool:
        problems.append(
            f"{KEY}: {name} has no Workload Identity, which the runners need: on their nodes a job reaches GKE's "
            f"metadata server, never the nodes' own Google credentials; fix (minutes; your own node pools keep "
            f"their settings): {update} --workload-pool={gcp_project}.svc.id.goog"
        )
    if cluster.datapath_provider != DATAPLANE_V2 and not cluster.network_policy_enabled and not allow_no_network_policy:
        problems.append(
            f"{KEY}: {name} enforces no NetworkPolicy (it has neither Dataplane V2 nor network policy enforcement), "
            "so the policies that keep every pod away from runner pods, and all but runner pods away from the "
            "runner broker, would be ignored; Dataplane V2 cannot be turned on in an existing cluster; fix: "
            f"{update} --update-addons=NetworkPolicy=ENABLED, then {update} --enable-network-policy "
            f"(this re-creates the nodes of every pool); or, accepting the risk: pulumi config set "
            f"{OPT_OUT_KEY.split(':')[1]} true"
        )
    version = gke_version(cluster.master_version)
    if version is not None and version < gke_version(MANAGED_GPU_DRIVER_SINCE):
        problems.append(
            f"{KEY}: {name} runs GKE {cluster.master_version}, and GKE installs the GPU driver of a node pool itself "
            f"only from {MANAGED_GPU_DRIVER_SINCE} on; fix: gcloud container clusters upgrade {name} --location "
            f"{location} --project {gcp_project} --master (to the release channel's default version)"
        )
    if needs_managed_prometheus and not cluster.managed_prometheus:
        problems.append(
            f"{KEY}: {name} has managed collection for Managed Service for Prometheus off, and scale-set mode "
            "scrapes ARC's metrics with PodMonitoring objects, which only managed collection serves; fix "
            f"(minutes): {update} --enable-managed-prometheus"
        )
    return problems


def _first(items: list | None, attribute: str) -> object:
    """`attribute` of the first of GKE's one-item lists, None when the list is empty."""
    return getattr(items[0], attribute, None) if items else None


def read_cluster(settings: Settings, gcp_provider: pulumi.ProviderResource) -> ExistingCluster | str:
    """The cluster as GKE describes it, through the GCP provider; or why it could not be read."""
    name, location = settings.existing_cluster, settings.cluster_location
    not_found = (
        f"{KEY}: no cluster {name} in {location} of project {settings.gcp_project} could be read (%s); "
        f"accepted: a cluster and its location from gcloud container clusters list --project "
        f"{settings.gcp_project} (location, or gcp:zone, names its zone or region)"
    )
    try:
        found = gcp.container.get_cluster(
            name=name, location=location, project=settings.gcp_project, opts=pulumi.InvokeOptions(provider=gcp_provider)
        )
    except Exception as error:  # the provider's own words: not found, not allowed, API disabled
        return not_found % str(error).strip()
    if not found.endpoint:
        return not_found % "GKE gave no endpoint"
    return ExistingCluster(
        name=name,
        location=found.location or location,
        endpoint=found.endpoint,
        ca_certificate=_first(found.master_auths, "cluster_ca_certificate") or "",
        workload_pool=_first(found.workload_identity_configs, "workload_pool") or None,
        datapath_provider=found.datapath_provider or None,
        network_policy_enabled=bool(_first(found.network_policies, "enabled")),
        master_version=found.master_version or None,
        autopilot=bool(found.enable_autopilot),
        managed_prometheus=bool(_first(_first(found.monitoring_configs, "managed_prometheuses") or [], "enabled")),
    )


def require_fit_existing_cluster(settings: Settings, gcp_provider: pulumi.ProviderResource) -> ExistingCluster:
    """Reads `existingCluster`; raises one `pulumi.RunError` listing everything it lacks."""
    cluster = read_cluster(settings, gcp_provider)
    problems = (
        [cluster]
        if isinstance(cluster, str)
        else cluster_problems(
            cluster,
            settings.gcp_project,
            settings.allow_no_network_policy,
            needs_managed_prometheus=settings.is_scale_set,
        )
    )
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise pulumi.RunError(f"{len(problems)} existing cluster problem(s); nothing was created:\n{listed}")
    return cluster
