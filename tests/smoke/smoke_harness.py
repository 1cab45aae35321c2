"""One in-process run of the smoke test against the doubles, and what it printed and did.

run = smoke(GpuScenario(RUN_ID), SMOKE_GPU_RUNNERS="1")
assert run.line("PASS  GPU runner online (gpu-runner-9000-1)")
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fake_github import FakeGitHub, Reply, Request
from smoke_doubles import (
    SCALE_SET_OUTPUTS,
    STACK_OUTPUTS,
    Arc,
    FakeArcCluster,
    FakeClock,
    FakeCluster,
    FakePulumi,
    GpuScenario,
    RunnerBoard,
)

from scripts.smoke.context import StackError
from scripts.smoke.main import main

TOKEN = "ghp_smoke-test-token-never-shown"
RUN_ID = 9000
JOB = f"gpu-runner-{RUN_ID}-1"
RUNNERS_PATH = "/repos/o/r/actions/runners"
RELEASE_PATH = "/repos/actions/runner/releases/latest"
IMAGE_RUNNER_VERSION = "2.336.0"

OWN_RUNNERS = [
    {
        "id": 1,
        "name": "base-runner-7d9f-abcde",
        "status": "online",
        "labels": [{"name": "self-hosted"}, {"name": "base-runner"}],
    },
    {"id": 2, "name": "gpu-runner-1-1", "status": "offline", "labels": [{"name": "gpu-runner-1"}]},
]


def runner_list(runners: list[dict]) -> Reply:
    return Reply(200, {"total_count": len(runners), "runners": runners})


def project_folder(root: Path, runner_version: str = IMAGE_RUNNER_VERSION) -> Path:
    """A project folder whose runner_image/Dockerfile pins `runner_version`."""
    (root / "runner_image").mkdir(parents=True, exist_ok=True)
    (root / "runner_image" / "Dockerfile").write_text(
        f"FROM ubuntu:noble\nARG RUNNER_VERSION={runner_version}\nARG RUNNER_SHA256={'0' * 64}\n"
    )
    return root


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    cluster: FakeCluster
    clock: FakeClock
    pulumi: FakePulumi
    github_requests: list[Request]
    kubeconfig: Path | None
    board: RunnerBoard

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def line(self, prefix: str) -> str:
        lines = [line for line in self.stdout.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1, self.output
        return lines[0]

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith(prefix)]

    def table(self, title: str) -> dict[str, list[str]]:
        """A printed table's rows by their first column, with its header under ''."""
        lines = self.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        rows = {}
        for line in lines[start + 1 :]:
            if not line.strip() or not re.match(r"^(runner|node|gpu-runner-|gke-)", line):
                break
            first, *rest = line.split()
            rows["" if first in ("runner", "node") else first] = rest
        return rows

    def runner_lists(self) -> list[Request]:
        return [r for r in self.github_requests if r.path == RUNNERS_PATH]

    def deleted_jobs(self) -> list[str]:
        """Every Job a delete call named, whether or not it went through."""
        return sorted({name for call in self.cluster.calls_to("delete") for name in call.args[0]})


DEFAULT_PROJECT: list[Path] = []


class ReadRecording(dict):
    """An environment that notes each name read from it."""

    def __init__(self, values: dict, read: set[str]) -> None:
        super().__init__(values)
        self.read = read

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def smoke(
    *runners: GpuScenario,
    argv: tuple[str, ...] = (),
    runners_reply: Reply | Callable[[float], Reply] | None = None,
    release: Reply | None = None,
    outputs: dict | StackError | None = None,
    project: Path | None = None,
    change: Callable[[FakeCluster], None] | None = None,
    clock: FakeClock | None = None,
    read: set[str] | None = None,
    arc: Arc | None = None,
    **env: str | None,
) -> Run:
    """The smoke test, healthy unless told otherwise: one GPU runner (run id RUN_ID) unless given.
    `env` overrides the environment (None removes a variable); `change` edits the cluster first;
    `read` collects the names of the variables the smoke test reads. With `arc`, a scale-set
    stack: its outputs, and a cluster with ARC in it."""
    runners = runners or (GpuScenario(RUN_ID),)
    clock = clock or FakeClock()
    cluster = FakeArcCluster(clock, arc) if arc else FakeCluster(clock, list(runners))
    if change:
        change(cluster)
    default_outputs = SCALE_SET_OUTPUTS if arc else STACK_OUTPUTS
    pulumi = FakePulumi(default_outputs if outputs is None else outputs)
    out, err = io.StringIO(), io.StringIO()
    seen: list[Path] = []

    def make_cluster(kubeconfig: Path) -> FakeCluster:
        assert kubeconfig.read_text() == STACK_OUTPUTS["kubeconfig"]
        assert kubeconfig.stat().st_mode & 0o777 == 0o600 and kubeconfig.parent.stat().st_mode & 0o777 == 0o700
        seen.append(kubeconfig)
        return cluster

    with FakeGitHub() as github:
        board = RunnerBoard(runners_reply or runner_list(OWN_RUNNERS), cluster)
        github.respond("GET", RUNNERS_PATH, board)
        github.default(RELEASE_PATH, release or Reply(200, {"tag_name": f"v{IMAGE_RUNNER_VERSION}"}))
        environ = {
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_REPOSITORY": "o/r",
            "GITHUB_API_URL": github.url,
            "SMOKE_RUN_ID": str(RUN_ID),
        }
        environ.update(env)
        environ = {k: v for k, v in environ.items() if v is not None}
        if read is not None:
            environ = ReadRecording(environ, read)
        # A common umask, under which a file is readable by all unless made otherwise.
        umask = os.umask(0o022)
        try:
            code = main(
                list(argv),
                environ=environ,
                out=out,
                err=err,
                clock=clock,
                project=project or DEFAULT_PROJECT[0],
                pulumi=pulumi,
                make_cluster=make_cluster,
            )
        finally:
            os.umask(umask)
        requests = github.requests
    return Run(code, out.getvalue(), err.getvalue(), cluster, clock, pulumi, requests, seen[0] if seen else None, board)
