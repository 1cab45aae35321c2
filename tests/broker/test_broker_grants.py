"""One JIT runner a pod, recorded on the pod; and the runner's end. The broker in this process, on 127.0.0.1,
against local doubles of GitHub and Kubernetes that speak the real paths and JSON."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from broker_harness import AUDIENCE, NAMESPACE, REPOSITORY, ROTATED_PAT, BrokerSetup, wait_until
from fake_github import Reply
from fake_kubernetes import TOKEN_REVIEWS, replicaset
from github_runners import runners_api

from runner_contract import GRANTED_AT_ANNOTATION, RUNNER_ANNOTATION

pytest_plugins = ["broker_fixtures"]  # setup, broker, make_setup

RUNNERS = runners_api(REPOSITORY)
GENERATE = runners_api(REPOSITORY, "/generate-jitconfig")
JIT = "/v1/jitconfig"
FINISHED = "/v1/finished"


def pod_path(name: str) -> str:
    return f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"


def test_unknown_paths_and_methods_and_health_on_its_own_port(broker, setup):
    assert broker.health().body == {"status": "ok"}
    assert broker.request("GET", "/healthz").status == 404  # not on the API's port
    assert broker.request("GET", "/v2/nothing").status == 404
    wrong = broker.request("GET", JIT)
    assert wrong.status == 405 and "POST" in wrong.body["error"] and wrong.headers["allow"] == "POST"
    assert broker.request("PUT", FINISHED).status == 405
    assert broker.request("POST", "/v1/gpu-runners/4242/1").status == 405
    assert broker.request("POST", "/healthz", port=broker.health_port).status == 405
    assert not setup.github.requests


def test_a_base_runner_gets_the_name_and_labels_of_its_pod_whatever_it_asks(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()

    answer = broker.jitconfig(runner_pod, body={"name": "gpu-runner-1-1", "labels": ["gpu-runner-1", "big"]})

    assert answer.status == 201, answer.raw
    assert answer.body["name"] == runner_pod.name and answer.body["labels"] == ["base-runner"]
    assert answer.body["encodedJitConfig"] == setup.runners.jit_configs[-1]
    assert answer.headers["cache-control"] == "no-store"
    assert [r.path for r in setup.github.requests] == [GENERATE]  # one GitHub call for a grant
    generate = setup.github.requests[0]
    assert json.loads(generate.body) == {
        "name": runner_pod.name,
        "runner_group_id": 1,
        "labels": ["base-runner"],
        "work_folder": "_work",
    }
    headers = generate.headers
    assert headers["authorization"] == "Bearer ghp_FAKE-broker-pat-0001"
    assert headers["accept"] == "application/vnd.github+json" and headers["x-github-api-version"] == "2022-11-28"
    review_request = setup.kube.requests_to("POST", TOKEN_REVIEWS)[0].json()
    assert review_request["spec"] == {"token": runner_pod.token, "audiences": [AUDIENCE]}
    assert all(
        r.headers["authorization"] == f"Bearer {setup.kube_token_file.read_text().strip()}" for r in setup.kube.requests
    )
    line = broker.wait_for_log("jitconfig", "decision=granted")
    assert f"pod={runner_pod.name}" in line and f"namespace={NAMESPACE}" in line and f"runner={runner_pod.name}" in line


def test_the_grant_is_recorded_on_the_pod_before_the_config_leaves(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    before = time.time()

    assert broker.jitconfig(runner_pod).status == 201

    (patch,) = setup.kube.requests_to("PATCH", pod_path(runner_pod.name))
    assert patch.headers["content-type"] == "application/merge-patch+json"
    assert patch.json()["metadata"]["uid"] == runner_pod.uid  # a precondition: this pod, not a namesake
    annotations = setup.cluster.annotations(runner_pod)
    assert annotations[RUNNER_ANNOTATION] == runner_pod.name
    granted = time.mktime(time.strptime(annotations[GRANTED_AT_ANNOTATION], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 1 <= granted <= time.time() + 1
    (generate,) = setup.github.requests_to(GENERATE)
    assert generate.wall <= patch.wall  # GitHub first: a GitHub failure leaves the pod free to ask again


def test_a_gpu_runner_is_named_after_its_job_and_labelled_for_its_run(broker, setup):
    runner_pod = setup.cluster.gpu_runner_pod(run_id="98765", attempt=2, index=1)

    answer = broker.jitconfig(runner_pod, body={"name": "base-runner-x", "labels": ["base-runner"]})

    assert answer.status == 201, answer.raw
    assert answer.body["name"] == "gpu-runner-98765-2-1" and answer.body["labels"] == ["gpu-runner-98765"]
    assert json.loads(setup.github.requests_to(GENERATE)[0].body)["labels"] == ["gpu-runner-98765"]
    assert setup.cluster.annotations(runner_pod)[RUNNER_ANNOTATION] == "gpu-runner-98765-2-1"


def refusal_cases():
    """name -> (build(cluster) -> token or None, status, reason fragment)."""

    def other_rs(cluster):
        cluster.kube.put(replicaset("ci-tools-7c9", NAMESPACE, "uid-rs-ci", deployment="ci-tools"))
        return cluster.pod_owned_by(("ReplicaSet", "ci-tools-7c9", "uid-rs-ci"), name_prefix="ci-tools-7c9").token

    def uid_mismatch(cluster):
        runner_pod = cluster.base_runner_pod()
        cluster.replace_pod(runner_pod, "uid-pod-new")
        # The API server's own binding check can lag (its informer cache); the broker checks anyway.
        cluster.kube.validate_bindings = False
        return runner_pod.token

    def other_namespace(cluster):
        return cluster.pod_owned_by(
            ("ReplicaSet", "base-runner-5d8f7c9b4", "uid-rs-base"),
            namespace="default",
            name_prefix="base-runner-5d8f7c9b4",
        ).token

    gpu = {"app.kubernetes.io/name": "gpu-runner", "gke-gpu-runners/run-id": "4242", "gke-gpu-runners/run-attempt": "1"}
    return {
        "no token": (lambda _c: None, 401, "no bearer token"),
        "invalid token": (lambda _c: "FAKE-made-up-token", 401, "invalid"),
        "wrong audience": (
            lambda c: c.base_runner_pod(audiences=("https://kubernetes.default.svc",)).token,
            401,
            "invalid, expired or not for this audience",
        ),
        "not pod-bound": (lambda c: c.base_runner_pod(pod_bound=False).token, 401, "not bound to a pod"),
        "other namespace": (other_namespace, 403, "not in the runner namespace"),
        "other service account": (
            lambda c: c.base_runner_pod(service_account="default").token,
            403,
            "runs as ServiceAccount default, not github-runner",
        ),
        "bare pod": (lambda c: c.pod_owned_by(None).token, 403, "no controller"),
        "replicaset of another deployment": (other_rs, 403, "not Deployment base-runner"),
        "job without gpu-runner label": (
            lambda c: c.gpu_runner_pod(labels={k: v for k, v in gpu.items() if "name" not in k}).token,
            403,
            "not labelled",
        ),
        "job with non-numeric run id": (
            lambda c: c.gpu_runner_pod(labels={**gpu, "gke-gpu-runners/run-id": "abc"}).token,
            403,
            "no numeric",
        ),
        "uid mismatch": (uid_mismatch, 403, "not the token's"),
        "pod succeeded": (lambda c: c.base_runner_pod(phase="Succeeded").token, 403, "has ended (phase Succeeded)"),
        "pod failed": (lambda c: c.gpu_runner_pod(phase="Failed").token, 403, "has ended (phase Failed)"),
        "terminating pod": (lambda c: c.base_runner_pod(terminating=True).token, 403, "terminating"),
    }


REFUSALS = refusal_cases()
ALLOWED_TO_FINISH = {"terminating pod"}  # SIGTERM: a pod being stopped still says its runner has ended


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_logged_with_their_reason_and_never_reach_github(broker, setup, case):
    """And /v1/finished refuses what /v1/jitconfig refuses, but for a terminating pod."""
    build, status, reason = REFUSALS[case]
    token = build(setup.cluster)

    answer = broker.request("POST", JIT, token)

    assert answer.status == status, answer.raw
    assert reason in answer.body["error"]
    assert broker.wait_for_log("jitconfig", "decision=refused", f"status={status}", reason)
    assert setup.github.requests == [] and setup.kube.requests_to("PATCH") == []
    if case in ALLOWED_TO_FINISH:
        return
    finished = broker.request("POST", FINISHED, token)
    assert (finished.status, reason in finished.body["error"]) == (status, True), finished.raw
    assert setup.github.requests == [] and setup.kube.requests_to("DELETE") == []


def test_attack_a_job_labelled_for_another_run_not_from_the_template_gets_no_runner(broker, setup):
    """The attack: CI made Job gpu-runner-<victim run>-99 with any image; the broker handed it the victim's label.
    Now only a Job with the template's image is a GPU runner (and only the broker may create Jobs)."""
    victim_run = "5555"
    attacker = setup.cluster.gpu_runner_pod(run_id=victim_run, attempt=99, image="ghcr.io/attacker/anything:latest")

    answer = broker.jitconfig(attacker)

    assert answer.status == 403, answer.raw
    assert "the broker did not make it" in answer.body["error"]
    assert setup.runners.jit_configs == [] and setup.github.requests == []
    genuine = setup.cluster.gpu_runner_pod(run_id=victim_run, attempt=1)
    assert broker.jitconfig(genuine).body["labels"] == [f"gpu-runner-{victim_run}"]


# ----------------------------------------------------------------- one runner a pod --


def test_attack_broker_restart_a_pod_granted_before_gets_409_from_any_broker(setup):
    """The attack: the one-grant record lived in the broker's memory, so after a restart a frozen pod got a new
    runner and took later jobs. Now the grant is on the pod: a new broker refuses it and deletes it."""
    first = setup.start_in_process()
    runner_pod = setup.cluster.base_runner_pod()
    assert first.jitconfig(runner_pod).status == 201
    first.stop()
    setup.runners.remove(runner_pod.name)  # its job is done; the pod's entrypoint froze before saying so
    second = setup.start_in_process()

    answer = second.jitconfig(runner_pod)

    assert answer.status == 409 and "recorded on the pod" in answer.body["error"], answer.raw
    assert "deleted it, so that its ReplicaSet starts a fresh one" in answer.body["error"]
    assert len(setup.runners.jit_configs) == 1
    assert setup.cluster.stored(runner_pod) is None


def test_a_pod_whose_runner_connected_gets_no_second_one(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.set_state(runner_pod.name, status="online")
    calls = len(setup.github.requests)

    again = broker.jitconfig(runner_pod)

    assert again.status == 409 and "already had its runner" in again.body["error"], again.raw
    assert len(setup.runners.jit_configs) == 1 and len(setup.github.requests) == calls  # no GitHub call
    broker.wait_for_log("decision=refused", "status=409", f"pod={runner_pod.name}")


@pytest.mark.parametrize("state", [{"status": "online", "busy": True}, {"status": "offline", "busy": True}])
def test_a_gpu_pod_asking_again_is_refused_and_kept(broker, setup, state):
    runner_pod = setup.cluster.gpu_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.set_state("gpu-runner-4242-1", **state)

    assert broker.jitconfig(runner_pod).status == 409
    assert len(setup.runners.jit_configs) == 1 and setup.runners.runner("gpu-runner-4242-1")["busy"]
    assert setup.kube.requests_to("DELETE") == []


def test_a_pod_that_lost_the_answer_to_its_grant_is_refused_and_replaced(broker, setup):
    """The grant is on the pod: a second answer is never given, even to the pod that missed the first.
    A base pod is deleted, so its ReplicaSet makes a fresh one that asks anew."""
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201  # the answer never reached startup.sh

    again = broker.jitconfig(runner_pod)

    assert again.status == 409 and "deleted it" in again.body["error"]
    assert setup.cluster.stored(runner_pod) is None and len(setup.runners.jit_configs) == 1


def test_a_runner_registered_but_never_handed_out_is_replaced(setup):
    """A broker stopped between GitHub's answer and the PATCH: the runner is registered, the pod unmarked."""
    broker = setup.start_in_process(BROKER_GITHUB_TIMEOUT_SECONDS="0.3")
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.lost_answers = 1  # registered, but the answer comes after the broker's timeout
    setup.runners.lost_answer_delay = 2

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 201, answer.raw
    assert answer.body["encodedJitConfig"] == setup.runners.jit_configs[-1]
    assert len(setup.runners.jit_configs) == 2 and setup.runners.names() == {runner_pod.name}
    broker.wait_for_log("decision=replaced", runner_pod.name)


def test_an_unanswered_attempt_never_replaces_a_runner_that_is_online(setup):
    broker = setup.start_in_process(BROKER_GITHUB_TIMEOUT_SECONDS="0.3")
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.lost_answers = 1
    setup.runners.lost_answer_delay = 1

    def connect_while_the_broker_waits():
        wait_until(lambda: setup.github.requests_to(GENERATE), "the first generate")
        setup.runners.set_state(runner_pod.name, status="online")

    connecting = threading.Thread(target=connect_while_the_broker_waits)
    connecting.start()
    answer = broker.jitconfig(runner_pod)
    connecting.join()

    assert answer.status == 409 and "online" in answer.body["error"], answer.raw
    assert setup.runners.runner(runner_pod.name)["status"] == "online"
    assert not [r for r in setup.github.requests if r.method == "DELETE"]


def test_a_runner_already_registered_and_online_under_the_pods_name_is_not_made_twice(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.add(runner_pod.name, ["base-runner"], status="online")

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 409 and "already has a runner named" in answer.body["error"]
    assert setup.runners.jit_configs == [] and setup.cluster.annotations(runner_pod) == {}


def test_twenty_requests_at_once_from_one_pod_yield_one_runner(setup):
    broker = setup.start_in_process(BROKER_MAX_CONNECTIONS_PER_CLIENT="32")  # all from 127.0.0.1 here
    runner_pod = setup.cluster.gpu_runner_pod()  # a GPU pod is kept when refused, so all twenty reach the broker
    setup.runners.generate_delay = 0.2  # so that the others arrive while the first is being served
    barrier = threading.Barrier(20)

    def ask(_):
        barrier.wait()
        return broker.jitconfig(runner_pod).status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(ask, range(20)))

    assert sorted(statuses) == [201] + [409] * 19
    assert len(setup.github.requests_to(GENERATE)) == 1 and len(setup.runners.jit_configs) == 1


def test_two_pods_of_one_job_at_once_yield_one_runner(broker, setup):
    job = setup.cluster.gpu_job()
    pods = [setup.cluster.pod_for_job(job), setup.cluster.pod_for_job(job)]
    setup.github.script(GENERATE, Reply(502))  # the first attempt unanswered: the retry must not take the other's
    setup.runners.generate_delay = 0.2
    barrier = threading.Barrier(2)

    def ask(runner_pod):
        barrier.wait()
        return broker.jitconfig(runner_pod)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(ask, pods))

    assert sorted(a.status for a in answers) == [201, 409], [a.raw for a in answers]
    (granted,) = [a for a in answers if a.status == 201]
    assert setup.runners.jit_configs == [granted.body["encodedJitConfig"]]
    assert "of the same Job" in next(a for a in answers if a.status == 409).body["error"]


def test_different_pods_are_served_at_the_same_time(broker, setup):
    pods = [setup.cluster.base_runner_pod() for _ in range(4)]
    setup.runners.generate_delay = 0.5
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda p: broker.jitconfig(p).status, pods))

    assert statuses == [201] * 4
    assert time.monotonic() - started < 1.5  # one after another would take 2 s


@pytest.mark.parametrize("restarts", [1, 4])
def test_a_base_pod_whose_container_restarted_is_refused_and_deleted(broker, setup, restarts):
    """startup.sh asks once per container start: a restarted container's pod has had its runner."""
    runner_pod = setup.cluster.base_runner_pod(restarts=restarts)

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 409 and "restarted" in answer.body["error"], answer.raw
    assert [d.json() for d in setup.kube.requests_to("DELETE")] == [{"preconditions": {"uid": runner_pod.uid}}]
    assert setup.cluster.stored(runner_pod) is None and setup.github.requests == []


def test_a_gpu_pod_whose_container_restarted_is_refused_and_kept(broker, setup):
    runner_pod = setup.cluster.gpu_runner_pod(restarts=1)

    assert broker.jitconfig(runner_pod).status == 409
    assert setup.kube.requests_to("DELETE") == [] and setup.github.requests == []


# --------------------------------------------------------- recording the grant fails --


def test_no_config_leaves_unless_the_grant_is_recorded(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.fail(pod_path(runner_pod.name), method="PATCH", status=500, times=3)

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503 and "no runner was handed out" in answer.body["error"], answer.raw
    assert setup.runners.names() == set()  # the runner GitHub made for it is withdrawn
    assert broker.jitconfig(runner_pod).status == 201  # and the pod may ask again
    assert setup.cluster.annotations(runner_pod)[RUNNER_ANNOTATION] == runner_pod.name


def test_a_patch_refused_for_another_reason_than_the_pods_uid_is_a_failure_not_a_replaced_pod(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.fail(pod_path(runner_pod.name), method="PATCH", status=422)

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503 and "no runner was handed out" in answer.body["error"], answer.raw
    assert "HTTP 422" in answer.body["error"]
    assert setup.runners.names() == set()
    assert broker.jitconfig(runner_pod).status == 201  # the pod may ask again


def test_a_pod_replaced_before_its_grant_is_recorded_gets_nothing(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.validate_bindings = False
    setup.github.script(GENERATE, Reply(502, action=lambda: setup.cluster.replace_pod(runner_pod, "uid-new")))

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 403 and "gone or replaced" in answer.body["error"], answer.raw
    assert setup.runners.names() == set() and setup.cluster.annotations(runner_pod) == {}


# ------------------------------------------------------------------- GitHub failures --


@pytest.mark.parametrize("reply", [Reply(500), Reply(502), Reply(503), Reply(429)], ids=["500", "502", "503", "429"])
def test_github_unavailable_is_retried_then_503(broker, setup, reply):
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, reply, reply, reply)

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503 and "GitHub did not answer" in answer.body["error"]
    assert len(setup.github.requests_to(GENERATE)) == 3  # BROKER_GITHUB_RETRIES=2
    assert setup.cluster.annotations(runner_pod) == {}  # nothing recorded: the pod asks again
    assert broker.jitconfig(runner_pod).status == 201


def test_a_request_ends_by_its_deadline_whatever_github_does(setup):
    """startup.sh gives up after 15 s: the broker answers before, so the pod's retry is a fresh request."""
    broker = setup.start_in_process(BROKER_REQUEST_DEADLINE_SECONDS="0.5")
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, *[Reply(201, {}, delay=5)] * 3)
    started = time.monotonic()

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503 and "deadline" in answer.body["error"], answer.raw
    assert time.monotonic() - started < 1.2


RATE_LIMITED = {
    "403 no requests left": Reply(
        403,
        {"message": "API rate limit exceeded"},
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(time.time()) + 3000)},
    ),
    "403 secondary limit": Reply(403, {"message": "secondary rate limit"}, headers={"Retry-After": "60"}),
    "429 retry after": Reply(429, headers={"Retry-After": "30"}),
}


@pytest.mark.parametrize("case", list(RATE_LIMITED))
def test_a_rate_limit_past_the_deadline_is_a_503_saying_how_long(broker, setup, case):
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, RATE_LIMITED[case])

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503, answer.raw
    assert "as asked would pass the request's deadline" in answer.body["error"]
    assert len(setup.github.requests_to(GENERATE)) == 1


@pytest.mark.parametrize(
    "status, words",
    [
        (401, "the runner credential, the PAT in GITHUB_TOKEN_FILE, is invalid, expired or revoked"),
        (
            403,
            "lacks Administration: read and write (classic PAT: repo scope; App: administration write) "
            f"on {REPOSITORY}",
        ),
        (404, f"{REPOSITORY} does not exist or the credential, the PAT in GITHUB_TOKEN_FILE, cannot see it"),
    ],
)
def test_github_refusals_are_502_naming_the_credential_and_not_retried(broker, setup, status, words):
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, Reply(status, {"message": "Bad credentials"}))

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 502 and words in answer.body["error"], answer.raw
    assert len(setup.github.requests) == 1
    broker.wait_for_log("decision=failed", "GitHub refused")


def test_a_rotated_pat_is_used_from_the_next_request(broker, setup):
    assert broker.jitconfig(setup.cluster.base_runner_pod()).status == 201
    setup.pat_file.write_text(ROTATED_PAT + "\n")
    setup.runners.accepted_tokens = {ROTATED_PAT}
    before = len(setup.github.requests)

    assert broker.jitconfig(setup.cluster.base_runner_pod()).status == 201
    assert {r.headers["authorization"] for r in setup.github.requests[before:]} == {f"Bearer {ROTATED_PAT}"}


# --------------------------------------------------------------- Kubernetes failures --


def test_kubernetes_errors_are_retried_then_503(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.fail(TOKEN_REVIEWS, status=500, times=3)

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503 and "Kubernetes API" in answer.body["error"]
    assert len(setup.kube.requests_to("POST", TOKEN_REVIEWS)) == 3 and setup.github.requests == []
    assert broker.jitconfig(runner_pod).status == 201  # the fault has passed


def test_a_hung_kubernetes_api_is_a_503(setup):
    broker = setup.start_in_process(BROKER_KUBERNETES_TIMEOUT_SECONDS="0.2")
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.hang("/api/v1/namespaces", seconds=3, times=3)

    answer = broker.jitconfig(runner_pod)

    assert answer.status == 503 and "did not answer reading pod" in answer.body["error"]
    assert setup.github.requests == []


def test_the_brokers_own_kubernetes_refusal_is_a_503_saying_so(broker, setup):
    setup.kube.fail(TOKEN_REVIEWS, status=403)

    answer = broker.jitconfig(setup.cluster.base_runner_pod())

    assert answer.status == 503 and "Role lacks the permission" in answer.body["error"]


# ------------------------------------------------------------------------- finished --


def test_finished_base_runner_is_removed_and_its_pod_deleted(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201

    answer = broker.finished(runner_pod)

    assert answer.status == 200, answer.raw
    assert answer.body == {"name": runner_pod.name, "runnerRemoved": True, "podDeleted": True}
    assert setup.runners.names() == set()
    (delete,) = setup.kube.requests_to("DELETE")
    assert delete.path == pod_path(runner_pod.name) and delete.json() == {"preconditions": {"uid": runner_pod.uid}}
    assert setup.cluster.stored(runner_pod) is None
    broker.wait_for_log("finished", f"pod={runner_pod.name}", "runner_removed=True", "pod_deleted=True")


def test_finished_gpu_runner_is_removed_and_its_pod_kept(broker, setup):
    runner_pod = setup.cluster.gpu_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    for number in range(150):
        setup.runners.add(f"someone-else-{number}", ["other"])
    before = len(setup.github.requests)

    answer = broker.finished(runner_pod)

    assert answer.body == {"name": "gpu-runner-4242-1", "runnerRemoved": True, "podDeleted": False}
    assert [(r.method, r.query) for r in setup.github.requests[before:]][0] == ("GET", "name=gpu-runner-4242-1")
    assert setup.runners.names() == {f"someone-else-{n}" for n in range(150)}
    assert setup.kube.requests_to("DELETE") == []
    assert broker.jitconfig(runner_pod).status == 409


def test_finished_in_a_loop_while_the_runner_is_busy_asks_github_once(broker, setup):
    """A job step can call /v1/finished with the pod's token: it must not spend the credential's rate limit."""
    runner_pod = setup.cluster.gpu_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.runners.set_state("gpu-runner-4242-1", status="online", busy=True)
    before = len(setup.github.requests)

    answers = [broker.finished(runner_pod) for _ in range(5)]

    assert {(a.status, a.body["runnerRemoved"]) for a in answers} == {(200, False)}
    assert [r.method for r in setup.github.requests[before:]] == ["GET"]  # no DELETE GitHub would refuse (422)
    broker.wait_for_log("finished", "decision=left", "runner=gpu-runner-4242-1")


def test_finished_deletes_a_base_pod_even_when_github_is_down(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.github.script(RUNNERS, *[Reply(503)] * 3)

    answer = broker.finished(runner_pod)

    assert answer.status == 503 and "the sweep removes its runner" in answer.body["error"]
    assert setup.cluster.stored(runner_pod) is None
    assert setup.runners.names() == {runner_pod.name}  # until the sweep (or the final one at teardown)


def test_a_terminating_pod_may_say_it_has_finished(broker, setup):
    runner_pod = setup.cluster.base_runner_pod()
    assert broker.jitconfig(runner_pod).status == 201
    setup.cluster.stored(runner_pod)["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"  # SIGTERM

    answer = broker.finished(runner_pod)

    assert answer.body == {"name": runner_pod.name, "runnerRemoved": True, "podDeleted": False}
    assert setup.kube.requests_to("DELETE") == []


def test_setups_are_independent(make_setup):
    """Two setups at once (as a restart test needs) share nothing but the broker's code."""
    one, two = make_setup(), make_setup()
    assert isinstance(one, BrokerSetup) and one.kube.url != two.kube.url and one.github.url != two.github.url


def test_a_request_waiting_behind_another_for_its_runner_name_gives_up_at_its_deadline():
    from runner_broker.errors import Failure
    from runner_broker.grants import NameLocks
    from runner_broker.http import deadline_at

    locks, held, release = NameLocks(), threading.Event(), threading.Event()

    def first():
        with locks.hold("base-runner-x"):
            held.set()
            release.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    held.wait(5)
    started = time.monotonic()
    with deadline_at(time.monotonic() + 0.2), pytest.raises(Failure, match="ask again"), locks.hold("base-runner-x"):
        pass
    assert 0.15 < time.monotonic() - started < 1
    with locks.hold("another-name") as waited:  # other names never wait
        assert waited is False
    release.set()
    holder.join()
    assert len(locks) == 0
