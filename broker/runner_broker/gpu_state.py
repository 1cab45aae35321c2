"""What a GPU runner is doing, from its Job, pod, events and GitHub runner: facts for `gpu-runner start`.

Pure. The state is where the runner has got to; the reason is a short machine word and
the message Kubernetes' own text; the caller decides what to wait for and what to fail on.

    pending     the Job has no pod yet (reason QuotaExceeded, FailedCreate)
    scheduling  the pod waits for a node (Unschedulable, TriggeredScaleUp, NotTriggerScaleUp, FailedScaleUp)
    starting    the pod has a node; its container or runner is on its way (ContainerCreating, ErrImagePull,
                ImagePullBackOff, CreateContainerConfigError...)
    online      the runner is connected to GitHub, waiting for its job
    busy        the runner runs its job
    finished    its job is done (the runner is gone from GitHub) or the Job completed
    failed      the Job or its pod failed (DeadlineExceeded, BackoffLimitExceeded, the container's reason)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runner_broker.decisions import granted_runner
from runner_broker.model import Runner
from runner_contract import gpu_runner_label

MAX_EVENTS = 10
SCHEDULING_REASONS = {
    "FailedScheduling": "Unschedulable",
    "TriggeredScaleUp": "TriggeredScaleUp",
    "NotTriggerScaleUp": "NotTriggerScaleUp",
    "FailedScaleUp": "FailedScaleUp",
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def runner_state(job: dict, pods: list[dict], events: list[dict], runner: Runner | None) -> dict[str, Any]:
    """One runner's entry in GET /v1/gpu-runners/<run>/<attempt>."""
    pod = max(pods, key=lambda p: _time((p.get("metadata") or {}).get("creationTimestamp")), default=None)
    state, reason, message = _progress(job, pod, events, runner)
    return {
        "job": (job.get("metadata") or {}).get("name"),
        "pod": (pod.get("metadata") or {}).get("name") if pod else None,
        "state": state,
        "reason": reason,
        "message": message,
        "events": latest_events(events),
        "runnerStatus": None if runner is None else ("online" if runner.online else "offline"),
        "runnerBusy": bool(runner and runner.busy),
    }


def _progress(
    job: dict, pod: dict | None, events: list[dict], runner: Runner | None
) -> tuple[str, str | None, str | None]:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("status") == "True":
            if condition.get("type") == "Failed":
                return "failed", condition.get("reason"), condition.get("message")
            if condition.get("type") == "Complete":
                return "finished", None, None
    if pod is None:
        return ("pending", *_creation_trouble(events))
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        reason, message = _terminated(status)
        return "failed", status.get("reason") or reason, status.get("message") or message
    if status.get("phase") == "Succeeded":
        return "finished", None, None
    if runner is not None and runner.busy:
        return "busy", None, None
    if runner is not None and runner.online:
        return "online", None, None
    if runner is None and granted_runner(pod):
        return "finished", None, "the runner has left GitHub: its job is done"
    scheduled = _condition(status, "PodScheduled")
    if scheduled is None or scheduled.get("status") != "True":
        return ("scheduling", *_scheduling_trouble(scheduled, events))
    return ("starting", *_waiting(status))


def _creation_trouble(events: list[dict]) -> tuple[str | None, str | None]:
    """Why a Job has no pod: the quota, or another refusal of the pod."""
    failures = [e for e in _ordered(events) if e.get("reason") == "FailedCreate"]
    if not failures:
        return None, None
    message = str(failures[-1].get("message") or "")
    return ("QuotaExceeded" if "exceeded quota" in message else "FailedCreate"), message


def _scheduling_trouble(scheduled: dict | None, events: list[dict]) -> tuple[str | None, str | None]:
    """The scheduler's and the cluster autoscaler's latest word on the pod."""
    said = [e for e in _ordered(events) if e.get("reason") in SCHEDULING_REASONS]
    if said:
        return SCHEDULING_REASONS[said[-1]["reason"]], said[-1].get("message")
    if scheduled is not None:
        return scheduled.get("reason"), scheduled.get("message")
    return None, None


def _waiting(status: dict) -> tuple[str | None, str | None]:
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = ((container or {}).get("state") or {}).get("waiting") if isinstance(container, dict) else None
        if isinstance(waiting, dict) and waiting.get("reason") not in (None, "PodInitializing"):
            return waiting.get("reason"), waiting.get("message")
    return None, None


def _terminated(status: dict) -> tuple[str | None, str | None]:
    for container in status.get("containerStatuses") or []:
        terminated = ((container or {}).get("state") or {}).get("terminated") if isinstance(container, dict) else None
        if isinstance(terminated, dict):
            return terminated.get("reason"), terminated.get("message")
    return None, None


def _condition(status: dict, kind: str) -> dict | None:
    return next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == kind), None)


def latest_events(events: list[dict]) -> list[dict]:
    """The latest events, oldest first, as {type, reason, message, count}."""
    return [
        {"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message"), "count": _count(e)}
        for e in _ordered(events)[-MAX_EVENTS:]
    ]


def _count(event: dict) -> int:
    count = event.get("count") or (event.get("series") or {}).get("count") or 1
    return count if isinstance(count, int) else 1


def _ordered(events: list[dict]) -> list[dict]:
    return sorted((e for e in events if isinstance(e, dict)), key=_event_time)


def _event_time(event: dict) -> datetime:
    for moment in (
        event.get("lastTimestamp"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if moment:
            return _time(moment)
    return EPOCH


def _time(moment: object) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(moment).replace("Z", "+00:00"))
    except ValueError:
        return EPOCH
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def gpu_runners_answer(run_id: str, runners: list[dict]) -> dict:
    return {"label": gpu_runner_label(run_id), "runners": runners}
