"""One just-in-time runner a pod, recorded on the pod itself; and the runner's end.

    POST /v1/jitconfig  -> issue()    POST /v1/finished  -> finish()

A grant is recorded on the pod (annotation `gke-gpu-runners/runner`, by PATCH) before the
JIT config leaves the broker, and a pod carrying it never gets another runner, from any
broker instance, after any restart. GitHub is asked first, so a GitHub failure leaves the
pod free to ask again; a failed PATCH withdraws the runner and hands nothing out.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from runner_broker.callers import Caller, Callers
from runner_broker.decisions import container_restarts, grant_annotations, granted_runner
from runner_broker.errors import Failure, Refusal
from runner_broker.github import GitHubClient
from runner_broker.http import deadline_at, seconds_left
from runner_broker.kubernetes import KubernetesClient
from runner_broker.logs import log
from runner_broker.model import JitConfig
from runner_broker.secrets import Secret
from runner_contract import JOB_NAME_LABEL

FINISHED_QUIET_SECONDS = 30.0
"""A pod saying its runner has ended again this soon costs no GitHub call."""
WITHDRAW_SECONDS = 2.0


class NameLocks:
    """One lock per runner name, kept only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        """Holds the name's lock, waiting no longer than the request's deadline; yields whether another request
        held it first."""
        with self._lock:
            lock, users = self._locks.get(name, (threading.Lock(), 0))
            self._locks[name] = (lock, users + 1)
        try:
            waited = not lock.acquire(blocking=False)
            left = seconds_left()
            if waited and not lock.acquire(timeout=-1 if left == math.inf else max(0.0, left)):
                raise Failure(f"another request for runner {name} took the time this one had; ask again")
            try:
                yield waited
            finally:
                lock.release()
        finally:
            with self._lock:
                lock, users = self._locks[name]
                if users == 1:
                    del self._locks[name]
                else:
                    self._locks[name] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@contextmanager
def logged(event: str) -> Iterator[dict[str, object]]:
    """Gathers names for the log; a refusal or failure is logged with them on its way out."""
    seen: dict[str, object] = {}
    try:
        yield seen
    except Refusal as refusal:
        log(event, decision="refused", status=refusal.status, **seen, reason=refusal.reason)
        raise
    except Failure as error:
        log(event, decision="failed", status=error.status, **seen, reason=str(error))
        raise


class Grants:
    def __init__(
        self,
        kubernetes: KubernetesClient,
        github: GitHubClient,
        callers: Callers,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kubernetes = kubernetes
        self._github = github
        self._callers = callers
        self._now = now
        self._locks = NameLocks()
        self._finished_lock = threading.Lock()
        self._finished: dict[str, float] = {}
        """Pod UID -> time.monotonic() when it last said its runner has ended."""

    # ------------------------------------------------------------------ issue --

    def issue(self, token: Secret | None) -> dict:
        with logged("jitconfig") as seen:
            caller = self._callers.authorize(token, seen)
            with self._locks.hold(caller.grant.name) as waited:
                if waited:  # another request of this runner name went first: see what it recorded
                    caller = Caller(caller.identity, self._fresh_pod(caller), caller.grant)
                jit = self._issue(caller)
        log(
            "jitconfig",
            decision="granted",
            status=201,
            **seen,
            labels=caller.grant.labels,
            runner_id=jit.runner_id,
            reason=f"{caller.grant.kind} runner pod; recorded on the pod",
        )
        return {
            "name": caller.grant.name,
            "labels": list(caller.grant.labels),
            "encodedJitConfig": jit.encoded.reveal(),
        }

    def _issue(self, caller: Caller) -> JitConfig:
        grant, identity = caller.grant, caller.identity
        had = granted_runner(caller.pod)
        if had is not None:
            raise Refusal(409, f"this pod already had its runner, {had} (recorded on the pod){self._spent(caller)}")
        restarts = container_restarts(caller.pod)
        if restarts:
            raise Refusal(
                409,
                f"the pod's container has restarted ({restarts} times): a pod that has already asked "
                f"for its runner is spent{self._spent(caller)}",
            )
        if grant.kind == "gpu":
            self._refuse_second_pod_of_job(caller)
        jit = self._github.generate_jit_config(grant.name, grant.labels)
        if jit is None:
            jit = self._replace_unconnected(grant.name, grant.labels)
        try:
            recorded = self._kubernetes.annotate_pod(
                identity.pod_name, identity.pod_uid, grant_annotations(grant.name, self._now())
            )
        except Failure as error:
            self._withdraw(grant.name, jit)
            raise Failure(f"the grant could not be recorded on the pod, so no runner was handed out: {error}") from None
        if not recorded:
            self._withdraw(grant.name, jit)
            raise Refusal(403, f"pod {identity.pod_name} is gone or replaced: no runner handed out")
        return jit

    def _replace_unconnected(self, name: str, labels: tuple[str, ...]) -> JitConfig:
        """The name is taken. A runner that never connected (offline, not busy), on a pod without a grant, lost
        its JIT config with an answer the pod never got (or a broker that stopped before recording it): replace
        it. Any other stays."""
        runner = self._github.find_runner(name)
        if runner is not None and (runner.online or runner.busy):
            raise Refusal(409, f"GitHub already has a runner named {name}, {'busy' if runner.busy else 'online'}")
        if runner is not None:
            if self._github.delete_runner(runner.id) == "busy":
                raise Refusal(409, f"GitHub already has a runner named {name}, busy")
            log(
                "jitconfig",
                decision="replaced",
                runner=name,
                runner_id=runner.id,
                reason="registered but never connected and never handed out",
            )
        jit = self._github.generate_jit_config(name, labels)
        if jit is None:
            raise Refusal(409, f"GitHub already has a runner named {name} again")
        return jit

    def _refuse_second_pod_of_job(self, caller: Caller) -> None:
        """A Job's runner is one: another pod of the same Job that was given it keeps it."""
        for pod in self._kubernetes.list("pods", labels={JOB_NAME_LABEL: caller.grant.name}) or []:
            metadata = pod.get("metadata") or {}
            if metadata.get("uid") != caller.identity.pod_uid and granted_runner(pod):
                raise Refusal(
                    409, f"runner {caller.grant.name} was given to pod {metadata.get('name')} of the same Job"
                )

    def _withdraw(self, name: str, jit: JitConfig) -> None:
        """Remove a runner whose JIT config will not be handed out; the pod may ask again."""
        try:
            with deadline_at(time.monotonic() + WITHDRAW_SECONDS):
                self._github.delete_runner(jit.runner_id)
        except Failure as error:
            log("jitconfig", decision="withdraw-failed", runner=name, runner_id=jit.runner_id, reason=str(error))

    def _spent(self, caller: Caller) -> str:
        """Delete a base pod refused a runner, so that its ReplicaSet starts a fresh one; what was done."""
        if caller.grant.kind != "base" or caller.terminating:
            return ""
        deleted = self._kubernetes.delete_pod(caller.identity.pod_name, caller.identity.pod_uid)
        return ": deleted it, so that its ReplicaSet starts a fresh one" if deleted else ""

    def _fresh_pod(self, caller: Caller) -> dict:
        pod = self._kubernetes.get("pods", caller.identity.pod_name)
        if pod is None or (pod.get("metadata") or {}).get("uid") != caller.identity.pod_uid:
            raise Refusal(403, f"pod {caller.identity.pod_name} is gone or replaced")
        return pod

    # ----------------------------------------------------------------- finish --

    def finish(self, token: Secret | None) -> dict:
        with logged("finished") as seen:
            caller = self._callers.authorize(token, seen, allow_terminating=True)
            with self._locks.hold(caller.grant.name):
                removed, deleted = self._wind_up(caller)
        log(
            "finished",
            decision="done",
            status=200,
            **seen,
            runner_removed=removed,
            pod_deleted=deleted,
            reason="the pod says its runner has ended",
        )
        return {"name": caller.grant.name, "runnerRemoved": removed, "podDeleted": deleted}

    def _wind_up(self, caller: Caller) -> tuple[bool, bool]:
        """Remove the pod's runner from GitHub and, for a base runner, the pod."""
        grant, identity = caller.grant, caller.identity
        if not self._first_word(identity.pod_uid):
            return False, False  # said so moments ago: a pod saying it in a loop costs no GitHub call
        removed, github_error = False, None
        try:
            runner = self._github.find_runner(grant.name)
            if runner is not None and runner.busy:
                log(
                    "finished",
                    decision="left",
                    runner=grant.name,
                    runner_id=runner.id,
                    reason="GitHub says the runner is busy: the sweep removes it once its pod is gone",
                )
            elif runner is not None:
                removed = self._github.delete_runner(runner.id) == "removed"
        except Failure as error:
            github_error = error
        # The pod goes even when GitHub failed: a fresh one should not wait on it, and once
        # this one is gone the sweep removes its runner.
        deleted = (
            grant.kind == "base"
            and not caller.terminating
            and self._kubernetes.delete_pod(identity.pod_name, identity.pod_uid)
        )
        if github_error is not None:
            aftermath = "; the pod was deleted, the sweep removes its runner" if deleted else ""
            raise type(github_error)(f"{github_error}{aftermath}") from None
        return removed, deleted

    def _first_word(self, pod_uid: str) -> bool:
        now = time.monotonic()
        with self._finished_lock:
            for uid, when in list(self._finished.items()):
                if now - when >= FINISHED_QUIET_SECONDS:
                    del self._finished[uid]
            if pod_uid in self._finished:
                return False
            self._finished[pod_uid] = now
            return True
