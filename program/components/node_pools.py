"""The runners' nodes, shared by both cluster components: the one the program creates and the
one it is given (`existingCluster`). Either way the pools, their labels and taint, their
least-privilege node account and their settings are the same, built here.

Plain functions that create resources under the caller's component, so a pool keeps the
name (and URN) it has always had in a stack whose cluster the program created.
"""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from runner_contract import CPU_POOL_LABELS, CPU_POOL_TAINT, GPU_POOL_LABELS

# What a node needs and no more: write its logs and metrics. It reads images from the
# project's own repository alone, granted there (ImageRegistry), not project-wide.
NODE_ROLES = (
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
)

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"}
# GKE's API spells the effect NO_SCHEDULE where Kubernetes spells it NoSchedule.
SHARED_CLUSTER_CPU_TAINT = {**CPU_POOL_TAINT, "effect": "NO_SCHEDULE"}
OAUTH_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
SHIELDED = {"enable_secure_boot": True, "enable_integrity_monitoring": True}

# GKE creates and deletes clusters and node pools in 5 to 20 minutes; Pulumi's
# defaults would give up while GKE is still working.
GKE_TIMEOUTS = pulumi.CustomTimeouts(create="45m", update="45m", delete="45m")


@dataclass(frozen=True)
class NodePoolSpec:
    """One node pool's shape."""

    machine_type: str
    min_nodes: int
    max_nodes: int
    labels: dict[str, str]
    disk_size_gb: int = 100
    spot: bool = False
    taints: tuple[dict, ...] = ()
    guest_accelerators: tuple[dict, ...] = ()


def cpu_pool_spec(machine_type: str, min_nodes: int, max_nodes: int, spot: bool) -> NodePoolSpec:
    """The pool base runners and the broker run on, labelled `gpu=false` for their nodeSelector."""
    return NodePoolSpec(
        machine_type=machine_type, min_nodes=min_nodes, max_nodes=max_nodes, labels=dict(CPU_POOL_LABELS), spot=spot
    )


def gpu_pool_spec(
    gpu_type: str, gpu_count: int, driver_version: str, machine_type: str, min_nodes: int, max_nodes: int, spot: bool
) -> NodePoolSpec:
    """A GPU pool: labelled and tainted so only pods that ask for GPUs land there."""
    return NodePoolSpec(
        machine_type=machine_type,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        labels=dict(GPU_POOL_LABELS),
        spot=spot,
        taints=(GPU_TAINT,),
        guest_accelerators=(
            {
                "type": gpu_type,
                "count": gpu_count,
                "gpu_driver_installation_config": {"gpu_driver_version": driver_version},
            },
        ),
    )


@dataclass(frozen=True)
class NodeAccount:
    """The pools' own service account, and the project roles it holds."""

    email: pulumi.Output[str]
    member: pulumi.Output[str]
    """`serviceAccount:<email>`, for the image repository to grant reading."""
    roles: list[pulumi.Resource]


def node_account(
    name: str, gcp_project: str, name_prefix: str, parent: pulumi.Resource, services: tuple[pulumi.Resource, ...] = ()
) -> NodeAccount:
    """Service account `<prefix>-nodes` with only `NODE_ROLES`, resources named `<name>-nodes...`."""
    child = pulumi.ResourceOptions(parent=parent, depends_on=list(services))
    account = gcp.serviceaccount.Account(
        f"{name}-nodes",
        project=gcp_project,
        account_id=f"{name_prefix[:24].rstrip('-')}-nodes",
        display_name=f"GKE nodes of {name_prefix}",
        opts=child,
    )
    member = account.email.apply(lambda email: f"serviceAccount:{email}")
    roles = [
        gcp.projects.IAMMember(
            f"{name}-nodes-{role.split('/')[1].replace('.', '-').lower()}",
            project=gcp_project,
            role=role,
            member=member,
            opts=child,
        )
        for role in NODE_ROLES
    ]
    return NodeAccount(email=account.email, member=member, roles=roles)


def node_pool(
    resource_name: str,
    pool_name: str,
    spec: NodePoolSpec,
    *,
    gcp_project: str,
    location: str,
    cluster: pulumi.Input[str],
    service_account: pulumi.Input[str],
    parent: pulumi.Resource,
    node_locations: tuple[str, ...] = (),
    depends_on: tuple[pulumi.Resource, ...] = (),
) -> gcp.container.NodePool:
    """Pool `pool_name` of `spec` in `cluster`, its nodes on GKE's metadata server (Workload Identity).

    `node_locations` pins a regional cluster's pool to its zones; empty: the cluster's own.
    """
    return gcp.container.NodePool(
        resource_name,
        name=pool_name,
        project=gcp_project,
        location=location,
        cluster=cluster,
        node_locations=list(node_locations) or None,
        initial_node_count=spec.min_nodes,
        autoscaling={"min_node_count": spec.min_nodes, "max_node_count": spec.max_nodes},
        management={"auto_repair": True, "auto_upgrade": True},
        node_config={
            "machine_type": spec.machine_type,
            "disk_size_gb": spec.disk_size_gb,
            "service_account": service_account,
            "oauth_scopes": OAUTH_SCOPES,
            "labels": spec.labels,
            "taints": list(spec.taints),
            "guest_accelerators": list(spec.guest_accelerators),
            "spot": spec.spot,
            # A pod reaches the metadata server of GKE, never the node's own credentials.
            "workload_metadata_config": {"mode": "GKE_METADATA"},
            # Image streaming: a container starts before its image has fully arrived.
            "gcfs_config": {"enabled": True},
            "shielded_instance_config": SHIELDED,
            "metadata": {"disable-legacy-endpoints": "true"},
        },
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(depends_on),
            custom_timeouts=GKE_TIMEOUTS,
            # GKE replaces a pool when the size it started with changes; the
            # autoscaler owns the size after that.
            ignore_changes=["initialNodeCount"],
            # The pool's name is fixed, so a replacement must free it first.
            delete_before_replace=True,
        ),
    )
