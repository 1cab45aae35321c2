"""A run's GPU runners, made by the broker alone on request of a job of that run on a base runner; their state;
their removal. The broker in this process against the doubles."""

from __future__ import annotations

import json

import pytest
from broker_harness import NAMESPACE, REPOSITORY, RUNNER_IMAGE, gpu_runner_template
from fake_github import Reply, run_jobs_path
from fake_kubernetes import event

from runner_contract import APP_NAME_LABEL, RUN_ATTEMPT_LABEL, RUN_ID_LABEL, RUN_INDEX_LABEL, RUNNER_ANNOTATION

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup

JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
RUN_JOBS = run_jobs_path(REPOSITORY, 4242, 1)


@pytest.fixture
def caller(setup):
    """A base runner pod whose runner GitHub shows running a job of run 4242, attempt 1."""
    runner_pod = setup.cluster.base_runner_pod()
    setup.run_job(runner_pod, "4242", "1", name="start")
    return runner_pod


def test_a_job_of_the_run_gets_the_runs_gpu_runner_from_the_template(broker, setup, caller):
    answer = broker.gpu_runners(caller, "4242", "1")

    assert answer.status == 201, answer.raw
    assert answer.body == {"label": "gpu-runner-4242", "jobs": ["gpu-runner-4242-1"], "created": ["gpu-runner-4242-1"]}
    (create,) = setup.kube.requests_to("POST", JOBS)
    made = create.json()
    assert made["metadata"]["name"] == "gpu-runner-4242-1" and made["metadata"]["namespace"] == NAMESPACE
    for labels in (made["metadata"]["labels"], made["spec"]["template"]["metadata"]["labels"]):
        assert (labels[APP_NAME_LABEL], labels[RUN_ID_LABEL], labels[RUN_ATTEMPT_LABEL], labels[RUN_INDEX_LABEL]) == (
            "gpu-runner",
            "4242",
            "1",
            "0",
        )
    assert made["spec"]["template"]["spec"]["containers"][0]["image"] == RUNNER_IMAGE
    assert "${" not in create.body.decode()
    (check,) = setup.github.requests_to(RUN_JOBS)
    assert check.query == "per_page=100&page=1"
    broker.wait_for_log("gpu-runners", "decision=created", f"pod={caller.name}", "run=4242", "jobs=gpu-runner-4242-1")


def test_the_broker_made_job_s_pod_gets_the_runs_label(broker, setup, caller):
    setup.cluster.start_job_pods = True  # the Job controller makes each Job's pod
    assert broker.gpu_runners(caller, "4242", "1", count=2).status == 201

    answers = [broker.jitconfig(setup.cluster.job_pods[name]) for name in ("gpu-runner-4242-1", "gpu-runner-4242-1-1")]

    assert [(a.status, a.body["name"], a.body["labels"]) for a in answers] == [
        (201, "gpu-runner-4242-1", ["gpu-runner-4242"]),
        (201, "gpu-runner-4242-1-1", ["gpu-runner-4242"]),
    ]


def test_asking_again_returns_the_same_jobs(broker, setup, caller):
    first = broker.gpu_runners(caller, "4242", "1", count=2)
    again = broker.gpu_runners(caller, 4242, 1, count=2)
    fewer = broker.gpu_runners(caller, "4242", "1")

    assert first.body["jobs"] == again.body["jobs"] == ["gpu-runner-4242-1", "gpu-runner-4242-1-1"]
    assert (again.status, again.body["created"]) == (201, [])
    assert fewer.body["jobs"] == ["gpu-runner-4242-1"]
    assert len(setup.kube.objects("Job", NAMESPACE)) == 2
    assert len(setup.github.requests_to(RUN_JOBS)) == 1  # the caller's run checked once for the three


def test_a_job_of_that_name_that_is_not_the_runs_is_not_taken_for_it(broker, setup, caller):
    setup.cluster.gpu_job("4242", 1, labels={APP_NAME_LABEL: "something-else"})

    answer = broker.gpu_runners(caller, "4242", "1")

    assert answer.status == 409 and "is not a GPU runner of run 4242 attempt 1" in answer.body["error"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"runId": "4242", "runAttempt": "1", "count": 3}, "count must be a whole number from 1 to 2"),
        ({"runId": "4242", "runAttempt": "1", "count": 0}, "count"),
        ({"runId": "4242"}, "runAttempt"),
        ({"runId": "${GITHUB_RUN_ID}", "runAttempt": "1"}, "runId"),
        ("not an object", "JSON object"),
    ],
)
def test_a_bad_body_is_422(broker, setup, caller, body, fragment):
    answer = broker.post("/v1/gpu-runners", caller.token, body)

    assert answer.status == 422 and fragment in answer.body["error"], answer.raw
    assert setup.kube.requests_to("POST", JOBS) == []


def test_a_body_that_is_not_json_is_422_once_the_caller_is_known(broker, setup, caller):
    assert broker.request("POST", "/v1/gpu-runners", caller.token, b"{runId: 4242").status == 422
    assert broker.request("POST", "/v1/gpu-runners", None, b"{runId: 4242").status == 401


@pytest.mark.parametrize("story", ["no job", "job done", "job queued", "another runner's job"])
def test_a_caller_not_running_a_job_of_the_run_is_refused(broker, setup, story):
    runner_pod = setup.cluster.base_runner_pod()
    setup.runs.start_run(4242, 1)
    if story == "job done":
        setup.runs.add_job(4242, 1, "start", status="completed", runner_name=runner_pod.name)
    if story == "job queued":
        setup.runs.add_job(4242, 1, "start", status="queued")
    if story == "another runner's job":
        setup.runs.add_job(4242, 1, "start", runner_name="base-runner-5d8f7c9b4-other")

    answers = [broker.gpu_runners(runner_pod), broker.gpu_runner_state(runner_pod), broker.stop_gpu_runners(runner_pod)]

    assert [a.status for a in answers] == [403] * 3
    assert all("is not running a job of run 4242 attempt 1" in a.body["error"] for a in answers)
    assert setup.kube.requests_to("POST", JOBS) == [] and setup.kube.requests_to("DELETE") == []


def test_attack_a_job_cannot_ask_for_another_runs_gpu_runners(broker, setup, caller):
    """The attack: CI could create or delete any run's GPU runner Job. Now only a job of that run may ask."""
    setup.cluster.gpu_job("5555", 1)  # the victim run's runner
    setup.runs.start_run(5555, 1)

    made = broker.gpu_runners(caller, "5555", "1", count=2)
    stopped = broker.stop_gpu_runners(caller, "5555", "1")
    looked = broker.gpu_runner_state(caller, "5555", "1")

    assert [made.status, stopped.status, looked.status] == [403, 403, 403]
    assert [j["metadata"]["name"] for j in setup.kube.objects("Job", NAMESPACE)] == ["gpu-runner-5555-1"]


def test_a_gpu_runner_may_not_ask_for_more(broker, setup):
    runner_pod = setup.cluster.gpu_runner_pod()
    setup.run_job(runner_pod, "4242", "1", name="train")

    answer = broker.gpu_runners(runner_pod)

    assert answer.status == 403 and "only a job on a base runner" in answer.body["error"]


def test_github_refusing_the_jobs_list_names_the_permission(broker, setup, caller):
    setup.github.script(RUN_JOBS, Reply(403, {"message": "Resource not accessible by personal access token"}))

    answer = broker.gpu_runners(caller)

    assert answer.status == 502 and "lacks Actions: read" in answer.body["error"], answer.raw


def test_the_callers_job_is_found_on_any_page(broker, setup, caller):
    for number in range(150):
        setup.runs.add_job(4242, 1, f"matrix-{number}", status="queued")
    setup.runs.set_job(4242, 1, "start", status="queued")  # the caller's job moves to the end
    setup.runs.add_job(4242, 1, "start-again", runner_name=caller.name)

    assert broker.gpu_runners(caller).status == 201
    assert [r.query for r in setup.github.requests_to(RUN_JOBS)] == ["per_page=100&page=1", "per_page=100&page=2"]


def test_without_a_template_the_broker_makes_no_gpu_runners(setup):
    broker = setup.start_in_process(BROKER_GPU_RUNNER_TEMPLATE_FILE=None)
    runner_pod = setup.cluster.base_runner_pod()
    setup.run_job(runner_pod)

    answer = broker.gpu_runners(runner_pod)

    assert answer.status == 501 and "BROKER_GPU_RUNNER_TEMPLATE_FILE is not set" in answer.body["error"]
    assert broker.jitconfig(setup.cluster.gpu_runner_pod()).status == 403  # nor takes any Job for one


def test_a_changed_template_is_used_for_the_next_jobs(broker, setup, caller):
    setup.template_file.write_text(json.dumps(gpu_runner_template("runner:next")))

    assert broker.gpu_runners(caller).status == 201

    (create,) = setup.kube.requests_to("POST", JOBS)
    assert create.json()["spec"]["template"]["spec"]["containers"][0]["image"] == "runner:next"


# ----------------------------------------------------------------------- state --


def test_the_state_of_each_runner_as_it_comes_up(broker, setup, caller):
    setup.cluster.start_job_pods = True
    assert broker.gpu_runners(caller, count=2).status == 201
    first, second = (setup.cluster.job_pods[name] for name in ("gpu-runner-4242-1", "gpu-runner-4242-1-1"))

    def states():
        answer = broker.gpu_runner_state(caller)
        assert answer.status == 200 and answer.body["label"] == "gpu-runner-4242", answer.raw
        return [(r["job"], r["pod"], r["state"], r["reason"]) for r in answer.body["runners"]]

    assert states() == [
        ("gpu-runner-4242-1", first.name, "scheduling", None),
        ("gpu-runner-4242-1-1", second.name, "scheduling", None),
    ]

    stored = setup.cluster.stored(second)
    setup.kube.put(
        event(
            stored,
            "FailedScheduling",
            "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
            type="Warning",
            at="2030-01-01T00:00:01Z",
        )
    )
    setup.kube.put(
        event(stored, "TriggeredScaleUp", "pod triggered scale-up: [{gpu 1->2 (max: 2)}]", at="2030-01-01T00:00:02Z")
    )
    assert broker.jitconfig(first).status == 201
    setup.runners.set_state("gpu-runner-4242-1", status="online", busy=True)

    assert states() == [
        ("gpu-runner-4242-1", first.name, "busy", None),
        ("gpu-runner-4242-1-1", second.name, "scheduling", "TriggeredScaleUp"),
    ]
    runner = broker.gpu_runner_state(caller).body["runners"][1]
    assert runner["events"] == [
        {
            "type": "Warning",
            "reason": "FailedScheduling",
            "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.",
            "count": 1,
        },
        {
            "type": "Normal",
            "reason": "TriggeredScaleUp",
            "message": "pod triggered scale-up: [{gpu 1->2 (max: 2)}]",
            "count": 1,
        },
    ]
    assert (runner["runnerStatus"], runner["runnerBusy"]) == (None, False)

    setup.runners.remove("gpu-runner-4242-1")  # its job done; the pod not yet gone
    setup.kube.update(
        "Pod",
        NAMESPACE,
        second.name,
        lambda p: p["status"].update(
            conditions=[{"type": "PodScheduled", "status": "True"}],
            containerStatuses=[
                {
                    "name": "runner",
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}},
                }
            ],
        ),
    )
    assert states() == [
        ("gpu-runner-4242-1", first.name, "finished", None),
        ("gpu-runner-4242-1-1", second.name, "starting", "ImagePullBackOff"),
    ]
    assert setup.cluster.annotations(first)[RUNNER_ANNOTATION] == "gpu-runner-4242-1"


def test_the_state_before_any_pod_says_why(broker, setup, caller):
    assert broker.gpu_runners(caller).status == 201
    (job,) = setup.kube.objects("Job", NAMESPACE)
    setup.kube.put(
        event(job, "FailedCreate", 'pods "gpu-runner-4242-1-x" is forbidden: exceeded quota: gpu', type="Warning")
    )

    (runner,) = broker.gpu_runner_state(caller).body["runners"]

    assert (runner["pod"], runner["state"], runner["reason"]) == (None, "pending", "QuotaExceeded")
    assert "exceeded quota" in runner["message"]


def test_the_state_lists_only_this_attempts_runners(broker, setup, caller):
    setup.cluster.gpu_job("4242", 2)
    setup.cluster.gpu_job("7777", 1)

    assert broker.gpu_runner_state(caller).body == {"label": "gpu-runner-4242", "runners": []}
    assert broker.request("GET", "/v1/gpu-runners/4242/x", caller.token, body=None).status == 404
    assert broker.request("GET", "/v1/gpu-runners/4242/0", caller.token, body=None).status == 422


# ---------------------------------------------------------------------- delete --


def test_delete_removes_this_attempts_jobs_and_their_pods(broker, setup, caller):
    setup.cluster.start_job_pods = True
    assert broker.gpu_runners(caller, count=2).status == 201
    other = setup.cluster.gpu_runner_pod("7777", 1)

    answer = broker.stop_gpu_runners(caller)

    assert answer.status == 200 and answer.body == {"deleted": ["gpu-runner-4242-1", "gpu-runner-4242-1-1"]}
    assert [j["metadata"]["name"] for j in setup.kube.objects("Job", NAMESPACE)] == ["gpu-runner-7777-1"]
    deletes = setup.kube.requests_to("DELETE", JOBS)
    assert {d.json()["propagationPolicy"] for d in deletes} == {"Background"}
    assert [
        p["metadata"]["name"]
        for p in setup.kube.objects("Pod", NAMESPACE)
        if p["metadata"]["name"].startswith("gpu-runner")
    ] == [other.name]
    assert broker.stop_gpu_runners(caller).body == {"deleted": []}


def test_waiting_for_a_node_costs_no_github_call_a_look(broker, setup, caller):
    """gpu-runner start may look every few seconds for many minutes while the GPU pool grows."""
    setup.cluster.start_job_pods = True
    assert broker.gpu_runners(caller).status == 201
    before = len(setup.github.requests)

    states = [broker.gpu_runner_state(caller).body["runners"][0]["state"] for _ in range(5)]

    assert states == ["scheduling"] * 5
    assert setup.github.requests[before:] == []  # the run check holds a while; no runner to look up yet
