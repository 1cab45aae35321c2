"""The checks of each runner mode, in the order they run.

A check is a function of the `Context`; it prints its own lines and records its
failures, and later checks read what earlier ones found (the runner list, the GPU
runners). A `scale-set` stack (GitHub's Actions Runner Controller: no base runner, no
broker-made Jobs) has its own list, sharing the runner version and CI's rights. The
stack's outputs choose: `scaleSetName` is exported in scale-set mode alone.
"""

from __future__ import annotations

from collections.abc import Callable

from .checks import (
    base_runner_deployment,
    base_runner_online,
    broker_deployment,
    foreign_runner_warnings,
    runner_version,
)
from .ci_access import ci_access
from .context import Context
from .gpu_runners import (
    collect_timings,
    delete_gpu_runners,
    gpus_visible,
    make_gpu_runners,
    print_cold_start,
    wait_deregistered,
    wait_online,
)
from .nodes import follow_nodes
from .scale_set import arc_controller, gpu_in_runner, listener, recent_runners, scale_set, scale_set_in_github

Check = Callable[[Context], None]

PER_RUN: tuple[Check, ...] = (
    broker_deployment,
    base_runner_deployment,
    base_runner_online,
    foreign_runner_warnings,
    runner_version,
    ci_access,
    make_gpu_runners,
    wait_online,
    collect_timings,
    gpus_visible,
    delete_gpu_runners,
    wait_deregistered,
    print_cold_start,
    follow_nodes,
)

SCALE_SET: tuple[Check, ...] = (
    arc_controller,
    scale_set,
    listener,
    scale_set_in_github,
    runner_version,
    ci_access,
    recent_runners,
    gpu_in_runner,
)

MODES: dict[str, tuple[Check, ...]] = {"per-run": PER_RUN, "scale-set": SCALE_SET}
DEFAULT_MODE = "per-run"


def mode_of(outputs: dict) -> str:
    """The stack's runner mode, from its outputs: a scale-set stack exports `scaleSetName`."""
    return "scale-set" if outputs.get("scaleSetName") else DEFAULT_MODE
