"""What one look at a run's GPU runners means: pure functions, tested table by table.

`start_decision`: from the broker's snapshot (GET /v1/gpu-runners/<run>/<attempt>), the
number of runners asked for and the time waited so far: WAIT (saying for what), READY,
or FAIL (the reason, the runner's events, a hint). Waiting is the rule, within the
timeout; it fails at once only for what waiting cannot fix.

`guard_decision`: from the same snapshot and this run attempt's jobs as GitHub lists
them: READY when every runner has taken one of the expected jobs of this run, WAIT
while they still may, FAIL (the run is to be cancelled) when one never will.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpu_runner.actions import one_line

WAIT, READY, FAIL = "wait", "ready", "fail"


@dataclass(frozen=True)
class Decision:
    verdict: str
    """WAIT, READY or FAIL."""
    message: str
    runner: str = ""
    """The runner (its Job's name) the message is about, when it is about one."""
    hint: str = ""
    """What to do about a failure."""
    events: tuple[Mapping[str, Any], ...] = ()
    """That runner's recent events, to show with a failure."""


# --------------------------------------------------------------------------- start --

BAD_IMAGE = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
BROKEN_POD = frozenset({"CreateContainerConfigError", "CrashLoopBackOff"})
READY_STATES = frozenset({"online", "busy", "finished"})

HINTS = {
    "image": "the cluster cannot pull the runner image: run `pulumi up` (it copies the image to the cluster's "
    "registry), and check the image of the GPU runner template (stack output gpuRunnerTemplate)",
    "CreateContainerConfigError": "the GPU runner's pod refers to a Secret, ConfigMap or key that does not exist: "
    "run `pulumi up`",
    "CrashLoopBackOff": "the runner's container keeps failing: its log says why (kubectl logs with the CI kubeconfig)",
    "gce-quota": "Compute Engine's GPU quota is used up: see IAM & Admin > Quotas in the Google Cloud console "
    "(the region's NVIDIA_*_GPUS and GPUS_ALL_REGIONS), free GPUs or ask for more",
    "never-fits": "no node pool can take this runner's pod: check gpuType, gpuCount and gpuMachineType, and that "
    "`pulumi up` created the GPU pool",
    "namespace-quota": "one runner asks for more GPUs than the runner namespace's quota allows: check gpuCount "
    "and gpuMaxNodes",
    "DeadlineExceeded": "the GPU runner outlived gpuRunnerDeadlineMinutes",
    "BackoffLimitExceeded": "the runner's pod failed and its retries are spent: its events above say why",
    "failed": "the GPU runner's Job failed: its events above say why",
    "timeout": "a GPU node takes a few minutes to boot, and a run waits while others hold the GPUs: raise "
    "GPU_RUNNER_TIMEOUT_SECONDS, or gpuMaxNodes to run more at once",
}

# The cluster autoscaler's words for a pool that is full for now, or resting after a failure.
_FULL_FOR_NOW = ("max node group size reached", "in backoff after failed scale-up", "max cluster", "max limit reached")
# Compute Engine out of this GPU in the zone (a stockout): it comes back.
_STOCKOUT = (
    "zone_resource_pool_exhausted",
    "resource pool exhausted",
    "out of resources",
    "does not have enough resources",
    "stockout",
)
_GCE_QUOTA = ("quota exceeded", "quota_exceeded", "exceeded quota")


def runner_decision(runner: Mapping[str, Any]) -> Decision:
    """What one runner's state, reason and message say: READY, WAIT (for what) or FAIL."""
    name = str(runner.get("job") or "?")
    state = str(runner.get("state") or "")
    reason = str(runner.get("reason") or "")
    message = one_line(runner.get("message") or "", 400)
    lowered = message.lower()
    events = tuple(event for event in runner.get("events") or () if isinstance(event, Mapping))
    said = f"{reason}: {message}" if message else reason

    def fail(text: str, hint: str) -> Decision:
        return Decision(FAIL, text, name, HINTS[hint], events)

    def wait(text: str) -> Decision:
        return Decision(WAIT, text, name)

    if state in READY_STATES or runner.get("runnerStatus") == "online":
        return Decision(READY, f"{name} is {state if state in READY_STATES else 'online'}", name)
    if state == "failed":
        return fail(f"GPU runner {name} failed: {said or 'its Job failed'}", reason if reason in HINTS else "failed")
    if reason in BAD_IMAGE:
        return fail(f"GPU runner {name} cannot start: the image cannot be pulled ({said})", "image")
    if reason in BROKEN_POD:
        return fail(f"GPU runner {name} cannot start ({said})", reason)
    if reason == "FailedScaleUp":
        if any(words in lowered for words in _STOCKOUT):
            return wait(
                f"waiting for a GPU node: Compute Engine has none free in the zone right now; "
                f"the autoscaler keeps trying ({message})"
            )
        if any(words in lowered for words in _GCE_QUOTA):
            return fail(f"GPU runner {name}: the GPU pool cannot grow ({said})", "gce-quota")
        return wait(f"waiting for a GPU node: a scale-up failed, the autoscaler tries again ({message})")
    if reason == "NotTriggerScaleUp":
        if any(words in lowered for words in _FULL_FOR_NOW):
            return wait(
                "waiting for a GPU: every GPU node is taken and the GPU pool is at its maximum size "
                "(gpuMaxNodes); this run starts when another run's runner ends"
            )
        return fail(f"GPU runner {name}: no node pool could ever take it ({said})", "never-fits")
    if reason == "QuotaExceeded":
        requested, used, limit = gpu_quota(message)
        if requested is not None and limit is not None and requested > limit:
            return fail(
                f"GPU runner {name}: asks for {requested} GPUs, the quota allows {limit} ({said})", "namespace-quota"
            )
        held = f" ({used} of {limit})" if used is not None and limit is not None else ""
        return wait(f"waiting: the GPU quota is in use by other runs{held}; this run starts when one ends")
    if reason == "TriggeredScaleUp":
        return wait("waiting for a GPU node: the autoscaler is adding one")
    if reason == "Unschedulable":
        return wait("waiting for a GPU node: none has a free GPU yet; the autoscaler adds one if the pool may grow")
    if state == "pending":
        return wait("waiting for the runner's pod to be created")
    if state == "scheduling":
        return wait("waiting for a GPU node")
    if state == "starting":
        return wait("waiting for the runner to start (image pull, then registration with GitHub)")
    return wait(f"waiting ({state or 'no state yet'}{': ' + said if said else ''})")


def gpu_quota(message: str) -> tuple[int | None, int | None, int | None]:
    """GPUs requested, used and allowed, from a ResourceQuota refusal's message
    ("... exceeded quota: q, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2,
    limited: requests.nvidia.com/gpu=2"); None where it does not say."""
    parts = re.search(r"requested: (.*?), used: (.*?), limited: (.*)", message)
    if not parts:
        return None, None, None

    def gpus(text: str) -> int | None:
        found = re.search(r"nvidia\.com/gpu=(\d+)", text)
        return int(found.group(1)) if found else None

    requested, used, limit = (gpus(part) for part in parts.groups())
    return requested, used, limit


def start_decision(snapshot: Mapping[str, Any], count: int, elapsed: float, timeout: float) -> Decision:
    """Whether the `count` runners of a run attempt are online, may still come, or never will."""
    runners = [runner for runner in snapshot.get("runners") or () if isinstance(runner, Mapping)]
    decisions = [runner_decision(runner) for runner in runners]
    for decision in decisions:
        if decision.verdict == FAIL:
            return decision
    ready = [decision for decision in decisions if decision.verdict == READY]
    wanted = max(count, len(runners))
    if runners and len(ready) == wanted:
        names = ", ".join(decision.runner for decision in ready)
        return Decision(READY, f"{'the GPU runner is' if wanted == 1 else f'all {wanted} GPU runners are'} up: {names}")
    waiting = next((decision for decision in decisions if decision.verdict == WAIT), None)
    if waiting is None:
        message = f"waiting for the broker to list this run's GPU runners ({len(runners)} of {wanted})"
    elif wanted == 1:
        message = waiting.message
    else:
        message = f"{len(ready)} of {wanted} GPU runners up; {waiting.runner}: {waiting.message}"
    if elapsed >= timeout:
        return Decision(
            FAIL,
            f"the GPU runners are not up after {timeout:g}s ({message})",
            waiting.runner if waiting else "",
            HINTS["timeout"],
        )
    return Decision(WAIT, message, waiting.runner if waiting else "")


# --------------------------------------------------------------------------- guard --

BUSY_OR_DONE = frozenset({"busy", "finished"})


def job_matches(job_name: str, expected: Iterable[str]) -> bool:
    """`job_name` is one of the expected names, or a matrix instance of one ("train (0.01, a)")."""
    return any(job_name == name or job_name.startswith(f"{name} (") for name in expected)


def guard_decision(
    runners: Sequence[Mapping[str, Any]],
    gone: Iterable[str],
    jobs: Sequence[Mapping[str, Any]],
    expected: Sequence[str],
    run_id: str,
    unexplained: Mapping[str, float],
    grace: float,
    elapsed: float,
    timeout: float,
) -> Decision:
    """Whether every GPU runner of this run took one of the `expected` jobs of this run.

    `gone`: runners seen before that the broker no longer lists. `jobs`: this run attempt's
    jobs from GitHub (each with name, run_id, runner_name). `unexplained`: for how many
    seconds each runner has been busy or finished with no job of this run to show for it;
    GitHub's job list lags behind a runner's busy flag by a few seconds, hence the `grace`.
    """
    wanted = " or ".join(f"'{name}'" for name in expected)
    gone_names = sorted(gone)
    taken_by = {str(job.get("runner_name")): job for job in jobs if job.get("runner_name")}
    if not runners and not gone_names:
        return Decision(
            FAIL,
            "this run has no GPU runners: `gpu-runner start` did not run in this run attempt, "
            "or `gpu-runner stop` already did",
        )

    def foreign(name: str, job: Mapping[str, Any]) -> Decision | None:
        job_name = str(job.get("name") or "")
        if str(job.get("run_id")) == str(run_id) and job_matches(job_name, expected):
            return None
        return Decision(
            FAIL,
            f"GPU runner {name} took the job '{one_line(job_name, 200)}', not {wanted}: "
            "another job of this run asks for its label",
            name,
        )

    waiting: list[Decision] = []
    taken = 0
    for name in gone_names:
        job = taken_by.get(name)
        if job is None:
            return Decision(FAIL, f"GPU runner {name} is gone before it took {wanted}", name)
        refusal = foreign(name, job)
        if refusal:
            return refusal
        taken += 1
    for runner in runners:
        name = str(runner.get("job") or "?")
        job = taken_by.get(name)
        state = str(runner.get("state") or "")
        if job is not None:
            refusal = foreign(name, job)
            if refusal:
                return refusal
            taken += 1
        elif state == "failed":
            return Decision(FAIL, f"GPU runner {name} failed before it took {wanted}", name)
        elif state in BUSY_OR_DONE or runner.get("runnerBusy"):
            if unexplained.get(name, 0.0) >= grace:
                doing = "ran a job" if state == "finished" else "has been running a job"
                return Decision(
                    FAIL,
                    f"GPU runner {name} {doing} that is none of this run's jobs: another run's "
                    f"job took it, and {wanted} would wait for a runner that never comes",
                    name,
                )
            waiting.append(Decision(WAIT, f"GPU runner {name} is {state or 'busy'}; looking for its job", name))
        else:
            waiting.append(
                Decision(WAIT, f"waiting for GPU runner {name} ({state or 'no state'}) to take {wanted}", name)
            )
    total = len(runners) + len(gone_names)
    if not waiting:
        return Decision(
            READY,
            f"{'the GPU runner has' if total == 1 else f'all {total} GPU runners have'} taken {wanted} of this run",
        )
    if elapsed >= timeout:
        return Decision(FAIL, f"the GPU runners took no job in {timeout:g}s ({waiting[0].message})", waiting[0].runner)
    prefix = f"{taken} of {total} GPU runners have taken their job; " if total > 1 else ""
    return Decision(WAIT, prefix + waiting[0].message, waiting[0].runner)
