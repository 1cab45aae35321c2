"""The checks of each runner mode, in the order they run.

A check is a function of the `Context`; it prints its own lines and records its
failures, and later checks read what earlier ones found (the runner list, the GPU
runners). Only `per-run` exists today. A `scale-set` stack (GitHub's Actions Runner
Controller: no base runner, no broker-made Jobs) will get its own list here, sharing
what fits (the runner version, CI's rights, the GPU check inside a runner).
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

MODES: dict[str, tuple[Check, ...]] = {"per-run": PER_RUN}
DEFAULT_MODE = "per-run"
