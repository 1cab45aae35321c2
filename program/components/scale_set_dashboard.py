"""A Cloud Monitoring dashboard of the GPU runner scale set."""

import json
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from program.manifests.dashboard import scale_set_dashboard

MONITORING = "monitoring.googleapis.com"


@dataclass(frozen=True)
class ScaleSetDashboardArgs:
    gcp_project: str
    cluster_name: pulumi.Input[str]
    location: pulumi.Input[str]
    controller_namespace: pulumi.Input[str]
    """Where ARC's listener runs: its metrics carry this namespace."""
    scale_set_name: str


class ScaleSetDashboard(pulumi.ComponentResource):
    """Enables the Cloud Monitoring API (left enabled on destroy, like the program's other APIs)
    and creates a dashboard: job start latency, jobs queued and running, busy and idle runners,
    GPU nodes. Needs managed collection of Prometheus metrics on the cluster and ARC's
    PodMonitorings (RunnerScaleSet) for all but the GPU node count.
    """

    def __init__(self, name: str, args: ScaleSetDashboardArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("gke-gpu-runners:index:ScaleSetDashboard", name, None, opts)
        api = gcp.projects.Service(
            f"{name}-monitoring-api",
            project=args.gcp_project,
            service=MONITORING,
            disable_on_destroy=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        gcp.monitoring.Dashboard(
            f"{name}-dashboard",
            project=args.gcp_project,
            dashboard_json=pulumi.Output.all(args.cluster_name, args.location, args.controller_namespace).apply(
                lambda values: json.dumps(scale_set_dashboard(*values, args.scale_set_name), sort_keys=True)
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[api]),
        )
        self.register_outputs({})
