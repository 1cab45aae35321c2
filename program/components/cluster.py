"""The GKE cluster: a zonal cluster, a CPU pool for base runners, a GPU pool from zero."""

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from program.manifests.kubeconfigs import operator_kubeconfig

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

# The components are listed because setting monitoring_config sends them: system metrics
# (GKE's default, which the GPU node count on the scale set's dashboard reads).
MANAGED_PROMETHEUS = {"enable_components": ["SYSTEM_COMPONENTS"], "managed_prometheus": {"enabled": True}}

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


@dataclass(frozen=True)
class GkeClusterArgs:
    gcp_project: str
    """The GCP project that holds the cluster and its node service account."""
    zone: str
    """The zone of the zonal cluster."""
    cluster_name: str
    cpu_pool: NodePoolSpec
    """The pool base runners run on."""
    gpu_pool: NodePoolSpec
    """The tainted pool GPU runners run on; it may scale to zero."""
    deletion_protection: bool = False
    """When true, GKE refuses to delete the cluster, and so does `pulumi destroy`."""
    release_channel: str = "REGULAR"
    autoscaling_profile: str = "OPTIMIZE_UTILIZATION"
    """OPTIMIZE_UTILIZATION removes an idle node within minutes; BALANCED waits about twenty."""
    services: tuple[pulumi.Resource, ...] = ()
    """The APIs (Kubernetes Engine, image streaming, IAM) that must be enabled first."""
    authorized_networks: tuple[str, ...] = ()
    """CIDRs allowed to reach the public endpoint; empty: any. Nodes reach it from inside regardless."""
    managed_prometheus: bool = False
    """Collect Prometheus metrics of pods that PodMonitorings select (GKE's managed collection)."""


def gpu_pool_spec(gpu_type: str, gpu_count: int, driver_version: str, machine_type: str,
                  min_nodes: int, max_nodes: int, spot: bool) -> NodePoolSpec:
    """A GPU pool: labelled and tainted so only pods that ask for GPUs land there."""
    return NodePoolSpec(
        machine_type=machine_type,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        labels={"gpu": "true"},
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


class GkeCluster(pulumi.ComponentResource):
    """A zonal GKE cluster with a CPU pool and a GPU pool, run by a least-privilege node account.

    Needs: the APIs it names in `services` enabled, GPU quota in the zone.
    Gives: the cluster's name, location, endpoint and CA, an operator kubeconfig
    (secret, credentials from `gke-gcloud-auth-plugin`), and both pools, so callers
    can wait for the pool they need and no other.
    """

    name: pulumi.Output[str]
    location: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]
    """The cluster CA, base64-encoded PEM, as kubeconfigs carry it."""
    context_name: pulumi.Output[str]
    """The kubeconfig name gcloud would give the cluster: gke_<project>_<zone>_<name>."""
    kubeconfig: pulumi.Output[str]
    node_account_member: pulumi.Output[str]
    """The nodes' service account as an IAM member, for the image repository to grant reading."""
    cpu_pool: gcp.container.NodePool
    gpu_pool: gcp.container.NodePool

    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:GkeCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.services))

        node_account = gcp.serviceaccount.Account(
            f"{name}-nodes",
            project=args.gcp_project,
            account_id=f"{args.cluster_name[:24].rstrip('-')}-nodes",
            display_name=f"GKE nodes of {args.cluster_name}",
            opts=child,
        )
        self.node_account_member = node_account.email.apply(lambda email: f"serviceAccount:{email}")
        node_roles = [
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.split('/')[1].replace('.', '-').lower()}",
                project=args.gcp_project,
                role=role,
                member=self.node_account_member,
                opts=child,
            )
            for role in NODE_ROLES
        ]

        cluster = gcp.container.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            project=args.gcp_project,
            location=args.zone,
            # Pools are managed below; the default one only exists while GKE insists.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config={
                "service_account": node_account.email,
                "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
            },
            networking_mode="VPC_NATIVE",
            # Dataplane V2 enforces the NetworkPolicy that keeps runner pods unreachable.
            datapath_provider="ADVANCED_DATAPATH",
            ip_allocation_policy={},
            workload_identity_config={"workload_pool": f"{args.gcp_project}.svc.id.goog"},
            release_channel={"channel": args.release_channel},
            # Node pool autoscaling stays per pool; this only chooses how eagerly idle nodes go.
            cluster_autoscaling={"autoscaling_profile": args.autoscaling_profile},
            enable_shielded_nodes=True,
            enable_legacy_abac=False,
            master_auth={"client_certificate_config": {"issue_client_certificate": False}},
            master_authorized_networks_config=(
                {"cidr_blocks": [{"cidr_block": cidr, "display_name": f"authorized {cidr}"} for cidr in args.authorized_networks]}
                if args.authorized_networks else None
            ),
            deletion_protection=args.deletion_protection,
            monitoring_config=MANAGED_PROMETHEUS if args.managed_prometheus else None,
            opts=pulumi.ResourceOptions(
                parent=self, custom_timeouts=GKE_TIMEOUTS, depends_on=[*node_roles, *args.services]
            ),
        )

        def pool(role: str, spec: NodePoolSpec) -> gcp.container.NodePool:
            return gcp.container.NodePool(
                f"{name}-{role}-pool",
                name=f"{role}-pool",
                project=args.gcp_project,
                location=args.zone,
                cluster=cluster.name,
                initial_node_count=spec.min_nodes,
                autoscaling={"min_node_count": spec.min_nodes, "max_node_count": spec.max_nodes},
                management={"auto_repair": True, "auto_upgrade": True},
                node_config={
                    "machine_type": spec.machine_type,
                    "disk_size_gb": spec.disk_size_gb,
                    "service_account": node_account.email,
                    "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "labels": spec.labels,
                    "taints": list(spec.taints),
                    "guest_accelerators": list(spec.guest_accelerators),
                    "spot": spec.spot,
                    "workload_metadata_config": {"mode": "GKE_METADATA"},
                    # Image streaming: a container starts before its image has fully arrived.
                    "gcfs_config": {"enabled": True},
                    "shielded_instance_config": {"enable_secure_boot": True, "enable_integrity_monitoring": True},
                    "metadata": {"disable-legacy-endpoints": "true"},
                },
                opts=pulumi.ResourceOptions(
                    parent=self,
                    custom_timeouts=GKE_TIMEOUTS,
                    # GKE replaces a pool when the size it started with changes; the
                    # autoscaler owns the size after that.
                    ignore_changes=["initialNodeCount"],
                    # The pool's name is fixed, so a replacement must free it first.
                    delete_before_replace=True,
                ),
            )

        self.cpu_pool = pool("cpu", args.cpu_pool)
        self.gpu_pool = pool("gpu", args.gpu_pool)
        self.name = cluster.name
        self.location = cluster.location
        self.endpoint = cluster.endpoint
        self.ca_certificate = cluster.master_auth.cluster_ca_certificate
        self.context_name = cluster.name.apply(lambda cluster_name: f"gke_{args.gcp_project}_{args.zone}_{cluster_name}")
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(self.context_name, cluster.endpoint, self.ca_certificate).apply(
                lambda values: operator_kubeconfig(*values)
            )
        )
        self.register_outputs({
            "name": self.name,
            "location": self.location,
            "endpoint": self.endpoint,
            "kubeconfig": self.kubeconfig,
        })
