"""The scale set's Cloud Monitoring dashboard, as a plain dict (the API's Dashboard resource).

ARC's listener metrics arrive through Google Cloud Managed Service for Prometheus and are
queried in PromQL. Their `cluster` and `namespace` labels are the scraped pod's (the listener
runs in the controller's namespace), which tells this stack's scale set from any other;
ARC's own `namespace` label becomes `exported_namespace` there. Metric names and labels:
ARC 0.14.2, cmd/ghalistener/metrics/metrics.go.

The GPU node count comes from GKE's system metrics, which every GKE cluster writes
(SYSTEM_COMPONENTS): one `kubernetes.io/node/...` series per node, and GKE copies a node's
Kubernetes labels onto its series as metadata user labels, so the pool's `gpu=true` label
selects GPU nodes, whatever the pool is called. kube-state-metrics' `kube_node_labels` would
need a kube-state-metrics of our own: GKE's managed package exports no node metrics.
"""

from runner_contract import GPU_POOL_LABELS, POOL_LABEL

COLUMNS = 48
TILE_WIDTH = 24
TILE_HEIGHT = 16
# The window rates and quantiles are computed over: a few scrapes at 30 s.
WINDOW = "5m"


def _promql(query: str, legend: str) -> dict:
    return {"timeSeriesQuery": {"prometheusQuery": query}, "plotType": "LINE", "legendTemplate": legend}


def _tile(index: int, title: str, data_sets: list[dict], y_label: str) -> dict:
    return {
        "xPos": (index % 2) * TILE_WIDTH,
        "yPos": (index // 2) * TILE_HEIGHT,
        "width": TILE_WIDTH,
        "height": TILE_HEIGHT,
        "widget": {
            "title": title,
            "xyChart": {"dataSets": data_sets, "yAxis": {"label": y_label, "scale": "LINEAR"}},
        },
    }


def gpu_node_filter(cluster_name: str, location: str) -> str:
    """The Monitoring filter of GPU nodes' allocatable CPU, one series per node of the cluster's GPU pool."""
    return " ".join(
        (
            'metric.type="kubernetes.io/node/cpu/allocatable_cores"',
            'resource.type="k8s_node"',
            f'resource.label."cluster_name"="{cluster_name}"',
            f'resource.label."location"="{location}"',
            f'metadata.user_labels."{POOL_LABEL}"="{GPU_POOL_LABELS[POOL_LABEL]}"',
        )
    )


def scale_set_dashboard(cluster_name: str, location: str, controller_namespace: str, scale_set_name: str) -> dict:
    """Job start latency, queue, busy and idle runners, and GPU nodes of one scale set."""
    pod = f'cluster="{cluster_name}",namespace="{controller_namespace}"'
    scale_set = f'{pod},name="{scale_set_name}"'
    startup = f"sum by (le) (rate(gha_job_startup_duration_seconds_bucket{{{pod}}}[{WINDOW}]))"
    tiles = [
        _tile(
            0,
            "Job start latency (assigned to the scale set -> on a runner)",
            [
                _promql(f"histogram_quantile(0.5, {startup})", "p50"),
                _promql(f"histogram_quantile(0.95, {startup})", "p95"),
            ],
            "seconds",
        ),
        _tile(
            1,
            "Jobs: queued for the scale set and running",
            [
                _promql(f"sum(gha_assigned_jobs{{{scale_set}}})", "assigned"),
                _promql(f"sum(gha_running_jobs{{{scale_set}}})", "running"),
            ],
            "jobs",
        ),
        _tile(
            2,
            "Runners: busy and idle",
            [
                _promql(f"sum(gha_busy_runners{{{scale_set}}})", "busy"),
                _promql(f"sum(gha_idle_runners{{{scale_set}}})", "idle"),
            ],
            "runners",
        ),
        _tile(
            3,
            "GPU nodes",
            [
                {
                    "timeSeriesQuery": {
                        "timeSeriesFilter": {
                            "filter": gpu_node_filter(cluster_name, location),
                            "aggregation": {
                                "alignmentPeriod": "60s",
                                "perSeriesAligner": "ALIGN_MEAN",
                                "crossSeriesReducer": "REDUCE_COUNT",
                            },
                        }
                    },
                    "plotType": "STACKED_AREA",
                    "legendTemplate": "GPU nodes",
                }
            ],
            "nodes",
        ),
    ]
    return {
        "displayName": f"GPU runners: {cluster_name} / {scale_set_name}",
        "mosaicLayout": {"columns": COLUMNS, "tiles": tiles},
    }
