"""The machines: which GPU machine, and how big the CPU pool's nodes must be."""

import difflib
import re

from program.catalog.cpu_machines import cpu_machine_problem, smallest_cpu_machine
from program.catalog.gpus import ACCELERATORS, machine_problem, smallest_machine
from program.manifests import broker, runners, scale_set
from program.settings.reader import Reader

GPU_MODEL = re.compile(r"^([a-z]+[0-9]+)[a-z]*$")


def gpu_model(gpu_type: str) -> str | None:
    """The GPU's model, letters and number: nvidia-tesla-t4 -> t4, nvidia-a100-80gb -> a100, nvidia-a10g -> a10."""
    return next((match[1] for part in gpu_type.lower().split("-") if (match := GPU_MODEL.match(part))), None)


def did_you_mean(gpu_type: str) -> str:
    """The served GPU type of the same model (nvidia-t4 -> nvidia-tesla-t4, nvidia-a100-80g -> nvidia-a100-80gb).

    Never a guess across models: nvidia-a10g is not a spelling of nvidia-a100-80gb, a far pricier GPU.
    """
    model = gpu_model(gpu_type)
    same_model = [name for name in sorted(ACCELERATORS) if model and gpu_model(name) == model]
    closest = difflib.get_close_matches(gpu_type.lower(), same_model, n=1, cutoff=0.0)
    return f"did you mean {closest[0]}? " if closest else ""


def default_base_runner_replicas(gpu_max_nodes: int) -> int:
    """One per GPU node: each run's start job holds a base runner until its GPU runner is up."""
    return max(1, gpu_max_nodes)


def default_scale_set_cpu_machine() -> str:
    """The smallest machine one node of which holds ARC's controller and listener and GKE's own pods."""
    return smallest_cpu_machine(
        0,
        0,
        0,
        scale_set.ARC_PODS_CPU_MILLIS,
        scale_set.ARC_PODS_MEMORY_MIB,
    )


def cpu_machine_problem_for(machine_type: str, base_runner_replicas: int) -> str | None:
    """Why one node of `machine_type` cannot hold the base runners, the broker and GKE's pods, or None."""
    return cpu_machine_problem(
        machine_type,
        base_runner_replicas,
        runners.BASE_RUNNER_CPU_MILLIS,
        runners.BASE_RUNNER_MEMORY_MIB,
        broker.BROKER_CPU_MILLIS,
        broker.BROKER_MEMORY_MIB,
    )


def default_cpu_machine(base_runner_replicas: int) -> str:
    """The smallest machine one node of which holds the base runners, the broker and GKE's own pods."""
    return smallest_cpu_machine(
        base_runner_replicas,
        runners.BASE_RUNNER_CPU_MILLIS,
        runners.BASE_RUNNER_MEMORY_MIB,
        broker.BROKER_CPU_MILLIS,
        broker.BROKER_MEMORY_MIB,
    )


def read_gpu_machine(read: Reader, gpu_type: str, gpu_count: int) -> str:
    """The configured GPU machine if it can carry the GPUs, else the smallest that can."""
    accelerator = ACCELERATORS.get(gpu_type)
    if accelerator is None or gpu_count < 1:
        return read.text("gpuMachineType", "")
    if gpu_count not in accelerator.counts:
        counts = ", ".join(str(c) for c in accelerator.counts)
        read.problem("gpuCount", f"got {gpu_count}; accepted for {gpu_type}: {counts}")
        return read.text("gpuMachineType", "")
    machine_type = read.text("gpuMachineType")
    if machine_type is None:
        return smallest_machine(gpu_type, gpu_count)
    problem = machine_problem(gpu_type, gpu_count, machine_type)
    if problem:
        read.problem("gpuMachineType", f"got {machine_type!r}; {problem}")
    return machine_type
