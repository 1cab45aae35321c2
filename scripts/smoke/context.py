"""What every check reads and shares: the settings, the stack's outputs, the clients, the
clock, and what the checks before it found."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from runner_contract import gpu_runner_label, system_namespace

from .cluster import Cluster
from .github import Answer, GitHub
from .report import Report, one_line
from .settings import Settings


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch, to compare with Kubernetes' timestamps."""

    def monotonic(self) -> float:
        """Seconds for deadlines."""

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class StackError(Exception):
    """pulumi could not answer; the message is its own, on one line."""


class Pulumi:
    """The stack's outputs and configuration, through the pulumi command."""

    def __init__(
        self,
        command: str,
        stack: str | None,
        project: Path,
        run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    ) -> None:
        self.command = command
        self.stack_args = ["--stack", stack] if stack else []
        self.project = project
        self._run = run

    def _call(self, *args: str) -> str:
        try:
            result = self._run(
                [self.command, *args, *self.stack_args],
                capture_output=True,
                text=True,
                check=False,
                cwd=self.project,
                timeout=300,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise StackError(str(error)) from None
        if result.returncode != 0:
            raise StackError(one_line(result.stderr or result.stdout) or f"exit {result.returncode}")
        return result.stdout

    def outputs(self) -> dict:
        text = self._call("stack", "output", "--json", "--show-secrets")
        try:
            outputs = json.loads(text)
        except ValueError:
            raise StackError(f"pulumi stack output answered no JSON: {one_line(text)[:100]}") from None
        if not isinstance(outputs, dict):
            raise StackError("pulumi stack output answered no JSON object")
        return outputs

    def config(self, key: str) -> str:
        return self._call("config", "get", key).strip()


@dataclass
class GpuRunner:
    """One smoke GPU runner: its Job, and what the checks saw of it."""

    job: str
    run_id: int
    manifest: dict
    state: str = "waiting"
    """waiting, online, up (its pod runs; GitHub cannot be asked), failed, or absent (never created)."""
    deleted: bool = False
    """Its Job is gone: deleted by the smoke test, or by someone else."""
    seen: bool = False
    """Its runner was listed in GitHub."""
    online_at: int | None = None
    """The first poll that saw its runner online (epoch seconds)."""
    gone_at: int | None = None
    """The first poll that no longer listed its runner once its Job was deleted."""
    pod: dict | None = None
    phase: str = "none"
    """none (no pod yet), Pending, Running, Succeeded or Failed."""
    job_object: dict | None = None
    events: list[dict] = field(default_factory=list)
    node_object: dict | None = None

    @property
    def label(self) -> str:
        return gpu_runner_label(self.run_id)

    @property
    def created(self) -> bool:
        return self.state != "absent"

    @property
    def pod_name(self) -> str:
        return str(((self.pod or {}).get("metadata") or {}).get("name") or "")

    @property
    def node(self) -> str:
        return str(((self.pod or {}).get("spec") or {}).get("nodeName") or "")


@dataclass
class GpuRun:
    runners: list[GpuRunner] = field(default_factory=list)
    last_answer: Answer | None = None
    """GitHub's last answer to the runner list while waiting for them."""
    deleted_at: int | None = None
    """When the smoke test deleted their Jobs (epoch seconds)."""

    @property
    def created(self) -> list[GpuRunner]:
        return [r for r in self.runners if r.created]


@dataclass
class Context:
    settings: Settings
    report: Report
    cluster: Cluster
    github: GitHub
    clock: Clock
    pulumi: Pulumi
    outputs: dict
    project: Path
    """The project folder: where runner_image/Dockerfile is."""

    repository: str = ""
    github_ok: bool = True
    """Cleared when GitHub cannot answer us at all (no token, no repository, token
    refused): the GPU runners are then checked in the cluster only."""
    github_reason: str = ""
    runners: list[dict] = field(default_factory=list)
    """The repository's runners as last listed."""
    gpu: GpuRun = field(default_factory=GpuRun)
    scale_set_pods: list[dict] = field(default_factory=list)
    """Scale-set mode: the runner pods ARC made most recently, newest first."""

    @property
    def namespace(self) -> str:
        return str(self.outputs["namespace"])

    @property
    def scale_set_name(self) -> str:
        """The scale set's name (`runs-on: <name>`); empty for a per-run stack."""
        return str(self.outputs.get("scaleSetName") or "")

    @property
    def system_namespace(self) -> str:
        return system_namespace(self.namespace)

    def wait(self, timeout_seconds: float, done: Callable[[], bool]) -> bool:
        """Calls `done` until it is true, polling every SMOKE_POLL_SECONDS; False at the deadline."""
        deadline = self.clock.monotonic() + timeout_seconds
        while True:
            if done():
                return True
            if self.clock.monotonic() >= deadline:
                return False
            self.clock.sleep(self.settings.poll_seconds)
