"""The outside world's figures behind the cold-start and cost models (benchmarks/cold_start_model.py):
published timings and list prices, and the assumptions nobody publishes a figure for.

The program's own figures are not here: the model reads them from the repository.
"""

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Published figures and assumptions. Every one names its source and date; "assumption" marks a
# figure nobody publishes, with the reason for the value chosen.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Seconds: the fast end, what to expect, the slow end."""

    low: float
    typical: float
    high: float

    def pick(self, which: str) -> float:
        return getattr(self, which)


# The cluster autoscaler does not scale up for pods that ask for GPUs until the oldest of them is
# 30 s old ("nodes with GPU are very expensive and we're ready to sacrifice a bit more latency").
# Source: kubernetes/autoscaler, cluster-autoscaler/core/static_autoscaler.go,
# unschedulablePodWithGpuTimeBuffer = 30 * time.Second (in the tree until 2026-07-20, when the core
# moved to sigs.k8s.io/cluster-autoscaler). GKE runs a fork of it (kubernetes/autoscaler#2798,
# maintainer's answer, 2020-02-05); that GKE keeps this buffer is an assumption.
AUTOSCALER_GPU_HOLD_SECONDS = 30
# The autoscaler looks for pending pods every 10 s; on small clusters it requests a scale-up about
# 5 s after a pod turns unschedulable, at most 30 s. Source: Cluster Autoscaler FAQ, "What are the
# parameters to CA?" (scan-interval 10s) and "What are the Service Level Objectives", kubernetes/
# autoscaler cluster-autoscaler/FAQ.md, master of 2026-08-22. A pod waits half a scan on average.
AUTOSCALER_SCAN_SECONDS = 10
# From the autoscaler's request to a Ready node: VM created, booted, kubelet registered.
# Assumption: 80-120 s, the range observed on GKE n1/g2 nodes and stated in the issue; Google
# publishes no figure for it. The Cluster Autoscaler FAQ ("How fast is HPA when combined with CA?",
# 2026-08-22) says "on GCE it usually takes 3 to 4 minutes from CA request to when pods can be
# scheduled", so this may be optimistic.
VM_CREATE_BOOT = Span(80, 100, 120)
# GKE installs the NVIDIA driver after the node is Ready; GPU pods wait for it (the device plugin
# advertises nvidia.com/gpu only then). Assumption: ~30 s with GKE's preloaded COS driver (the
# issue's observation); not published. The autoscaler's source says a GPU node "can take up to 15
# minutes before it reports that GPU is allocatable" (kubernetes/autoscaler cluster-autoscaler/utils/
# gpu, commit message quoted on its history page): that is the worst case, not the typical one.
DRIVER_INSTALL = Span(25, 30, 40)
# Pulling the ~1 GB runner image from GHCR onto a fresh node, all layers before the container
# starts. Assumption: 15-35 s, the observation; GitHub publishes no pull throughput.
PULL_FROM_GHCR = Span(15, 25, 35)
# Image streaming from Artifact Registry: the container goes "from the ImagePulling status to Running
# in a couple of seconds (regardless of container size)". Source: "Introducing GKE image streaming
# for fast application startup and autoscaling", Google Cloud blog, 2021-11-03. GKE's "Use Image
# streaming to pull container images" page adds that the first pull of an image may not benefit;
# the slow end covers that the preloader, not the runner, usually makes that first pull.
PULL_STREAMED = Span(2, 3, 10)
# Container start and the runner process (entrypoint, JIT config from the broker, run.sh, listener
# connected). Assumption: ~10 s, the observation; the local benchmark above times only the
# entrypoint's part against fakes.
RUNNER_START = Span(8, 10, 12)
# GitHub queueing a job whose `needs` are done and handing it to an idle matching runner.
# Assumption: a few seconds (the issue); GitHub publishes no job-assignment latency.
GITHUB_HANDOVER = Span(2, 3, 5)
# Scheduling a pod onto a Ready node that has the driver and the image, and starting its container.
# Assumption: ~2 s; Kubernetes publishes an SLO only for stateless pods with images pulled
# (kubernetes/community sig-scalability pod startup SLO: 5 s at the 99th percentile).
POD_ON_READY_NODE = Span(1, 2, 5)
# Scale-set mode: from GitHub queueing a job for the scale set to its runner pod existing. ARC's
# listener holds a long poll on the scale set's message queue and gets the job at once; it patches
# the EphemeralRunnerSet, and the controller asks GitHub for a JIT configuration and creates the
# pod (actions/actions-runner-controller 0.14.2: cmd/ghalistener, ephemeralrunner_controller.go).
# Assumption: 2-8 s, three API round trips and two reconciles; ARC publishes no figure.
LISTENER_TO_POD = Span(2, 4, 8)
# Deleting an idle node: drain the runner pods and stop the VM; billing stops when the VM is
# TERMINATED. Assumption: ~30 s; not published.
NODE_DELETE_SECONDS = 30


@dataclass(frozen=True)
class ScaleDown:
    """When the autoscaler removes an idle node."""

    delay_after_add: float
    """No node is removed sooner than this after a node was added."""
    unneeded: float
    """A node must be unneeded this long before it is removed."""


# BALANCED is upstream's defaults: scale-down-delay-after-add 10m, scale-down-unneeded-time 10m.
# Source: Cluster Autoscaler FAQ, parameter table and "I have a couple of nodes with low utilization,
# but they are not scaled down. Why?", kubernetes/autoscaler master of 2026-08-22. That GKE's
# BALANCED uses them is an assumption (GKE publishes no numbers; kubernetes/autoscaler#706,
# 2018-03-13: "between 10 and 20 minutes"). The unneeded clock is taken to start only once the
# delay after add has passed (the reading; the longer of the two readings).
# OPTIMIZE_UTILIZATION: GKE says only that the autoscaler then "can remove more nodes, and remove
# nodes faster" (GKE "About cluster autoscaling", autoscaling profiles). Assumption: no delay after
# add and one minute unneeded, because GKE publishes no figure and idle nodes go "within minutes".
SCALE_DOWN = {
    "BALANCED": ScaleDown(delay_after_add=600, unneeded=600),
    "OPTIMIZE_UTILIZATION": ScaleDown(delay_after_add=0, unneeded=60),
}

# Compute Engine on-demand and spot list prices, us-central1, USD per hour, as transcribed in
# kubernetes/autoscaler cluster-autoscaler/cloudprovider/gce/gce_price_info.go (instancePrices,
# preemptiblePrices, gpuPrices, preemptibleGpuPrices), master of 2026-08-22, prices last edited
# 2026-06-11/23. Google's own tables ("VM instance pricing", "GPU pricing",
# cloud.google.com/compute/vm-instance-pricing and /gpus-pricing) were not readable in the stored
# copies. Spot prices move: "Spot prices are variable and can change up to once every day"
# (Google Cloud "Spot VMs pricing", cloud.google.com/spot-vms/pricing); treat spot as indicative.
# G2 and A2 prices include their L4 and A100 (gpuPrices: "counted into ... machine-type price").
MACHINE_PRICES = {
    "n1-standard-4": (0.1900, 0.0400),
    "g2-standard-4": (0.76, 0.23),
    "a2-highgpu-1g": (3.673385, 1.102016),
    "e2-standard-2": (0.06701, 0.02010),
    "e2-standard-4": (0.13402, 0.04021),
}
GPU_PRICES = {
    "nvidia-tesla-t4": (0.35, 0.11),
    "nvidia-l4": (0.0, 0.0),
    "nvidia-tesla-a100": (0.0, 0.0),
}
# Boot disk: GKE's default type is pd-balanced, USD 0.100 per GB-month. Source: the same
# gce_price_info.go (bootDiskPricePerHour, DefaultBootDiskType "pd-balanced", with a reference to
# GKE's "custom boot disks" page), 2026-08-22.
PD_BALANCED_PER_GB_MONTH = 0.100
# GKE Standard: USD 0.10 per cluster per hour; the free tier gives each billing account USD 74.40 a
# month, "equivalent to one free Autopilot or zonal Standard cluster". Source: "Google Kubernetes
# Engine pricing", cloud.google.com/kubernetes-engine/pricing (stored copy, read 2026-11-28).
GKE_FEE_PER_HOUR = 0.10
GKE_FREE_TIER_PER_MONTH = 74.40
HOURS_PER_MONTH = 730

GPU_TYPES = ("nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-a100")
JOB_MINUTES = (5, 15, 60)
