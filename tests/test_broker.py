"""The runner broker (runner_image/broker.py): its pure decisions in-process, and the
whole service as a real process against fakes of the Kubernetes and GitHub APIs.

Every process test ends in `BrokerSetup.check_no_leaks`: no credential or pod token in
the broker's output, argv or environment, and JIT configs only in 201 answers.
"""

from __future__ import annotations

import base64
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker_harness import (APP_ID, AUDIENCE, BASE_DEPLOYMENT, BROKER, INSTALLATION_ID, NAMESPACE, PAT, REPOSITORY,
                            ROTATED_PAT, RUNNER_ACCOUNT, BrokerSetup, load_broker_module, wait_until)
from fake_github import Reply
from fake_kubernetes import TOKEN_REVIEWS, job, pod, replicaset
from github_runners import access_tokens_path, runners_api

broker = load_broker_module()

RUNNERS = runners_api(REPOSITORY)
GENERATE = runners_api(REPOSITORY, "/generate-jitconfig")
JIT = "/v1/jitconfig"
FINISHED = "/v1/finished"
STARTUP_SH_TIMEOUT_SECONDS = 15  # runner_image/startup.sh: RUNNER_BROKER_TIMEOUT_SECONDS' default


@pytest.fixture
def make_setup(tmp_path):
    setups: list[BrokerSetup] = []

    def make(**options) -> BrokerSetup:
        setup = BrokerSetup(tmp_path / f"setup-{len(setups)}", **options)
        setups.append(setup)
        return setup

    yield make
    for setup in setups:
        setup.close()
        setup.check_no_leaks()


@pytest.fixture
def setup(make_setup) -> BrokerSetup:
    return make_setup()


# ===================================================================== pure decisions ==

def review(namespace=NAMESPACE, pod_name="base-runner-abc-p1", pod_uid="uid-1", audiences=(AUDIENCE,),
           authenticated=True, username=None, extra=None) -> dict:
    claims = {"authentication.kubernetes.io/pod-name": [pod_name], "authentication.kubernetes.io/pod-uid": [pod_uid]}
    return {"authenticated": authenticated, "audiences": list(audiences),
            "user": {"username": username or f"system:serviceaccount:{namespace}:{RUNNER_ACCOUNT}",
                     "extra": claims if extra is None else extra}}


@pytest.mark.parametrize("status, expected", [
    (review(), broker.PodIdentity(NAMESPACE, RUNNER_ACCOUNT, "base-runner-abc-p1", "uid-1")),
    (review(namespace="other"), broker.PodIdentity("other", RUNNER_ACCOUNT, "base-runner-abc-p1", "uid-1")),
    ({"authenticated": False, "error": "invalid bearer token"}, "invalid"),
    ({}, "invalid"),
    (review(audiences=("kubernetes.default.svc",)), f"not for audience {AUDIENCE}"),
    (review(audiences=()), "not for audience"),
    (review(username="alice@example.com"), "not a ServiceAccount"),
    (review(username="system:node:gke-node-1"), "not a ServiceAccount"),
    (review(extra={}), "not bound to a pod"),
    (review(extra={"authentication.kubernetes.io/pod-name": ["p"]}), "not bound to a pod"),
    (review(extra={"authentication.kubernetes.io/pod-name": [], "authentication.kubernetes.io/pod-uid": []}),
     "not bound to a pod"),
])
def test_identity_from_review(status, expected):
    if isinstance(expected, broker.PodIdentity):
        assert broker.identity_from_review(status, AUDIENCE) == expected
        return
    with pytest.raises(broker.Refusal) as refused:
        broker.identity_from_review(status, AUDIENCE)
    assert refused.value.status == 401 and expected in refused.value.reason


RS = "base-runner-5d8f7c9b4"
BASE_POD = "base-runner-5d8f7c9b4-x1"
GPU_JOB = "gpu-runner-4242-1"
GPU_LABELS = {"app.kubernetes.io/name": "gpu-runner", "gke-gpu-runners/run-id": "4242"}


def identity(name=BASE_POD, uid="uid-pod", namespace=NAMESPACE, service_account=RUNNER_ACCOUNT):
    return broker.PodIdentity(namespace, service_account, name, uid)


def base_pod(**options):
    return pod(BASE_POD, NAMESPACE, "uid-pod", owner=("ReplicaSet", RS, "uid-rs"), **options)


def gpu_pod(job_name=GPU_JOB, **options):
    return pod(f"{job_name}-abcde", NAMESPACE, "uid-pod", owner=("Job", job_name, "uid-job"), **options)


def base_rs(deployment=BASE_DEPLOYMENT, uid="uid-rs"):
    return replicaset(RS, NAMESPACE, uid, deployment=deployment)


def gpu_job(labels=GPU_LABELS, name=GPU_JOB, uid="uid-job"):
    return job(name, NAMESPACE, uid, labels=labels)


GPU_ID = identity(name=f"{GPU_JOB}-abcde")

DECISIONS = [
    # identity, pod, owner, expected (Grant, or (status, reason fragment))
    ("base runner", identity(), base_pod(), base_rs(), broker.Grant(BASE_POD, ("base-runner",), "base")),
    ("gpu runner", GPU_ID, gpu_pod(), gpu_job(), broker.Grant(GPU_JOB, ("gpu-runner-4242",), "gpu")),
    ("restarted container", identity(), base_pod(restarts=2), base_rs(),  # _issue's to refuse, not the decision's
     broker.Grant(BASE_POD, ("base-runner",), "base")),
    ("other namespace", identity(namespace="default"), base_pod(), base_rs(), (403, "not in the runner namespace")),
    ("other service account", identity(service_account="default"), base_pod(), base_rs(),
     (403, "runs as ServiceAccount default, not github-runner")),
    ("pod gone", identity(), None, None, (403, "does not exist")),
    ("uid differs", identity(uid="uid-older"), base_pod(), base_rs(), (403, "not the token's")),
    ("pod succeeded", identity(), base_pod(phase="Succeeded"), base_rs(), (403, "has ended (phase Succeeded)")),
    ("pod failed", GPU_ID, gpu_pod(phase="Failed"), gpu_job(), (403, "has ended (phase Failed)")),
    ("terminating", identity(), base_pod(terminating=True), base_rs(), (403, "terminating")),
    ("bare pod", identity(), pod(BASE_POD, NAMESPACE, "uid-pod"), None, (403, "no controller")),
    ("statefulset", identity(), pod(BASE_POD, NAMESPACE, "uid-pod", owner=("StatefulSet", "base-runner", "u")),
     None, (403, "StatefulSet")),
    ("replicaset gone", identity(), base_pod(), None, (403, "ReplicaSet base-runner-5d8f7c9b4 does not exist")),
    ("replicaset replaced", identity(), base_pod(), base_rs(uid="uid-rs-new"), (403, "replaced")),
    ("other deployment", identity(), base_pod(), base_rs(deployment="ci-tools"), (403, "Deployment ci-tools")),
    ("replicaset without deployment", identity(), base_pod(), base_rs(deployment=None), (403, "belongs to nothing")),
    ("base pod misnamed", identity(name="tutorial-x"), pod("tutorial-x", NAMESPACE, "uid-pod",
                                                            owner=("ReplicaSet", RS, "uid-rs")),
     base_rs(), (403, "not named base-runner-*")),
    ("job gone", GPU_ID, gpu_pod(), None, (403, "Job gpu-runner-4242-1 does not exist")),
    ("job replaced", GPU_ID, gpu_pod(), gpu_job(uid="uid-job-2"), (403, "replaced")),
    ("job not gpu-runner", GPU_ID, gpu_pod(), gpu_job(labels={"gke-gpu-runners/run-id": "4242"}),
     (403, "not labelled app.kubernetes.io/name=gpu-runner")),
    ("job run id missing", GPU_ID, gpu_pod(), gpu_job(labels={"app.kubernetes.io/name": "gpu-runner"}),
     (403, "no numeric")),
    ("job run id not numeric", GPU_ID, gpu_pod(),
     gpu_job(labels={**GPU_LABELS, "gke-gpu-runners/run-id": "4242; rm"}), (403, "no numeric")),
    ("job run id in other digits", GPU_ID, gpu_pod(),
     gpu_job(labels={**GPU_LABELS, "gke-gpu-runners/run-id": "٤٢٤٢"}), (403, "no numeric")),
    ("job run id with a newline", GPU_ID, gpu_pod(),
     gpu_job(labels={**GPU_LABELS, "gke-gpu-runners/run-id": "4242\n"}), (403, "no numeric")),
    ("job run id too long", GPU_ID, gpu_pod(), gpu_job(labels={**GPU_LABELS, "gke-gpu-runners/run-id": "1" * 21}),
     (403, "no numeric")),
    ("job named for another run", identity(name="gpu-runner-1-1-abcde"), gpu_pod("gpu-runner-1-1"),
     gpu_job(name="gpu-runner-1-1"), (403, "not gpu-runner-4242-<attempt>")),
]


def decide(who, pod_object, owner, allow_terminating=False):
    return broker.decide_runner(who, pod_object, owner, runner_namespace=NAMESPACE,
                                runner_service_account=RUNNER_ACCOUNT, base_runner_deployment=BASE_DEPLOYMENT,
                                allow_terminating=allow_terminating)


@pytest.mark.parametrize("who, pod_object, owner, expected", [d[1:] for d in DECISIONS], ids=[d[0] for d in DECISIONS])
def test_decide_runner(who, pod_object, owner, expected):
    if isinstance(expected, broker.Grant):
        assert decide(who, pod_object, owner) == expected
        return
    with pytest.raises(broker.Refusal) as refused:
        decide(who, pod_object, owner)
    assert (refused.value.status, expected[1] in refused.value.reason) == (expected[0], True), refused.value.reason


def test_decide_runner_lets_a_terminating_pod_say_it_has_finished():
    result = decide(identity(), base_pod(terminating=True), base_rs(), allow_terminating=True)
    assert result == broker.Grant(BASE_POD, ("base-runner",), "base")


@pytest.mark.parametrize("pod_object, restarts", [
    (base_pod(), 0), (base_pod(restarts=1), 1), (base_pod(restarts=3), 3),
    ({"status": {"containerStatuses": [{"restartCount": 1}, {"restartCount": "2"}, "x"]}}, 1),
    ({"status": {}}, 0), ({}, 0),
])
def test_container_restarts(pod_object, restarts):
    assert broker.container_restarts(pod_object) == restarts


def runner(name, *labels, runner_id=1):
    return broker.Runner(runner_id, name, frozenset(("self-hosted", "Linux", "X64", *labels)))


@pytest.mark.parametrize("candidate, ours", [
    (runner("base-runner-5d8f7c9b4-x1", "base-runner"), True),
    (runner("gpu-runner-4242-1", "gpu-runner-4242"), True),
    (runner("tutorial-runner", "base-runner"), False),          # the tutorial's own runner
    (runner("base-runner-5d8f7c9b4-x1"), False),                 # our name, not our label
    (runner("gpu-runner-4242-1", "gpu-runner-1"), False),        # label of another run
    (runner("gpu-runner-4242", "gpu-runner-4242"), False),       # no attempt
    (runner("gpu-runner-٤٢-1", "gpu-runner-٤٢"), False),         # digits of another script
    (runner("laptop", "gpu-runner-4242"), False),
])
def test_is_ours(candidate, ours):
    assert broker.is_ours(candidate, BASE_DEPLOYMENT) is ours


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
    assert broker.live_runner_names(pods) == {BASE_POD, GPU_JOB}
    assert [r.id for r in broker.runners_to_remove(runners, pods, BASE_DEPLOYMENT)] == [3, 4, 5, 6]


def test_backoff_doubles_and_is_capped_while_a_servers_wait_is_taken_as_asked():
    policy = broker.RetryPolicy(retries=4, timeout_seconds=1, backoff_seconds=1, backoff_max_seconds=10)
    assert [policy.backoff(n) for n in range(5)] == [1, 2, 4, 8, 10]

    def asked(status=429, **headers):
        return broker._asked_wait(broker.HttpAnswer(status, headers, b""))

    assert asked(**{"retry-after": "30"}) == 30 and asked(**{"retry-after": " 7 "}) == 7
    assert asked() is None and asked(**{"retry-after": "soon"}) is None
    assert asked(**{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None  # the HTTP-date form: not read
    reset = str(int(time.time()) + 120)
    assert 100 < asked(403, **{"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}) <= 120
    assert asked(403, **{"x-ratelimit-remaining": "5", "x-ratelimit-reset": reset}) is None


def test_secrets_never_print():
    token = broker.Secret("ghp_FAKE-never-printed")
    jit = broker.JitConfig(7, broker.Secret("FAKE-JIT-never-printed"))
    for text in (str(token), repr(token), f"{token}", repr(jit), str(jit), repr([token])):
        assert "never-printed" not in text
    with pytest.raises(TypeError):
        __import__("pickle").dumps(token)
    assert broker.bearer_token("Bearer abc").reveal() == "abc"
    assert broker.bearer_token("bearer  abc ").reveal() == "abc"
    assert broker.bearer_token("Basic abc") is None and broker.bearer_token(None) is None


def test_load_config_defaults(tmp_path):
    token, kube_token = tmp_path / "pat", tmp_path / "kube"
    token.write_text(PAT)
    kube_token.write_text("k")
    config = broker.load_config({
        "BROKER_REPOSITORY": REPOSITORY, "BROKER_RUNNER_NAMESPACE": NAMESPACE, "BROKER_AUDIENCE": AUDIENCE,
        "GITHUB_TOKEN_FILE": str(token), "KUBERNETES_TOKEN_FILE": str(kube_token),
        "KUBERNETES_API_URL": "http://127.0.0.1:1",
    })
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)
    assert config.base_runner_deployment == "base-runner" and config.sweep_seconds == 30
    assert config.runner_service_account == "github-runner"  # components/runner_manifests.py's RUNNER_ACCOUNT
    assert config.request_deadline_seconds == 12 < STARTUP_SH_TIMEOUT_SECONDS
    assert config.max_connections == 64
    assert config.github_api_url == "https://api.github.com"
    assert config.github_retry == broker.RetryPolicy(4, 10, 1, 10)
    assert config.credential == broker.PatCredential(token)


@pytest.mark.parametrize("url, accepted", [
    ("https://api.github.com", True), ("https://github.example.com:8443/api/v3", True),
    ("http://127.0.0.1:8080", True), ("http://127.8.0.1", True), ("http://[::1]:9", True),
    ("http://localhost:9", True), ("http://LOCALHOST", True),
    ("http://api.github.com", False), ("http://10.0.0.1", False), ("http://localhost.example.com", False),
    ("http://[::ffff:10.0.0.1]", False), ("http://127.0.0.1:port", False), ("ftp://127.0.0.1", False),
    ("https://api.github.com/?x=1", False),
])
def test_plain_http_only_to_a_loopback_host(url, accepted):
    env = broker._Environment({"GITHUB_API_URL": url})
    env.url("GITHUB_API_URL", "https://api.github.com")
    assert (env.problems == []) is accepted, env.problems


def test_in_cluster_api_url():
    env = broker._Environment({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"})
    assert broker._in_cluster_api_url(env) == "https://10.0.0.1:443"
    env = broker._Environment({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"})
    assert broker._in_cluster_api_url(env) == "https://[fd00::1]:443"
    assert broker._in_cluster_api_url(broker._Environment({})) == "https://kubernetes.default.svc"


def test_app_installation_token_is_renewed_shortly_before_it_expires(make_setup):
    app = make_setup(app=True)  # the fake's installation tokens last an hour
    now = [time.time()]
    client = broker.GitHubClient(broker.load_config(app.env()), clock=lambda: now[0])

    client.find_runner("x")
    client.find_runner("x")
    now[0] += 3600 - broker.APP_TOKEN_MARGIN_SECONDS - 5
    client.find_runner("x")
    assert len(app.runners.installation_tokens) == 1

    now[0] += 10  # now within the margin
    client.find_runner("x")

    assert len(app.runners.installation_tokens) == 2
    last_call = app.github.requests_to(RUNNERS)[-1]
    assert last_call.headers["authorization"] == f"Bearer {app.runners.installation_tokens[1]}"


# ============================================================= configuration errors ==

def run_with(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BROKER)], env=env, capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("changes, named", [
    ({"BROKER_REPOSITORY": None, "BROKER_RUNNER_NAMESPACE": None, "BROKER_AUDIENCE": None},
     ["BROKER_REPOSITORY", "BROKER_RUNNER_NAMESPACE", "BROKER_AUDIENCE"]),
    ({"BROKER_REPOSITORY": "just-a-name", "BROKER_LISTEN": "8080", "BROKER_SWEEP_SECONDS": "0",
      "BROKER_GITHUB_RETRIES": "-1", "GITHUB_API_URL": "ftp://example.com", "BROKER_REQUEST_DEADLINE_SECONDS": "0",
      "BROKER_MAX_CONNECTIONS": "0", "BROKER_RUNNER_SERVICE_ACCOUNT": "Not_An_Account"},
     ["BROKER_REPOSITORY", "BROKER_LISTEN", "BROKER_SWEEP_SECONDS", "BROKER_GITHUB_RETRIES", "GITHUB_API_URL",
      "BROKER_REQUEST_DEADLINE_SECONDS", "BROKER_MAX_CONNECTIONS", "BROKER_RUNNER_SERVICE_ACCOUNT"]),
    ({"GITHUB_API_URL": "http://api.github.com", "KUBERNETES_API_URL": "http://10.0.0.1:6443"},
     ["GITHUB_API_URL", "KUBERNETES_API_URL"]),
    ({"GITHUB_TOKEN_FILE": None}, ["GITHUB_TOKEN_FILE", "GITHUB_APP_ID"]),
    ({"GITHUB_TOKEN_FILE": None, "GITHUB_APP_ID": APP_ID},
     ["GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY_FILE"]),
    ({"GITHUB_APP_ID": APP_ID, "GITHUB_APP_INSTALLATION_ID": INSTALLATION_ID}, ["GITHUB_TOKEN_FILE", "GITHUB_APP_ID"]),
    ({"GITHUB_TOKEN_FILE": "/nonexistent/pat", "KUBERNETES_TOKEN_FILE": "/nonexistent/token"},
     ["GITHUB_TOKEN_FILE", "KUBERNETES_TOKEN_FILE"]),
    ({"KUBERNETES_API_URL": "https://10.0.0.1", "KUBERNETES_CA_FILE": "/nonexistent/ca.crt"}, ["KUBERNETES_CA_FILE"]),
    ({"GITHUB_TOKEN_FILE": PAT}, ["GITHUB_TOKEN_FILE"]),  # the PAT pasted where its file belongs: never echoed
], ids=["required", "malformed", "plain http elsewhere", "no credential", "partial app", "pat and app",
        "unreadable files", "no ca", "pat instead of file"])
def test_configuration_errors_name_every_variable_and_exit_2(setup, changes, named):
    result = run_with(setup.env(**changes))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    for variable in named:
        assert any(variable in line for line in lines), (variable, result.stderr)
    assert len(lines) >= len([n for n in named if n.startswith("BROKER_")])
    assert PAT not in result.stdout + result.stderr


def test_a_token_file_of_several_lines_is_a_configuration_error(setup):
    setup.pat_file.write_text(f"{PAT}\nsecond line\n")
    result = run_with(setup.env())
    assert result.returncode == 2
    assert "GITHUB_TOKEN_FILE" in result.stderr and "single-line token" in result.stderr
    assert PAT not in result.stderr


def test_app_key_that_is_not_a_key_is_a_configuration_error(make_setup):
    app = make_setup(app=True)
    app.key_file.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    result = run_with(app.env())
    assert result.returncode == 2
    assert "GITHUB_APP_PRIVATE_KEY_FILE" in result.stderr and "not a key" not in result.stderr


# ======================================================================== the service ==

def test_health_unknown_paths_and_methods(setup):
    process = setup.start()
    assert (process.request("GET", "/healthz").status, process.answers[-1].body) == (200, {"status": "ok"})
    assert process.request("GET", "/v2/nothing").status == 404
    wrong = process.request("GET", JIT)
    assert wrong.status == 405 and "POST" in wrong.body["error"]
    assert process.request("PUT", FINISHED).status == 405
    assert not setup.github.requests


def test_base_runner_gets_the_name_and_labels_of_its_pod_whatever_it_asks(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()

    answer = process.jitconfig(runner_pod, body={"name": "gpu-runner-1-1", "labels": ["gpu-runner-1", "big"]})

    assert answer.status == 201, answer.raw
    assert answer.body["name"] == runner_pod.name and answer.body["labels"] == ["base-runner"]
    assert answer.body["encodedJitConfig"] == setup.runners.jit_configs[-1]
    assert [r.path for r in setup.github.requests] == [GENERATE]  # one GitHub call for a grant
    generate = setup.github.requests[0]
    assert json.loads(generate.body) == {"name": runner_pod.name, "runner_group_id": 1, "labels": ["base-runner"],
                                         "work_folder": "_work"}
    headers = generate.headers
    assert headers["authorization"] == f"Bearer {PAT}"
    assert headers["accept"] == "application/vnd.github+json" and headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"]
    assert setup.runners.names() == {runner_pod.name}
    review_request = setup.kube.requests_to("POST", TOKEN_REVIEWS)[0].json()
    assert review_request["spec"] == {"token": runner_pod.token, "audiences": [AUDIENCE]}
    assert all(r.headers["authorization"] == f"Bearer {setup.kube_token_file.read_text().strip()}"
               for r in setup.kube.requests)
    line = process.wait_for_log("jitconfig", "decision=granted")
    assert f"pod={runner_pod.name}" in line and f"namespace={NAMESPACE}" in line and f"runner={runner_pod.name}" in line


def test_gpu_runner_is_named_after_its_job_and_labelled_for_its_run(setup):
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod(run_id="98765", attempt=2)

    answer = process.jitconfig(runner_pod, body={"name": "base-runner-x", "labels": ["base-runner"]})

    assert answer.status == 201, answer.raw
    assert answer.body["name"] == "gpu-runner-98765-2" and answer.body["labels"] == ["gpu-runner-98765"]
    assert json.loads(setup.github.requests_to(GENERATE)[0].body)["labels"] == ["gpu-runner-98765"]


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
        return cluster.pod_owned_by(("ReplicaSet", "base-runner-5d8f7c9b4", "uid-rs-base"), namespace="default",
                                    name_prefix="base-runner-5d8f7c9b4").token

    return {
        "no token": (lambda c: None, 401, "no bearer token"),
        "invalid token": (lambda c: "FAKE-made-up-token", 401, "invalid"),
        "wrong audience": (lambda c: c.base_runner_pod(audiences=("https://kubernetes.default.svc",)).token, 401,
                           "invalid, expired or not for this audience"),
        "not pod-bound": (lambda c: c.base_runner_pod(pod_bound=False).token, 401, "not bound to a pod"),
        "other namespace": (other_namespace, 403, "not in the runner namespace"),
        "other service account": (lambda c: c.base_runner_pod(service_account="default").token, 403,
                                  "runs as ServiceAccount default, not github-runner"),
        "bare pod": (lambda c: c.pod_owned_by(None).token, 403, "no controller"),
        "replicaset of another deployment": (other_rs, 403, "not Deployment base-runner"),
        "job without gpu-runner label": (
            lambda c: c.gpu_runner_pod(labels={"gke-gpu-runners/run-id": "4242"}).token, 403, "not labelled"),
        "job with non-numeric run id": (
            lambda c: c.gpu_runner_pod(labels={"app.kubernetes.io/name": "gpu-runner",
                                               "gke-gpu-runners/run-id": "abc"}).token, 403, "no numeric"),
        "uid mismatch": (uid_mismatch, 403, "not the token's"),
        "pod succeeded": (lambda c: c.base_runner_pod(phase="Succeeded").token, 403, "has ended (phase Succeeded)"),
        "pod failed": (lambda c: c.gpu_runner_pod(phase="Failed").token, 403, "has ended (phase Failed)"),
        "terminating pod": (lambda c: c.base_runner_pod(terminating=True).token, 403, "terminating"),
    }


REFUSALS = refusal_cases()
ALLOWED_TO_FINISH = {"terminating pod"}  # SIGTERM: a pod being stopped still says its runner has ended


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_are_logged_with_their_reason_and_never_reach_github(setup, case):
    """And /v1/finished refuses what /v1/jitconfig refuses, but for a terminating pod."""
    build, status, reason = REFUSALS[case]
    process = setup.start()
    token = build(setup.cluster)

    answer = process.request("POST", JIT, token)

    assert answer.status == status, answer.raw
    assert reason in answer.body["error"]
    assert process.wait_for_log("jitconfig", "decision=refused", f"status={status}", reason)
    assert setup.github.requests == []
    if case in ALLOWED_TO_FINISH:
        return
    finished = process.request("POST", FINISHED, token)
    assert (finished.status, reason in finished.body["error"]) == (status, True), finished.raw
    assert process.wait_for_log("finished", "decision=refused", f"status={status}", reason)
    assert setup.github.requests == [] and setup.kube.requests_to("DELETE") == []


# ----------------------------------------------------------------- one runner a pod --

def test_a_pod_whose_runner_connected_gets_no_second_one(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.set_state(runner_pod.name, status="online")

    again = process.jitconfig(runner_pod)

    assert again.status == 409 and "already had its runner" in again.body["error"], again.raw
    assert len(setup.runners.jit_configs) == 1 and setup.kube.requests_to("DELETE") == []
    process.wait_for_log("decision=refused", "status=409", f"pod={runner_pod.name}")


@pytest.mark.parametrize("state", [{"status": "online", "busy": True}, {"status": "offline", "busy": True}])
def test_a_busy_runner_is_never_replaced(setup, state):
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.set_state("gpu-runner-4242-1", **state)

    assert process.jitconfig(runner_pod).status == 409
    assert len(setup.runners.jit_configs) == 1 and setup.runners.runner("gpu-runner-4242-1")["busy"]


def test_a_pod_asking_again_before_its_runner_connected_gets_a_new_one(setup):
    """The pod never got the first answer (its request timed out, or the answer was lost on the way)."""
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod()
    first = process.jitconfig(runner_pod)
    first_id = setup.runners.runner("gpu-runner-4242-1")["id"]

    again = process.jitconfig(runner_pod)

    assert again.status == 201, again.raw
    assert again.body["encodedJitConfig"] == setup.runners.jit_configs[-1] != first.body["encodedJitConfig"]
    assert setup.runners.names() == {"gpu-runner-4242-1"}
    assert setup.runners.runner("gpu-runner-4242-1")["id"] != first_id  # the first config's runner is gone
    process.wait_for_log("jitconfig", "decision=replaced", "runner=gpu-runner-4242-1")


def test_a_pod_whose_runner_has_ended_gets_no_second_one(setup):
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.remove("gpu-runner-4242-1")  # the JIT runner ran its job and deregistered itself

    assert process.jitconfig(runner_pod).status == 409
    assert process.finished(runner_pod).status == 200
    assert process.jitconfig(runner_pod).status == 409
    assert len(setup.runners.jit_configs) == 1


def test_a_pod_asking_again_and_again_costs_one_github_call(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.set_state(runner_pod.name, status="online", busy=True)  # a job step reads the pod's token
    calls = len(setup.github.requests)

    assert [process.jitconfig(runner_pod).status for _ in range(5)] == [409] * 5
    assert [r.query for r in setup.github.requests[calls:]] == [f"name={runner_pod.name}"]


def test_twenty_requests_at_once_from_one_pod_yield_one_runner(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.generate_delay = 0.2  # so the others arrive while the first is being served
    setup.runners.generated_status = "online"  # the runner connects at once
    barrier = threading.Barrier(20)

    def ask(_):
        barrier.wait()
        return process.jitconfig(runner_pod).status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(ask, range(20)))

    assert sorted(statuses) == [201] + [409] * 19
    assert len(setup.github.requests_to(GENERATE)) == 1 and len(setup.runners.jit_configs) == 1
    assert len(setup.github.requests_to(RUNNERS)) == 1  # one look-up; the other 18 reuse its answer


def test_two_pods_of_one_job_at_once_yield_one_runner(setup):
    """The broker locks by runner name: another pod of the same Job waits, then finds the name taken."""
    process = setup.start()
    pods = [setup.cluster.gpu_runner_pod(), setup.cluster.gpu_runner_pod()]
    setup.github.script(GENERATE, Reply(502))  # the first attempt unanswered: the retry must not take the other's
    setup.runners.generate_delay = 0.2
    barrier = threading.Barrier(2)

    def ask(runner_pod):
        barrier.wait()
        return process.jitconfig(runner_pod)

    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(ask, pods))

    assert sorted(a.status for a in answers) == [201, 409], [a.raw for a in answers]
    (granted,) = [a for a in answers if a.status == 201]
    assert setup.runners.jit_configs == [granted.body["encodedJitConfig"]]
    assert "of the same Job" in next(a for a in answers if a.status == 409).body["error"]


def test_different_pods_are_served_at_the_same_time(setup):
    process = setup.start()
    pods = [setup.cluster.base_runner_pod() for _ in range(4)]
    setup.runners.generate_delay = 0.5
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda p: process.jitconfig(p).status, pods))

    assert statuses == [201] * 4
    assert time.monotonic() - started < 1.5  # one after another would take 2 s


def test_a_runner_already_registered_and_online_under_the_pods_name_is_not_made_twice(setup):
    """After a restart the broker has forgotten its grants; GitHub has not."""
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.add(runner_pod.name, ["base-runner"], status="online")

    answer = process.jitconfig(runner_pod)

    assert answer.status == 409 and "already has a runner named" in answer.body["error"]
    assert setup.runners.jit_configs == [] and setup.runners.runner(runner_pod.name)["status"] == "online"


def test_an_unanswered_attempt_never_replaces_a_runner_that_is_online(setup):
    """A retried generate meeting 409 replaces only a runner that never connected."""
    process = setup.start(BROKER_GITHUB_TIMEOUT_SECONDS="0.3")
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.lost_answers = 1  # registered, but the answer comes after the broker's timeout
    setup.runners.lost_answer_delay = 1

    def connect_while_the_broker_waits():
        wait_until(lambda: setup.github.requests_to(GENERATE), "the first generate")
        setup.runners.set_state(runner_pod.name, status="online")

    connecting = threading.Thread(target=connect_while_the_broker_waits)
    connecting.start()
    answer = process.jitconfig(runner_pod)
    connecting.join()

    assert answer.status == 409 and "online" in answer.body["error"], answer.raw
    assert len(setup.github.requests_to(GENERATE)) == 2
    assert setup.runners.runner(runner_pod.name)["status"] == "online"
    assert not [r for r in setup.github.requests if r.method == "DELETE"]


def test_a_runner_registered_by_an_unanswered_attempt_is_replaced(setup):
    """The first generate registers the runner but its answer is lost; the retry meets 409."""
    process = setup.start(BROKER_GITHUB_TIMEOUT_SECONDS="0.3")
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.lost_answers = 1
    setup.runners.lost_answer_delay = 2

    answer = process.jitconfig(runner_pod)

    assert answer.status == 201, answer.raw
    assert answer.body["encodedJitConfig"] == setup.runners.jit_configs[-1]
    assert len(setup.runners.jit_configs) == 2 and setup.runners.names() == {runner_pod.name}
    process.wait_for_log("decision=replaced", runner_pod.name)


@pytest.mark.parametrize("restarts", [1, 4])
def test_a_base_pod_whose_container_restarted_is_refused_and_deleted(setup, restarts):
    """startup.sh asks once per container start: a restarted container's pod has had its runner."""
    process = setup.start()  # a broker that never saw the pod: it learns from the pod alone
    runner_pod = setup.cluster.base_runner_pod(restarts=restarts)

    answer = process.jitconfig(runner_pod)

    assert answer.status == 409 and "restarted" in answer.body["error"], answer.raw
    assert [d.json() for d in setup.kube.requests_to("DELETE")] == [{"preconditions": {"uid": runner_pod.uid}}]
    assert setup.kube.get("Pod", NAMESPACE, runner_pod.name) is None
    assert setup.github.requests == []


def test_a_gpu_pod_whose_container_restarted_is_refused_and_kept(setup):
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod(restarts=1)

    assert process.jitconfig(runner_pod).status == 409
    assert setup.kube.requests_to("DELETE") == [] and setup.github.requests == []


# ------------------------------------------------------------------- GitHub failures --

@pytest.mark.parametrize("reply", [Reply(500), Reply(502), Reply(503), Reply(429)], ids=["500", "502", "503", "429"])
def test_github_unavailable_is_retried_then_503(setup, reply):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, reply, reply, reply)
    started = time.monotonic()

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503 and "GitHub did not answer" in answer.body["error"]
    assert len(setup.github.requests_to(GENERATE)) == 3  # BROKER_GITHUB_RETRIES=2
    assert time.monotonic() - started < 2
    process.wait_for_log("decision=failed", f"pod={runner_pod.name}")


def test_github_timeouts_are_retried_then_503(setup):
    process = setup.start(BROKER_GITHUB_TIMEOUT_SECONDS="0.3")
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, *[Reply(201, {}, delay=3)] * 3)

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503 and "no answer within 0.3s" in answer.body["error"]
    assert len(setup.github.requests_to(GENERATE)) == 3


def test_a_request_ends_by_its_deadline_whatever_github_does(setup):
    """startup.sh gives up after 15 s: the broker answers before, so the pod's retry is a fresh request."""
    process = setup.start(BROKER_REQUEST_DEADLINE_SECONDS="0.5")  # BROKER_GITHUB_TIMEOUT_SECONDS=2, 2 retries
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, *[Reply(201, {}, delay=5)] * 3)
    started = time.monotonic()

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503 and "deadline" in answer.body["error"], answer.raw
    assert time.monotonic() - started < 1.2


def test_github_transient_failures_are_ridden_out(setup):
    process = setup.start(BROKER_GITHUB_TIMEOUT_SECONDS="0.5")
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, Reply(502), Reply(429, headers={"Retry-After": "0"}))

    answer = process.jitconfig(runner_pod)

    assert answer.status == 201, answer.raw
    assert len(setup.github.requests_to(GENERATE)) == 3 and setup.runners.names() == {runner_pod.name}


RATE_LIMITED = {
    "403 no requests left": Reply(403, {"message": "API rate limit exceeded"},
                                  headers={"x-ratelimit-remaining": "0",
                                           "x-ratelimit-reset": str(int(time.time()) + 3000)}),
    "403 secondary limit": Reply(403, {"message": "secondary rate limit"}, headers={"Retry-After": "60"}),
    "429 retry after": Reply(429, headers={"Retry-After": "30"}),
}


@pytest.mark.parametrize("case", list(RATE_LIMITED))
def test_a_rate_limit_past_the_deadline_is_a_503_saying_how_long(setup, case):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, RATE_LIMITED[case])
    started = time.monotonic()

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503, answer.raw
    assert "as asked would pass the request's deadline" in answer.body["error"]
    assert len(setup.github.requests_to(GENERATE)) == 1 and time.monotonic() - started < 1


def test_a_retry_after_within_the_deadline_is_waited_in_full(setup):
    process = setup.start()  # BROKER_GITHUB_BACKOFF_MAX_SECONDS=0.05 caps the backoff, not GitHub's ask
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, Reply(403, {"message": "secondary rate limit"}, headers={"Retry-After": "1"}))

    answer = process.jitconfig(runner_pod)

    assert answer.status == 201, answer.raw
    first, second = setup.github.requests_to(GENERATE)
    assert second.at - first.at >= 1


@pytest.mark.parametrize("status, words", [
    (401, "the runner credential (PAT or App), the PAT in GITHUB_TOKEN_FILE, is invalid, expired or revoked"),
    (403, f"lacks Administration: read and write on {REPOSITORY} (classic PAT: repo scope; App: administration write)"),
    (404, f"{REPOSITORY} does not exist or the credential, the PAT in GITHUB_TOKEN_FILE, cannot see it"),
])
def test_github_refusals_are_502_naming_the_credential_and_not_retried(setup, status, words):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.github.script(GENERATE, Reply(status, {"message": "Bad credentials"}))

    answer = process.jitconfig(runner_pod)

    assert answer.status == 502
    assert words in answer.body["error"]
    assert len(setup.github.requests) == 1
    process.wait_for_log("decision=failed", "GitHub refused")


def test_a_rotated_pat_is_used_from_the_next_request(setup):
    process = setup.start()
    assert process.jitconfig(setup.cluster.base_runner_pod()).status == 201
    setup.pat_file.write_text(ROTATED_PAT + "\n")
    setup.runners.accepted_tokens = {ROTATED_PAT}
    before = len(setup.github.requests)

    assert process.jitconfig(setup.cluster.base_runner_pod()).status == 201
    assert {r.headers["authorization"] for r in setup.github.requests[before:]} == {f"Bearer {ROTATED_PAT}"}


# --------------------------------------------------------------- Kubernetes failures --

def test_kubernetes_errors_are_retried_then_503(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.fail(TOKEN_REVIEWS, status=500, times=3)

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503 and "Kubernetes API" in answer.body["error"]
    assert len(setup.kube.requests_to("POST", TOKEN_REVIEWS)) == 3
    assert setup.github.requests == []
    assert process.jitconfig(runner_pod).status == 201  # the fault has passed


def test_a_hung_kubernetes_api_is_a_503(setup):
    process = setup.start(BROKER_KUBERNETES_TIMEOUT_SECONDS="0.2")
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.hang("/api/v1/namespaces", seconds=3, times=3)

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503 and "did not answer reading pod" in answer.body["error"]
    assert setup.github.requests == []


def test_the_brokers_own_kubernetes_refusal_is_a_503_saying_so(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.kube.fail(TOKEN_REVIEWS, status=403)

    answer = process.jitconfig(runner_pod)

    assert answer.status == 503 and "Role lacks the permission" in answer.body["error"]


# ------------------------------------------------------------------------- finished --

def test_finished_base_runner_is_removed_and_its_pod_deleted(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201

    answer = process.finished(runner_pod)

    assert answer.status == 200, answer.raw
    assert answer.body == {"name": runner_pod.name, "runnerRemoved": True, "podDeleted": True}
    assert setup.runners.names() == set()
    delete = setup.kube.requests_to("DELETE")[0]
    assert delete.path == f"/api/v1/namespaces/{NAMESPACE}/pods/{runner_pod.name}"
    assert delete.json() == {"preconditions": {"uid": runner_pod.uid}}
    assert setup.kube.get("Pod", NAMESPACE, runner_pod.name) is None
    process.wait_for_log("finished", f"pod={runner_pod.name}", "runner_removed=True", "pod_deleted=True")


def test_finished_gpu_runner_is_removed_and_its_pod_kept(setup):
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod()
    assert process.jitconfig(runner_pod).status == 201

    answer = process.finished(runner_pod)

    assert answer.body == {"name": "gpu-runner-4242-1", "runnerRemoved": True, "podDeleted": False}
    assert setup.runners.names() == set() and setup.kube.requests_to("DELETE") == []
    assert process.jitconfig(runner_pod).status == 409  # it said its runner has ended


def test_finished_looks_its_runner_up_by_name_in_one_request(setup):
    process = setup.start()
    for number in range(150):
        setup.runners.add(f"someone-else-{number}", ["other"])
    runner_pod = setup.cluster.gpu_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    before = len(setup.github.requests)

    assert process.finished(runner_pod).body["runnerRemoved"] is True

    calls = setup.github.requests[before:]
    assert [(r.method, r.path, r.query) for r in calls][:1] == [("GET", RUNNERS, "name=gpu-runner-4242-1")]
    assert [r.method for r in calls] == ["GET", "DELETE"]


def test_finished_in_a_loop_while_the_runner_is_busy_asks_github_once(setup):
    """A job step can call /v1/finished with the pod's token: it must not spend the credential's rate limit."""
    process = setup.start()
    runner_pod = setup.cluster.gpu_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.set_state("gpu-runner-4242-1", status="online", busy=True)
    before = len(setup.github.requests)

    answers = [process.finished(runner_pod) for _ in range(5)]

    assert {(a.status, a.body["runnerRemoved"]) for a in answers} == {(200, False)}
    assert [r.method for r in setup.github.requests[before:]] == ["GET"]  # no DELETE GitHub would refuse (422)
    assert setup.runners.names() == {"gpu-runner-4242-1"}
    process.wait_for_log("finished", "decision=left", "runner=gpu-runner-4242-1")


def test_a_busy_runner_said_finished_is_left_to_the_sweep(setup):
    process = setup.start(BROKER_SWEEP_SECONDS="0.2")
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.set_state(runner_pod.name, status="online", busy=True)

    answer = process.finished(runner_pod)

    assert answer.body == {"name": runner_pod.name, "runnerRemoved": False, "podDeleted": True}, answer.raw
    assert setup.runners.names() == {runner_pod.name}
    setup.runners.set_state(runner_pod.name, status="offline", busy=False)  # GitHub notices its pod has gone
    wait_until(lambda: setup.runners.names() == set(), "the sweep", timeout=5)


def test_finished_deletes_a_base_pod_even_when_github_is_down(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.github.script(RUNNERS, *[Reply(503)] * 3)

    answer = process.finished(runner_pod)

    assert answer.status == 503 and "the sweep removes its runner" in answer.body["error"]
    assert setup.kube.get("Pod", NAMESPACE, runner_pod.name) is None
    assert setup.runners.names() == {runner_pod.name}  # until the sweep (or the final one at teardown)


def test_a_terminating_pod_may_say_it_has_finished(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    current = setup.kube.get("Pod", NAMESPACE, runner_pod.name)
    current["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z"  # SIGTERM: the pod is being stopped

    answer = process.finished(runner_pod)

    assert answer.body == {"name": runner_pod.name, "runnerRemoved": True, "podDeleted": False}
    assert setup.kube.requests_to("DELETE") == []


# ---------------------------------------------------------------------------- sweep --

def test_sweep_removes_our_runners_whose_pods_are_gone_and_nothing_else(setup):
    process = setup.start(BROKER_SWEEP_SECONDS="0.2")
    staying, leaving = setup.cluster.base_runner_pod(), setup.cluster.base_runner_pod()
    gpu = setup.cluster.gpu_runner_pod(run_id="555")
    for runner_pod in (staying, leaving, gpu):
        assert process.jitconfig(runner_pod).status == 201
    setup.runners.add("tutorial-runner", ["base-runner"])
    setup.runners.add("gpu-runner-1-1", ["gpu-runner-2"])  # our shape, another run's label: not ours
    setup.runners.add("base-runner-5d8f7c9b4-orphan", ["base-runner"])

    setup.cluster.delete(leaving)
    setup.kube.get("Pod", NAMESPACE, gpu.name)["status"]["phase"] = "Succeeded"

    wait_until(lambda: setup.runners.names() == {staying.name, "tutorial-runner", "gpu-runner-1-1"},
               "the sweep", timeout=5)
    for removed in (leaving.name, "gpu-runner-555-1", "base-runner-5d8f7c9b4-orphan"):
        process.wait_for_log("sweep", "decision=removed", f"runner={removed}")


def test_sweep_reads_every_page_of_runners(setup):
    orphans = {f"base-runner-5d8f7c9b4-orphan{number:03d}" for number in range(230)}
    for name in sorted(orphans):
        setup.runners.add(name, ["base-runner"])
    setup.runners.add("tutorial-runner", ["base-runner"])
    process = setup.start(BROKER_SWEEP_SECONDS="0.2")
    staying = setup.cluster.base_runner_pod()
    assert process.jitconfig(staying).status == 201

    wait_until(lambda: setup.runners.names() == {staying.name, "tutorial-runner"}, "the sweep", timeout=10)
    queries = {r.query for r in setup.github.requests_to(RUNNERS)}
    assert {"per_page=100&page=1", "per_page=100&page=2", "per_page=100&page=3"} <= queries


def test_sweep_reads_github_before_the_pods(setup):
    """A runner registered between the two reads then belongs to a pod the second read sees."""
    setup.start(BROKER_SWEEP_SECONDS="0.1")
    pod_lists = lambda: setup.kube.requests_to("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")  # noqa: E731
    wait_until(lambda: len(pod_lists()) >= 3, "three sweeps")
    runner_lists = [r.wall for r in setup.github.requests_to(RUNNERS)]
    previous = 0.0
    for pod_list in pod_lists()[:3]:
        assert pod_list.query == "labelSelector=app.kubernetes.io%2Fpart-of%3Dgke-gpu-runners"
        assert any(previous <= wall <= pod_list.wall for wall in runner_lists)
        previous = pod_list.wall


def test_a_failed_sweep_is_logged_and_tried_again(setup):
    process = setup.start(BROKER_SWEEP_SECONDS="0.2")
    setup.runners.add("base-runner-5d8f7c9b4-orphan", ["base-runner"])
    setup.kube.fail("/api/v1/namespaces/github-runners/pods", status=500, times=3)

    process.wait_for_log("sweep", "decision=failed", "next round")
    wait_until(lambda: setup.runners.names() == set(), "a later sweep", timeout=5)


def test_after_the_runner_namespace_went_the_final_sweep_removes_every_runner_of_ours(setup):
    """pulumi destroy deletes the runner namespace, and the broker's Role in it, before the broker."""
    process = setup.start()  # BROKER_SWEEP_SECONDS=3600: only the final sweep can remove anything
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.runners.add("gpu-runner-77-1", ["gpu-runner-77"])
    setup.runners.add("tutorial-runner", ["base-runner"])  # not ours: never touched
    setup.kube.fail("/api/v1/namespaces/github-runners/pods", status=403, times=100)

    assert process.stop(signal.SIGTERM) == 0

    assert setup.runners.names() == {"tutorial-runner"}
    assert process.log_lines("sweep", "decision=namespace-gone")


def test_a_periodic_sweep_the_runner_namespace_refuses_removes_nothing(setup):
    """While the broker runs, a refused pod list means its Role is missing, not that every pod is gone."""
    process = setup.start(BROKER_SWEEP_SECONDS="0.1")
    runner_pod = setup.cluster.base_runner_pod()
    assert process.jitconfig(runner_pod).status == 201
    setup.kube.fail("/api/v1/namespaces/github-runners/pods", status=403, times=3)

    process.wait_for_log("sweep", "decision=failed", "Role")
    assert setup.runners.names() == {runner_pod.name}


# ------------------------------------------------------------ connections and stop --

def trickle(port: int, seconds: float) -> float:
    """A slowloris: a request's bytes one at a time, each in time for any per-read timeout. Returns how long
    the broker kept the connection open (at most `seconds`)."""
    request = b"POST /v1/jitconfig HTTP/1.1\r\nHost: broker\r\n" + b"X-Padding: " + b"a" * 1000
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for byte in request:
            if time.monotonic() - started > seconds:
                break
            try:
                connection.sendall(bytes([byte]))
                if select.select([connection], [], [], 0.1)[0] and not connection.recv(1024):
                    break  # closed by the broker
            except OSError:
                break
    return time.monotonic() - started


def test_a_request_read_slowly_is_cut_at_its_deadline(setup):
    process = setup.start(BROKER_REQUEST_DEADLINE_SECONDS="0.5")

    held = trickle(process.port, seconds=4)

    assert 0.45 < held < 1.5
    assert process.request("GET", "/healthz").status == 200


def test_a_connection_reset_by_the_client_is_one_log_line(setup):
    process = setup.start()
    connection = socket.create_connection(("127.0.0.1", process.port))
    connection.sendall(b"POST /v1/jitconfig HTTP/1.1\r\nHost: broker\r\n")
    time.sleep(0.1)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    connection.close()

    process.wait_for_log("connection", "decision=dropped", "ConnectionResetError")
    assert process.request("GET", "/healthz").status == 200
    assert "Traceback" not in process.output


def test_connections_beyond_the_limit_get_503_at_once(setup):
    process = setup.start(BROKER_MAX_CONNECTIONS="2", BROKER_REQUEST_DEADLINE_SECONDS="3")
    slow = [socket.create_connection(("127.0.0.1", process.port)) for _ in range(2)]
    for connection in slow:
        connection.sendall(b"POST /v1/jitconfig HTTP/1.1\r\n")  # and nothing more
    time.sleep(0.2)
    started = time.monotonic()

    answer = process.request("GET", "/healthz")

    assert answer.status == 503 and "too many connections" in answer.body["error"], answer.raw
    assert time.monotonic() - started < 0.5
    process.wait_for_log("busy", "status=503")
    for connection in slow:
        connection.close()
    wait_until(lambda: process.request("GET", "/healthz").status == 200, "a free slot")


def test_sigterm_lets_the_requests_in_flight_finish(setup):
    process = setup.start()
    runner_pod = setup.cluster.base_runner_pod()
    setup.runners.generate_delay = 0.5

    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(process.jitconfig, runner_pod)
        wait_until(lambda: setup.github.requests_to(GENERATE), "the grant to reach GitHub")
        process.process.send_signal(signal.SIGTERM)
        answer = in_flight.result(timeout=10)

    assert answer.status == 201, answer.raw
    assert process.stop() == 0
    assert setup.runners.names() == {runner_pod.name}  # its pod lives: the final sweep keeps it
    assert process.output.index("stopping") < process.output.index("decision=granted")


def test_sigterm_stops_in_bounded_time_while_a_client_trickles(setup):
    process = setup.start(BROKER_REQUEST_DEADLINE_SECONDS="0.5")
    slowloris = threading.Thread(target=trickle, args=(process.port, 10), daemon=True)
    slowloris.start()
    time.sleep(0.2)
    started = time.monotonic()

    assert process.stop(signal.SIGTERM, timeout=8) == 0

    assert time.monotonic() - started < 0.5 + broker.DRAIN_MARGIN_SECONDS + 1


def test_sigterm_stops_serving_sweeps_once_more_and_exits_0(setup):
    process = setup.start()  # BROKER_SWEEP_SECONDS=3600: only the final sweep can remove anything
    leaving, staying = setup.cluster.base_runner_pod(), setup.cluster.base_runner_pod()
    assert process.jitconfig(leaving).status == 201 and process.jitconfig(staying).status == 201
    setup.cluster.delete(leaving)

    assert process.stop(signal.SIGTERM) == 0

    assert setup.runners.names() == {staying.name}
    assert process.log_lines("sweep", "decision=removed", f"runner={leaving.name}")
    assert process.log_lines("stopped")
    with pytest.raises(ConnectionRefusedError):
        process.request("GET", "/healthz", timeout=2)


def test_sigint_too(setup):
    process = setup.start()
    assert process.stop(signal.SIGINT) == 0


# ------------------------------------------------------------------------ GitHub App --

def decode_segment(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_jwt(jwt: str, key) -> dict:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    header, claims, signature = jwt.split(".")
    key.public_key().verify(decode_segment(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(),
                            hashes.SHA256())
    assert json.loads(decode_segment(header)) == {"alg": "RS256", "typ": "JWT"}
    return json.loads(decode_segment(claims))


def test_app_mode_signs_a_jwt_and_caches_the_installation_token(make_setup):
    app = make_setup(app=True)
    process = app.start()
    before = time.time()

    for _ in range(3):
        assert process.jitconfig(app.cluster.base_runner_pod()).status == 201

    jwts = app.app_jwts()
    assert len(jwts) == 1  # one token for several requests
    claims = verify_jwt(jwts[0], app.app_keys[0])
    assert claims["iss"] == APP_ID and claims["exp"] - claims["iat"] <= 600
    assert claims["iat"] <= before and claims["exp"] > before + 300
    token = app.runners.installation_tokens[0]
    runner_calls = [r for r in app.github.requests if r.path.startswith(RUNNERS)]
    assert runner_calls and {r.headers["authorization"] for r in runner_calls} == {f"Bearer {token}"}
    assert "GitHub App 424242 (installation 31337)" in process.stderr[0]


def test_a_rotated_app_key_gets_a_new_installation_token(make_setup):
    app = make_setup(app=True)
    process = app.start()
    assert process.jitconfig(app.cluster.base_runner_pod()).status == 201
    new_key = app.rotate_app_key()
    app.runners.accepted_tokens.clear()  # the old installation token no longer works
    before = len(app.github.requests)

    assert process.jitconfig(app.cluster.base_runner_pod()).status == 201

    jwts = app.app_jwts()
    assert len(jwts) == 2
    assert verify_jwt(jwts[1], new_key)["iss"] == APP_ID
    new_token = app.runners.installation_tokens[1]
    runner_calls = [r for r in app.github.requests[before:] if r.path.startswith(RUNNERS)]
    assert {r.headers["authorization"] for r in runner_calls} == {f"Bearer {new_token}"}


def test_an_installation_token_revoked_early_is_replaced_within_the_request(make_setup):
    app = make_setup(app=True)
    process = app.start()
    assert process.jitconfig(app.cluster.base_runner_pod()).status == 201
    app.runners.accepted_tokens.discard(app.runners.installation_tokens[0])  # revoked before it expires

    answer = process.jitconfig(app.cluster.base_runner_pod())

    assert answer.status == 201, answer.raw
    assert len(app.runners.installation_tokens) == 2
    bearers = [r.headers["authorization"] for r in app.github.requests_to(GENERATE)[1:]]
    assert bearers == [f"Bearer {token}" for token in app.runners.installation_tokens]


def test_app_refusal_names_the_app(make_setup):
    app = make_setup(app=True)
    process = app.start()
    app.github.script(access_tokens_path(INSTALLATION_ID), Reply(404, {"message": "Not Found"}))

    answer = process.jitconfig(app.cluster.base_runner_pod())

    assert answer.status == 502
    assert "installation 31337 of GitHub App 424242 does not exist" in answer.body["error"]


@pytest.mark.parametrize("app_mode", [False, True], ids=["pat", "app"])
def test_no_credential_in_the_running_brokers_command_line_environment_or_log(make_setup, app_mode):
    setup = make_setup(app=app_mode)
    process = setup.start()
    assert process.jitconfig(setup.cluster.base_runner_pod()).status == 201

    setup.assert_no_secret_in(process.visible_to_other_processes(), "/proc/<pid>/cmdline or environ")
    setup.assert_no_secret_in(process.output, "the broker's log")

    # The check can fail: a broker handed its credential's text in its environment is caught.
    leaky = setup.start(LEAKED=setup.key_file.read_text() if app_mode else PAT)
    with pytest.raises(AssertionError, match="reached /proc"):
        setup.assert_no_secret_in(leaky.visible_to_other_processes(), "/proc")
    setup.processes.remove(leaky)
    assert leaky.stop() == 0
