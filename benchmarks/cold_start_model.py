"""Models of what a GPU run waits for and what it bills: figures from published timings and prices.

Not a measurement: benchmarks/benchmark.py prints these next to what it times. The model reads the
program's own defaults (program.settings, Pulumi.yaml, program.catalog.gpus, program.catalog.cpu_machines,
program.manifests.warmup) and the example workflow's waits (examples/gpu-training.yml,
runner_image/gpu_runner) instead of restating them; only the outside world's figures are
constants, each with its source, in benchmarks/published.py. Model 2's queueing rules are in
benchmarks/concurrency.py, the printing in benchmarks/report.py.

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

from concurrency import RunTimes, concurrent_runs, scale_set_concurrent_runs  # noqa: E402
from program import settings  # noqa: E402 - after the path is set
from program.catalog import cpu_machines as cpu_sizing  # noqa: E402
from program.catalog.gpus import allocatable, smallest_machine  # noqa: E402
from program.components.cluster import NodePoolSpec  # noqa: E402
from program.manifests import warmup as gpu_warmup  # noqa: E402
from program.manifests.broker import BROKER_CPU_MILLIS, BROKER_MEMORY_MIB  # noqa: E402
from program.manifests.runners import BASE_RUNNER_CPU_MILLIS, BASE_RUNNER_MEMORY_MIB  # noqa: E402
from program.manifests.scale_set import ARC_PODS_CPU_MILLIS, ARC_PODS_MEMORY_MIB  # noqa: E402
from published import (  # noqa: E402
    AUTOSCALER_GPU_HOLD_SECONDS,
    AUTOSCALER_SCAN_SECONDS,
    DRIVER_INSTALL,
    GITHUB_HANDOVER,
    GKE_FEE_PER_HOUR,
    GKE_FREE_TIER_PER_MONTH,
    GPU_PRICES,
    HOURS_PER_MONTH,
    LISTENER_TO_POD,
    MACHINE_PRICES,
    NODE_DELETE_SECONDS,
    PD_BALANCED_PER_GB_MONTH,
    POD_ON_READY_NODE,
    PULL_FROM_GHCR,
    PULL_STREAMED,
    RUNNER_START,
    SCALE_DOWN,
    VM_CREATE_BOOT,
    ScaleDown,
    Span,
)


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
# Model 2: N runs started together (the timeline itself: benchmarks/concurrency.py).
# ---------------------------------------------------------------------------------------------


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
