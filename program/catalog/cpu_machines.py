"""The CPU pool's machine: the smallest that holds what runs there, with a little room."""

import re

from program.catalog.gpus import allocatable

# E2 standard machines: vCPUs and GiB of memory.
E2_STANDARD = {f"e2-standard-{n}": (n, 4.0 * n) for n in (2, 4, 8, 16, 32)}
# GiB of memory per vCPU of the predefined series a CPU pool is likely to use.
MEMORY_GIB_PER_VCPU = {
    "e2": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "n1": {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9},
    "n2": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "n2d": {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0},
    "t2d": {"standard": 4.0},
}
PREDEFINED = re.compile(r"^([a-z0-9]+)-(standard|highmem|highcpu)-([0-9]+)$")
# Shared-core E2 machines: GKE leaves pods less than one vCPU of them; counted as one.
SHARED_CORE = {"e2-micro": (1, 1.0), "e2-small": (1, 2.0), "e2-medium": (1, 4.0)}
# What GKE's own pods on a CPU node of this cluster request (kube-dns, metrics-server,
# konnectivity, the logging and metrics agents, Dataplane V2, the CSI driver), observed
# on GKE 1.33-1.35 nodes with Dataplane V2: about 0.7 vCPU and 1.2 GiB; kept generous.
SYSTEM_PODS_CPU_MILLIS = 900
SYSTEM_PODS_MEMORY_MIB = 1536
# Room for a rolling update's extra pod and a little more.
HEADROOM = 1.15


def needed(
    base_runners: int, runner_cpu_millis: int, runner_memory_mib: int, broker_cpu_millis: int, broker_memory_mib: int
) -> tuple[float, float]:
    """(millicores, MiB) one CPU node must leave to pods: the base runners, the broker, GKE's pods, with room."""
    cpu = (SYSTEM_PODS_CPU_MILLIS + base_runners * runner_cpu_millis + broker_cpu_millis) * HEADROOM
    memory = (SYSTEM_PODS_MEMORY_MIB + base_runners * runner_memory_mib + broker_memory_mib) * HEADROOM
    return cpu, memory


def cpu_machine_shape(machine_type: str) -> tuple[int, float] | None:
    """(vCPUs, GiB of memory) of a machine this catalogue knows, None for any other."""
    if machine_type in SHARED_CORE:
        return SHARED_CORE[machine_type]
    match = PREDEFINED.match(machine_type)
    per_vcpu = MEMORY_GIB_PER_VCPU.get(match[1], {}).get(match[2]) if match else None
    if per_vcpu is None:
        return None
    return int(match[3]), int(match[3]) * per_vcpu


def _holds(shape: tuple[int, float], need: tuple[float, float]) -> bool:
    cores, gib = allocatable(*shape)
    return cores * 1000 >= need[0] and gib * 1024 >= need[1]


def smallest_cpu_machine(
    base_runners: int, runner_cpu_millis: int, runner_memory_mib: int, broker_cpu_millis: int, broker_memory_mib: int
) -> str:
    """The smallest E2 standard machine one node of which holds the base runners, the broker and GKE's pods."""
    need = needed(base_runners, runner_cpu_millis, runner_memory_mib, broker_cpu_millis, broker_memory_mib)
    return next((machine for machine, shape in E2_STANDARD.items() if _holds(shape, need)), "e2-standard-32")


def cpu_machine_problem(
    machine_type: str,
    base_runners: int,
    runner_cpu_millis: int,
    runner_memory_mib: int,
    broker_cpu_millis: int,
    broker_memory_mib: int,
) -> str | None:
    """Why one node of `machine_type` cannot hold what the CPU pool runs.

    None if it can, or for a machine it does not know.
    """
    shape = cpu_machine_shape(machine_type)
    need = needed(base_runners, runner_cpu_millis, runner_memory_mib, broker_cpu_millis, broker_memory_mib)
    if shape is None or _holds(shape, need):
        return None
    cores, gib = allocatable(*shape)
    smallest = smallest_cpu_machine(
        base_runners, runner_cpu_millis, runner_memory_mib, broker_cpu_millis, broker_memory_mib
    )
    return (
        f"{machine_type} leaves pods about {cores * 1000:.0f}m CPU and {gib:.2f} GiB once GKE has taken its "
        f"share, and one node must hold {base_runners} base runner(s), the broker and GKE's own pods "
        f"({need[0]:.0f}m CPU and {need[1] / 1024:.2f} GiB, with room for a rolling update); accepted: "
        f"{smallest} or larger, or fewer baseRunnerReplicas"
    )
