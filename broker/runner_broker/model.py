"""The plain data the decisions work on: who asks, what they may have, and what GitHub says."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner_broker.secrets import Secret


@dataclass(frozen=True)
class PodIdentity:
    """Who a token belongs to, as the TokenReview says."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


@dataclass(frozen=True)
class Grant:
    """The one runner a pod may have."""

    name: str
    labels: tuple[str, ...]
    kind: str
    """"base" (a pod of the base-runner Deployment) or "gpu" (the pod of a GPU runner Job)."""


@dataclass(frozen=True)
class Runner:
    id: int
    name: str
    labels: frozenset[str]
    online: bool = False
    busy: bool = False


@dataclass(frozen=True)
class Runners:
    runners: list[Runner]
    complete: bool
    """False when there were more pages than were read: a name missing proves nothing."""

    @property
    def names(self) -> set[str]:
        return {runner.name for runner in self.runners}


@dataclass(frozen=True)
class JitConfig:
    runner_id: int
    encoded: Secret = field(repr=False)


@dataclass(frozen=True)
class WorkflowRun:
    """A workflow run as GitHub shows it: its status (queued, in_progress, completed...) and latest attempt."""

    status: str
    attempt: int | None


@dataclass(frozen=True)
class WorkflowJob:
    """A job of a workflow run attempt, as GitHub lists it."""

    name: str
    status: str
    runner_name: str | None
    run_id: int | None
    run_attempt: int | None
