"""A run's GPU runners, made, shown and removed on request of a job of that run on a base runner.

    POST   /v1/gpu-runners                    -> create()
    GET    /v1/gpu-runners/<run id>/<attempt> -> status()
    DELETE /v1/gpu-runners/<run id>/<attempt> -> delete()

The caller is a base runner pod (its token reviewed, its pod and ReplicaSet read) whose
runner GitHub lists as running an in-progress job of that run attempt. The Jobs come
from the broker's own template; asking again returns the same Jobs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from runner_broker.callers import Caller, Callers
from runner_broker.config import Config
from runner_broker.decisions import GPU_RUNNER_NAME, check_run, controller_reference, granted_runner, parse_gpu_request
from runner_broker.errors import Failure, Refusal
from runner_broker.github import GitHubClient
from runner_broker.gpu_state import gpu_runners_answer, runner_state
from runner_broker.grants import logged
from runner_broker.kubernetes import KubernetesClient
from runner_broker.logs import log
from runner_broker.secrets import Secret
from runner_broker.template import TemplateSource, job_labels, render
from runner_contract import APP_NAME_LABEL, GPU_RUNNER, RUN_ATTEMPT_LABEL, RUN_ID_LABEL, gpu_runner_label

RUN_CHECK_SECONDS = 30.0
"""A caller GitHub has just shown running a job of the run is not asked about again this soon."""
MAX_REMEMBERED_CHECKS = 1000


class GpuRunners:
    def __init__(
        self,
        config: Config,
        kubernetes: KubernetesClient,
        github: GitHubClient,
        callers: Callers,
        templates: TemplateSource,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._kubernetes = kubernetes
        self._github = github
        self._callers = callers
        self._templates = templates
        self._clock = clock
        self._checks_lock = threading.Lock()
        self._checks: dict[tuple[str, str, str], float] = {}
        """(caller pod UID, run, attempt) -> until when its run check holds."""

    # ---------------------------------------------------------------- requests --

    def create(self, token: Secret | None, body: object) -> dict:
        with logged("gpu-runners") as seen:
            caller = self._callers.authorize(token, seen)
            request = parse_gpu_request(body, self._config.max_gpu_runners_per_run)
            seen.update(run=request.run_id, attempt=request.attempt, count=request.count)
            template = self._templates.load()
            self._check_run(caller, request.run_id, request.attempt)
            names, created = [], []
            for index in range(request.count):
                job = render(template, request.run_id, request.attempt, index, self._config.runner_namespace)
                if self._create(job, request.run_id, request.attempt, index):
                    created.append(job["metadata"]["name"])
                names.append(job["metadata"]["name"])
        log(
            "gpu-runners",
            decision="created" if created else "exist",
            status=201,
            **seen,
            jobs=names,
            created=created or None,
            reason="a job of the run on this base runner asked",
        )
        return {"label": gpu_runner_label(request.run_id), "jobs": names, "created": created}

    def status(self, token: Secret | None, run_id: str, attempt: str) -> dict:
        with logged("gpu-runners-status") as seen:
            seen.update(run=run_id, attempt=attempt)
            self._check_run(self._callers.authorize(token, seen, allow_terminating=True), run_id, attempt)
            jobs = self._jobs(run_id, attempt)
            pods = self._kubernetes.list("pods", labels={RUN_ID_LABEL: run_id, RUN_ATTEMPT_LABEL: attempt}) or []
            runners = []
            for job in jobs:
                uid = (job.get("metadata") or {}).get("uid")
                own = [p for p in pods if (controller_reference(p) or {}).get("uid") == uid]
                # Until a pod of the Job was granted its runner, GitHub has none to show: a caller waiting
                # minutes for a GPU node costs no GitHub call a look.
                granted = any(granted_runner(p) for p in own)
                runner = self._github.find_runner(_name(job)) if granted else None
                runners.append(runner_state(job, own, self._events(job, own), runner))
        return gpu_runners_answer(run_id, runners)

    def delete(self, token: Secret | None, run_id: str, attempt: str) -> dict:
        with logged("gpu-runners-delete") as seen:
            seen.update(run=run_id, attempt=attempt)
            self._check_run(self._callers.authorize(token, seen, allow_terminating=True), run_id, attempt)
            deleted = [
                _name(job)
                for job in self._jobs(run_id, attempt)
                if self._kubernetes.delete_job(_name(job), (job.get("metadata") or {}).get("uid"))
            ]
        log(
            "gpu-runners-delete",
            decision="deleted",
            status=200,
            **seen,
            jobs=deleted or None,
            reason="a job of the run on this base runner asked",
        )
        return {"deleted": deleted}

    # ------------------------------------------------------------------ helpers --

    def _check_run(self, caller: Caller, run_id: str, attempt: str) -> None:
        """Refusal(403) unless the caller is a base runner running an in-progress job of the run attempt."""
        if caller.grant.kind != "base":
            raise Refusal(403, "only a job on a base runner may ask for GPU runners")
        key, now = (caller.identity.pod_uid, run_id, attempt), self._clock()
        with self._checks_lock:
            if self._checks.get(key, 0.0) > now:
                return
        check_run(self._github.run_jobs(run_id, attempt), caller.grant.name, run_id, attempt)
        with self._checks_lock:
            if len(self._checks) >= MAX_REMEMBERED_CHECKS:
                self._checks = {k: until for k, until in self._checks.items() if until > now}
            if len(self._checks) < MAX_REMEMBERED_CHECKS:
                self._checks[key] = now + RUN_CHECK_SECONDS

    def _create(self, job: dict, run_id: str, attempt: str, index: int) -> bool:
        """Create the Job; False when it exists already (and is this run attempt's)."""
        name = job["metadata"]["name"]
        if self._kubernetes.create_job(job) is not None:
            return True
        existing = self._kubernetes.get("jobs", name)
        if existing is None:
            raise Failure(f"Job {name} existed a moment ago and is gone now; ask again")
        labels = (existing.get("metadata") or {}).get("labels") or {}
        wanted = job_labels(run_id, attempt, index)
        if any(labels.get(key) != wanted[key] for key in (APP_NAME_LABEL, RUN_ID_LABEL, RUN_ATTEMPT_LABEL)):
            raise Refusal(409, f"a Job named {name} exists and is not a GPU runner of run {run_id} attempt {attempt}")
        return False

    def _jobs(self, run_id: str, attempt: str) -> list[dict]:
        """The run attempt's GPU runner Jobs, by index."""
        jobs = (
            self._kubernetes.list(
                "jobs", labels={APP_NAME_LABEL: GPU_RUNNER, RUN_ID_LABEL: run_id, RUN_ATTEMPT_LABEL: attempt}
            )
            or []
        )
        ours = []
        for job in jobs:
            match = GPU_RUNNER_NAME.fullmatch(_name(job))
            if match is not None and match.groups()[:2] == (run_id, attempt):
                ours.append((int(match.group(3) or 0), job))
        return [job for _, job in sorted(ours, key=lambda pair: pair[0])]

    def _events(self, job: dict, pods: list[dict]) -> list[dict]:
        """The Job's events and its pods'."""
        events = []
        for kind, obj in [("Job", job), *(("Pod", pod) for pod in pods)]:
            uid = (obj.get("metadata") or {}).get("uid")
            listed = (
                self._kubernetes.list("events", fields={"involvedObject.kind": kind, "involvedObject.name": _name(obj)})
                or []
            )
            events += [e for e in listed if (e.get("involvedObject") or {}).get("uid") in (None, uid)]
        return events


def _name(obj: dict) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")
