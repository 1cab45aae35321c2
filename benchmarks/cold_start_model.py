"""Models of what a GPU run waits for and what it bills: figures from published timings and prices.

Not a measurement: benchmarks/benchmark.py prints these next to what it times. The model reads the
program's own defaults (program.settings, Pulumi.yaml, program.catalog.gpus, program.catalog.cpu_machines,
program.manifests.warmup) and the example workflow's waits (examples/gpu-training.yml,
runner_image/gpu_runner) instead of restating them; only the outside world's figures are
constants here, each with its source.

"Before" is the project before image streaming, the preloader, one base runner per GPU node and
OPTIMIZE_UTILIZATION: one base runner, the image pulled from GHCR once the GPU node is ready,
GKE's default autoscaling profile (BALANCED) and a CPU pool of e2-standard-4. "After" is what the
program does by default now. "Scale-set" is runnerMode: scale-set with the same defaults: GitHub's
Actions Runner Controller starts one GPU runner pod per job, its controller and listener live on the
CPU pool, and there is no base runner, broker or start job.
"""

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from program import settings  # noqa: E402 - after the path is set
from program.catalog import cpu_machines as cpu_sizing  # noqa: E402
from program.manifests import warmup as gpu_warmup  # noqa: E402
from program.manifests.broker import BROKER_CPU_MILLIS, BROKER_MEMORY_MIB  # noqa: E402
from program.components.cluster import NodePoolSpec  # noqa: E402
from program.catalog.gpus import allocatable, smallest_machine  # noqa: E402
from program.manifests.runners import BASE_RUNNER_CPU_MILLIS, BASE_RUNNER_MEMORY_MIB  # noqa: E402
from program.manifests.scale_set import ARC_PODS_CPU_MILLIS, ARC_PODS_MEMORY_MIB  # noqa: E402

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

# ---------------------------------------------------------------------------------------------
# What the program and its example workflow say.
# ---------------------------------------------------------------------------------------------


def poll_default(root: Path) -> float:
    """The pause between the start job's looks: the runner-side command's own default."""
    if str(root / "runner_image") not in sys.path:
        sys.path.insert(0, str(root / "runner_image"))
    from gpu_runner.cli import DEFAULT_POLL_SECONDS

    return float(DEFAULT_POLL_SECONDS)


def start_job_timeout(workflow: dict) -> float:
    """GPU_RUNNER_TIMEOUT_SECONDS of the step that runs `gpu-runner start`."""
    for job in workflow["jobs"].values():
        for step in job.get("steps", []):
            if str(step.get("run", "")).strip() == "gpu-runner start":
                return float(step["env"]["GPU_RUNNER_TIMEOUT_SECONDS"])
    raise ValueError("no step runs `gpu-runner start`")


def config_defaults(pulumi_yaml: dict) -> dict:
    """Each config key's declared default, from Pulumi.yaml."""
    return {key: spec["default"] for key, spec in pulumi_yaml["config"].items() if "default" in spec}


@dataclass(frozen=True)
class Program:
    """What the model reads from the repository."""

    defaults: dict
    poll_seconds: float
    start_timeout_seconds: float
    placeholder_grace_seconds: float
    boot_disk_gb: int


def read_program(root: Path = ROOT) -> Program:
    defaults = config_defaults(yaml.safe_load((root / "Pulumi.yaml").read_text()))
    placeholder = gpu_warmup.placeholder_pod_spec(
        "image", 1, smallest_machine(defaults["gpuType"], defaults["gpuCount"]), "priority"
    )
    disk = next(f.default for f in dataclasses.fields(NodePoolSpec) if f.name == "disk_size_gb")
    return Program(
        defaults=defaults,
        poll_seconds=poll_default(root),
        start_timeout_seconds=start_job_timeout(yaml.safe_load((root / "examples" / "gpu-training.yml").read_text())),
        placeholder_grace_seconds=placeholder["terminationGracePeriodSeconds"],
        boot_disk_gb=disk,
    )


@dataclass(frozen=True)
class Setup:
    """One way the project is set up: before this change, or the defaults now."""

    name: str
    base_runners: int
    pull: Span
    pull_overlaps_driver: bool
    profile: str
    cpu_machine: str
    warm_nodes: int
    scale_set: bool = False
    """runnerMode: scale-set: ARC starts the GPU runner for each job; no base runner, no start job."""


def before_setup() -> Setup:
    """The project before: baseRunnerReplicas defaulted to 1, GHCR pulled after the driver, BALANCED."""
    return Setup(
        "before",
        base_runners=1,
        pull=PULL_FROM_GHCR,
        pull_overlaps_driver=False,
        profile="BALANCED",
        cpu_machine="e2-standard-4",
        warm_nodes=0,
    )


def after_setup(program: Program, gpu_max_nodes: int | None = None) -> Setup:
    """The defaults now, as the program derives them."""
    gpu_max = gpu_max_nodes if gpu_max_nodes is not None else settings.DEFAULT_GPU_MAX_NODES
    base = program.defaults["baseRunnerReplicas"] or settings.default_base_runner_replicas(gpu_max)
    return Setup(
        "after",
        base_runners=base,
        pull=PULL_STREAMED,
        pull_overlaps_driver=True,
        profile=settings.AUTOSCALING_PROFILES[0],
        cpu_machine=settings.default_cpu_machine(base),
        warm_nodes=program.defaults["gpuWarmRunners"],
    )


def scale_set_setup(program: Program) -> Setup:
    """runnerMode: scale-set with the program's defaults: ARC on the CPU pool instead of base runners and the broker."""
    return Setup(
        "scale-set",
        base_runners=0,
        pull=PULL_STREAMED,
        pull_overlaps_driver=True,
        profile=settings.AUTOSCALING_PROFILES[0],
        cpu_machine=settings.default_scale_set_cpu_machine(),
        warm_nodes=program.defaults["gpuWarmRunners"],
        scale_set=True,
    )


# ---------------------------------------------------------------------------------------------
# Model 1: the cold start of one GPU runner.
# ---------------------------------------------------------------------------------------------


def cold_start(
    autoscaler: float,
    vm: float,
    driver: float,
    pull: float,
    runner: float,
    notice: float,
    handover: float,
    pull_overlaps_driver: bool,
) -> dict[str, float]:
    """Seconds of each part from the start job creating the GPU runner's pod to `train` starting.

    Without overlap the pull starts once the driver is in (the runner pod asks for a GPU, so it is
    scheduled only then). With the preloader the pull starts when the node joins, beside the driver
    install, so only what outlasts the install is left to wait for.
    """
    return {
        "autoscaler reaction (incl. GPU hold)": autoscaler,
        "VM create + boot": vm,
        "GKE driver install": driver,
        "image pull (~1 GB)": max(0.0, pull - driver) if pull_overlaps_driver else pull,
        "container + runner start": runner,
        "start job notices (poll)": notice,
        "GitHub hands over `train`": handover,
    }


def autoscaler_reaction(which: str) -> float:
    scan_wait = {"low": 0.0, "typical": AUTOSCALER_SCAN_SECONDS / 2, "high": AUTOSCALER_SCAN_SECONDS}[which]
    return AUTOSCALER_GPU_HOLD_SECONDS + scan_wait


def poll_wait(poll_seconds: float, which: str) -> float:
    """How long after the runner is up the start job looks again: up to one poll, half on average."""
    return {"low": 0.0, "typical": poll_seconds / 2, "high": poll_seconds}[which]


def cold_start_for(setup: Setup, poll_seconds: float, which: str = "typical") -> dict[str, float]:
    return cold_start(
        autoscaler=autoscaler_reaction(which),
        vm=VM_CREATE_BOOT.pick(which),
        driver=DRIVER_INSTALL.pick(which),
        pull=setup.pull.pick(which),
        runner=RUNNER_START.pick(which),
        notice=poll_wait(poll_seconds, which),
        handover=GITHUB_HANDOVER.pick(which),
        pull_overlaps_driver=setup.pull_overlaps_driver,
    )


def warm_start(preemption: float, pod_start: float, runner: float, notice: float, handover: float) -> dict[str, float]:
    """A warm node (gpuWarmRunners): driver in, image on the node; the runner preempts a placeholder."""
    return {
        "placeholder preempted": preemption,
        "pod scheduled + container start": pod_start,
        "container + runner start": runner,
        "start job notices (poll)": notice,
        "GitHub hands over `train`": handover,
    }


def warm_start_for(program: Program, which: str = "typical") -> dict[str, float]:
    # The placeholder only sleeps and ignores SIGTERM, so it goes after its grace period; the
    # scheduler's preemption round is taken as one more second (assumption).
    return warm_start(
        preemption=program.placeholder_grace_seconds + 1.0,
        pod_start=POD_ON_READY_NODE.pick(which),
        runner=RUNNER_START.pick(which),
        notice=poll_wait(program.poll_seconds, which),
        handover=GITHUB_HANDOVER.pick(which),
    )


def scale_set_cold_start_for(setup: Setup, which: str = "typical") -> dict[str, float]:
    """Seconds of each part from GitHub queueing a GPU job for the scale set to the job starting.

    No start job: ARC's listener sees the job and its controller creates the runner pod, and GitHub
    hands the job to that runner as soon as it is up; no one polls for it.
    """
    return {
        "listener sees the job, ARC creates the pod": LISTENER_TO_POD.pick(which),
        "autoscaler reaction (incl. GPU hold)": autoscaler_reaction(which),
        "VM create + boot": VM_CREATE_BOOT.pick(which),
        "GKE driver install": DRIVER_INSTALL.pick(which),
        "image pull (~1 GB)": (
            max(0.0, setup.pull.pick(which) - DRIVER_INSTALL.pick(which))
            if setup.pull_overlaps_driver
            else setup.pull.pick(which)
        ),
        "container + runner start": RUNNER_START.pick(which),
        "GitHub hands over the job": GITHUB_HANDOVER.pick(which),
    }


def per_run_queued_to_train(setup: Setup, poll_seconds: float, which: str = "typical") -> float:
    """Per-run mode, from the start job being queued to `train` starting: the start job first waits for
    a base runner to take it (a free one: GitHub's handover), then asks for the GPU runner."""
    return GITHUB_HANDOVER.pick(which) + sum(cold_start_for(setup, poll_seconds, which).values())


def until_runner_up(parts: dict[str, float]) -> float:
    """Seconds from the pod's creation to the runner being up: all but the last two parts."""
    values = list(parts.values())
    return sum(values[:-2])


# ---------------------------------------------------------------------------------------------
# Model 2: N runs started together.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTimes:
    """One run, in seconds from the moment all runs were started."""

    start_job_begins: float
    runner_up: float
    train_starts: float
    train_ends: float
    waited_for_base_runner: bool
    waited_for_node: bool
    cold_node: bool
    start_job_seconds: float


@dataclass
class _Node:
    added_at: float
    free_at: float


def concurrent_runs(
    runs: int,
    job_seconds: float,
    gpu_max_nodes: int,
    base_runners: int,
    cold_until_up: float,
    reuse_until_up: float,
    notice: float,
    handover: float,
    base_turnaround: float,
    autoscaler: float,
    scale_down: ScaleDown,
) -> list[RunTimes]:
    """When each of `runs` runs, all started at time 0, reaches `train`.

    Assumptions: GitHub hands queued jobs to base runners in the order they were queued (the
    start jobs, queued first, go before any guard or stop job, which are short and off the path
    to `train`). A start job holds its base runner from the start until its GPU runner is up,
    then the base runner (single-use) takes `base_turnaround` to come back. A GPU node freed by
    a finished run takes the next pending GPU runner without a cold start: the driver is in and
    the image is on the node. A node idle past the profile's scale-down rule is gone.
    """
    base_free = [0.0] * base_runners
    nodes: list[_Node] = []
    timeline = []

    def removed_at(node: _Node) -> float:
        return max(node.free_at, node.added_at + scale_down.delay_after_add) + scale_down.unneeded

    for _ in range(runs):
        slot = min(range(base_runners), key=base_free.__getitem__)
        waited_for_base = base_free[slot] > 0
        begins = base_free[slot] + handover
        live = [n for n in nodes if begins < removed_at(n)]
        idle = [n for n in live if n.free_at <= begins]
        waited_for_node = cold = False
        if idle:
            node = min(idle, key=lambda n: n.free_at)
            runner_up = begins + reuse_until_up
        elif len(live) < gpu_max_nodes:
            node = _Node(added_at=begins + autoscaler, free_at=float("inf"))
            nodes.append(node)
            runner_up = begins + cold_until_up
            cold = True
        else:
            node = min(live, key=lambda n: n.free_at)
            runner_up = node.free_at + reuse_until_up
            waited_for_node = True
        start_job_ends = runner_up + notice
        base_free[slot] = start_job_ends + base_turnaround
        train_starts = start_job_ends + handover
        node.free_at = train_starts + job_seconds
        timeline.append(
            RunTimes(
                begins,
                runner_up,
                train_starts,
                node.free_at,
                waited_for_base,
                waited_for_node,
                cold,
                runner_up - begins,
            )
        )
    return timeline


def scale_set_concurrent_runs(
    runs: int,
    job_seconds: float,
    gpu_max_nodes: int,
    listener: float,
    cold_until_up: float,
    reuse_until_up: float,
    handover: float,
    autoscaler: float,
    scale_down: ScaleDown,
) -> list[RunTimes]:
    """When each of `runs` GPU jobs, all queued at time 0, starts in scale-set mode.

    ARC runs at most maxRunners = gpuMaxNodes runners: the first jobs each get a new node; a later
    job's runner is created when a runner finishes, and takes the freed node (driver in, image on it)
    unless the profile's scale-down rule has removed it. `start_job_*` fields hold the listener's part.
    """
    nodes: list[_Node] = []
    timeline = []

    def removed_at(node: _Node) -> float:
        return max(node.free_at, node.added_at + scale_down.delay_after_add) + scale_down.unneeded

    for _ in range(runs):
        live = [n for n in nodes if listener < removed_at(n)]
        waited_for_node = cold = False
        if len(live) < gpu_max_nodes and not [n for n in live if n.free_at <= listener]:
            node = _Node(added_at=listener + autoscaler, free_at=float("inf"))
            nodes.append(node)
            runner_up = cold_until_up
            cold = True
        else:
            node = min(live, key=lambda n: n.free_at)
            waited_for_node = node.free_at > listener
            runner_up = max(node.free_at, listener) + reuse_until_up
        train_starts = runner_up + handover
        node.free_at = train_starts + job_seconds
        timeline.append(
            RunTimes(
                listener, runner_up, train_starts, node.free_at, False, waited_for_node, cold, runner_up - listener
            )
        )
    return timeline


def scale_set_concurrent_for(setup: Setup, runs: int, job_minutes: float, gpu_max_nodes: int) -> list[RunTimes]:
    parts = scale_set_cold_start_for(setup)
    listener = parts["listener sees the job, ARC creates the pod"]
    return scale_set_concurrent_runs(
        runs=runs,
        job_seconds=job_minutes * 60,
        gpu_max_nodes=gpu_max_nodes,
        listener=listener,
        cold_until_up=sum(parts.values()) - parts["GitHub hands over the job"],
        reuse_until_up=listener + POD_ON_READY_NODE.typical + RUNNER_START.typical,
        handover=parts["GitHub hands over the job"],
        autoscaler=parts["autoscaler reaction (incl. GPU hold)"],
        scale_down=SCALE_DOWN[setup.profile],
    )


def concurrent_for(setup: Setup, program: Program, runs: int, job_minutes: float, gpu_max_nodes: int) -> list[RunTimes]:
    cold = cold_start_for(setup, program.poll_seconds)
    notice = poll_wait(program.poll_seconds, "typical")
    handover = GITHUB_HANDOVER.typical
    reuse_until_up = POD_ON_READY_NODE.typical + RUNNER_START.typical
    return concurrent_runs(
        runs=runs,
        job_seconds=job_minutes * 60,
        gpu_max_nodes=gpu_max_nodes,
        base_runners=setup.base_runners,
        cold_until_up=until_runner_up(cold),
        reuse_until_up=reuse_until_up,
        notice=notice,
        handover=handover,
        base_turnaround=RUNNER_START.typical,
        autoscaler=cold["autoscaler reaction (incl. GPU hold)"],
        scale_down=SCALE_DOWN[setup.profile],
    )


# ---------------------------------------------------------------------------------------------
# Model 3: the bill.
# ---------------------------------------------------------------------------------------------


def billed_node_seconds(
    vm_to_train: float, job_seconds: float, scale_down: ScaleDown, delete_seconds: float = NODE_DELETE_SECONDS
) -> float:
    """Seconds a GPU node that was added for one run bills, from its VM's creation to its deletion.

    The node is added when the autoscaler asks for the VM; `train` starts `vm_to_train` later and
    ends `job_seconds` after that. It goes once it has been unneeded long enough, and never before
    the delay after add has passed. Compute Engine bills at least a minute.
    """
    job_ends = vm_to_train + job_seconds
    removal_starts = max(job_ends, scale_down.delay_after_add) + scale_down.unneeded
    return max(60.0, removal_starts + delete_seconds)


def node_price_per_hour(machine: str, gpu_type: str, gpu_count: int, disk_gb: int, spot: bool = False) -> float:
    """A GPU node's hourly list price: machine, GPUs not included in it, and its boot disk."""
    index = 1 if spot else 0
    disk = disk_gb * PD_BALANCED_PER_GB_MONTH / HOURS_PER_MONTH
    return MACHINE_PRICES[machine][index] + gpu_count * GPU_PRICES[gpu_type][index] + disk


def vm_to_train_for(setup: Setup, poll_seconds: float) -> float:
    if setup.scale_set:
        parts = scale_set_cold_start_for(setup)
        return (
            sum(parts.values())
            - parts["autoscaler reaction (incl. GPU hold)"]
            - parts["listener sees the job, ARC creates the pod"]
        )
    parts = cold_start_for(setup, poll_seconds)
    return sum(parts.values()) - parts["autoscaler reaction (incl. GPU hold)"]


def run_bill(
    setup: Setup, program: Program, gpu_type: str, job_minutes: float, profile: str | None = None, spot: bool = False
) -> tuple[float, float]:
    """(billed GPU-node minutes, USD) of one run that needs a new node."""
    seconds = billed_node_seconds(
        vm_to_train_for(setup, program.poll_seconds), job_minutes * 60, SCALE_DOWN[profile or setup.profile]
    )
    gpu_count = program.defaults["gpuCount"]
    price = node_price_per_hour(smallest_machine(gpu_type, gpu_count), gpu_type, gpu_count, program.boot_disk_gb, spot)
    return seconds / 60, seconds / 3600 * price


@dataclass(frozen=True)
class AlwaysOn:
    """The monthly cost of what runs whether or not anyone trains."""

    machine: str
    nodes: int
    machine_on_demand: float
    machine_spot: float
    boot_disk: float
    cluster_fee: float
    free_tier_credit: float

    def total(self, spot: bool = False, free_tier: bool = True) -> float:
        machines = self.machine_spot if spot else self.machine_on_demand
        fee = max(0.0, self.cluster_fee - (self.free_tier_credit if free_tier else 0.0))
        return machines + self.boot_disk + fee


def always_on(machine: str, nodes: int, disk_gb: int, hours: float = HOURS_PER_MONTH) -> AlwaysOn:
    on_demand, spot = MACHINE_PRICES[machine]
    return AlwaysOn(
        machine=machine,
        nodes=nodes,
        machine_on_demand=nodes * on_demand * hours,
        machine_spot=nodes * spot * hours,
        boot_disk=nodes * disk_gb * PD_BALANCED_PER_GB_MONTH * hours / HOURS_PER_MONTH,
        cluster_fee=GKE_FEE_PER_HOUR * hours,
        free_tier_credit=GKE_FREE_TIER_PER_MONTH * hours / HOURS_PER_MONTH,
    )


def cpu_node_fit(machine: str, base_runners: int, scale_set: bool = False) -> tuple[float, float, float, float]:
    """(requested cores, allocatable cores, requested GiB, allocatable GiB) on one CPU node,
    counting what program.catalog.cpu_machines counts: GKE's pods, the base runners, the broker
    (or, in scale-set mode, ARC's controller and listener), headroom."""
    cores, gib = allocatable(*cpu_sizing.E2_STANDARD[machine])
    control_cpu, control_memory = (
        (ARC_PODS_CPU_MILLIS, ARC_PODS_MEMORY_MIB) if scale_set else (BROKER_CPU_MILLIS, BROKER_MEMORY_MIB)
    )
    cpu = cpu_sizing.SYSTEM_PODS_CPU_MILLIS + base_runners * BASE_RUNNER_CPU_MILLIS + control_cpu
    memory = cpu_sizing.SYSTEM_PODS_MEMORY_MIB + base_runners * BASE_RUNNER_MEMORY_MIB + control_memory
    cpu, memory = cpu * cpu_sizing.HEADROOM, memory * cpu_sizing.HEADROOM
    return cpu / 1000, cores, memory / 1024, gib


# ---------------------------------------------------------------------------------------------
# Printing.
# ---------------------------------------------------------------------------------------------


def _m(seconds: float) -> str:
    return f"{seconds / 60:5.1f}"


def print_models(program: Program | None = None) -> None:
    program = program or read_program()
    before, after = before_setup(), after_setup(program)
    d = program.defaults
    print()
    print("MODELS (published figures and stated assumptions; sources in benchmarks/cold_start_model.py)")
    print(
        f"read from the program: gpuMaxNodes {settings.DEFAULT_GPU_MAX_NODES}, base runners "
        f"{after.base_runners} (default_base_runner_replicas), CPU machine {after.cpu_machine} "
        f"(default_cpu_machine), profile {after.profile} (Pulumi.yaml: {d['autoscalingProfile']}), "
        f"gpuWarmRunners {d['gpuWarmRunners']}, cpuMinNodes {d['cpuMinNodes']}, boot disk {program.boot_disk_gb} GB"
    )
    print(
        f"read from the workflow: start job GPU_RUNNER_TIMEOUT_SECONDS {program.start_timeout_seconds:.0f}, "
        f"gpu-runner poll {program.poll_seconds:g} s, placeholder grace {program.placeholder_grace_seconds} s"
    )

    # 1. Cold start.
    print()
    print("1. Cold start of one GPU runner, pool at zero: pod created -> `train` starts (seconds)")
    rows = {
        "before": cold_start_for(before, program.poll_seconds),
        "after": cold_start_for(after, program.poll_seconds),
        "floor": cold_start_for(after, program.poll_seconds, "low"),
    }
    print(f"   {'part':<38}{'before':>8}{'after':>8}{'floor':>8}")
    for part in rows["before"]:
        print(f"   {part:<38}" + "".join(f"{rows[r][part]:8.1f}" for r in rows))
    print(f"   {'total':<38}" + "".join(f"{sum(rows[r].values()):8.1f}" for r in rows))
    print(f"   {'total, minutes':<38}" + "".join(f"{sum(rows[r].values()) / 60:8.2f}" for r in rows))
    warm, warm_low, warm_high = (warm_start_for(program, w) for w in ("typical", "low", "high"))
    print(
        f"   warm node (gpuWarmRunners >= 1, image on node): {sum(warm.values()):.1f} s "
        f"(range {sum(warm_low.values()):.1f}-{sum(warm_high.values()):.1f})"
    )
    print("     = " + " + ".join(f"{k} {v:g}" for k, v in warm.items()))
    print(
        "   before: pull from GHCR after the driver; after: streamed from Artifact Registry and preloaded "
        "during the driver install; floor: every part at its published fast end"
    )

    # 2. Concurrent runs.
    job = 5
    print()
    print(
        f"2. N runs started together, {job}-minute jobs: minutes until run k's `train` starts "
        "(run k's figure is the same for every N >= k)"
    )
    columns = []
    for gpu_max in (settings.DEFAULT_GPU_MAX_NODES, 5):
        later = after_setup(program, gpu_max)
        columns.append(
            (f"max {gpu_max}, before ({before.base_runners} base)", concurrent_for(before, program, 5, job, gpu_max))
        )
        columns.append(
            (f"max {gpu_max}, after ({later.base_runners} base)", concurrent_for(later, program, 5, job, gpu_max))
        )
    print("   run" + "".join(f"{title:>25}" for title, _ in columns))
    for k in range(5):
        cells = []
        for _, timeline in columns:
            run = timeline[k]
            flags = "".join(
                flag
                for flag, on in (
                    ("c" if run.cold_node else "r", True),
                    ("b", run.waited_for_base_runner),
                    ("n", run.waited_for_node),
                    ("!", run.start_job_seconds > program.start_timeout_seconds),
                )
                if on
            )
            cells.append(f"{_m(run.train_starts)} {flags:<3}")
        print(f"   {k + 1:>3}" + "".join(f"{c:>25}" for c in cells))
    print(
        "   c new node (cold start)  r node reused (driver in, image on it)  b waited for a base runner  "
        f"n waited for a GPU node  ! start job waited over {program.start_timeout_seconds:.0f} s and fails"
    )
    print(
        "   assumptions: GitHub hands queued start jobs to base runners first come first served; a freed GPU "
        f"node takes the next pending runner in {POD_ON_READY_NODE.typical + RUNNER_START.typical:g} s; "
        f"a base runner is back {RUNNER_START.typical:g} s after its start job"
    )

    # 3. The bill.
    print()
    print("3. The bill (us-central1 list prices, on-demand; one run that adds a GPU node)")
    print("   billed GPU-node minutes and USD per run, by job length (after's cold start; the profile varies)")
    header = "".join(f"{f'{m}-min job':>19}" for m in JOB_MINUTES)
    print(f"   {'GPU':<18}{'machine':<15}{'profile':<21}{header}{'warm node/h':>13}{'spot/h':>9}")
    for gpu_type in GPU_TYPES:
        machine = smallest_machine(gpu_type, d["gpuCount"])
        hourly = node_price_per_hour(machine, gpu_type, d["gpuCount"], program.boot_disk_gb)
        hourly_spot = node_price_per_hour(machine, gpu_type, d["gpuCount"], program.boot_disk_gb, spot=True)
        for profile in ("BALANCED", "OPTIMIZE_UTILIZATION"):
            cells = ""
            for minutes in JOB_MINUTES:
                billed, usd = run_bill(after, program, gpu_type, minutes, profile)
                cells += f"{billed:5.1f} min ${usd:6.3f}".rjust(19)
            warm_cells = f"{f'${hourly:.3f}':>13}{f'${hourly_spot:.3f}':>9}" if profile == "BALANCED" else ""
            print(f"   {gpu_type:<18}{machine:<15}{profile:<21}{cells}{warm_cells}")
    monthly = {
        g: HOURS_PER_MONTH
        * node_price_per_hour(smallest_machine(g, d["gpuCount"]), g, d["gpuCount"], program.boot_disk_gb)
        for g in GPU_TYPES
    }
    print(
        "   a warm node bills its hourly price all month: "
        + ", ".join(f"{g} ${usd:.0f}" for g, usd in monthly.items())
        + f" per warm node ({HOURS_PER_MONTH} h, on-demand)"
    )
    t4 = d["gpuType"]
    b_min, b_usd = run_bill(before, program, t4, job)
    a_min, a_usd = run_bill(after, program, t4, job)
    print(
        f"   {job}-minute {t4} run: before ({before.profile}) {b_min:.1f} min ${b_usd:.3f}   "
        f"after ({after.profile}) {a_min:.1f} min ${a_usd:.3f}"
    )

    print(f"   {f'always-on, per month ({HOURS_PER_MONTH} h)':<46}{'before':>18}{'after':>18}")
    costs = {s.name: always_on(s.cpu_machine, d["cpuMinNodes"], program.boot_disk_gb) for s in (before, after)}
    lines = [
        ("CPU pool machine x cpuMinNodes", lambda c: f"{c.machine} x{c.nodes}"),
        ("  on-demand", lambda c: f"${c.machine_on_demand:.2f}"),
        ("  spot (cpuSpot)", lambda c: f"${c.machine_spot:.2f}"),
        (f"boot disk {program.boot_disk_gb} GB pd-balanced", lambda c: f"${c.boot_disk:.2f}"),
        ("GKE fee (zonal), before free tier", lambda c: f"${c.cluster_fee:.2f}"),
        (
            f"  after the ${GKE_FREE_TIER_PER_MONTH:.2f} free tier",
            lambda c: f"${max(0.0, c.cluster_fee - c.free_tier_credit):.2f}",
        ),
        ("total, on-demand, free tier", lambda c: f"${c.total():.2f}"),
        ("total, spot, free tier", lambda c: f"${c.total(spot=True):.2f}"),
        ("total, on-demand, free tier used up", lambda c: f"${c.total(free_tier=False):.2f}"),
    ]
    for label, cell in lines:
        print(f"   {label:<46}{cell(costs['before']):>18}{cell(costs['after']):>18}")
    for setup in (before, after):
        need_cpu, has_cpu, need_gib, has_gib = cpu_node_fit(setup.cpu_machine, setup.base_runners)
        print(
            f"   {setup.name}: {setup.base_runners} base runner(s) + broker + GKE pods ask {need_cpu:.2f} of "
            f"{has_cpu:.2f} cores and {need_gib:.2f} of {has_gib:.2f} GiB on one {setup.cpu_machine}"
        )

    print_scale_set_model(program)


def print_scale_set_model(program: Program) -> None:
    """4. runnerMode: scale-set next to per-run mode's defaults."""
    d = program.defaults
    after, scale_set = after_setup(program), scale_set_setup(program)
    print()
    print("4. runnerMode: scale-set (ARC) next to per-run, both with the defaults")
    parts = {which: scale_set_cold_start_for(scale_set, which) for which in ("typical", "low", "high")}
    for part, seconds in parts["typical"].items():
        print(f"   {part:<46}{seconds:8.1f}")
    per_run = {
        which: per_run_queued_to_train(after, program.poll_seconds, which) for which in ("typical", "low", "high")
    }
    print(
        f"   {'GPU job queued -> it starts, scale-set':<46}{sum(parts['typical'].values()):8.1f} s "
        f"(range {sum(parts['low'].values()):.1f}-{sum(parts['high'].values()):.1f})"
    )
    print(
        f"   {'start job queued -> train starts, per-run':<46}{per_run['typical']:8.1f} s "
        f"(range {per_run['low']:.1f}-{per_run['high']:.1f}): a start job first, and its poll"
    )
    job = 5
    gpu_max = settings.DEFAULT_GPU_MAX_NODES
    columns = (
        ("per-run", concurrent_for(after, program, 5, job, gpu_max)),
        ("scale-set", scale_set_concurrent_for(scale_set, 5, job, gpu_max)),
    )
    print(f"   5 GPU jobs queued together, {job}-minute jobs, gpuMaxNodes {gpu_max}: minutes until job k starts")
    print("   job" + "".join(f"{title:>12}" for title, _ in columns))
    for k in range(5):
        print(f"   {k + 1:>3}" + "".join(f"{_m(timeline[k].train_starts):>12}" for _, timeline in columns))
    minutes, usd = run_bill(scale_set, program, d["gpuType"], job)
    print(f"   one {job}-minute {d['gpuType']} job that adds a node: {minutes:.1f} billed GPU-node minutes, ${usd:.3f}")
    costs = {s.name: always_on(s.cpu_machine, d["cpuMinNodes"], program.boot_disk_gb) for s in (after, scale_set)}
    print(
        f"   always-on per month, on-demand, free tier: per-run {costs['after'].machine} x{costs['after'].nodes} "
        f"${costs['after'].total():.2f}, scale-set {costs['scale-set'].machine} x{costs['scale-set'].nodes} "
        f"${costs['scale-set'].total():.2f}; gpuWarmRunners idle runners bill a GPU node each, as warm nodes do"
    )
    need_cpu, has_cpu, need_gib, has_gib = cpu_node_fit(scale_set.cpu_machine, 0, scale_set=True)
    print(
        f"   scale-set: ARC's controller + listener + GKE pods ask {need_cpu:.2f} of {has_cpu:.2f} cores and "
        f"{need_gib:.2f} of {has_gib:.2f} GiB on one {scale_set.cpu_machine}; no base runner, no broker"
    )
