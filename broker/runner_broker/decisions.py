"""The broker's decisions, as pure functions: facts in (a token's review, a pod and its owner, what GitHub
lists), a decision out, or a Refusal with its status and reason. No I/O here; the callers log the outcome.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from runner_broker.errors import Refusal
from runner_broker.model import Grant, PodIdentity, Runner, WorkflowJob, WorkflowRun
from runner_broker.template import pod_template_images
from runner_contract import (
    APP_NAME_LABEL,
    BASE_RUNNER,
    GPU_RUNNER,
    GRANTED_AT_ANNOTATION,
    RUN_ATTEMPT_LABEL,
    RUN_ID_LABEL,
    RUN_INDEX_LABEL,
    RUNNER_ANNOTATION,
    SMOKE_TEST_LABEL,
    gpu_runner_label,
)

NUMBER = "[0-9]{1,20}"  # a run ID, an attempt: ASCII digits only (\d takes any script's)
DIGITS = re.compile(NUMBER)
GPU_RUNNER_NAME = re.compile(f"{GPU_RUNNER}-({NUMBER})-({NUMBER})(?:-([1-9][0-9]{{0,2}}))?")
"""A GPU runner Job's name, which is its runner's: `gpu-runner-<run id>-<attempt>[-<index>]`."""

# Claims the API server adds to a pod-bound token's review: which pod it was issued to.
POD_NAME_CLAIM = "authentication.kubernetes.io/pod-name"
POD_UID_CLAIM = "authentication.kubernetes.io/pod-uid"
ENDED_PHASES = ("Succeeded", "Failed")


# ------------------------------------------------------------------- who asks --


def identity_from_review(status: dict, audience: str) -> PodIdentity:
    """The pod a TokenReview status vouches for; Refusal(401) when the token proves nothing."""
    if status.get("authenticated") is not True:
        error = str(status.get("error") or "")[:200]
        raise Refusal(401, "the token is invalid, expired or not for this audience" + (f" ({error})" if error else ""))
    if audience not in (status.get("audiences") or []):
        raise Refusal(401, f"the token is not for audience {audience}")
    user = status.get("user") if isinstance(status.get("user"), dict) else {}
    parts = str(user.get("username") or "").split(":")
    if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
        raise Refusal(401, "the token is not a ServiceAccount's")
    extra = user.get("extra") if isinstance(user.get("extra"), dict) else {}
    pod_name, pod_uid = _first(extra.get(POD_NAME_CLAIM)), _first(extra.get(POD_UID_CLAIM))
    if not pod_name or not pod_uid:
        raise Refusal(401, "the token is not bound to a pod (no pod name and UID in its review)")
    return PodIdentity(namespace=parts[2], service_account=parts[3], pod_name=pod_name, pod_uid=pod_uid)


def _first(values: object) -> str:
    return values[0] if isinstance(values, list) and values and isinstance(values[0], str) else ""


def controller_reference(obj: dict | None) -> dict | None:
    """The ownerReference marked controller, the one owner Kubernetes itself acts on."""
    references = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in references if isinstance(ref, dict) and ref.get("controller") is True), None)


# ------------------------------------------------------- which runner a pod may have --


@dataclass(frozen=True)
class Rules:
    """What the decision needs from the configuration and the template."""

    runner_namespace: str
    runner_service_account: str
    base_runner_deployment: str = BASE_RUNNER
    template_images: tuple[str, ...] = ()
    """The GPU runner template's images; empty when the broker has no template: no GPU pod is then eligible."""


def decide_runner(
    identity: PodIdentity, pod: dict | None, owner: dict | None, rules: Rules, *, allow_terminating: bool = False
) -> Grant:
    """Which runner the pod `identity` names may have, from the pod and its controller alone; Refusal(403) if none.

    `pod` is the pod as read from the runner namespace (None when absent); `owner` its
    controller (a ReplicaSet or a Job) as read likewise, None when absent or of another kind.
    """
    where = f"pod {identity.namespace}/{identity.pod_name}"
    if identity.namespace != rules.runner_namespace:
        raise Refusal(403, f"{where} is not in the runner namespace {rules.runner_namespace}")
    if identity.service_account != rules.runner_service_account:
        raise Refusal(
            403, f"{where} runs as ServiceAccount {identity.service_account}, not {rules.runner_service_account}"
        )
    if pod is None:
        raise Refusal(403, f"{where} does not exist")
    metadata = pod.get("metadata") or {}
    if metadata.get("uid") != identity.pod_uid:
        raise Refusal(
            403,
            f"{where} has UID {metadata.get('uid')}, not the token's {identity.pod_uid}: "
            "the token belongs to an earlier pod of that name",
        )
    phase = (pod.get("status") or {}).get("phase")
    if phase in ENDED_PHASES:
        raise Refusal(403, f"{where} has ended (phase {phase})")
    if metadata.get("deletionTimestamp") and not allow_terminating:
        raise Refusal(403, f"{where} is terminating")
    reference = controller_reference(pod)
    if reference is None:
        raise Refusal(403, f"{where} has no controller: a bare pod is not a runner")
    kind, name = reference.get("kind"), str(reference.get("name") or "")
    if owner is not None and (owner.get("metadata") or {}).get("uid") != reference.get("uid"):
        raise Refusal(403, f"{where}'s {kind} {name} has been replaced (its UID differs from the pod's reference)")
    if kind == "ReplicaSet":
        return _base_runner(where, identity.pod_name, name, owner, rules.base_runner_deployment)
    if kind == "Job":
        return _gpu_runner(where, name, owner, rules.template_images)
    raise Refusal(
        403,
        f"{where} is controlled by {kind} {name}, neither a ReplicaSet of Deployment "
        f"{rules.base_runner_deployment} nor a {GPU_RUNNER} Job",
    )


def _base_runner(where: str, pod_name: str, replicaset: str, owner: dict | None, deployment: str) -> Grant:
    if owner is None:
        raise Refusal(403, f"{where}'s ReplicaSet {replicaset} does not exist")
    reference = controller_reference(owner) or {}
    if reference.get("kind") != "Deployment" or reference.get("name") != deployment:
        controller = f"{reference.get('kind')} {reference.get('name')}" if reference else "nothing"
        raise Refusal(403, f"{where}'s ReplicaSet {replicaset} belongs to {controller}, not Deployment {deployment}")
    if not pod_name.startswith(f"{deployment}-"):
        # The sweep recognises base runners by this prefix; a runner it could not see would never be removed.
        raise Refusal(403, f"{where} is not named {deployment}-*, as the Deployment's pods are")
    return Grant(pod_name, (BASE_RUNNER,), "base")


def _gpu_runner(where: str, job_name: str, owner: dict | None, template_images: tuple[str, ...]) -> Grant:
    if owner is None:
        raise Refusal(403, f"{where}'s Job {job_name} does not exist")
    labels = (owner.get("metadata") or {}).get("labels") or {}
    if labels.get(APP_NAME_LABEL) != GPU_RUNNER:
        raise Refusal(403, f"{where}'s Job {job_name} is not labelled {APP_NAME_LABEL}={GPU_RUNNER}")
    run_id, attempt = str(labels.get(RUN_ID_LABEL) or ""), str(labels.get(RUN_ATTEMPT_LABEL) or "")
    if not DIGITS.fullmatch(run_id):
        raise Refusal(403, f"{where}'s Job {job_name} has no numeric {RUN_ID_LABEL} label (got {run_id!r})")
    if not DIGITS.fullmatch(attempt):
        raise Refusal(403, f"{where}'s Job {job_name} has no numeric {RUN_ATTEMPT_LABEL} label (got {attempt!r})")
    match = GPU_RUNNER_NAME.fullmatch(job_name)
    index = labels.get(RUN_INDEX_LABEL)
    if (
        match is None
        or match.groups()[:2] != (run_id, attempt)
        or (index is not None and index != (match.group(3) or "0"))
    ):
        # The sweep recognises GPU runners by this name; a runner it could not see would never be removed.
        raise Refusal(
            403, f"{where}'s Job is named {job_name}, not {GPU_RUNNER}-{run_id}-{attempt}[-<index>] as its labels say"
        )
    if not template_images:
        raise Refusal(403, f"{where}'s Job {job_name} cannot be checked: the broker has no GPU runner template")
    images = pod_template_images(owner)
    if images != template_images:
        raise Refusal(
            403,
            f"{where}'s Job {job_name} runs {_shown(images)}, not the template's "
            f"{_shown(template_images)}: the broker did not make it",
        )
    return Grant(job_name, (gpu_runner_label(run_id),), "gpu")


def _shown(images: tuple[str, ...]) -> str:
    return json.dumps([image[:200] for image in images[:4]])


# ------------------------------------------------------------------ grants --


def granted_runner(pod: dict | None) -> str | None:
    """The runner recorded on the pod when the broker handed it one, or None."""
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(RUNNER_ANNOTATION)
    return value if isinstance(value, str) and value else None


def granted_at(pod: dict | None) -> float | None:
    """When the grant was recorded (seconds since the epoch), if it says."""
    annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
    try:
        return datetime.fromisoformat(str(annotations.get(GRANTED_AT_ANNOTATION)).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def grant_annotations(runner_name: str, now: datetime) -> dict[str, str]:
    return {RUNNER_ANNOTATION: runner_name, GRANTED_AT_ANNOTATION: now.strftime("%Y-%m-%dT%H:%M:%SZ")}


def container_restarts(pod: dict) -> int:
    """How often the pod's containers have restarted. startup.sh asks once per container start, so a
    restarted container belongs to a pod that has already asked for its runner."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(
        s["restartCount"]
        for s in statuses
        if isinstance(s, dict)
        and isinstance(s.get("restartCount"), int)
        and not isinstance(s.get("restartCount"), bool)
    )


def is_live(pod: dict) -> bool:
    """Neither ended nor on its way out."""
    return (
        not (pod.get("metadata") or {}).get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ENDED_PHASES
    )


# ------------------------------------------------------------- GPU runners --


@dataclass(frozen=True)
class GpuRequest:
    run_id: str
    attempt: str
    count: int


def parse_gpu_request(body: object, max_count: int) -> GpuRequest:
    """The run attempt and count a job asks GPU runners for; Refusal(422) for anything else."""
    if not isinstance(body, dict):
        raise Refusal(
            422, 'the body must be a JSON object: {"runId": "<digits>", "runAttempt": "<digits>", "count": N}'
        )
    run_id, attempt = run_number(body.get("runId"), "runId"), run_number(body.get("runAttempt"), "runAttempt")
    count = body.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= max_count:
        raise Refusal(
            422,
            f"count must be a whole number from 1 to {max_count} (BROKER_MAX_GPU_RUNNERS_PER_RUN), "
            f"got {json.dumps(count)[:40]}",
        )
    return GpuRequest(run_id, attempt, count)


def run_number(value: object, name: str) -> str:
    """A run ID or attempt as canonical digits: "0042" and 42 are both "42"."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not DIGITS.fullmatch(text) or int(text) == 0:
        raise Refusal(422, f"{name} must be a positive whole number in ASCII digits, got {json.dumps(value)[:40]}")
    return str(int(text))


def check_run(jobs: list[WorkflowJob], runner_name: str, run_id: str, attempt: str) -> WorkflowJob:
    """The caller's job in the run attempt: in progress, on the caller's runner; Refusal(403) otherwise."""
    for job in jobs:
        if (
            job.status == "in_progress"
            and job.runner_name == runner_name
            and job.run_id in (None, int(run_id))
            and job.run_attempt in (None, int(attempt))
        ):
            return job
    raise Refusal(
        403,
        f"runner {runner_name} is not running a job of run {run_id} attempt {attempt} "
        f"(GitHub lists {len(jobs)} jobs of it, none in progress on this runner)",
    )


# --------------------------------------------------------------------- sweep --


def is_ours(runner: Runner, base_runner_deployment: str) -> bool:
    """Whether the broker registered this runner: its name and label say so together."""
    if runner.name.startswith(f"{base_runner_deployment}-") and BASE_RUNNER in runner.labels:
        return True
    match = GPU_RUNNER_NAME.fullmatch(runner.name)
    return match is not None and gpu_runner_label(match.group(1)) in runner.labels


def live_runner_names(pods: list[dict]) -> set[str]:
    """The runner names live pods could hold: a base pod's own name, a GPU pod's Job's."""
    names = set()
    for pod in pods:
        if not is_live(pod):
            continue
        reference = controller_reference(pod) or {}
        name = (pod.get("metadata") or {}).get("name")
        if reference.get("kind") == "ReplicaSet" and name:
            names.add(name)
        elif reference.get("kind") == "Job" and reference.get("name"):
            names.add(reference["name"])
    return names


def runners_to_remove(runners: list[Runner], pods: list[dict], base_runner_deployment: str) -> list[Runner]:
    """Runners of ours whose pods are gone."""
    live = live_runner_names(pods)
    return [runner for runner in runners if is_ours(runner, base_runner_deployment) and runner.name not in live]


@dataclass(frozen=True)
class Spent:
    """A live pod whose one runner GitHub no longer lists: its job is done, whatever its processes do."""

    pod: str
    pod_uid: str
    runner: str
    job: str | None
    """The GPU runner Job to delete (so that it makes no other pod), or None for a base pod (its ReplicaSet
    makes a fresh one)."""


def spent_pods(pods: list[dict], listed_runners: set[str], listed_at: float, grace_seconds: float) -> list[Spent]:
    """Live pods granted a runner before `listed_at - grace_seconds` that is not in `listed_runners` (the runner
    names GitHub listed at `listed_at`, seconds since the epoch)."""
    spent = []
    for pod in pods:
        runner = granted_runner(pod)
        if runner is None or not is_live(pod) or runner in listed_runners:
            continue
        when = granted_at(pod)
        if when is not None and when > listed_at - grace_seconds:
            continue  # granted moments ago: GitHub's list may predate the runner
        metadata = pod.get("metadata") or {}
        reference = controller_reference(pod) or {}
        job = str(reference.get("name")) if reference.get("kind") == "Job" else None
        spent.append(Spent(str(metadata.get("name")), str(metadata.get("uid")), runner, job))
    return spent


def gpu_job_run(job: dict) -> str | None:
    """The run a GPU runner Job serves, from its label, if it is one."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    run_id = labels.get(RUN_ID_LABEL)
    if labels.get(APP_NAME_LABEL) != GPU_RUNNER or not isinstance(run_id, str) or not DIGITS.fullmatch(run_id):
        return None
    return run_id


def finished_job_reason(job: dict, runs: dict[str, WorkflowRun | None]) -> str | None:
    """Why a GPU runner Job is of no more use, if it is not: its run completed, or GitHub no longer has the run,
    or the run has moved on to a later attempt (a run is re-run only once it has completed). `runs` holds what
    GitHub said of each run asked about (None: no such run); a run not asked about keeps its Jobs."""
    run_id = gpu_job_run(job)
    if run_id is None or run_id not in runs:
        return None
    if ((job.get("metadata") or {}).get("labels") or {}).get(SMOKE_TEST_LABEL) == "true":
        # An operator's smoke test (only an admin may create Jobs): its run is made up.
        return None
    run = runs[run_id]
    if run is None:
        return "GitHub no longer has the run"
    if run.status == "completed":
        return "GitHub reports the run completed"
    attempt = str(((job.get("metadata") or {}).get("labels") or {}).get(RUN_ATTEMPT_LABEL))
    if run.attempt is not None and DIGITS.fullmatch(attempt) and int(attempt) < run.attempt:
        return f"the run has moved on to attempt {run.attempt}"
    return None
