"""GPU-backed GitHub Actions runners on GKE: the whole system on one screen."""

import pulumi

from components.cluster import GkeCluster, GkeClusterArgs, NodePoolSpec, gpu_pool_spec
from components.settings import load_settings

settings = load_settings()

cluster = GkeCluster(
    "gke",
    GkeClusterArgs(
        gcp_project=settings.gcp_project,
        zone=settings.zone,
        cluster_name=settings.cluster_name,
        deletion_protection=settings.deletion_protection,
        cpu_pool=NodePoolSpec(
            machine_type=settings.cpu_machine_type,
            min_nodes=settings.cpu_min_nodes,
            max_nodes=settings.cpu_max_nodes,
            labels={"gpu": "false"},
        ),
        gpu_pool=gpu_pool_spec(
            gpu_type=settings.gpu_type,
            gpu_count=settings.gpu_count,
            driver_version=settings.gpu_driver_version,
            machine_type=settings.gpu_machine_type,
            min_nodes=settings.gpu_min_nodes,
            max_nodes=settings.gpu_max_nodes,
            spot=settings.gpu_spot,
        ),
    ),
)

pulumi.export("clusterName", cluster.name)
pulumi.export("clusterLocation", cluster.location)
pulumi.export("kubeconfig", cluster.kubeconfig)
