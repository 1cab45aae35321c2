"""What has ended goes: the periodic sweep, and the final one on the way out.

Every BROKER_SWEEP_SECONDS:
- runners of ours whose pods are gone are removed from GitHub;
- live pods granted a runner GitHub no longer lists are deleted (a base pod: its
  ReplicaSet starts a fresh one; a GPU pod: with its Job, so that no other pod takes
  its place). A JIT runner leaves GitHub after its one job, so such a pod's job is done,
  whatever its processes do: a frozen entrypoint or a fake listener costs at most one
  interval. A pod granted less than BROKER_GRANT_GRACE_SECONDS before GitHub was read
  is left for the next round;
- GPU runner Jobs of runs GitHub reports completed (or no longer has, or has re-run: an
  earlier attempt's Jobs) are deleted.

On SIGTERM (`final`), runners of ours whose pods are gone are removed once more;
GitHub refuses to remove a runner while it runs a job (422), so those are retried for
up to BROKER_FINAL_SWEEP_SECONDS, and any that remain are named in the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runner_broker.config import Config
from runner_broker.decisions import finished_job_reason, gpu_job_run, runners_to_remove, spent_pods
from runner_broker.errors import Failure, KubernetesError
from runner_broker.github import GitHubClient
from runner_broker.http import deadline_at
from runner_broker.kubernetes import KubernetesClient
from runner_broker.logs import log
from runner_broker.model import Runner, WorkflowRun
from runner_contract import APP_NAME_LABEL, GPU_RUNNER, PART_OF, PART_OF_LABEL

ROUND_DEADLINE_SECONDS = 30.0
FINAL_RETRY_MAX_SECONDS = 5.0


class Sweeper:
    def __init__(
        self,
        config: Config,
        kubernetes: KubernetesClient,
        github: GitHubClient,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._kubernetes = kubernetes
        self._github = github
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep

    # ----------------------------------------------------------------- periodic --

    def sweep(self) -> None:
        """One round; each part logs its own failure and the others still run."""
        for part in (self._runners_and_pods, self._jobs_of_finished_runs):
            try:
                with deadline_at(self._monotonic() + ROUND_DEADLINE_SECONDS):
                    part()
            except Failure as error:
                log(
                    "sweep",
                    decision="failed",
                    part=part.__name__.strip("_"),
                    reason=f"{error}; trying again next round",
                )

    def _runners_and_pods(self) -> None:
        # GitHub is read before the pods: a runner registered in between then belongs to a
        # pod already in the list, so it is never taken for one whose pod has gone.
        listed_at = self._clock()
        runners = self._github.list_runners()
        pods = self._runner_pods()
        if pods is None:
            raise KubernetesError(
                "the Kubernetes API refused the list of runner pods: the broker's Role in "
                f"{self._config.runner_namespace} is missing, or the namespace is gone"
            )
        for runner in runners_to_remove(runners.runners, pods, self._config.base_runner_deployment):
            self._remove(runner, "no live pod holds this runner")
        if not runners.complete:
            log("sweep", decision="skipped", part="spent-pods", reason="GitHub listed more runners than were read")
            return
        for spent in spent_pods(pods, runners.names, listed_at, self._config.grant_grace_seconds):
            if spent.job is not None:
                done = self._kubernetes.delete_job(spent.job)
                what = f"Job {spent.job} and its pod"
            else:
                done = self._kubernetes.delete_pod(spent.pod, spent.pod_uid)
                what = "the pod; its ReplicaSet starts a fresh one"
            if done:
                log(
                    "sweep",
                    decision="deleted",
                    pod=spent.pod,
                    runner=spent.runner,
                    job=spent.job,
                    reason=f"GitHub no longer lists the pod's runner: its one job is done; deleted {what}",
                )

    def _jobs_of_finished_runs(self) -> None:
        jobs = self._kubernetes.list("jobs", labels={APP_NAME_LABEL: GPU_RUNNER}) or []
        runs: dict[str, WorkflowRun | None] = {}
        for run in sorted({run for job in jobs if (run := gpu_job_run(job)) is not None}):
            try:
                runs[run] = self._github.run(run)
            except Failure as error:
                log("sweep", decision="failed", run=run, reason=f"{error}; trying again next round")
        for job in jobs:
            reason = finished_job_reason(job, runs)
            metadata = job.get("metadata") or {}
            if reason and self._kubernetes.delete_job(str(metadata.get("name")), metadata.get("uid")):
                log("sweep", decision="deleted", job=metadata.get("name"), run=gpu_job_run(job), reason=reason)

    def _runner_pods(self) -> list[dict] | None:
        return self._kubernetes.list("pods", labels={PART_OF_LABEL: PART_OF}, missing_ok=True)

    def _remove(self, runner: Runner, why: str) -> str:
        try:
            result = self._github.delete_runner(runner.id)
        except Failure as error:
            log("sweep", decision="failed", runner=runner.name, runner_id=runner.id, reason=str(error))
            return "failed"
        if result == "busy":
            log(
                "sweep",
                decision="left",
                runner=runner.name,
                runner_id=runner.id,
                reason=f"{why}, but GitHub says it is still running a job",
            )
        else:
            log("sweep", decision="removed", runner=runner.name, runner_id=runner.id, reason=why)
        return result

    # -------------------------------------------------------------------- final --

    def final(self) -> list[str]:
        """The sweep on the way out; the names of the runners of ours that remain registered."""
        until = self._monotonic() + self._config.final_sweep_seconds
        try:
            with deadline_at(self._monotonic() + ROUND_DEADLINE_SECONDS):
                runners = self._github.list_runners().runners
                pods = self._runner_pods()
        except Failure as error:
            log("sweep", decision="failed", when="final", reason=str(error))
            return []
        if pods is None:
            # `pulumi destroy` deletes the runner namespace, and the broker's Role in it,
            # before the broker: a namespace it may no longer see holds no pod of ours.
            log(
                "sweep",
                decision="namespace-gone",
                namespace=self._config.runner_namespace,
                reason="the runner namespace is gone or closed to the broker: no runner of ours has a pod",
            )
            pods = []
        why = "no live pod holds this runner"
        remaining = []
        for runner in runners_to_remove(runners, pods, self._config.base_runner_deployment):
            with deadline_at(self._monotonic() + ROUND_DEADLINE_SECONDS):
                if self._remove(runner, why) in ("busy", "failed"):
                    remaining.append(runner)
        retry = 0
        while remaining and self._monotonic() < until:
            self._sleep(min(0.5 * 2**retry, FINAL_RETRY_MAX_SECONDS, max(0.0, until - self._monotonic())))
            retry += 1
            for runner in list(remaining):
                with deadline_at(min(until, self._monotonic() + ROUND_DEADLINE_SECONDS)):
                    if self._remove(runner, f"{why} (try {retry + 1})") not in ("busy", "failed"):
                        remaining.remove(runner)
        if remaining:
            log(
                "sweep",
                decision="remain",
                runners=[r.name for r in remaining],
                reason=f"GitHub would not remove them within BROKER_FINAL_SWEEP_SECONDS "
                f"({self._config.final_sweep_seconds:g}s): remove them under the repository's Settings, "
                "Actions, Runners once their jobs end",
            )
        return [runner.name for runner in remaining]
