"""The smoke test's settings: every one from the environment, read and checked once.

`VARIABLES` is the one list of them: `--help` prints it, and `read_settings` reads no
other name, so the help cannot miss one.
"""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    """The default as the help shows it."""
    meaning: str


VARIABLES = (
    Variable(
        "GITHUB_TOKEN",
        "none",
        "required for the GitHub checks: a token that may list the repository's self-hosted runners "
        '(admin access to the repository; classic PAT `repo` scope, or fine-grained "Administration: read"). '
        'With the GitHub CLI: GITHUB_TOKEN="$(gh auth token)". Without it, the GPU runners are checked '
        "in the cluster only.",
    ),
    Variable("GITHUB_REPOSITORY", "`pulumi config get githubRepository`", "owner/name"),
    Variable("GITHUB_API_URL", "https://api.github.com", "REST API root (runners, the runner's latest release)"),
    Variable("SMOKE_STACK", "the selected stack", "Pulumi stack to read"),
    Variable("SMOKE_GPU_RUNNERS", "1", "GPU runners to start at once (1-99)"),
    Variable(
        "SMOKE_RUN_ID",
        "9 followed by the epoch seconds",
        "run id of the first test GPU runner; the others count up from it (attempt 1)",
    ),
    Variable(
        "SMOKE_ROLLOUT_TIMEOUT_SECONDS",
        "300",
        "wait for the broker and the base runner Deployments (scale-set: ARC's controller and listener)",
    ),
    Variable("SMOKE_RUNNER_TIMEOUT_SECONDS", "120", "wait for a base runner to be online"),
    Variable(
        "SMOKE_GPU_TIMEOUT_SECONDS",
        "900",
        "wait for the GPU runners to be online; the GPU pool may have to scale up from zero",
    ),
    Variable(
        "SMOKE_DEREGISTER_TIMEOUT_SECONDS", "120", "wait for a GPU runner to leave GitHub once its Job is deleted"
    ),
    Variable(
        "SMOKE_FOLLOW_NODE",
        "0",
        "1: after the Jobs are deleted, follow each GPU node until it is removed and print its billed minutes; "
        "takes as long as the autoscaler's scale-down",
    ),
    Variable("SMOKE_NODE_TIMEOUT_SECONDS", "3600", "how long to follow the GPU nodes"),
    Variable("SMOKE_POLL_SECONDS", "10", "pause between polls"),
    Variable("PULUMI", "pulumi", "the pulumi command to run"),
    Variable("KUBECTL", "kubectl", "the kubectl command to run"),
)
NAMES = frozenset(variable.name for variable in VARIABLES)

WHOLE_SECONDS = re.compile(r"[0-9]+")
SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")
GPU_RUNNERS = re.compile(r"[1-9][0-9]?")
RUN_ID = re.compile(r"[1-9][0-9]{0,17}")
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class SettingsError(Exception):
    """A setting the smoke test cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    github_token: str | None
    github_repository: str | None
    github_api_url: str
    stack: str | None
    gpu_runners: int
    run_id: int
    rollout_timeout_seconds: int
    runner_timeout_seconds: int
    gpu_timeout_seconds: int
    deregister_timeout_seconds: int
    node_timeout_seconds: int
    poll_seconds: float
    follow_node: bool
    pulumi: str
    kubectl: str

    def __repr__(self) -> str:  # never the token
        return f"Settings(stack={self.stack!r}, repository={self.github_repository!r}, run_id={self.run_id})"


def read_settings(environ: Mapping[str, str], now: float | None = None) -> Settings:
    """The settings from `environ`; SettingsError names the first bad one."""

    def get(name: str, default: str) -> str:
        assert name in NAMES, f"{name} is not in VARIABLES: --help would not name it"
        return environ.get(name) or default

    def whole_seconds(name: str, default: str) -> int:
        value = get(name, default)
        if not WHOLE_SECONDS.fullmatch(value):
            raise SettingsError(f"{name} must be a whole number of seconds, not '{value}'")
        return int(value)

    poll = get("SMOKE_POLL_SECONDS", "10")
    if not SECONDS.fullmatch(poll):
        raise SettingsError(f"SMOKE_POLL_SECONDS must be a number of seconds, not '{poll}'")
    gpu_runners = get("SMOKE_GPU_RUNNERS", "1")
    if not GPU_RUNNERS.fullmatch(gpu_runners):
        raise SettingsError(f"SMOKE_GPU_RUNNERS must be a whole number from 1 to 99, not '{gpu_runners}'")
    # GitHub's run ids are far below 9 followed by ten digits, and the epoch makes two
    # smoke tests of the same cluster differ.
    run_id = get("SMOKE_RUN_ID", f"9{int(time.time() if now is None else now)}")
    if not RUN_ID.fullmatch(run_id):
        raise SettingsError(f"SMOKE_RUN_ID must be a positive whole number (at most 18 digits), not '{run_id}'")
    follow = get("SMOKE_FOLLOW_NODE", "0")
    if follow not in ("0", "1"):
        raise SettingsError(f"SMOKE_FOLLOW_NODE must be 0 or 1, not '{follow}'")
    return Settings(
        github_token=get("GITHUB_TOKEN", "") or None,
        github_repository=get("GITHUB_REPOSITORY", "") or None,
        github_api_url=get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
        stack=get("SMOKE_STACK", "") or None,
        gpu_runners=int(gpu_runners),
        run_id=int(run_id),
        rollout_timeout_seconds=whole_seconds("SMOKE_ROLLOUT_TIMEOUT_SECONDS", "300"),
        runner_timeout_seconds=whole_seconds("SMOKE_RUNNER_TIMEOUT_SECONDS", "120"),
        gpu_timeout_seconds=whole_seconds("SMOKE_GPU_TIMEOUT_SECONDS", "900"),
        deregister_timeout_seconds=whole_seconds("SMOKE_DEREGISTER_TIMEOUT_SECONDS", "120"),
        node_timeout_seconds=whole_seconds("SMOKE_NODE_TIMEOUT_SECONDS", "3600"),
        poll_seconds=float(poll),
        follow_node=follow == "1",
        pulumi=get("PULUMI", "pulumi"),
        kubectl=get("KUBECTL", "kubectl"),
    )


USAGE = """\
Usage: python3 scripts/smoke_test.py [--help]

Run after `pulumi up` (from the project folder: .venv/bin/python scripts/smoke_test.py).
It reads the stack's outputs and checks, one line each (PASS, FAIL, WARN or SKIP, with a
hint for each FAIL and WARN). The outputs choose the mode: a scale-set stack (runnerMode
scale-set) exports scaleSetName, a per-run stack does not. A per-run stack:
  1. the runner broker Deployment (runner-broker in <namespace>-system) and the base
     runner Deployment are available;
  2. a base runner is online in GitHub (runner label `base-runner`); and WARN for each
     runner in that list this stack did not register that could take its jobs: one
     that carries `base-runner` or a `gpu-runner-<run id>` label, or only default
     labels (self-hosted, Linux, X64: it takes `runs-on: self-hosted`);
  3. the runner version in runner_image/Dockerfile is GitHub's latest (WARN if not:
     every cold start would download the update first);
  4. CI's identity, the first subject of RoleBinding ci-runner-launcher in the runner
     namespace (asked with `kubectl auth can-i --as`), may read pods, pods/log, events
     and jobs there, and may not create or delete jobs, create pods or read secrets;
  5. real GPU runners, made as the broker makes them: it reads the Job template from
     ConfigMap gpu-runner-template (key runner-gpu.yaml), fills in the run id and
     attempt, and creates SMOKE_GPU_RUNNERS Jobs with your own rights (run ids
     SMOKE_RUN_ID, +1, ..., attempt 1). For each Job: its runner comes online in GitHub,
     named after the Job, with the one custom label gpu-runner-<run id>; `nvidia-smi -L`
     in it prints `GPU 0: ...`; once the Job is deleted, the runner leaves GitHub. Then
     it prints each runner's cold start, from Kubernetes' own timestamps, as seconds
     after its Job was created. With SMOKE_FOLLOW_NODE=1 it then follows each GPU node
     until the autoscaler removes it and prints the minutes it was billed.
A scale-set stack (GitHub's Actions Runner Controller, ARC):
  1. ARC's controller Deployment (arc-gha-rs-controller in <namespace>-system) is
     available; the AutoscalingRunnerSet <scaleSetName> is in the runner namespace,
     registered with GitHub (its runner-scale-set-id annotation); its listener pod
     (labels actions.github.com/scale-set-name=<scaleSetName> and
     app.kubernetes.io/component=runner-scale-set-listener) runs in <namespace>-system;
  2. GitHub lists the repository's runners (ARC's only while they have a job: none is
     fine; SKIP without GITHUB_TOKEN); the runner version and CI's rights, as above;
  3. the runner pods ARC made most recently (label actions.github.com/scale-set-name)
     and, from Kubernetes' timestamps, how long each took from created to scheduled and
     to started; `nvidia-smi -L` in the newest running one. It cannot start a job
     itself: with no runner pod it prints SKIP and a one-job workflow_dispatch workflow
     (runs-on: <scaleSetName>) to start one, then run it again while that job runs.
  SMOKE_GPU_RUNNERS, SMOKE_RUN_ID, SMOKE_RUNNER_TIMEOUT_SECONDS, SMOKE_FOLLOW_NODE,
  SMOKE_GPU_TIMEOUT_SECONDS and SMOKE_DEREGISTER_TIMEOUT_SECONDS: per-run stacks alone.
Exits 0 when every check passed (WARN and SKIP lines do not count), 1 otherwise, 2 for
a bad setting, 130 or 143 when interrupted. The Jobs it created are deleted whatever
happens.

Needs: python3 with PyYAML (the project's .venv has it), pulumi (logged in, stack
selected), kubectl, gke-gcloud-auth-plugin and a gcloud login that may use the cluster,
create Jobs in the runner namespace (per-run) or exec into its pods (scale-set), and
impersonate CI's identity there (e.g. roles/container.admin).

Environment:
"""


def usage() -> str:
    lines = [USAGE]
    for variable in VARIABLES:
        text = f"{variable.meaning} (default: {variable.default})"
        lines.append(
            textwrap.fill(
                text, 88, initial_indent=f"  {variable.name:<33} ", subsequent_indent=" " * 36, break_on_hyphens=False
            )
            + "\n"
        )
    return "".join(lines)
