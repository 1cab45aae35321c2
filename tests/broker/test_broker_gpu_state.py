"""What GET /v1/gpu-runners/<run>/<attempt> says of one runner, from its Job, pod, events and GitHub runner."""

from __future__ import annotations

import pytest
from broker_harness import NAMESPACE
from fake_kubernetes import event, job, pod
from runner_broker.gpu_state import MAX_EVENTS, gpu_runners_answer, runner_state
from runner_broker.model import Runner

from runner_contract import RUNNER_ANNOTATION

JOB = "gpu-runner-4242-1"


def the_job(*conditions):
    made = job(JOB, NAMESPACE, "uid-job")
    made["status"] = {
        "conditions": [
            {"type": kind, "status": "True", "reason": reason, "message": message}
            for kind, reason, message in conditions
        ]
    }
    return made


def the_pod(phase="Pending", scheduled=None, waiting=None, terminated=None, granted=False, reason=None):
    made = pod(
        f"{JOB}-abcde",
        NAMESPACE,
        "uid-pod",
        owner=("Job", JOB, "uid-job"),
        phase=phase,
        annotations={RUNNER_ANNOTATION: JOB} if granted else None,
    )
    status = made["status"]
    if scheduled is not None:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "True" if scheduled is True else "False",
                **({} if scheduled is True else {"reason": scheduled[0], "message": scheduled[1]}),
            }
        ]
    if waiting is not None:
        status["containerStatuses"][0]["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
    if terminated is not None:
        status["containerStatuses"][0]["state"] = {"terminated": {"reason": terminated, "exitCode": 1}}
    if reason is not None:
        status["reason"], status["message"] = reason
    return made


def events_of(obj, *said):
    return [
        event(
            obj,
            reason,
            message,
            type="Warning" if reason.startswith(("Failed", "NotTrigger")) else "Normal",
            at=f"2030-01-01T00:00:{second:02d}Z",
        )
        for second, (reason, message) in enumerate(said)
    ]


RUNNER = Runner(1001, JOB, frozenset({"gpu-runner-4242"}))
ONLINE = Runner(1001, JOB, frozenset({"gpu-runner-4242"}), online=True)
BUSY = Runner(1001, JOB, frozenset({"gpu-runner-4242"}), online=True, busy=True)
QUOTA = (
    'pods "gpu-runner-4242-1-x" is forbidden: exceeded quota: gpu-runners, requested: '
    "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: requests.nvidia.com/gpu=2"
)
SCALE_UP = "pod triggered scale-up: [{gpu-pool 0->1 (max: 2)}]"
NO_SCALE_UP = "pod didn't trigger scale-up: 1 max node group size reached"
UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."

CASES = [
    # name, job, pod (or None), events (as a function of job and pod), runner, (state, reason, message fragment)
    ("no pod yet", the_job(), None, lambda _j, _p: [], None, ("pending", None, None)),
    (
        "quota",
        the_job(),
        None,
        lambda j, _p: events_of(j, ("FailedCreate", QUOTA)),
        None,
        ("pending", "QuotaExceeded", "exceeded quota"),
    ),
    (
        "refused otherwise",
        the_job(),
        None,
        lambda j, _p: events_of(j, ("FailedCreate", "admission webhook denied")),
        None,
        ("pending", "FailedCreate", "webhook"),
    ),
    ("just created", the_job(), the_pod(), lambda _j, _p: [], None, ("scheduling", None, None)),
    (
        "unschedulable",
        the_job(),
        the_pod(scheduled=("Unschedulable", UNSCHEDULABLE)),
        lambda _j, p: events_of(p, ("FailedScheduling", UNSCHEDULABLE)),
        None,
        ("scheduling", "Unschedulable", "Insufficient nvidia.com/gpu"),
    ),
    (
        "scale-up under way",
        the_job(),
        the_pod(scheduled=("Unschedulable", UNSCHEDULABLE)),
        lambda _j, p: events_of(p, ("FailedScheduling", UNSCHEDULABLE), ("TriggeredScaleUp", SCALE_UP)),
        None,
        ("scheduling", "TriggeredScaleUp", "gpu-pool 0->1"),
    ),
    (
        "no scale-up",
        the_job(),
        the_pod(scheduled=("Unschedulable", UNSCHEDULABLE)),
        lambda _j, p: events_of(p, ("TriggeredScaleUp", SCALE_UP), ("NotTriggerScaleUp", NO_SCALE_UP)),
        None,
        ("scheduling", "NotTriggerScaleUp", "max node group size"),
    ),
    (
        "scale-up failed",
        the_job(),
        the_pod(scheduled=("Unschedulable", UNSCHEDULABLE)),
        lambda _j, p: events_of(p, ("FailedScaleUp", "GCE out of resources")),
        None,
        ("scheduling", "FailedScaleUp", "out of resources"),
    ),
    (
        "condition only",
        the_job(),
        the_pod(scheduled=("Unschedulable", UNSCHEDULABLE)),
        lambda _j, _p: [],
        None,
        ("scheduling", "Unschedulable", "Insufficient"),
    ),
    (
        "pulling",
        the_job(),
        the_pod(scheduled=True, waiting=("ContainerCreating", None)),
        lambda _j, p: events_of(p, ("Scheduled", "assigned"), ("Pulling", "Pulling image")),
        None,
        ("starting", "ContainerCreating", None),
    ),
    (
        "cannot pull",
        the_job(),
        the_pod(scheduled=True, waiting=("ImagePullBackOff", "Back-off pulling image")),
        lambda _j, p: events_of(p, ("Failed", "Failed to pull image: 403 Forbidden")),
        None,
        ("starting", "ImagePullBackOff", "Back-off"),
    ),
    (
        "image missing",
        the_job(),
        the_pod(scheduled=True, waiting=("ErrImagePull", "manifest unknown")),
        lambda _j, _p: [],
        None,
        ("starting", "ErrImagePull", "manifest unknown"),
    ),
    (
        "bad config",
        the_job(),
        the_pod(scheduled=True, waiting=("CreateContainerConfigError", 'secret "x" not found')),
        lambda _j, _p: [],
        None,
        ("starting", "CreateContainerConfigError", "not found"),
    ),
    (
        "running, registering",
        the_job(),
        the_pod(phase="Running", scheduled=True),
        lambda _j, _p: [],
        None,
        ("starting", None, None),
    ),
    (
        "registered, not connected",
        the_job(),
        the_pod(phase="Running", scheduled=True, granted=True),
        lambda _j, _p: [],
        RUNNER,
        ("starting", None, None),
    ),
    (
        "online",
        the_job(),
        the_pod(phase="Running", scheduled=True, granted=True),
        lambda _j, _p: [],
        ONLINE,
        ("online", None, None),
    ),
    (
        "busy",
        the_job(),
        the_pod(phase="Running", scheduled=True, granted=True),
        lambda _j, _p: [],
        BUSY,
        ("busy", None, None),
    ),
    (
        "its job done, the pod not yet",
        the_job(),
        the_pod(phase="Running", scheduled=True, granted=True),
        lambda _j, _p: [],
        None,
        ("finished", None, "its job is done"),
    ),
    (
        "pod succeeded",
        the_job(),
        the_pod(phase="Succeeded", scheduled=True, granted=True),
        lambda _j, _p: [],
        None,
        ("finished", None, None),
    ),
    ("job complete", the_job(("Complete", None, None)), None, lambda _j, _p: [], None, ("finished", None, None)),
    (
        "pod failed",
        the_job(),
        the_pod(phase="Failed", scheduled=True, terminated="OOMKilled"),
        lambda _j, _p: [],
        None,
        ("failed", "OOMKilled", None),
    ),
    (
        "pod evicted",
        the_job(),
        the_pod(phase="Failed", reason=("Evicted", "The node was low on memory.")),
        lambda _j, _p: [],
        None,
        ("failed", "Evicted", "low on memory"),
    ),
    (
        "deadline",
        the_job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")),
        the_pod(phase="Running", scheduled=True, granted=True),
        lambda _j, _p: [],
        BUSY,
        ("failed", "DeadlineExceeded", "longer than specified deadline"),
    ),
    (
        "backoff",
        the_job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")),
        None,
        lambda _j, _p: [],
        None,
        ("failed", "BackoffLimitExceeded", "backoff limit"),
    ),
]


@pytest.mark.parametrize(
    "job_object, pod_object, make_events, runner, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_runner_state(job_object, pod_object, make_events, runner, expected):
    events = make_events(job_object, pod_object)
    state = runner_state(job_object, [pod_object] if pod_object else [], events, runner)

    assert set(state) == {"job", "pod", "state", "reason", "message", "events", "runnerStatus", "runnerBusy"}
    assert state["job"] == JOB and state["pod"] == (pod_object["metadata"]["name"] if pod_object else None)
    assert (state["state"], state["reason"]) == expected[:2]
    assert (expected[2] or "") in (state["message"] or ""), state["message"]
    assert state["runnerStatus"] == (None if runner is None else "online" if runner.online else "offline")
    assert state["runnerBusy"] is bool(runner and runner.busy)
    assert [e["reason"] for e in state["events"]] == [e["reason"] for e in events]


def test_the_latest_events_oldest_first_as_type_reason_message_count():
    made = the_job()
    events = events_of(made, *[("FailedCreate", f"try {n}") for n in range(15)])
    events.reverse()  # the API's order is not the story's
    events[0]["count"] = 7

    shown = runner_state(made, [], events, None)["events"]

    assert len(shown) == MAX_EVENTS
    assert [e["message"] for e in shown] == [f"try {n}" for n in range(5, 15)]
    assert shown[-1] == {"type": "Warning", "reason": "FailedCreate", "message": "try 14", "count": 7}


def test_the_newest_pod_of_the_job_speaks_for_it():
    old = the_pod(phase="Failed", terminated="Error")
    new = the_pod(phase="Running", scheduled=True)
    old["metadata"].update(name="old", creationTimestamp="2030-01-01T00:00:00Z")
    new["metadata"].update(name="new", creationTimestamp="2030-01-01T00:05:00Z")

    state = runner_state(the_job(), [new, old], [], None)

    assert (state["pod"], state["state"]) == ("new", "starting")


def test_the_answer_carries_the_runs_one_label():
    assert gpu_runners_answer("4242", []) == {"label": "gpu-runner-4242", "runners": []}
