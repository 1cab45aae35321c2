"""Which Compute Engine machines can carry which GPUs.

GKE refuses a node pool whose machine cannot carry its accelerators, but only after
the cluster has been created: checking here turns a slow cloud failure into an
instant config error. Figures follow Google Cloud's GPU platform tables.
"""

from dataclasses import dataclass

N1_VCPUS = (1, 2, 4, 8, 16, 32, 64, 96)
# N1 series -> GiB of memory per vCPU.
N1_SERIES = {"standard": 3.75, "highmem": 6.5, "highcpu": 0.9}

# vCPUs and GiB of memory of the fixed-shape GPU machines.
FIXED_SHAPES: dict[str, tuple[int, float]] = {
    **{f"g2-standard-{n}": (n, 4.0 * n) for n in (4, 8, 12, 16, 24, 32, 48, 96)},
    **{f"a2-highgpu-{k}g": (12 * k, 85.0 * k) for k in (1, 2, 4, 8)},
    "a2-megagpu-16g": (96, 1360.0),
    **{f"a2-ultragpu-{k}g": (12 * k, 170.0 * k) for k in (1, 2, 4, 8)},
    **{f"a3-highgpu-{k}g": (26 * k, 234.0 * k) for k in (1, 2, 4, 8)},
    "a3-megagpu-8g": (208, 1872.0),
    "a3-ultragpu-8g": (224, 2952.0),
    "a4-highgpu-8g": (224, 3968.0),
}

# What GKE's own pods on a GPU node (logging, metrics, kube-proxy, the device
# plugin, the driver installer, Dataplane V2) may take, kept free of the runner.
SYSTEM_PODS_CPU_MILLIS = 1000
SYSTEM_PODS_MEMORY_MIB = 2048
# The least a GPU runner gets; a machine that leaves less is refused.
MIN_RUNNER_CPU_MILLIS = 500
MIN_RUNNER_MEMORY_MIB = 2048

# A GPU runner needs room beside the GPU for the job's own CPU work; N1 machines
# below this carry a GPU but leave the runner pod nothing to schedule on.
N1_MIN_RUNNER_VCPUS = 4


@dataclass(frozen=True)
class Accelerator:
    """One GPU model: the machine family that carries it and in what numbers."""

    family: str
    # n1 GPUs: GPU count -> most vCPUs a machine may have with that many GPUs.
    n1_max_vcpus: dict[int, int] | None = None
    # Fixed-shape families: machine type -> the GPU count it comes with.
    machines: dict[str, int] | None = None

    @property
    def counts(self) -> tuple[int, ...]:
        """The GPU counts a node of this model may carry."""
        if self.n1_max_vcpus is not None:
            return tuple(sorted(self.n1_max_vcpus))
        return tuple(sorted(set(self.machines.values())))


def _fixed(prefix: str, counts: dict[str, int]) -> dict[str, int]:
    return {f"{prefix}-{suffix}": count for suffix, count in counts.items()}


ACCELERATORS: dict[str, Accelerator] = {
    "nvidia-tesla-t4": Accelerator("n1", n1_max_vcpus={1: 48, 2: 48, 4: 96}),
    "nvidia-tesla-p4": Accelerator("n1", n1_max_vcpus={1: 24, 2: 48, 4: 96}),
    "nvidia-tesla-v100": Accelerator("n1", n1_max_vcpus={1: 12, 2: 24, 4: 48, 8: 96}),
    "nvidia-tesla-p100": Accelerator("n1", n1_max_vcpus={1: 16, 2: 32, 4: 64}),
    "nvidia-l4": Accelerator(
        "g2",
        machines=_fixed(
            "g2-standard",
            {"4": 1, "8": 1, "12": 1, "16": 1, "32": 1, "24": 2, "48": 4, "96": 8},
        ),
    ),
    "nvidia-tesla-a100": Accelerator(
        "a2",
        machines={
            **_fixed("a2-highgpu", {"1g": 1, "2g": 2, "4g": 4, "8g": 8}),
            "a2-megagpu-16g": 16,
        },
    ),
    "nvidia-a100-80gb": Accelerator("a2", machines=_fixed("a2-ultragpu", {"1g": 1, "2g": 2, "4g": 4, "8g": 8})),
    "nvidia-h100-80gb": Accelerator("a3", machines=_fixed("a3-highgpu", {"1g": 1, "2g": 2, "4g": 4, "8g": 8})),
    "nvidia-h100-mega-80gb": Accelerator("a3", machines={"a3-megagpu-8g": 8}),
    "nvidia-h200-141gb": Accelerator("a3", machines={"a3-ultragpu-8g": 8}),
    "nvidia-b200": Accelerator("a4", machines={"a4-highgpu-8g": 8}),
}


def _n1_vcpus(machine_type: str) -> int | None:
    """vCPUs of an N1 predefined machine type, None for anything else."""
    parts = machine_type.split("-")
    if len(parts) != 3 or parts[0] != "n1" or parts[1] not in N1_SERIES:
        return None
    return int(parts[2]) if parts[2].isdigit() and int(parts[2]) in N1_VCPUS else None


def machine_shape(machine_type: str) -> tuple[int, float]:
    """(vCPUs, GiB of memory) of a GPU machine this catalogue knows."""
    vcpus = _n1_vcpus(machine_type)
    if vcpus is not None:
        return vcpus, vcpus * N1_SERIES[machine_type.split("-")[1]]
    return FIXED_SHAPES[machine_type]


def allocatable(vcpus: int, memory_gib: float) -> tuple[float, float]:
    """(cores, GiB) that GKE leaves to pods on a node of this shape, by its published reservations."""
    reserved_cores = sum(
        share * max(0.0, min(vcpus, upper) - lower)
        for lower, upper, share in ((0, 1, 0.06), (1, 2, 0.01), (2, 4, 0.005), (4, float("inf"), 0.0025))
    )
    reserved_gib = sum(
        share * max(0.0, min(memory_gib, upper) - lower)
        for lower, upper, share in (
            (0, 4, 0.25),
            (4, 8, 0.20),
            (8, 16, 0.10),
            (16, 128, 0.06),
            (128, float("inf"), 0.02),
        )
    )
    eviction_gib = 100 / 1024
    return vcpus - reserved_cores, memory_gib - reserved_gib - eviction_gib


@dataclass(frozen=True)
class RunnerShare:
    """What a GPU runner may take of its node: all that GKE and its own pods leave."""

    cpu_millis: int
    memory_mib: int


def runner_share(machine_type: str) -> RunnerShare:
    cores, gib = allocatable(*machine_shape(machine_type))
    # Round down to steps a person reads easily: 100m of CPU, 256 MiB of memory.
    cpu_millis = int((cores * 1000 - SYSTEM_PODS_CPU_MILLIS) // 100 * 100)
    memory_mib = int((gib * 1024 - SYSTEM_PODS_MEMORY_MIB) // 256 * 256)
    return RunnerShare(cpu_millis=cpu_millis, memory_mib=memory_mib)


def machine_problem(gpu_type: str, gpu_count: int, machine_type: str) -> str | None:
    """Why `machine_type` cannot carry `gpu_count` x `gpu_type`, or None if it can."""
    accelerator = ACCELERATORS[gpu_type]
    if accelerator.family == "n1":
        vcpus = _n1_vcpus(machine_type)
        if vcpus is None:
            return f"{gpu_type} needs an N1 machine (n1-standard-*, n1-highmem-*, n1-highcpu-*)"
        limit = accelerator.n1_max_vcpus.get(gpu_count)
        if limit is not None and vcpus > limit:
            return f"{gpu_count} x {gpu_type} allows at most {limit} vCPUs; {machine_type} has {vcpus}"
        share = runner_share(machine_type)
        if share.cpu_millis < MIN_RUNNER_CPU_MILLIS or share.memory_mib < MIN_RUNNER_MEMORY_MIB:
            return (
                f"{machine_type} leaves a GPU runner less than {MIN_RUNNER_CPU_MILLIS}m CPU and "
                f"{MIN_RUNNER_MEMORY_MIB // 1024} GiB once GKE has taken its share; "
                f"accepted: {_smallest_n1_that_fits(limit)} or larger, up to {limit} vCPUs "
                f"(the default, {smallest_machine(gpu_type, gpu_count)}, gives the runner about "
                f"{N1_MIN_RUNNER_VCPUS} vCPUs per GPU)"
            )
        return None
    carried = accelerator.machines.get(machine_type)
    if carried is None:
        accepted = ", ".join(m for m, c in accelerator.machines.items() if c == gpu_count)
        return f"{gpu_type} x {gpu_count} needs one of: {accepted or 'none (unsupported count)'}"
    if carried != gpu_count:
        return f"{machine_type} carries {carried} x {gpu_type}, not {gpu_count}"
    return None


def _smallest_n1_that_fits(most_vcpus: int) -> str:
    """The smallest N1 standard machine, up to `most_vcpus`, that leaves a runner its minimum."""
    for vcpus in N1_VCPUS:
        share = runner_share(f"n1-standard-{vcpus}")
        if (
            vcpus <= most_vcpus
            and share.cpu_millis >= MIN_RUNNER_CPU_MILLIS
            and share.memory_mib >= MIN_RUNNER_MEMORY_MIB
        ):
            return f"n1-standard-{vcpus}"
    return f"n1-standard-{most_vcpus}"


def smallest_machine(gpu_type: str, gpu_count: int) -> str:
    """The smallest machine type that carries the GPUs and leaves a runner room."""
    accelerator = ACCELERATORS[gpu_type]
    if accelerator.family == "n1":
        wanted = min(N1_MIN_RUNNER_VCPUS * gpu_count, accelerator.n1_max_vcpus[gpu_count])
        return f"n1-standard-{min(v for v in N1_VCPUS if v >= wanted)}"
    # Machines are listed smallest first.
    return next(m for m, c in accelerator.machines.items() if c == gpu_count)
