"""What Kubernetes objects say, in a few words: pure functions of the API's JSON."""

from __future__ import annotations

from runner_contract import GPU_RESOURCE


def rollout_state(deployment: dict | None) -> tuple[bool, str]:
    """Whether a Deployment is rolled out and available (as `kubectl rollout status` decides), and why not."""
    if deployment is None:
        return False, "not found"
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation") or 0
    wanted = spec.get("replicas", 1)
    updated = status.get("updatedReplicas") or 0
    available = status.get("availableReplicas") or 0
    total = status.get("replicas") or 0
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    failure = conditions.get("ReplicaFailure")
    why = f"; {failure.get('message')}" if failure and failure.get("status") == "True" else ""
    progressing = conditions.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return False, f"its rollout exceeded its progress deadline: {progressing.get('message', '')}{why}"
    if (status.get("observedGeneration") or 0) < generation:
        return False, "its latest change is not yet observed"
    if updated < wanted:
        return False, f"{updated} of {wanted} replicas are updated{why}"
    if total > updated:
        return False, f"{total - updated} old replicas are still terminating"
    if available < updated:
        return False, f"{available} of {updated} updated replicas are available{why}"
    return True, f"{available} of {wanted} replicas available"


def latest(pods: list[dict]) -> dict | None:
    """The most recently created of a Job's pods."""
    return max(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", default=None)


def phase(pod: dict | None) -> str:
    """none (no pod yet), Pending, Running, Succeeded or Failed."""
    if pod is None:
        return "none"
    return (pod.get("status") or {}).get("phase") or "Pending"


def waiting_reason(pod: dict | None) -> str:
    """Why the pod is not up (yet), in a few words, from its status."""
    if pod is None:
        return "no pod yet"
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    for container in statuses:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return f"{waiting.get('reason')}: {waiting.get('message') or ''}".strip()
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return str(condition.get("message"))
    for container in statuses:
        ended = (container.get("state") or {}).get("terminated")
        if ended:
            return f"{ended.get('reason') or 'terminated'} (exit {ended.get('exitCode')})"
    return f"pod {status.get('phase') or 'Pending'}"


def autoscaler_note(events: list[dict]) -> str:
    """The cluster autoscaler's last word on a pod, when it refused to scale up."""
    refusals = [e for e in events if e.get("reason") in ("NotTriggerScaleUp", "FailedScaleUp") and e.get("message")]
    refusals.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return str(refusals[-1]["message"]) if refusals else ""


def is_image_problem(reason: str) -> bool:
    return "ImagePull" in reason or "ErrImage" in reason


def is_scheduling_problem(reason: str) -> bool:
    return any(
        text in reason
        for text in ("nodes are available", "Unschedulable", "scale-up", "scale up", f"Insufficient {GPU_RESOURCE}")
    )


def runner_container(pod: dict) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    return str(containers[0].get("name") or "runner") if containers else "runner"
