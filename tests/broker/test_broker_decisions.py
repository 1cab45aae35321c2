"""The broker's pure decisions, table by table: who asks, which runner a pod may have, what a GPU request
says, whether the caller runs a job of the run, and what the sweep removes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from broker_harness import AUDIENCE, BASE_DEPLOYMENT, NAMESPACE, RUNNER_ACCOUNT, RUNNER_IMAGE, gpu_runner_template
from fake_kubernetes import job, pod, replicaset
from runner_broker import decisions
from runner_broker.decisions import Rules, Spent
from runner_broker.errors import Refusal
from runner_broker.model import Grant, PodIdentity, Runner, WorkflowJob, WorkflowRun
from runner_broker.template import Template, render

from runner_contract import GRANTED_AT_ANNOTATION, RUNNER_ANNOTATION


def review(
    namespace=NAMESPACE,
    pod_name="base-runner-abc-p1",
    pod_uid="uid-1",
    audiences=(AUDIENCE,),
    authenticated=True,
    username=None,
    extra=None,
) -> dict:
    claims = {"authentication.kubernetes.io/pod-name": [pod_name], "authentication.kubernetes.io/pod-uid": [pod_uid]}
    return {
        "authenticated": authenticated,
        "audiences": list(audiences),
        "user": {
            "username": username or f"system:serviceaccount:{namespace}:{RUNNER_ACCOUNT}",
            "extra": claims if extra is None else extra,
        },
    }


@pytest.mark.parametrize(
    "status, expected",
    [
        (review(), PodIdentity(NAMESPACE, RUNNER_ACCOUNT, "base-runner-abc-p1", "uid-1")),
        (review(namespace="other"), PodIdentity("other", RUNNER_ACCOUNT, "base-runner-abc-p1", "uid-1")),
        ({"authenticated": False, "error": "invalid bearer token"}, "invalid"),
        ({}, "invalid"),
        (review(audiences=("kubernetes.default.svc",)), f"not for audience {AUDIENCE}"),
        (review(audiences=()), "not for audience"),
        (review(username="alice@example.com"), "not a ServiceAccount"),
        (review(username="system:node:gke-node-1"), "not a ServiceAccount"),
        (review(extra={}), "not bound to a pod"),
        (review(extra={"authentication.kubernetes.io/pod-name": ["p"]}), "not bound to a pod"),
        (
            review(extra={"authentication.kubernetes.io/pod-name": [], "authentication.kubernetes.io/pod-uid": []}),
            "not bound to a pod",
        ),
    ],
)
def test_identity_from_review(status, expected):
    if isinstance(expected, PodIdentity):
        assert decisions.identity_from_review(status, AUDIENCE) == expected
        return
    with pytest.raises(Refusal) as refused:
        decisions.identity_from_review(status, AUDIENCE)
    assert refused.value.status == 401 and expected in refused.value.reason


RS = "base-runner-5d8f7c9b4"
BASE_POD = "base-runner-5d8f7c9b4-x1"
GPU_JOB = "gpu-runner-4242-1"
OTHER_IMAGE = "ghcr.io/attacker/anything:latest"
RULES = Rules(NAMESPACE, RUNNER_ACCOUNT, BASE_DEPLOYMENT, (RUNNER_IMAGE,))


def identity(name=BASE_POD, uid="uid-pod", namespace=NAMESPACE, service_account=RUNNER_ACCOUNT):
    return PodIdentity(namespace, service_account, name, uid)


def base_pod(**options):
    return pod(BASE_POD, NAMESPACE, "uid-pod", owner=("ReplicaSet", RS, "uid-rs"), **options)


def gpu_pod(job_name=GPU_JOB, **options):
    return pod(f"{job_name}-abcde", NAMESPACE, "uid-pod", owner=("Job", job_name, "uid-job"), **options)


def base_rs(deployment=BASE_DEPLOYMENT, uid="uid-rs"):
    return replicaset(RS, NAMESPACE, uid, deployment=deployment)


def gpu_job(run_id="4242", attempt="1", index=0, *, image=RUNNER_IMAGE, uid="uid-job", labels=None, drop=()):
    """A Job as the broker renders it from the template; `labels` replace, `drop` removes labels."""
    made = render(Template(gpu_runner_template(image), (image,)), run_id, attempt, index, NAMESPACE)
    made["metadata"]["uid"] = uid
    if labels is not None:
        made["metadata"]["labels"] = labels
    for label in drop:
        made["metadata"]["labels"].pop(label)
    return made


def with_label(**changes):
    labels = gpu_job()["metadata"]["labels"]
    return {**labels, **{k.replace("_", "-").replace("run-", "gke-gpu-runners/run-"): v for k, v in changes.items()}}


GPU_ID = identity(name=f"{GPU_JOB}-abcde")

DECISIONS = [
    # identity, pod, owner, expected (Grant, or (status, reason fragment))
    ("base runner", identity(), base_pod(), base_rs(), Grant(BASE_POD, ("base-runner",), "base")),
    ("gpu runner", GPU_ID, gpu_pod(), gpu_job(), Grant(GPU_JOB, ("gpu-runner-4242",), "gpu")),
    (
        "gpu runner of a second index",
        identity(name="gpu-runner-4242-1-2-abcde"),
        gpu_pod("gpu-runner-4242-1-2"),
        gpu_job(index=2),
        Grant("gpu-runner-4242-1-2", ("gpu-runner-4242",), "gpu"),
    ),
    (
        "restarted container",
        identity(),
        base_pod(restarts=2),
        base_rs(),  # the grant's to refuse, not the decision's
        Grant(BASE_POD, ("base-runner",), "base"),
    ),
    ("other namespace", identity(namespace="default"), base_pod(), base_rs(), (403, "not in the runner namespace")),
    (
        "other service account",
        identity(service_account="default"),
        base_pod(),
        base_rs(),
        (403, "runs as ServiceAccount default, not github-runner"),
    ),
    ("pod gone", identity(), None, None, (403, "does not exist")),
    ("uid differs", identity(uid="uid-older"), base_pod(), base_rs(), (403, "not the token's")),
    ("pod succeeded", identity(), base_pod(phase="Succeeded"), base_rs(), (403, "has ended (phase Succeeded)")),
    ("pod failed", GPU_ID, gpu_pod(phase="Failed"), gpu_job(), (403, "has ended (phase Failed)")),
    ("terminating", identity(), base_pod(terminating=True), base_rs(), (403, "terminating")),
    ("bare pod", identity(), pod(BASE_POD, NAMESPACE, "uid-pod"), None, (403, "no controller")),
    (
        "statefulset",
        identity(),
        pod(BASE_POD, NAMESPACE, "uid-pod", owner=("StatefulSet", "base-runner", "u")),
        None,
        (403, "StatefulSet"),
    ),
    ("replicaset gone", identity(), base_pod(), None, (403, "ReplicaSet base-runner-5d8f7c9b4 does not exist")),
    ("replicaset replaced", identity(), base_pod(), base_rs(uid="uid-rs-new"), (403, "replaced")),
    ("other deployment", identity(), base_pod(), base_rs(deployment="ci-tools"), (403, "Deployment ci-tools")),
    ("replicaset without deployment", identity(), base_pod(), base_rs(deployment=None), (403, "belongs to nothing")),
    (
        "base pod misnamed",
        identity(name="tutorial-x"),
        pod("tutorial-x", NAMESPACE, "uid-pod", owner=("ReplicaSet", RS, "uid-rs")),
        base_rs(),
        (403, "not named base-runner-*"),
    ),
    ("job gone", GPU_ID, gpu_pod(), None, (403, "Job gpu-runner-4242-1 does not exist")),
    ("job replaced", GPU_ID, gpu_pod(), gpu_job(uid="uid-job-2"), (403, "replaced")),
    (
        "job not gpu-runner",
        GPU_ID,
        gpu_pod(),
        gpu_job(drop=["app.kubernetes.io/name"]),
        (403, "not labelled app.kubernetes.io/name=gpu-runner"),
    ),
    ("job run id missing", GPU_ID, gpu_pod(), gpu_job(drop=["gke-gpu-runners/run-id"]), (403, "no numeric")),
    (
        "job run attempt missing",
        GPU_ID,
        gpu_pod(),
        gpu_job(drop=["gke-gpu-runners/run-attempt"]),
        (403, "no numeric gke-gpu-runners/run-attempt"),
    ),
    ("job run id not numeric", GPU_ID, gpu_pod(), gpu_job(labels=with_label(run_id="4242; rm")), (403, "no numeric")),
    ("job run id in other digits", GPU_ID, gpu_pod(), gpu_job(labels=with_label(run_id="٤٢٤٢")), (403, "no numeric")),
    ("job run id with a newline", GPU_ID, gpu_pod(), gpu_job(labels=with_label(run_id="4242\n")), (403, "no numeric")),
    ("job run id too long", GPU_ID, gpu_pod(), gpu_job(labels=with_label(run_id="1" * 21)), (403, "no numeric")),
    (
        "job named for another run",
        identity(name="gpu-runner-1-1-abcde"),
        gpu_pod("gpu-runner-1-1"),
        gpu_job(),
        (403, "not gpu-runner-4242-1[-<index>]"),
    ),
    (
        "job named for another attempt",
        identity(name="gpu-runner-4242-2-abcde"),
        gpu_pod("gpu-runner-4242-2"),
        gpu_job(),
        (403, "as its labels say"),
    ),
    (
        "job index label disagrees",
        identity(name="gpu-runner-4242-1-3-abcde"),
        gpu_pod("gpu-runner-4242-1-3"),
        gpu_job(index=2, labels=with_label(run_index="2")),
        (403, "as its labels say"),
    ),
    ("job of another image", GPU_ID, gpu_pod(), gpu_job(image=OTHER_IMAGE), (403, "the broker did not make it")),
]


@pytest.mark.parametrize("who, pod_object, owner, expected", [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS])
def test_decide_runner(who, pod_object, owner, expected):
    if isinstance(expected, Grant):
        assert decisions.decide_runner(who, pod_object, owner, RULES) == expected
        return
    with pytest.raises(Refusal) as refused:
        decisions.decide_runner(who, pod_object, owner, RULES)
    assert (refused.value.status, expected[1] in refused.value.reason) == (expected[0], True), refused.value.reason


def test_without_a_template_no_gpu_pod_is_eligible():
    with pytest.raises(Refusal, match="no GPU runner template"):
        decisions.decide_runner(GPU_ID, gpu_pod(), gpu_job(), Rules(NAMESPACE, RUNNER_ACCOUNT))


def test_a_terminating_pod_may_say_it_has_finished():
    result = decisions.decide_runner(identity(), base_pod(terminating=True), base_rs(), RULES, allow_terminating=True)
    assert result == Grant(BASE_POD, ("base-runner",), "base")


@pytest.mark.parametrize(
    "pod_object, restarts",
    [
        (base_pod(), 0),
        (base_pod(restarts=1), 1),
        (base_pod(restarts=3), 3),
        (
            {
                "status": {
                    "containerStatuses": [{"restartCount": 1}, {"restartCount": "2"}, {"restartCount": True}, "x"]
                }
            },
            1,
        ),
        ({"status": {}}, 0),
        ({}, 0),
    ],
)
def test_container_restarts(pod_object, restarts):
    assert decisions.container_restarts(pod_object) == restarts


def test_a_grant_is_read_back_from_the_pods_annotations():
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    annotations = decisions.grant_annotations(BASE_POD, now)
    assert annotations == {RUNNER_ANNOTATION: BASE_POD, GRANTED_AT_ANNOTATION: "2030-01-02T03:04:05Z"}
    granted = base_pod(annotations=annotations)
    assert decisions.granted_runner(granted) == BASE_POD and decisions.granted_at(granted) == now.timestamp()
    assert decisions.granted_runner(base_pod()) is None and decisions.granted_at(base_pod()) is None
    assert decisions.granted_at(base_pod(annotations={GRANTED_AT_ANNOTATION: "yesterday"})) is None


# --------------------------------------------------------------- GPU requests --


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"runId": "4242", "runAttempt": "1"}, ("4242", "1", 1)),
        ({"runId": 4242, "runAttempt": 2, "count": 2}, ("4242", "2", 2)),
        ({"runId": "0042", "runAttempt": "01", "count": 1, "extra": "ignored"}, ("42", "1", 1)),
        ({"runId": "4242", "runAttempt": "1", "count": 3}, "count must be a whole number from 1 to 2"),
        ({"runId": "4242", "runAttempt": "1", "count": 0}, "count"),
        ({"runId": "4242", "runAttempt": "1", "count": True}, "count"),
        ({"runId": "4242", "runAttempt": "1", "count": "1"}, "count"),
        ({"runId": "4242", "runAttempt": "1", "count": 1.5}, "count"),
        ({"runAttempt": "1"}, "runId must be"),
        ({"runId": "4242"}, "runAttempt must be"),
        ({"runId": "0", "runAttempt": "1"}, "runId must be a positive"),
        ({"runId": "-1", "runAttempt": "1"}, "runId"),
        ({"runId": "4242 ", "runAttempt": "1"}, "runId"),
        ({"runId": "٤٢", "runAttempt": "1"}, "runId"),
        ({"runId": "1" * 21, "runAttempt": "1"}, "runId"),
        ({"runId": "${GITHUB_RUN_ID}", "runAttempt": "1"}, "runId"),
        ({"runId": True, "runAttempt": "1"}, "runId"),
        (["4242", "1"], "JSON object"),
        ("<not JSON>", "JSON object"),
    ],
)
def test_parse_gpu_request(body, expected):
    if isinstance(expected, tuple):
        assert decisions.parse_gpu_request(body, max_count=2) == decisions.GpuRequest(*expected)
        return
    with pytest.raises(Refusal) as refused:
        decisions.parse_gpu_request(body, max_count=2)
    assert refused.value.status == 422 and expected in refused.value.reason, refused.value.reason


def wjob(status="in_progress", runner=BASE_POD, run_id=4242, attempt=1, name="start"):
    return WorkflowJob(name, status, runner, run_id, attempt)


@pytest.mark.parametrize(
    "jobs, allowed",
    [
        ([wjob()], True),
        ([wjob(status="queued", runner=None), wjob()], True),
        ([wjob(run_id=None, attempt=None)], True),  # GitHub omitting them: the path said which run
        ([], False),
        ([wjob(status="completed")], False),  # the caller's job is over
        ([wjob(status="queued")], False),
        ([wjob(runner="base-runner-5d8f7c9b4-other")], False),  # another runner's job
        ([wjob(run_id=1)], False),
        ([wjob(attempt=2)], False),
    ],
)
def test_check_run(jobs, allowed):
    if allowed:
        assert decisions.check_run(jobs, BASE_POD, "4242", "1") in jobs
        return
    with pytest.raises(Refusal) as refused:
        decisions.check_run(jobs, BASE_POD, "4242", "1")
    assert refused.value.status == 403 and "not running a job of run 4242 attempt 1" in refused.value.reason


# ---------------------------------------------------------------------- sweep --


def runner(name, *labels, runner_id=1):
    return Runner(runner_id, name, frozenset(("self-hosted", "Linux", "X64", *labels)))


@pytest.mark.parametrize(
    "candidate, ours",
    [
        (runner("base-runner-5d8f7c9b4-x1", "base-runner"), True),
        (runner("gpu-runner-4242-1", "gpu-runner-4242"), True),
        (runner("gpu-runner-4242-1-1", "gpu-runner-4242"), True),
        (runner("tutorial-runner", "base-runner"), False),  # the tutorial's own runner
        (runner("base-runner-5d8f7c9b4-x1"), False),  # our name, not our label
        (runner("gpu-runner-4242-1", "gpu-runner-1"), False),  # label of another run
        (runner("gpu-runner-4242", "gpu-runner-4242"), False),  # no attempt
        (runner("gpu-runner-4242-1-0", "gpu-runner-4242"), False),  # index 0 has no suffix
        (runner("gpu-runner-٤٢-1", "gpu-runner-٤٢"), False),  # digits of another script
        (runner("laptop", "gpu-runner-4242"), False),
    ],
)
def test_is_ours(candidate, ours):
    assert decisions.is_ours(candidate, BASE_DEPLOYMENT) is ours


def test_runners_to_remove_keeps_live_pods_runners_and_others():
    pods = [
        base_pod(),
        gpu_pod(),
        pod("base-runner-5d8f7c9b4-done", NAMESPACE, "u2", owner=("ReplicaSet", RS, "uid-rs"), phase="Succeeded"),
        pod("base-runner-5d8f7c9b4-going", NAMESPACE, "u3", owner=("ReplicaSet", RS, "uid-rs"), terminating=True),
        pod("gpu-runner-7-1-xyz", NAMESPACE, "u4", owner=("Job", "gpu-runner-7-1", "uj"), phase="Failed"),
    ]
    runners = [
        runner(BASE_POD, "base-runner", runner_id=1),
        runner(GPU_JOB, "gpu-runner-4242", runner_id=2),
        runner("base-runner-5d8f7c9b4-done", "base-runner", runner_id=3),
        runner("base-runner-5d8f7c9b4-going", "base-runner", runner_id=4),
        runner("gpu-runner-7-1", "gpu-runner-7", runner_id=5),
        runner("base-runner-5d8f7c9b4-vanished", "base-runner", runner_id=6),
        runner("tutorial-runner", "base-runner", runner_id=7),
    ]
    assert decisions.live_runner_names(pods) == {BASE_POD, GPU_JOB}
    assert [r.id for r in decisions.runners_to_remove(runners, pods, BASE_DEPLOYMENT)] == [3, 4, 5, 6]


NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def granted(name, uid, seconds_ago, owner=("ReplicaSet", RS, "uid-rs"), **options):
    when = datetime.fromtimestamp(NOW - seconds_ago, UTC)
    runner_name = owner[1] if owner[0] == "Job" else name
    return pod(name, NAMESPACE, uid, owner=owner, annotations=decisions.grant_annotations(runner_name, when), **options)


def test_spent_pods_are_the_live_granted_ones_whose_runner_github_no_longer_lists():
    pods = [
        granted("base-runner-a", "ua", 600),  # its runner is listed: at work
        granted("base-runner-b", "ub", 600),  # gone from GitHub: spent
        granted("base-runner-c", "uc", 30),  # granted within the grace: next round
        granted("base-runner-d", "ud", 600, phase="Succeeded"),  # ended by itself
        granted("base-runner-e", "ue", 600, terminating=True),  # on its way out
        base_pod(),  # never granted
        granted("gpu-runner-7-1-xyz", "ug", 600, owner=("Job", "gpu-runner-7-1", "uj")),
        pod(
            "base-runner-f",
            NAMESPACE,
            "uf",
            owner=("ReplicaSet", RS, "uid-rs"),
            annotations={RUNNER_ANNOTATION: "base-runner-f"},
        ),  # no time: old enough
    ]
    spent = decisions.spent_pods(pods, {"base-runner-a"}, listed_at=NOW, grace_seconds=60)
    assert spent == [
        Spent("base-runner-b", "ub", "base-runner-b", None),
        Spent("gpu-runner-7-1-xyz", "ug", "gpu-runner-7-1", "gpu-runner-7-1"),
        Spent("base-runner-f", "uf", "base-runner-f", None),
    ]


@pytest.mark.parametrize(
    "made, run, reason",
    [
        (gpu_job("1"), WorkflowRun("completed", 1), "completed"),
        (gpu_job("1"), None, "no longer has the run"),
        (gpu_job("1"), WorkflowRun("in_progress", 1), None),
        (gpu_job("1"), WorkflowRun("queued", None), None),
        (gpu_job("1", "1"), WorkflowRun("in_progress", 2), "moved on to attempt 2"),  # re-run: attempt 1 is over
        (gpu_job("1", "2"), WorkflowRun("in_progress", 2), None),
        (gpu_job("2"), WorkflowRun("completed", 1), None),  # run 2 not asked about: kept
        (job("unrelated", NAMESPACE, "u", labels={}), WorkflowRun("completed", 1), None),
        (gpu_job("1", labels=with_label(run_id="not-a-run")), WorkflowRun("completed", 1), None),
        # An operator's smoke test names a run GitHub never had; its Jobs are the operator's to delete.
        (gpu_job("1", labels={**with_label(run_id="1"), "gke-gpu-runners/smoke-test": "true"}), None, None),
        (
            gpu_job("1", labels={**with_label(run_id="1"), "gke-gpu-runners/smoke-test": "false"}),
            None,
            "no longer has the run",
        ),
    ],
)
def test_finished_job_reason(made, run, reason):
    found = decisions.finished_job_reason(made, {"1": run})
    assert (found is None) if reason is None else (reason in found), found
