"""`gpu-runner start|guard|stop`, the command the example workflow runs on a base runner.

Real bash, jq, envsubst and curl; a stub kubectl that plays the cluster's answers from a
scenario (each call to `get pods` and `get events` takes the next state, the last one
repeating), and a fake GitHub API for the guard's cancel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import fake_token_services
from program_harness import ROOT
from fake_github import FakeGitHub, Reply

SCRIPT = ROOT / "runner_image" / "gpu-runner.sh"
KUBECONFIG_TEXT = "apiVersion: v1\nkind: Config\nusers:\n- name: ci\n  user:\n    token: ci-token-that-must-stay-secret\n"
JOB = "gpu-runner-4242-3"
POD = f"{JOB}-x7k2p"
TEMPLATE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: gpu-runner-${GITHUB_RUN_ID}-${GITHUB_RUN_ATTEMPT}
  labels:
    gke-gpu-runners/run-id: "${GITHUB_RUN_ID}"
spec:
  template:
    spec:
      containers:
        - name: runner
          env:
            - name: LEFT_ALONE
              value: $HOME ${RUNNER_NAME} $(POD_NAME)
"""

STUB_KUBECTL = """\
#!{python}
import json, os, stat, sys
state = json.load(open({scenario!r}))
calls = state.setdefault("calls", [])
kubeconfig = os.environ.get("KUBECONFIG", "")
call = {{"argv": sys.argv[1:], "kubeconfig": kubeconfig}}
if os.path.exists(kubeconfig):
    call["kubeconfig_mode"] = stat.S_IMODE(os.stat(kubeconfig).st_mode)
    call["kubeconfig_text"] = open(kubeconfig).read()
if sys.argv[1:2] == ["create"]:
    call["stdin"] = sys.stdin.read()
calls.append(call)

def take(key):
    queue = state[key]
    return queue.pop(0) if len(queue) > 1 else queue[0]

verb = sys.argv[1:3]
status = 0
if verb == ["get", "configmap"]:
    sys.stdout.write(state["template"])
elif verb == ["get", "pods"]:
    sys.stdout.write(json.dumps({{"items": take("pods")}}))
elif verb == ["get", "events"]:
    sys.stdout.write(json.dumps({{"items": take("events")}}))
elif sys.argv[1] == "logs":
    sys.stdout.write(take("logs"))
elif sys.argv[1] == "create":
    status = state.get("create_status", 0)
json.dump(state, open({scenario!r}, "w"))
sys.exit(status)
"""


def pod(phase: str = "Pending", *, ready: bool = False, waiting: dict | None = None, node: str | None = None,
        terminated: str | None = None, deleting: bool = False) -> dict:
    statuses = []
    if waiting:
        statuses.append({"name": "runner", "state": {"waiting": waiting}})
    if terminated:
        statuses.append({"name": "runner", "state": {"terminated": {"reason": terminated}}})
    document = {
        "metadata": {"name": POD},
        "spec": {"nodeName": node} if node else {},
        "status": {"phase": phase, "containerStatuses": statuses,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    if deleting:
        document["metadata"]["deletionTimestamp"] = "2026-11-28T10:00:00Z"
    return document


def event(reason: str, message: str, at: str = "2026-11-28T10:00:30Z", kind: str = "Warning") -> dict:
    return {"type": kind, "reason": reason, "message": message, "lastTimestamp": at}


SCALE_UP = event("TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 2)}]", kind="Normal")
QUOTA = event("FailedScaleUp", "Node scale up in zones us-central1-a associated with this pod failed: "
                               "GCE quota exceeded. Pod is at risk of not being scheduled.", at="2026-11-28T10:01:00Z")
BUSY = event("NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached, "
                                  "1 node(s) didn't match Pod's node affinity/selector")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    calls: list[dict]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def argvs(self) -> list[list[str]]:
        return [call["argv"] for call in self.calls]


def gpu_runner(tmp_path: Path, command: str, *, pods: list, events: list | None = None, logs: list | None = None,
               github: FakeGitHub | None = None, **settings) -> Run:
    scenario = tmp_path / "scenario.json"
    state = {"template": TEMPLATE, "pods": pods, "events": events or [[]], "logs": logs or ["starting\n"]}
    state.update(settings.pop("state", {}))
    scenario.write_text(json.dumps(state))
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    kubectl = stubs / "kubectl"
    kubectl.write_text(STUB_KUBECTL.format(python=sys.executable, scenario=str(scenario)))
    kubectl.chmod(0o755)
    env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "GITHUB_RUN_ID": "4242",
        "GITHUB_RUN_ATTEMPT": "3",
        "GITHUB_REPOSITORY": "acme/models",
        "GCP_K8S_KUBECONFIG": KUBECONFIG_TEXT,
        "GPU_RUNNER_POLL_SECONDS": "0.05",
        "GPU_RUNNER_TIMEOUT_SECONDS": "20",
        **({"GITHUB_API_URL": github.url, "GITHUB_TOKEN": "ghs_run_token"} if github else {}),
        **settings,
    }
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: os.umask(0))  # the worst runner: world-readable unless said otherwise
    calls = json.loads(scenario.read_text()).get("calls", [])
    run = Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started, calls)
    assert "ci-token-that-must-stay-secret" not in run.output
    for call in calls:  # the kubeconfig: private, only ever in a file, gone afterwards
        assert call["kubeconfig_mode"] == 0o600, call["argv"]
        assert call["kubeconfig_text"].strip() == KUBECONFIG_TEXT.strip()
        assert "ci-token-that-must-stay-secret" not in " ".join(call["argv"])
        assert not Path(call["kubeconfig"]).exists()
    return run


# ----------------------------------------------------------------------- start --

def test_start_creates_the_run_attempts_job_from_the_template_and_waits_until_ready(tmp_path):
    run = gpu_runner(tmp_path, "start", pods=[[], [pod()], [pod(node="gke-gpu-1")], [pod("Running", ready=True)]],
                     events=[[], [SCALE_UP]])

    assert run.returncode == 0, run.output
    assert run.argvs()[:2] == [["get", "configmap", "gpu-runner-template", "-o", r"jsonpath={.data.runner-gpu\.yaml}"],
                               ["create", "-f", "-"]]
    manifest = yaml.safe_load(run.calls[1]["stdin"])
    assert manifest["metadata"]["name"] == JOB
    assert manifest["metadata"]["labels"] == {"gke-gpu-runners/run-id": "4242"}
    assert manifest["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] == "$HOME ${RUNNER_NAME} $(POD_NAME)"
    assert ["get", "pods", f"--selector=batch.kubernetes.io/job-name={JOB}", "-o", "json"] in run.argvs()
    assert "a GPU node is on its way" in run.stdout and f"runner {JOB} is up" in run.stdout


@pytest.mark.parametrize("state, words", [
    (pod(waiting={"reason": "ImagePullBackOff", "message": "403 Forbidden"}), "ImagePullBackOff: 403 Forbidden"),
    (pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off"}), "CrashLoopBackOff"),
    (pod("Failed", terminated="Error"), "Failed: Error"),
    (pod("Failed") | {"status": {"phase": "Failed", "reason": "DeadlineExceeded"}}, "DeadlineExceeded"),
])
def test_start_fails_at_once_when_the_runner_pod_fails_and_shows_its_events_and_log(tmp_path, state, words):
    refused = event("BackOff", "the broker refused a runner: HTTP 403")
    run = gpu_runner(tmp_path, "start", pods=[[state]], events=[[refused]],
                     logs=["startup.sh: error: the broker refused a runner: POST .../v1/jitconfig answered HTTP 403\n"])

    assert run.returncode == 1
    assert f"::error::GPU runner {JOB}" in run.stdout and words in run.stdout
    assert "BackOff: the broker refused a runner" in run.stdout  # its events
    assert "answered HTTP 403" in run.stdout  # its last log lines
    assert run.elapsed < 5


def test_start_fails_at_once_with_the_autoscalers_reason_when_the_pool_cannot_grow(tmp_path):
    run = gpu_runner(tmp_path, "start", pods=[[pod()]], events=[[SCALE_UP, QUOTA]])

    assert run.returncode == 1
    assert "GCE quota exceeded" in run.stdout.split("::error::")[1]
    assert run.elapsed < 5


def test_start_fails_when_no_node_group_could_take_the_pod(tmp_path):
    cannot = event("NotTriggerScaleUp", "pod didn't trigger scale-up: 2 node(s) didn't match Pod's node "
                                        "affinity/selector, 1 Insufficient nvidia.com/gpu")
    run = gpu_runner(tmp_path, "start", pods=[[pod()]], events=[[cannot]])

    assert run.returncode == 1
    assert "the GPU pool cannot grow" in run.stdout and "Insufficient nvidia.com/gpu" in run.stdout


def test_start_waits_while_every_gpu_node_is_busy_then_gets_one(tmp_path):
    run = gpu_runner(tmp_path, "start", pods=[[pod()], [pod()], [pod()], [pod("Running", ready=True)]],
                     events=[[BUSY], [BUSY], [BUSY], [SCALE_UP]])

    assert run.returncode == 0, run.output
    assert "every GPU node is busy" in run.stdout


def test_start_fails_when_the_quota_refuses_the_pod(tmp_path):
    over = event("FailedCreate", 'pods "gpu-runner-4242-3-x7k2p" is forbidden: exceeded quota: gpu-runners, '
                                 "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=2, limited: 2")
    run = gpu_runner(tmp_path, "start", pods=[[]], events=[[over]])

    assert run.returncode == 1
    assert "exceeded quota: gpu-runners" in run.stdout
    assert ["get", "events", "--field-selector", f"involvedObject.name={JOB}", "-o", "json"] in run.argvs()


def test_start_gives_up_after_its_timeout_with_the_last_state(tmp_path):
    run = gpu_runner(tmp_path, "start", pods=[[pod()]], events=[[SCALE_UP]], GPU_RUNNER_TIMEOUT_SECONDS="1")

    assert run.returncode == 1
    assert "not up after 1s (waiting a GPU node is on its way)" in run.stdout
    assert 1 <= run.elapsed < 5


def test_start_refuses_an_empty_template_before_creating_anything(tmp_path):
    run = gpu_runner(tmp_path, "start", pods=[[]], state={"template": ""})

    assert run.returncode == 1
    assert "gpu-runner-template" in run.stdout
    assert [argv[0] for argv in run.argvs()] == ["get"]


def test_start_fails_when_create_fails(tmp_path):
    run = gpu_runner(tmp_path, "start", pods=[[]], state={"create_status": 1})

    assert run.returncode != 0
    assert [argv[0] for argv in run.argvs()] == ["get", "create"]


@pytest.mark.parametrize("command", ["start", "guard", "stop", "launch"])
def test_bad_usage_and_missing_run_ids_exit_2(tmp_path, command):
    if command == "launch":
        run = gpu_runner(tmp_path, command, pods=[[]])
    else:
        run = gpu_runner(tmp_path, command, pods=[[]], GITHUB_RUN_ID="")
    assert run.returncode == 2
    assert run.calls == []


# ----------------------------------------------------------------------- guard --

@pytest.fixture
def github():
    with FakeGitHub() as fake:
        fake.default("/repos/acme/models/actions/runs/4242/cancel", Reply(202, {}))
        yield fake


def test_guard_ends_once_the_runner_has_taken_its_job(tmp_path, github):
    running = pod("Running", ready=True)
    run = gpu_runner(tmp_path, "guard", pods=[[running]], logs=["Listening for Jobs\n",
                                                               "Listening for Jobs\nRunning job: Train on the GPU\n"],
                     github=github)

    assert run.returncode == 0, run.output
    assert "has taken its job" in run.stdout
    assert github.requests == []


@pytest.mark.parametrize("gone", [[], [pod("Failed", terminated="Error")], [pod("Running", deleting=True)]])
def test_guard_cancels_the_run_when_the_runner_goes_before_taking_its_job(tmp_path, github, gone):
    run = gpu_runner(tmp_path, "guard", pods=[[pod("Running", ready=True)], gone], logs=["Listening for Jobs\n"],
                     github=github)

    assert run.returncode == 1
    assert "the run is cancelled" in run.stdout
    (cancel,) = github.requests
    assert (cancel.method, cancel.path) == ("POST", "/repos/acme/models/actions/runs/4242/cancel")
    assert cancel.headers["authorization"] == "Bearer ghs_run_token"
    for call in run.calls:
        assert "ghs_run_token" not in " ".join(call["argv"])


def test_guard_cancels_the_run_when_no_job_comes_in_time(tmp_path, github):
    run = gpu_runner(tmp_path, "guard", pods=[[pod("Running", ready=True)]], logs=["Listening for Jobs\n"],
                     github=github, GPU_RUNNER_TIMEOUT_SECONDS="1")

    assert run.returncode == 1
    assert "took no job in 1s" in run.stdout
    assert [r.path for r in github.requests] == ["/repos/acme/models/actions/runs/4242/cancel"]


# ------------------------------------------------------------------------ stop --

def test_stop_deletes_the_run_attempts_job_without_waiting(tmp_path):
    run = gpu_runner(tmp_path, "stop", pods=[[]])

    assert run.returncode == 0, run.output
    assert run.argvs() == [["delete", f"job/{JOB}", "--ignore-not-found", "--wait=false"]]


# ------------------------------------------------------------------ in cluster --

def test_inside_the_cluster_kubectl_uses_the_internal_endpoint(tmp_path):
    """Authorized networks guard the public endpoint; a base runner talks to the API server from inside."""
    run = gpu_runner(tmp_path, "stop", pods=[[]], KUBERNETES_SERVICE_HOST="10.0.0.1")

    assert run.returncode == 0, run.output
    assert run.argvs() == [["--server=https://kubernetes.default.svc", "delete", f"job/{JOB}", "--ignore-not-found",
                            "--wait=false"]]


# ------------------------------------------------------------------ credential --

def credential(tmp_path: Path, tokens, cache: Path, **changes) -> subprocess.CompletedProcess:
    """`gpu-runner credential` as kubectl runs it: its stdout is the ExecCredential, nothing else."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    log = tmp_path / "curl-argv.log"
    curl = shims / "curl"
    curl.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {log}\nexec {shutil.which("curl")} "$@"\n')
    curl.chmod(0o755)
    env = {"PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path), "GITHUB_RUN_ID": "4242",
           "GITHUB_RUN_ATTEMPT": "1", "GPU_RUNNER_CREDENTIAL_CACHE": str(cache), **tokens.environment(), **changes}
    done = subprocess.run(["bash", str(SCRIPT), "credential"], env=env, capture_output=True, text=True, timeout=30)
    argv = log.read_text() if log.exists() else ""
    for secret in fake_token_services.SECRETS:
        assert secret not in argv, "a token on curl's command line"
        assert secret not in done.stderr
    return done


@pytest.fixture
def tokens():
    with fake_token_services.TokenServices() as services:
        yield services


def test_credential_prints_an_exec_credential_with_the_service_accounts_token(tmp_path, tokens):
    cache = tmp_path / "credential.json"
    done = credential(tmp_path, tokens, cache)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
        "status": {"token": fake_token_services.ACCESS_TOKEN, "expirationTimestamp": fake_token_services.EXPIRES},
    }
    assert [r["path"] for r in tokens.requests] == [
        "/oidc", "/sts", f"/iam/v1/projects/-/serviceAccounts/{tokens.service_account}:generateAccessToken"]
    assert oct(cache.stat().st_mode & 0o777) == "0o600"


def test_credential_serves_later_calls_from_its_private_cache_until_it_expires(tmp_path, tokens):
    cache = tmp_path / "credential.json"
    first = credential(tmp_path, tokens, cache)
    second = credential(tmp_path, tokens, cache)

    assert first.stdout == second.stdout
    assert len(tokens.requests) == 3
    cache.write_text(json.dumps({"status": {"token": "old", "expirationTimestamp": "2000-01-01T00:00:00Z"}}))
    assert json.loads(credential(tmp_path, tokens, cache).stdout)["status"]["token"] == fake_token_services.ACCESS_TOKEN
    assert len(tokens.requests) == 6


@pytest.mark.parametrize("changes, words", [
    ({"ACTIONS_ID_TOKEN_REQUEST_TOKEN": ""}, "give the job permissions: id-token: write"),
    ({"GCP_WORKLOAD_IDENTITY_PROVIDER": "github-actions"}, "GCP_WORKLOAD_IDENTITY_PROVIDER must be the provider's full name"),
    ({"GCP_SERVICE_ACCOUNT": ""}, "GCP_SERVICE_ACCOUNT must be CI's service account email"),
])
def test_credential_says_what_a_job_lacks_on_stderr_only(tmp_path, tokens, changes, words):
    done = credential(tmp_path, tokens, tmp_path / "credential.json", **changes)

    assert done.returncode != 0
    assert words in done.stderr and done.stdout == ""
    assert tokens.requests == []


def test_credential_refused_by_the_providers_condition_names_the_likely_cause(tmp_path, tokens):
    tokens.admit = False
    done = credential(tmp_path, tokens, tmp_path / "credential.json")

    assert done.returncode == 1
    assert "does the provider trust this repository?" in done.stderr
    assert done.stdout == ""
