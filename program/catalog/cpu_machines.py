"""The CPU pool's default machine: the smallest that holds what runs there, with a little room."""

from program.catalog.gpus import allocatable

# E2 standard machines: vCPUs and GiB of memory.
E2_STANDARD = {f"e2-standard-{n}": (n, 4.0 * n) for n in (2, 4, 8, 16, 32)}
# What GKE's own pods on a CPU node of this cluster request (kube-dns, metrics-server,
# konnectivity, the logging and metrics agents, Dataplane V2, the CSI driver), observed
# on GKE 1.33-1.35 nodes with Dataplane V2: about 0.7 vCPU and 1.2 GiB; kept generous.
SYSTEM_PODS_CPU_MILLIS = 900
SYSTEM_PODS_MEMORY_MIB = 1536
# Room for a rolling update's extra pod and a little more.
HEADROOM = 1.15


def smallest_cpu_machine(base_runners: int, runner_cpu_millis: int, runner_memory_mib: int,
                         broker_cpu_millis: int, broker_memory_mib: int) -> str:
    """The smallest E2 standard machine one node of which holds the base runners, the broker and GKE's pods."""
    cpu = (SYSTEM_PODS_CPU_MILLIS + base_runners * runner_cpu_millis + broker_cpu_millis) * HEADROOM
    memory = (SYSTEM_PODS_MEMORY_MIB + base_runners * runner_memory_mib + broker_memory_mib) * HEADROOM
    for machine, shape in E2_STANDARD.items():
        cores, gib = allocatable(*shape)
        if cores * 1000 >= cpu and gib * 1024 >= memory:
            return machine
    return "e2-standard-32"
