"""Model 2: N runs started together, as a timeline of plain numbers.

benchmarks/cold_start_model.py feeds it (concurrent_for, scale_set_concurrent_for) the cold
start's parts for a setup; here are only the queueing rules: base runners, GPU nodes up to
gpuMaxNodes, nodes reused while the autoscaling profile keeps them.
"""

from dataclasses import dataclass

from published import ScaleDown


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
