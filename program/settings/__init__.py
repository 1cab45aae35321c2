"""The stack's configuration, read once, checked all at once, and frozen.

Components never read `pulumi.Config` themselves: they take what they need from the
`Settings` built here, so a bad value is refused before any cloud resource exists.
`load_settings` reads every key (reader.py collects the problems); each group of keys
is checked in its own module: github, machines, optional.
"""

from program.settings.load import AUTOSCALING_PROFILES, DEFAULT_GPU_MAX_NODES, load_settings
from program.settings.machines import default_base_runner_replicas, default_cpu_machine, default_scale_set_cpu_machine
from program.settings.model import PER_RUN, SCALE_SET, ArtifactRepository, RunnerCredential, Settings, this_stack

__all__ = [
    "AUTOSCALING_PROFILES",
    "DEFAULT_GPU_MAX_NODES",
    "PER_RUN",
    "SCALE_SET",
    "ArtifactRepository",
    "RunnerCredential",
    "Settings",
    "default_base_runner_replicas",
    "default_cpu_machine",
    "default_scale_set_cpu_machine",
    "load_settings",
    "this_stack",
]
