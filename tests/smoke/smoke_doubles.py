"""In-process doubles for the smoke test: a fake clock, a fake cluster behind the tool's
`Cluster` interface, a fake `pulumi`, and a runner board for tests/fake_github.py.

The world is driven by the fake clock. Each GPU runner of a scenario has timelines in
seconds after its Job's creation: its pod's state, and its runner's state in GitHub;
once the smoke test deletes its Job, its runner goes offline and leaves GitHub
`leaves_after` seconds later (or never), and its node `node_gone_after` seconds later.
Sleeping advances the clock, so a 900 s wait costs nothing.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fake_github import Reply
from runner_contract import JOB_NAME_LABEL

from scripts.smoke.cluster import KubeError
from scripts.smoke.context import StackError

# The program's own modules, in this one place: the template as the program publishes it.
from program.manifests.kubeconfigs import operator_kubeconfig  # isort: skip
from program.manifests.runners import gpu_runner_job, render_template  # isort: skip
from program.manifests.scale_set import LISTENER_POD_LABELS, gpu_runner_pod_template, runner_pod  # isort: skip

NAMESPACE = "github-runners"
IMAGE = "us-central1-docker.pkg.dev/acme-ml/gpu-runners/acme/gpu-runner@sha256:" + "ab" * 32
KUBECONFIG_TEXT = operator_kubeconfig("gpu-runners", "203.0.113.10", "Q0EK")
GPU_LINE = "GPU 0: Tesla T4 (UUID: GPU-0a1b2c3d-0000-1111-2222-333344445555)"
START = 1_760_000_000  # the fake clock's epoch seconds at the start of a run


def published_template() -> str:
    """The template text as the program writes it into ConfigMap gpu-runner-template, with
    `$` text that must reach the cluster untouched."""
    job = gpu_runner_job(IMAGE, NAMESPACE, 1, "n1-standard-4", 240)
    job["metadata"]["annotations"] = {"smoke-test/untouched": "$HOME ${KEEP_ME} $(date)"}
    return render_template(job)


TEMPLATE = published_template()


def stamp(epoch: float, fraction: bool = False) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + (".123456Z" if fraction else "Z")


class FakeClock:
    """Wall and monotonic time that only `sleep` moves; `interrupt_after` sleeps, `sleep` raises
    `interrupt` instead (a signal arriving while the tool waits)."""

    def __init__(self, start: float = START) -> None:
        self.now = float(start)
        self.start = float(start)
        self.sleeps: list[float] = []
        self.interrupt_after: int | None = None
        self.interrupt: BaseException | None = None

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - self.start

    def sleep(self, seconds: float) -> None:
        if self.interrupt_after is not None and len(self.sleeps) >= self.interrupt_after:
            assert self.interrupt is not None
            raise self.interrupt
        self.sleeps.append(seconds)
        self.now += seconds


# A cold start with known parts, in seconds after the Job's creation.
PARTS = {"pod": 1, "scale_up": 3, "node_created": 40, "node_ready": 95, "scheduled": 97, "pulled": 128, "started": 130}


@dataclass
class GpuScenario:
    """One smoke GPU runner. pods: (seconds, state) with state none, pending (unschedulable),
    pulling (ImagePullBackOff), running or failed. github: (seconds, state) with state
    absent, offline or online."""

    run_id: int
    pods: tuple = ((0, "none"), (PARTS["pod"], "pending"), (PARTS["started"], "running"))
    github: tuple = ((0, "absent"), (140, "offline"), (150, "online"))
    labels: tuple = ()
    leaves_after: float | None = 10
    cached_image: bool = False
    warm_node: bool = False
    node_age_seconds: int | None = None
    """The node was created this long before the Job (instead of PARTS)."""
    node_gone_after: float | None = None
    exec_reply: tuple[bool, str] = (True, GPU_LINE + "\n")
    extra_events: list = field(default_factory=list)

    @property
    def job(self) -> str:
        return f"gpu-runner-{self.run_id}-1"

    @property
    def node(self) -> str:
        return f"gke-gpu-runners-gpu-pool-5f1c2a3b-{self.run_id}"

    @property
    def pod_name(self) -> str:
        return f"{self.job}-x7k2p"

    def runner_labels(self) -> list[str]:
        return list(self.labels) or ["self-hosted", "Linux", "X64", f"gpu-runner-{self.run_id}"]


def at(timeline: tuple, elapsed: float) -> str:
    """The state of a timeline `elapsed` seconds in."""
    return [state for second, state in timeline if second <= elapsed][-1]


def pod_object(s: GpuScenario, t0: float, state: str) -> dict | None:
    if state == "none":
        return None
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": s.pod_name,
            "namespace": NAMESPACE,
            "creationTimestamp": stamp(t0 + PARTS["pod"]),
            "labels": {JOB_NAME_LABEL: s.job},
        },
        "spec": {"containers": [{"name": "runner", "image": IMAGE}]},
        "status": {"phase": "Pending"},
    }
    if state == "pending":
        pod["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastTransitionTime": stamp(t0 + 1),
                "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            }
        ]
        return pod
    pod["spec"]["nodeName"] = s.node
    if state == "pulling":
        waiting = {"reason": "ImagePullBackOff", "message": "403 Forbidden"}
        pod["status"]["containerStatuses"] = [{"name": "runner", "ready": False, "state": {"waiting": waiting}}]
        return pod
    started = stamp(t0 + PARTS["started"])
    container_state = (
        {"running": {"startedAt": started}}
        if state == "running"
        else {"terminated": {"reason": "Error", "exitCode": 3, "startedAt": started}}
    )
    pod["status"] = {
        "phase": "Running" if state == "running" else "Failed",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(t0 + PARTS["scheduled"])},
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(t0 + PARTS["started"] + 5)},
        ],
        "containerStatuses": [{"name": "runner", "ready": True, "image": IMAGE, "state": container_state}],
    }
    return pod


def events(s: GpuScenario, t0: float) -> list[dict]:
    def event(reason: str, message: str, **times: str) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "reason": reason,
            "message": message,
            "type": "Normal",
            "involvedObject": {"kind": "Pod", "name": s.pod_name, "namespace": NAMESPACE},
            "metadata": {"name": f"{s.pod_name}.{reason.lower()}", "creationTimestamp": stamp(t0 + 1)},
            "firstTimestamp": None,
            "lastTimestamp": None,
            "eventTime": None,
            **times,
        }

    pulled = (
        f'Container image "{IMAGE}" already present on machine'
        if s.cached_image
        else f'Successfully pulled image "{IMAGE}" in 30.1s (30.1s including waiting)'
    )
    found = [
        event(
            "FailedScheduling",
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
            firstTimestamp=stamp(t0 + 1),
            lastTimestamp=stamp(t0 + 1),
        ),
        event("Pulling", f'Pulling image "{IMAGE}"', firstTimestamp=stamp(t0 + 98), lastTimestamp=stamp(t0 + 98)),
        event("Pulled", pulled, firstTimestamp=stamp(t0 + PARTS["pulled"]), lastTimestamp=stamp(t0 + PARTS["pulled"])),
        event("Started", "Started container runner", firstTimestamp=stamp(t0 + 130), lastTimestamp=stamp(t0 + 130)),
    ]
    if not s.warm_node:
        # The cluster autoscaler writes events.k8s.io events: eventTime, with microseconds.
        found.insert(
            1,
            event(
                "TriggeredScaleUp",
                "pod triggered scale-up: [{gpu-pool 0->1 (max: 2)}]",
                eventTime=stamp(t0 + PARTS["scale_up"], fraction=True),
            ),
        )
    for extra in copy.deepcopy(s.extra_events):
        after = extra.pop("after", 0)  # seconds after the Job's creation
        found.append({"lastTimestamp": stamp(t0 + after), **extra})
    return found


def node_object(s: GpuScenario, t0: float) -> dict:
    created = t0 - 3600 if s.warm_node else t0 + PARTS["node_created"]
    if s.node_age_seconds is not None:
        created = t0 - s.node_age_seconds
    ready = t0 - 3000 if s.warm_node else t0 + PARTS["node_ready"]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": s.node, "creationTimestamp": stamp(created), "labels": {"gpu": "true"}},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastTransitionTime": stamp(created + 20)},
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp(ready)},
            ]
        },
    }


def deployment(name: str, available: bool = True) -> dict:
    status = (
        {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
        if available
        else {
            "observedGeneration": 2,
            "replicas": 1,
            "updatedReplicas": 1,
            "availableReplicas": 0,
            "conditions": [{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}],
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "generation": 2},
        "spec": {"replicas": 1},
        "status": status,
    }


CI_GOOGLE = "ci@acme-ml.iam.gserviceaccount.com"
CI_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:ci-runner-launcher"
CI_READS = {
    (verb, resource, NAMESPACE) for resource in ("pods", "events", "jobs.batch") for verb in ("get", "list", "watch")
} | {("get", "pods/log", NAMESPACE)}


RBAC = "rbac.authorization.k8s.io"


def ci_binding(kind: str = "User") -> dict:
    subject = (
        {"kind": "ServiceAccount", "name": "ci-runner-launcher", "namespace": NAMESPACE}
        if kind == "ServiceAccount"
        else {"kind": kind, "apiGroup": RBAC, "name": CI_GOOGLE}
    )
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "ci-runner-launcher", "namespace": NAMESPACE},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "ci-runner-launcher"},
        "subjects": [subject, {"kind": "User", "apiGroup": RBAC, "name": "someone@else.com"}],
    }


@dataclass
class Call:
    what: str
    args: tuple
    at: float


class FakeCluster:
    """The tool's `Cluster`, in memory. Everything healthy unless a test changes it."""

    def __init__(self, clock: FakeClock, runners: list[GpuScenario]) -> None:
        self.clock = clock
        self.scenarios = {s.job: s for s in runners}
        self.calls: list[Call] = []
        self.deployments = {
            ("github-runners-system", "runner-broker"): deployment("runner-broker"),
            (NAMESPACE, "base-runner"): deployment("base-runner"),
        }
        self.configmap: dict | KubeError | None = {"data": {"runner-gpu.yaml": TEMPLATE, "runner-gpu.json": "{}"}}
        self.binding: dict | None = ci_binding()
        self.ci_identity = CI_GOOGLE
        self.ci_granted = set(CI_READS)
        self.impersonation_refused = False
        self.create_errors: dict[str, KubeError] = {}
        self.delete_errors: list[KubeError] = []
        self.created: dict[str, tuple[float, dict]] = {}
        self.deleted: dict[str, float] = {}
        self.vanish_at: dict[str, float] = {}
        """Jobs someone else deletes, this many seconds after their creation."""

    def _record(self, what: str, *args: Any) -> None:
        self.calls.append(Call(what, args, self.clock.time()))

    def calls_to(self, what: str) -> list[Call]:
        return [c for c in self.calls if c.what == what]

    def job_exists(self, job: str) -> bool:
        if job not in self.created or job in self.deleted:
            return False
        vanish = self.vanish_at.get(job)
        return vanish is None or self.clock.time() < self.created[job][0] + vanish

    def _elapsed(self, job: str) -> float:
        return self.clock.time() - self.created[job][0]

    # --- Cluster -----------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        self._record("get", kind, name, namespace)
        if kind == "deployment":
            return copy.deepcopy(self.deployments.get((namespace, name)))
        if kind == "rolebinding":
            return copy.deepcopy(self.binding) if name == "ci-runner-launcher" and namespace == NAMESPACE else None
        if kind == "configmap":
            if isinstance(self.configmap, KubeError):
                raise self.configmap
            return copy.deepcopy(self.configmap) if name == "gpu-runner-template" and namespace == NAMESPACE else None
        if kind == "job":
            if not self.job_exists(name):
                return None
            t0, manifest = self.created[name]
            job = copy.deepcopy(manifest)
            job["metadata"]["creationTimestamp"] = stamp(t0)
            return job
        if kind == "node":
            for s in self.scenarios.values():
                if s.node == name and s.job in self.created:
                    gone_at = (
                        self.deleted.get(s.job, float("inf")) + s.node_gone_after
                        if s.node_gone_after is not None
                        else float("inf")
                    )
                    return None if self.clock.time() >= gone_at else node_object(s, self.created[s.job][0])
            return None
        raise AssertionError(f"the smoke test reads no {kind}")

    def list(self, kind: str, namespace: str, *, labels: str | None = None, fields: str | None = None) -> list[dict]:
        self._record("list", kind, labels or fields)
        assert namespace == NAMESPACE
        if kind == "pods":
            job = (labels or "").removeprefix(f"{JOB_NAME_LABEL}=")
            if not self.job_exists(job) or job not in self.scenarios:
                return []
            s = self.scenarios[job]
            pod = pod_object(s, self.created[job][0], at(s.pods, self._elapsed(job)))
            return [pod] if pod else []
        if kind == "events":
            pod = (fields or "").removeprefix("involvedObject.name=")
            s = next((s for s in self.scenarios.values() if s.pod_name == pod and s.job in self.created), None)
            return events(s, self.created[s.job][0]) if s else []
        raise AssertionError(f"the smoke test lists no {kind}")

    def create(self, document: dict) -> dict:
        name = document["metadata"]["name"]
        self._record("create", name, copy.deepcopy(document))
        if name in self.create_errors:
            raise self.create_errors[name]
        self.created[name] = (self.clock.time(), copy.deepcopy(document))
        return document

    def delete_jobs(self, names: list[str], namespace: str) -> None:
        self._record("delete", tuple(names), namespace)
        if self.delete_errors:
            raise self.delete_errors.pop(0)
        for name in names:
            if name in self.created:
                self.deleted.setdefault(name, self.clock.time())

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> tuple[bool, str]:
        self._record("exec", namespace, pod, container, tuple(command))
        return next(s.exec_reply for s in self.scenarios.values() if s.pod_name == pod)

    def can_i(self, verb: str, resource: str, namespace: str, as_identity: str) -> bool:
        self._record("can_i", verb, resource, namespace, as_identity)
        if self.impersonation_refused:
            kind = "serviceaccounts" if as_identity.startswith("system:serviceaccount:") else "users"
            raise KubeError(
                f'Error from server (Forbidden): {kind} "{as_identity.rpartition(":")[2]}" is forbidden: '
                f'User "operator@example.com" cannot impersonate resource "{kind}" in API group ""',
                "Impersonation",
            )
        return as_identity == self.ci_identity and (verb, resource, namespace) in self.ci_granted


class RunnerBoard:
    """The repository's runners for the fake GitHub: the base runners as given (a reply, or a
    function of the seconds since the start that gives one), and each smoke GPU runner in its
    scenario's state at the fake clock's time. `listed_at`: the fake times it was asked;
    `deleted_then`: the Jobs deleted by then, for each."""

    def __init__(self, base: Reply | Callable[[float], Reply], cluster: FakeCluster) -> None:
        self.base, self.cluster = base, cluster
        self.listed_at: list[float] = []
        self.deleted_then: list[frozenset[str]] = []

    def __call__(self, _request, _match) -> Reply:
        clock = self.cluster.clock
        now = clock.time()
        self.listed_at.append(now - clock.start)
        self.deleted_then.append(frozenset(self.cluster.deleted))
        base = self.base(now - clock.start) if callable(self.base) else self.base
        if base.status != 200:
            return base
        runners = list(base.body["runners"])
        for job, s in self.cluster.scenarios.items():
            if job not in self.cluster.created:
                continue
            state = at(s.github, now - self.cluster.created[job][0])
            deleted = self.cluster.deleted.get(job)
            if deleted is not None and state != "absent":
                gone = s.leaves_after is not None and now - deleted >= s.leaves_after
                state = "absent" if gone else "offline"
            if state != "absent":
                runners.append(
                    {
                        "id": 100 + len(runners),
                        "name": job,
                        "os": "Linux",
                        "status": state,
                        "busy": False,
                        "labels": [{"name": n, "type": "custom"} for n in s.runner_labels()],
                    }
                )
        return Reply(200, {"total_count": len(runners), "runners": runners})


class FakePulumi:
    def __init__(self, outputs: dict | StackError, repository: str = "o/r") -> None:
        self._outputs, self.repository = outputs, repository
        self.calls: list[tuple] = []

    def outputs(self) -> dict:
        self.calls.append(("outputs",))
        if isinstance(self._outputs, StackError):
            raise self._outputs
        return json.loads(json.dumps(self._outputs))

    def config(self, key: str) -> str:
        self.calls.append(("config", key))
        return self.repository


STACK_OUTPUTS = {
    "clusterName": "gpu-runners",
    "clusterLocation": "us-central1-a",
    "kubeconfig": KUBECONFIG_TEXT,
    "namespace": NAMESPACE,
    "runnerImage": "ghcr.io/acme/gpu-runner@sha256:" + "ab" * 32,
    "clusterRunnerImage": IMAGE,
    "gpuRunnerImage": IMAGE,
    # Not what the smoke test uses: it reads the ConfigMap, as the broker reads its own copy.
    "gpuRunnerTemplate": "stale: the Job template of an older pulumi up\n",
}


# --- Scale-set mode: ARC's controller, its scale set, the listener and runner pods -----

SCALE_SET = "gpu"
SYSTEM_NAMESPACE = f"{NAMESPACE}-system"
ARC_CONTROLLER = "arc-gha-rs-controller"
SCALE_SET_KIND = "autoscalingrunnersets.actions.github.com"
# What a scale-set stack exports: no gpuRunnerTemplate, no brokerImage, and scaleSetName.
SCALE_SET_OUTPUTS = {k: v for k, v in STACK_OUTPUTS.items() if k != "gpuRunnerTemplate"} | {"scaleSetName": SCALE_SET}
# The labels ARC 0.14.2 puts on every object of a scale set (resourcebuilder.go).
ARC_SCALE_SET_LABELS = {
    "actions.github.com/scale-set-name": SCALE_SET,
    "actions.github.com/scale-set-namespace": NAMESPACE,
    "actions.github.com/repository": "r",
    "actions.github.com/organization": "o",
}


def autoscaling_runner_set(registered: bool = True, phase: str = "Running", running: int = 1) -> dict:
    annotations = {"actions.github.com/runner-scale-set-name": SCALE_SET}
    if registered:
        annotations["runner-scale-set-id"] = "7"
    return {
        "apiVersion": "actions.github.com/v1alpha1",
        "kind": "AutoscalingRunnerSet",
        "metadata": {"name": SCALE_SET, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {"runnerScaleSetName": SCALE_SET, "minRunners": 0, "maxRunners": 2},
        "status": {"phase": phase, "currentRunners": running, "runningEphemeralRunners": running},
    }


def listener_pod(state: str) -> dict:
    """The listener as ARC starts it in the controller's namespace: running, or crash-looping."""
    labels = {**ARC_SCALE_SET_LABELS, **LISTENER_POD_LABELS}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{SCALE_SET}-754b578d-listener",
            "namespace": SYSTEM_NAMESPACE,
            "labels": labels,
            "creationTimestamp": stamp(START - 3600),
        },
        "spec": {
            "containers": [{"name": "listener", "image": "ghcr.io/actions/gha-runner-scale-set-controller:0.14.2"}]
        },
    }
    if state == "running":
        container = {"name": "listener", "ready": True, "state": {"running": {"startedAt": stamp(START - 3590)}}}
    else:
        # A crash-looping pod stays in phase Running: only its container says so.
        waiting = {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container=listener"}
        container = {"name": "listener", "ready": False, "restartCount": 6, "state": {"waiting": waiting}}
    pod["status"] = {"phase": "Running", "containerStatuses": [container]}
    return pod


def arc_runner_pod(name: str, created: float, scheduled: float | None, started: float | None) -> dict:
    """A runner pod as ARC makes it from the program's template: seconds relative to the fake clock's start."""
    template = gpu_runner_pod_template(IMAGE, 1, "n1-standard-4", 240)
    pod = runner_pod(template, name, NAMESPACE)
    pod["metadata"]["labels"] = {
        **pod["metadata"]["labels"],
        **ARC_SCALE_SET_LABELS,
        "app.kubernetes.io/component": "runner",
        "actions-ephemeral-runner": "True",
    }
    pod["metadata"]["creationTimestamp"] = stamp(START + created)
    status: dict = {"phase": "Pending", "conditions": []}
    if scheduled is not None:
        pod["spec"]["nodeName"] = f"gke-gpu-runners-gpu-pool-5f1c2a3b-{name[-5:]}"
        status["conditions"].append(
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(START + scheduled)}
        )
    else:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": stamp(START)}
        )
    if started is not None:
        status["phase"] = "Running"
        status["containerStatuses"] = [
            {"name": "runner", "ready": True, "state": {"running": {"startedAt": stamp(START + started, True)}}}
        ]
    pod["status"] = status
    return pod


@dataclass
class Arc:
    """ARC as the fake cluster shows it; healthy unless a test changes it. `listener_after`: the
    listener runs this many seconds after the start (None: it crash-loops; "absent": no pod)."""

    controller: dict | None = field(default_factory=lambda: deployment(ARC_CONTROLLER))
    scale_set: dict | None = field(default_factory=autoscaling_runner_set)
    listener_after: float | str | None = 0
    runner_pods: list[dict] = field(
        default_factory=lambda: [
            arc_runner_pod(f"{SCALE_SET}-8xk2q-runner-4tq7z", -400, -310, -285),
            arc_runner_pod(f"{SCALE_SET}-8xk2q-runner-9bz5m", -120, -30, -5),
            arc_runner_pod(f"{SCALE_SET}-8xk2q-runner-c2wlp", -20, None, None),
        ]
    )
    exec_reply: tuple[bool, str] = (True, GPU_LINE + "\n")


def selected(labels: dict, selector: str) -> bool:
    """Whether `labels` match an equality-based label selector (`a=b,c=d`)."""
    return all(labels.get(key) == value for key, _, value in (term.partition("=") for term in selector.split(",")))


class FakeArcCluster(FakeCluster):
    """A scale-set stack's cluster: ARC's objects instead of the broker, base runners and template."""

    def __init__(self, clock: FakeClock, arc: Arc) -> None:
        super().__init__(clock, [])
        self.arc = arc
        self.deployments = {(SYSTEM_NAMESPACE, ARC_CONTROLLER): arc.controller} if arc.controller else {}
        self.configmap = None

    def _listener(self) -> list[dict]:
        after = self.arc.listener_after
        if after == "absent":
            return []
        running = after is not None and self.clock.time() - self.clock.start >= after
        return [listener_pod("running" if running else "crash-looping")]

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        if kind != SCALE_SET_KIND:
            return super().get(kind, name, namespace)
        self._record("get", kind, name, namespace)
        found = self.arc.scale_set
        return copy.deepcopy(found) if found and name == SCALE_SET and namespace == NAMESPACE else None

    def list(self, kind: str, namespace: str, *, labels: str | None = None, fields: str | None = None) -> list[dict]:
        self._record("list", kind, labels or fields, namespace)
        assert kind == "pods" and labels, f"the smoke test lists no {kind} in scale-set mode"
        pods = {SYSTEM_NAMESPACE: self._listener(), NAMESPACE: self.arc.runner_pods}[namespace]
        return [copy.deepcopy(p) for p in pods if selected(p["metadata"]["labels"], labels)]

    def exec(self, namespace: str, pod: str, container: str, command: list[str]) -> tuple[bool, str]:
        self._record("exec", namespace, pod, container, tuple(command))
        assert any(p["metadata"]["name"] == pod for p in self.arc.runner_pods)
        return self.arc.exec_reply
