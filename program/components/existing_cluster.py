"""A GKE cluster the program is given (`existingCluster`): it adds the runners' pools, never the cluster."""

from dataclasses import dataclass, replace

import pulumi
import pulumi_gcp as gcp

from program.components.node_pools import SHARED_CLUSTER_CPU_TAINT, NodePoolSpec, node_account, node_pool
from program.manifests.kubeconfigs import operator_kubeconfig

# GKE's node pool names: 1-40 lowercase letters, digits or '-'.
POOL_NAME_LENGTH = 40


def pool_name(name_prefix: str, role: str) -> str:
    """`<prefix>-<role>-pool`: in someone else's cluster, the pool's name says whose it is."""
    suffix = f"-{role}-pool"
    return name_prefix[: POOL_NAME_LENGTH - len(suffix)].rstrip("-") + suffix


@dataclass(frozen=True)
class ExistingGkeClusterArgs:
    gcp_project: str
    cluster_name: str
    """The existing cluster's name."""
    location: str
    """Its zone or region."""
    endpoint: str
    ca_certificate: str
    """Its CA, base64-encoded PEM, as GKE gave it before anything was created."""
    name_prefix: str
    """Names what the program adds: the pools `<prefix>-cpu-pool`, `<prefix>-gpu-pool`, their account."""
    cpu_pool: NodePoolSpec
    """The pool base runners and the broker run on: the cluster's own nodes are not labelled `gpu=false`."""
    gpu_pool: NodePoolSpec
    """The tainted pool GPU runners run on; it may scale to zero."""
    node_locations: tuple[str, ...] = ()
    """For a regional cluster, the zone(s) the new pools go in; empty: the cluster's own zone."""
    services: tuple[pulumi.Resource, ...] = ()
    """The APIs (Kubernetes Engine, IAM) that must be enabled first."""


class ExistingGkeCluster(pulumi.ComponentResource):
    """Adds a CPU pool and a GPU pool, run by their own least-privilege node account, to a cluster
    that is not in the stack: `pulumi destroy` removes the pools and the account, never the cluster
    or what else runs in it. The pools are built exactly as in a cluster the program creates.

    Needs: the cluster checked first (Workload Identity, NetworkPolicy enforcement, a GKE that
    installs GPU drivers), GPU quota in the pools' zone.
    Gives the same as `GkeCluster`: name, location, endpoint, CA, an operator kubeconfig
    (secret, credentials from `gke-gcloud-auth-plugin`), the node account and both pools.
    """

    name: pulumi.Output[str]
    location: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    ca_certificate: pulumi.Output[str]
    context_name: pulumi.Output[str]
    """The kubeconfig name gcloud gives the cluster: gke_<project>_<location>_<name>."""
    kubeconfig: pulumi.Output[str]
    node_account_member: pulumi.Output[str]
    """The pools' service account as an IAM member, for the image repository to grant reading."""
    cpu_pool: gcp.container.NodePool
    gpu_pool: gcp.container.NodePool

    def __init__(self, name: str, args: ExistingGkeClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:ExistingGkeCluster", name, None, opts)
        nodes = node_account(name, args.gcp_project, args.name_prefix, parent=self, services=args.services)
        self.node_account_member = nodes.member

        def pool(role: str, spec: NodePoolSpec) -> gcp.container.NodePool:
            return node_pool(
                f"{name}-{role}-pool",
                pool_name(args.name_prefix, role),
                spec,
                gcp_project=args.gcp_project,
                location=args.location,
                cluster=args.cluster_name,
                service_account=nodes.email,
                node_locations=args.node_locations,
                parent=self,
                # A node logs and reports from its first minute: its roles come first.
                depends_on=(*nodes.roles, *args.services),
            )

        # The cluster's own workloads stay off the runners' CPU nodes: there they could not pull
        # their images (the pool's account reads ours alone), and runners keep to themselves.
        self.cpu_pool = pool("cpu", replace(args.cpu_pool, taints=(*args.cpu_pool.taints, SHARED_CLUSTER_CPU_TAINT)))
        self.gpu_pool = pool("gpu", args.gpu_pool)
        self.name = pulumi.Output.from_input(args.cluster_name)
        self.location = pulumi.Output.from_input(args.location)
        self.endpoint = pulumi.Output.from_input(args.endpoint)
        self.ca_certificate = pulumi.Output.from_input(args.ca_certificate)
        context = f"gke_{args.gcp_project}_{args.location}_{args.cluster_name}"
        self.context_name = pulumi.Output.from_input(context)
        self.kubeconfig = pulumi.Output.secret(operator_kubeconfig(context, args.endpoint, args.ca_certificate))
        self.register_outputs(
            {
                "name": self.name,
                "location": self.location,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
            }
        )
