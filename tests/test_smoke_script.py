"""scripts/smoke-test.sh, run against stub `pulumi` and `kubectl`, a recording `curl`
wrapper and a fake GitHub API.

The stub kubectl plays a cluster from a scenario: GPU runner Jobs, their pods (one
state per poll, the last one repeated), the pods' events and the nodes, all in the
shapes the API server answers with; and CI's RoleBinding and Role: it records the
identity each call impersonates (`--as`), refuses impersonation when the scenario
says so, and refuses CI what CI's Role does not grant. The fake GitHub lists the runners as they come
and go: `RunnerBoard` derives each GPU runner's state from what the script did so far
(how often it polled the Job's pod, whether it deleted the Job)."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from program.manifests.kubeconfigs import operator_kubeconfig
from program.manifests.runners import gpu_runner_job, render_template
from fake_github import FakeGitHub, Reply

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "smoke-test.sh"

TOKEN = "ghp_smoke-test-token-never-shown"
NAMESPACE = "github-runners"
IMAGE = "us-central1-docker.pkg.dev/acme-ml/gpu-runners-ghcr/acme/gpu-runner@sha256:" + "ab" * 32
RUNNERS_PATH = "/repos/o/r/actions/runners"
RELEASE_PATH = "/repos/actions/runner/releases/latest"
KUBECONFIG_TEXT = operator_kubeconfig("gpu-runners", "203.0.113.10", "Q0EK")
SHORT_GPU_WAIT = {"SMOKE_GPU_TIMEOUT_SECONDS": "1", "SMOKE_POLL_SECONDS": "0.2"}
GPU_LINE = "GPU 0: Tesla T4 (UUID: GPU-0a1b2c3d-0000-1111-2222-333344445555)"
RUN_ID = 9000
JOB = f"gpu-runner-{RUN_ID}-1"
IMAGE_RUNNER_VERSION = "2.336.0"

# The template as the program publishes it, with text that must reach the cluster as is.
_job = gpu_runner_job(IMAGE, NAMESPACE, 1, "n1-standard-4", 240)
_job["metadata"]["annotations"] = {"smoke-test/untouched": "$HOME ${KEEP_ME} $(date)"}
TEMPLATE = render_template(_job)

# CI's identity as the stack binds it (a ServiceAccount), and as it will once CI
# signs in with a Google service account (a User).
CI_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:ci-runner-launcher"
CI_GOOGLE = "ci@proj.iam.gserviceaccount.com"


def ci_access(kind: str = "ServiceAccount", *, impersonation: str = "allowed", binding: bool = True,
              denied: tuple[str, ...] = ()) -> dict:
    """CI's RoleBinding with `kind` as its first subject; impersonation "allowed" or "refused";
    `denied`: verbs CI's Role lacks, besides those it never had."""
    subject = ({"kind": "ServiceAccount", "name": "ci-runner-launcher", "namespace": NAMESPACE}
               if kind == "ServiceAccount" else
               {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": CI_GOOGLE})
    return {
        "identity": CI_ACCOUNT if kind == "ServiceAccount" else CI_GOOGLE,
        "impersonation": impersonation,
        "denied": list(denied),
        "binding": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "ci-runner-launcher", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ci-runner-launcher"},
            "subjects": [subject, {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "someone@else.com"}],
        } if binding else None,
    }


# A cold start with known parts, in seconds after the Job's creation.
PARTS = {"pod": 1, "scale_up": 3, "node_created": 40, "node_ready": 95, "scheduled": 97, "pulled": 128, "started": 130}
ONLINE_AFTER = 150  # the Job was created this long before the scenario is built

STUB = """\
#!@PYTHON@ -S
# A stub @TOOL@: records its argv, stdin and KUBECONFIG, answers from the scenario.
# The identity a kubectl call impersonates (--as) is recorded apart from its argv.
import json, os, stat, sys

tool = "@TOOL@"
args, impersonated = [], None
raw = sys.argv[1:]
while raw:
    arg = raw.pop(0)
    if arg.startswith("--as="):
        impersonated = arg[len("--as="):]
    elif arg == "--as":
        impersonated = raw.pop(0)
    elif arg.startswith("--as-"):
        sys.exit("the stub knows no " + arg)
    else:
        args.append(arg)
scenario = json.load(open(os.environ["STUB_SCENARIO"]))
log_path = os.environ["STUB_LOG"]
record = {"tool": tool, "argv": args, "as": impersonated, "at": __import__("time").time()}
kubeconfig = os.environ.get("KUBECONFIG")
if tool == "kubectl" and kubeconfig:
    record["kubeconfig"] = kubeconfig
    if os.path.exists(kubeconfig):
        record["kubeconfig_mode"] = stat.S_IMODE(os.stat(kubeconfig).st_mode)
        record["kubeconfig_text"] = open(kubeconfig).read()
if "-" in args:
    record["stdin"] = sys.stdin.read()
previous = [json.loads(line) for line in open(log_path)] if os.path.exists(log_path) else []


def answer(reply):
    # Logged with its exit status: a refused delete deletes nothing.
    record["exit"] = reply.get("exit", 0)
    with open(log_path, "a") as log:
        log.write(json.dumps(record) + "\\n")
    sys.stdout.write(reply.get("stdout", ""))
    sys.stderr.write(reply.get("stderr", ""))
    sys.exit(reply.get("exit", 0))


def nth(replies, count):
    # A list of replies is played in order, the last one repeated.
    return replies[min(count, len(replies) - 1)] if isinstance(replies, list) else replies


def not_found(kind, name):
    answer({"exit": 1, "stderr": 'Error from server (NotFound): %s "%s" not found\\n' % (kind, name)})


def listing(items):
    answer({"stdout": json.dumps({"apiVersion": "v1", "kind": "List", "items": items})})


if tool == "pulumi":
    answer(scenario["pulumi"][" ".join(args[:2])])
kube = scenario["kubectl"]
rest = args[2:] if args[:1] == ["-n"] else args
verb = rest[0]
same = sum(1 for call in previous if call["argv"] == args)
deleted = set()
for call in previous:
    argv = call["argv"]
    if call["tool"] == "kubectl" and "delete" in argv and "job" in argv and call["exit"] == 0:
        deleted.update(a for a in argv[argv.index("job") + 1:] if not a.startswith("-"))


def forbidden(message):
    answer({"exit": 1, "stderr": "Error from server (Forbidden): %s\\n" % message})


if impersonated is not None:
    ci = kube["ci"]
    resource = "serviceaccounts" if impersonated.startswith("system:serviceaccount:") else "users"
    if ci["impersonation"] == "refused":
        forbidden('%s "%s" is forbidden: User "operator@example.com" cannot impersonate resource "%s" in API group ""'
                  % (resource, impersonated.rpartition(":")[2], resource))
    kind = "jobs" if verb == "create" else rest[1]
    granted = {("get", "configmap"), ("get", "pods"), ("get", "job"), ("create", "jobs"), ("delete", "job")}
    if impersonated != ci["identity"] or (verb, kind) not in granted or verb in ci.get("denied", []) or (
            kind == "configmap" and rest[2] != "gpu-runner-template"):
        forbidden('%s is forbidden: User "%s" cannot %s resource "%s" in the namespace "%s"'
                  % (kind, impersonated, verb, kind, args[1]))
if verb == "get":
    kind, value = rest[1], rest[2]
    if kind == "rolebinding":
        if kube["ci"]["binding"] is None:
            not_found("rolebindings.rbac.authorization.k8s.io", value)
        answer({"stdout": json.dumps(kube["ci"]["binding"])})
    if kind == "configmap":  # get configmap gpu-runner-template -o jsonpath={.data.runner-gpu\\.yaml}
        if args[-2:] != ["-o", "jsonpath={.data.runner-gpu\\\\.yaml}"]:
            answer({"exit": 1, "stderr": "the stub answers only the template's jsonpath\\n"})
        answer({"stdout": kube["template"]})
    if kind == "pods":  # get pods -l batch.kubernetes.io/job-name=<job> -o json
        job = rest[3].partition("=")[2]
        pod = nth(kube["pods"].get(job, [None]), same)
        listing([] if pod is None or job in deleted else [pod])
    if kind == "job":
        job = kube["jobs"].get(value)
        if job is None or value in deleted:
            not_found("jobs.batch", value)
        answer({"stdout": json.dumps(job)})
    if kind == "events":  # get events --field-selector involvedObject.name=<pod> -o json
        listing(kube["events"].get(rest[3].partition("=")[2], []))
    if kind == "node":
        node = kube["nodes"].get(value)
        seen = sum(1 for call in previous if call["argv"][:3] == ["get", "node", value])
        if node is None or (node["gone_after"] is not None and seen >= node["gone_after"]):
            not_found("nodes", value)
        answer({"stdout": json.dumps(node["node"]) if "json" in args else "node/%s\\n" % value})
if verb == "create":
    answer(nth(kube["create"], sum(1 for call in previous if "create" in call["argv"])))
answer(kube.get(verb, {}))
"""

CURL_WRAPPER = """\
#!/usr/bin/env bash
# Records curl's argv, then runs the real curl.
printf '%s\\0' "$@" >>"$STUB_LOG.curl"
exec {curl} "$@"
"""


def stamp(epoch: float, fraction: bool = False) -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return text + (".123456Z" if fraction else "Z")


def pod_list_pending(job: str, t0: int, reason: str = "unschedulable") -> dict:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{job}-x7k2p", "namespace": NAMESPACE, "creationTimestamp": stamp(t0 + PARTS["pod"]),
                     "labels": {"batch.kubernetes.io/job-name": job}},
        "spec": {"containers": [{"name": "runner", "image": IMAGE}]},
        "status": {"phase": "Pending"},
    }
    if reason == "unschedulable":
        pod["status"]["conditions"] = [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "lastTransitionTime": stamp(t0 + 1),
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        }]
    else:
        pod["spec"]["nodeName"] = f"node-{job}"
        waiting = {"reason": "ImagePullBackOff", "message": "403 Forbidden"}
        pod["status"]["containerStatuses"] = [{"name": "runner", "ready": False, "state": {"waiting": waiting}}]
    return pod


def gpu_runner(run_id: int = RUN_ID, *, pods=("pending", "running"), states=("absent", "offline", "online"),
               labels=None, leaves_after=1, cached_image=False, warm_node=False, node_gone_after=None,
               node_age_seconds=None, exec_reply=None) -> dict:
    """One GPU runner of a scenario: its Job, pods per poll, events, node and GitHub entry.

    pods: "none", "pending" (unschedulable), "pulling" (ImagePullBackOff), "running", "failed"
    states: the runner in GitHub per poll: "absent", "offline", "online"
    leaves_after: runner lists after the Job's deletion that still show it (None: never leaves)
    """
    job = f"gpu-runner-{run_id}-1"
    t0 = int(time.time()) - ONLINE_AFTER
    node = f"gke-gpu-runners-gpu-pool-5f1c2a3b-{run_id}"
    running = pod_list_pending(job, t0)
    running["spec"]["nodeName"] = node
    running["status"] = {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(t0 + PARTS["scheduled"])},
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(t0 + PARTS["started"] + 5)},
        ],
        "containerStatuses": [{"name": "runner", "ready": True, "image": IMAGE,
                               "state": {"running": {"startedAt": stamp(t0 + PARTS["started"])}}}],
    }
    failed = json.loads(json.dumps(running))
    failed["status"]["phase"] = "Failed"
    failed["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"reason": "Error", "exitCode": 3, "startedAt": stamp(t0 + PARTS["started"])}}
    states_of = {"none": None, "pending": pod_list_pending(job, t0), "pulling": pod_list_pending(job, t0, "pulling"),
                 "running": running, "failed": failed}
    pod_name = running["metadata"]["name"]

    def event(reason, message, **times):
        return {"apiVersion": "v1", "kind": "Event", "reason": reason, "message": message, "type": "Normal",
                "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": NAMESPACE},
                "metadata": {"name": f"{pod_name}.{reason.lower()}", "creationTimestamp": stamp(t0 + 1)},
                "firstTimestamp": None, "lastTimestamp": None, "eventTime": None, **times}

    pulled = (f'Container image "{IMAGE}" already present on machine' if cached_image
              else f'Successfully pulled image "{IMAGE}" in 30.1s (30.1s including waiting)')
    events = [
        event("FailedScheduling", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
              firstTimestamp=stamp(t0 + 1), lastTimestamp=stamp(t0 + 1)),
        event("Pulling", f'Pulling image "{IMAGE}"', firstTimestamp=stamp(t0 + 98), lastTimestamp=stamp(t0 + 98)),
        event("Pulled", pulled, firstTimestamp=stamp(t0 + PARTS["pulled"]), lastTimestamp=stamp(t0 + PARTS["pulled"])),
        event("Started", "Started container runner", firstTimestamp=stamp(t0 + 130), lastTimestamp=stamp(t0 + 130)),
    ]
    if not warm_node:
        # The cluster autoscaler writes events.k8s.io events: eventTime, with microseconds.
        events.insert(1, event("TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 2)}]",
                               eventTime=stamp(t0 + PARTS["scale_up"], fraction=True)))
    node_created = t0 - 3600 if warm_node else t0 + PARTS["node_created"]
    if node_age_seconds is not None:
        node_created = int(time.time()) - node_age_seconds
    ready = t0 - 3000 if warm_node else t0 + PARTS["node_ready"]
    return {
        "job": job,
        "t0": t0,
        "node_name": node,
        "pod_name": pod_name,
        "job_json": {"apiVersion": "batch/v1", "kind": "Job",
                     "metadata": {"name": job, "namespace": NAMESPACE, "creationTimestamp": stamp(t0)}},
        "pods": [states_of[kind] for kind in pods],
        "events": events,
        "node": {
            "gone_after": node_gone_after,
            "node": {"apiVersion": "v1", "kind": "Node",
                     "metadata": {"name": node, "creationTimestamp": stamp(node_created), "labels": {"gpu": "true"}},
                     "status": {"conditions": [
                         {"type": "MemoryPressure", "status": "False", "lastTransitionTime": stamp(node_created + 20)},
                         {"type": "Ready", "status": "True", "lastTransitionTime": stamp(ready)},
                     ]}},
        },
        "runner": {"labels": labels or ["self-hosted", "Linux", "X64", f"gpu-runner-{run_id}"],
                   "states": list(states), "leaves_after": leaves_after},
        "exec": exec_reply,
    }


def scenario(*runners: dict, **changes) -> dict:
    """Everything healthy, unless `changes` says otherwise; one healthy GPU runner unless given."""
    runners = runners or (gpu_runner(),)
    healthy = {
        "pulumi": {
            "stack output": {
                "stdout": json.dumps(
                    {
                        "clusterName": "gpu-runners",
                        "clusterLocation": "us-central1-a",
                        "kubeconfig": KUBECONFIG_TEXT,
                        "namespace": NAMESPACE,
                        "runnerImage": "ghcr.io/acme/gpu-runner@sha256:" + "ab" * 32,
                        "clusterRunnerImage": IMAGE,
                        # Not what the script uses: it reads the ConfigMap, as CI, as the workflow does.
                        "gpuRunnerTemplate": "stale: the Job template of an older pulumi up\n",
                    }
                )
            },
            "config get": {"stdout": "o/r\n"},
        },
        "kubectl": {
            "rollout": {"stdout": 'deployment "base-runner" successfully rolled out\n'},
            "create": {"stdout": "job.batch/created\n"},
            "exec": next((r["exec"] for r in runners if r["exec"]), {"stdout": GPU_LINE + "\n"}),
            "delete": {"stdout": ""},
            "ci": ci_access(),
            "template": TEMPLATE,
            "jobs": {r["job"]: r["job_json"] for r in runners},
            "pods": {r["job"]: r["pods"] for r in runners},
            "events": {r["pod_name"]: r["events"] for r in runners},
            "nodes": {r["node_name"]: r["node"] for r in runners},
        },
        "runners": Reply(
            200,
            {
                "total_count": 2,
                "runners": [
                    {
                        "name": "base-runner-7d9f-abcde",
                        "status": "online",
                        "labels": [{"name": "self-hosted"}, {"name": "base-runner"}],
                    },
                    {"name": "gpu-runner-1-1", "status": "offline", "labels": [{"name": "gpu-runner-1"}]},
                ],
            },
        ),
        "gpu_runners": {r["job"]: r["runner"] for r in runners},
        "release": Reply(200, {"tag_name": f"v{IMAGE_RUNNER_VERSION}", "name": f"v{IMAGE_RUNNER_VERSION}"}),
    }
    for key, value in changes.items():
        section, _, item = key.partition("__")
        if item:
            healthy[section][item.replace("_", " ") if section == "pulumi" else item] = value
        else:
            healthy[section] = value
    return healthy


def read_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class RunnerBoard:
    """The repository's runner list: the base runners as scripted, and each GPU runner in the
    state its scenario gives for the number of times the script has polled its pod; once its
    Job is deleted it goes offline, then leaves after `leaves_after` lists (or never)."""

    def __init__(self, base: Reply, gpu: dict, log: Path):
        self.base, self.gpu, self.log = base, gpu, log
        self.lists_after_delete = Counter()
        self.lock = threading.Lock()

    def __call__(self, request, match) -> Reply:
        if self.base.status != 200:
            return self.base
        calls = read_calls(self.log)
        runners = list(self.base.body["runners"])
        for job, spec in self.gpu.items():
            polls = sum(1 for c in calls if f"batch.kubernetes.io/job-name={job}" in c["argv"])
            states = spec["states"]
            state = states[max(0, min(polls, len(states)) - 1)]
            if any("delete" in c["argv"] and job in c["argv"] and c["exit"] == 0 for c in calls):
                with self.lock:
                    self.lists_after_delete[job] += 1
                    lists = self.lists_after_delete[job]
                if state != "absent":
                    gone = spec["leaves_after"] is not None and lists > spec["leaves_after"]
                    state = "absent" if gone else "offline"
            if state != "absent":
                runners.append({"id": len(runners) + 1, "name": job, "os": "Linux", "status": state, "busy": False,
                                "labels": [{"name": name, "type": "custom"} for name in spec["labels"]]})
        return Reply(200, {"total_count": len(runners), "runners": runners})


class Run:
    """One run of the script, and everything the stubs and the fake GitHub saw."""

    def __init__(self, result: subprocess.CompletedProcess, log: Path, github: FakeGitHub, seconds: float = 0.0):
        self.returncode = result.returncode
        self.output = result.stdout + result.stderr
        self.stdout = result.stdout
        self.seconds = seconds
        self.calls = read_calls(log)
        curl_log = Path(f"{log}.curl")
        self.curl_argv = curl_log.read_text().split("\0") if curl_log.exists() else []
        self.github_requests = github.requests

    def kubectl(self, verb: str) -> list[dict]:
        return [call for call in self.calls if call["tool"] == "kubectl" and verb in call["argv"]]

    def line(self, prefix: str) -> str:
        lines = [line for line in self.stdout.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1, self.output
        return lines[0]

    def created_manifests(self) -> list[str]:
        return [call["stdin"] for call in self.kubectl("create")]

    def table(self, title: str) -> dict[str, list[str]]:
        """A printed table's rows by their first column, with its header under ''."""
        lines = self.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(title))
        rows = {}
        for line in lines[start + 1:]:
            if not line.strip() or not re.match(r"^(runner|node|gpu-runner-|gke-)", line):
                break
            first, *rest = line.split()
            rows["" if first in ("runner", "node") else first] = rest
        return rows


def make_tools(directory: Path) -> Path:
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for tool in ("pulumi", "kubectl"):
        stub = bin_dir / tool
        stub.write_text(STUB.replace("@PYTHON@", sys.executable).replace("@TOOL@", tool))
        stub.chmod(0o755)
    curl = bin_dir / "curl"
    real_curl = shutil.which("curl")
    assert real_curl, "curl is not on PATH"
    curl.write_text(CURL_WRAPPER.format(curl=real_curl))
    curl.chmod(0o755)
    return bin_dir


@pytest.fixture
def tools(tmp_path) -> Path:
    return make_tools(tmp_path)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> tuple[Run, Path]:
    """One run with everything healthy, shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("healthy")
    return smoke(tmp_path, make_tools(tmp_path), scenario(), KEEP_ME="must-stay-a-placeholder"), tmp_path


# Runners of the repository that this stack did not register, next to its own.
TUTORIAL_RUNNER = {"id": 41, "name": "tutorial-runner", "status": "online",
                   "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64", "base-runner")]}
DEFAULT_LABELS_RUNNER = {"id": 42, "name": "old-laptop", "status": "offline",
                         "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64")]}
WRONG_RUN_RUNNER = {"id": 43, "name": "gpu-runner-5-1", "status": "offline",
                    "labels": [{"name": n} for n in ("self-hosted", "gpu-runner-6")]}
OTHER_TEAMS_RUNNER = {"id": 44, "name": "build-box", "status": "online",
                      "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64", "big-cpu")]}
OWN_RUNNERS = [
    {"id": 1, "name": "base-runner-7d9f-abcde", "status": "online", "labels": [{"name": "self-hosted"}, {"name": "base-runner"}]},
    {"id": 2, "name": "gpu-runner-1-1", "status": "offline", "labels": [{"name": "gpu-runner-1"}]},
    {"id": 3, "name": "gpu-runner-77-2", "status": "online",
     "labels": [{"name": n} for n in ("self-hosted", "Linux", "X64", "gpu-runner-77")]},
]


@pytest.fixture(scope="module")
def google_ci_and_foreign_runners(tmp_path_factory) -> Run:
    """One run in which CI signs in with a Google service account (a User subject), and the
    repository also lists runners this stack did not register."""
    tmp_path = tmp_path_factory.mktemp("google-ci")
    runners = OWN_RUNNERS + [TUTORIAL_RUNNER, DEFAULT_LABELS_RUNNER, WRONG_RUN_RUNNER, OTHER_TEAMS_RUNNER]
    the_scenario = scenario(kubectl__ci=ci_access("User"),
                            runners=Reply(200, {"total_count": len(runners), "runners": runners}))
    return smoke(tmp_path, make_tools(tmp_path), the_scenario)


def project_folder(tmp_path: Path, runner_version: str = IMAGE_RUNNER_VERSION) -> Path:
    """A project folder whose runner_image/Dockerfile pins `runner_version`."""
    project = tmp_path / "project"
    (project / "runner_image").mkdir(parents=True, exist_ok=True)
    (project / "runner_image" / "Dockerfile").write_text(
        f"FROM ubuntu:noble\nARG RUNNER_VERSION={runner_version}\nARG RUNNER_SHA256={'0' * 64}\n"
    )
    return project


def environment(tmp_path: Path, tools: Path, github: FakeGitHub, the_scenario: dict, **env: str) -> dict:
    log = tmp_path / "calls.jsonl"
    github.default(RUNNERS_PATH, the_scenario["runners"])
    github.respond("GET", RUNNERS_PATH, RunnerBoard(the_scenario.pop("runners"), the_scenario.pop("gpu_runners"), log))
    github.default(RELEASE_PATH, the_scenario.pop("release"))
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(the_scenario))
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    base = {
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp),
        "STUB_SCENARIO": str(scenario_file),
        "STUB_LOG": str(log),
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_API_URL": github.url,
        "SMOKE_RUN_ID": str(RUN_ID),
        "SMOKE_RUNNER_TIMEOUT_SECONDS": "0",
        "SMOKE_ROLLOUT_TIMEOUT_SECONDS": "5",
        "SMOKE_GPU_TIMEOUT_SECONDS": "30",
        "SMOKE_DEREGISTER_TIMEOUT_SECONDS": "10",
        "SMOKE_POLL_SECONDS": "0",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    }
    base.update(env)
    return {key: value for key, value in base.items() if value is not None}


def smoke(tmp_path: Path, tools: Path, the_scenario: dict, *args: str, cwd: Path | None = None, **env: str) -> Run:
    with FakeGitHub() as github:
        full_env = environment(tmp_path, tools, github, the_scenario, **env)
        started = time.monotonic()
        result = subprocess.run(
            [str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60, check=False,
            cwd=cwd or project_folder(tmp_path),
        )
        return Run(result, Path(full_env["STUB_LOG"]), github, time.monotonic() - started)


def assert_token_kept_secret(run: Run):
    assert TOKEN not in run.output
    for call in run.calls:
        assert TOKEN not in " ".join(call["argv"])
    assert run.curl_argv, "curl was not called"
    assert TOKEN not in " ".join(run.curl_argv)


def assert_jobs_deleted(run: Run, *jobs: str):
    """Every Job the script created is deleted, after it was created."""
    jobs = jobs or (JOB,)
    deleted = []
    for call in run.kubectl("delete"):
        argv = call["argv"]
        assert argv[:4] == ["-n", NAMESPACE, "delete", "job"] and argv[-2:] == ["--ignore-not-found", "--wait=false"]
        assert run.calls.index(call) > run.calls.index(run.kubectl("create")[0])
        deleted += argv[4:-2]
    assert sorted(set(deleted)) == sorted(jobs), run.output


def job_lists(run: Run) -> list[float]:
    return [request.wall for request in run.github_requests if request.path == RUNNERS_PATH]


# The kubectl calls a workflow's start and stop make, which must carry CI's identity.
AS_CI = {"get configmap", "create", "get pods", "get job", "delete"}
# The calls that stay with the operator's own rights (CI may not read events or nodes, nor exec).
AS_OPERATOR = {"rollout", "get rolebinding", "get events", "get node", "exec"}


def call_kind(call: dict) -> str:
    """A kubectl call in a word or two: its verb, and for `get` the kind it reads."""
    argv = call["argv"]
    rest = argv[2:] if argv[:1] == ["-n"] else argv
    return f"get {rest[1]}" if rest[0] == "get" else rest[0]


def assert_started_and_stopped_as(run: Run, identity: str):
    kubectl_calls = [call for call in run.calls if call["tool"] == "kubectl"]
    assert {call_kind(call) for call in kubectl_calls} == AS_CI | AS_OPERATOR, "every kind of call was made"
    for call in kubectl_calls:
        expected = identity if call_kind(call) in AS_CI else None
        assert call["as"] == expected, call["argv"]
        assert call["exit"] == 0, call["argv"]
    kinds = [call_kind(call) for call in kubectl_calls]
    # CI's identity is read first, then the template as CI, then the Jobs are created.
    assert kinds.index("get rolebinding") < kinds.index("get configmap") < kinds.index("create")
    (template,) = [call for call in kubectl_calls if call_kind(call) == "get configmap"]
    assert template["argv"] == ["-n", NAMESPACE, "get", "configmap", "gpu-runner-template",
                                "-o", r"jsonpath={.data.runner-gpu\.yaml}"]
    (binding,) = [call for call in kubectl_calls if call_kind(call) == "get rolebinding"]
    assert binding["argv"] == ["-n", NAMESPACE, "get", "rolebinding", "ci-runner-launcher", "-o", "json"]


# --- tests ------------------------------------------------------------------------------


def test_shellcheck_finds_nothing():
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck) if shellcheck.exists() else "shellcheck", "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_is_executable_bash_in_strict_mode():
    text = SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -Eeuo pipefail\n" in text


def test_help_names_every_setting_and_touches_nothing(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(), "--help")

    assert run.returncode == 0
    assert "Usage: scripts/smoke-test.sh" in run.stdout
    assert "gh auth token" in run.stdout and "envsubst" in run.stdout
    read_by_the_script = set(re.findall(r"\$\{((?:SMOKE|GITHUB)_[A-Z_]+)[:}]", SCRIPT.read_text()))
    read_by_the_script -= {"GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT"}  # the template's, not settings
    assert len(read_by_the_script) >= 13
    for name in read_by_the_script | {"PULUMI", "KUBECTL"}:
        assert name in run.stdout, name
    assert run.calls == []


def test_bad_settings_are_refused_before_anything_runs(tmp_path, tools):
    for setting, value in [("SMOKE_GPU_RUNNERS", "0"), ("SMOKE_FOLLOW_NODE", "yes"), ("SMOKE_RUN_ID", "12a"),
                           ("SMOKE_DEREGISTER_TIMEOUT_SECONDS", "-1"), ("SMOKE_NODE_TIMEOUT_SECONDS", "1h")]:
        run = smoke(tmp_path, tools, scenario(), **{setting: value})

        assert run.returncode == 2, setting
        assert setting in run.output
        assert run.calls == []


def test_all_checks_pass_with_a_real_gpu_runner(healthy):
    run, _ = healthy

    assert run.returncode == 0, run.output
    assert run.line("PASS  base runner deployment")
    assert "base-runner-7d9f-abcde" in run.line("PASS  base runner online")
    assert JOB in run.line("PASS  GPU runner jobs")
    online = run.line(f"PASS  GPU runner online ({JOB})")
    assert f"label gpu-runner-{RUN_ID}" in online and "gke-gpu-runners-gpu-pool-5f1c2a3b-9000" in online
    assert GPU_LINE in run.line(f"PASS  GPU ({JOB})")
    assert "after its Job was deleted" in run.line(f"PASS  GPU runner removed ({JOB})")
    assert "FAIL" not in run.output and "WARN" not in run.output
    assert "All checks passed." in run.stdout
    assert_jobs_deleted(run)
    assert_token_kept_secret(run)


def test_cold_start_table_splits_the_start_into_parts_from_kubernetes_timestamps(healthy):
    run, _ = healthy

    table = run.table("GPU runner cold start, seconds after its Job was created")
    assert table[""] == ["pod-created", "scale-up", "node-ready", "scheduled", "pulled", "started", "online"]
    *parts, online = table[JOB]
    assert parts == [str(PARTS[p]) for p in ("pod", "scale_up", "node_ready", "scheduled", "pulled", "started")]
    # Online is the script's own clock: the first poll that saw it, ONLINE_AFTER after the Job's creation.
    assert ONLINE_AFTER <= int(online) <= ONLINE_AFTER + 40
    assert "-: did not happen or not seen. online: the first poll (every 0s)" in run.stdout
    assert "already present" not in run.stdout and "negative" not in run.stdout
    assert "billed" not in run.stdout  # SMOKE_FOLLOW_NODE is off by default


def test_created_manifest_is_the_template_with_only_run_id_and_attempt_substituted(healthy):
    run, _ = healthy

    (manifest,) = run.created_manifests()
    assert manifest == TEMPLATE.replace("${GITHUB_RUN_ID}", str(RUN_ID)).replace("${GITHUB_RUN_ATTEMPT}", "1")
    job = yaml.safe_load(manifest)
    assert job["metadata"]["name"] == JOB
    assert job["metadata"]["labels"]["gke-gpu-runners/run-id"] == str(RUN_ID)
    assert job["metadata"]["labels"]["gke-gpu-runners/run-attempt"] == "1"
    assert job["metadata"]["annotations"]["smoke-test/untouched"] == "$HOME ${KEEP_ME} $(date)"
    (create,) = run.kubectl("create")
    assert create["argv"] == ["-n", NAMESPACE, "create", "-f", "-"]


def test_gpu_is_looked_for_inside_the_runner_container(healthy):
    run, _ = healthy

    (exec_call,) = run.kubectl("exec")
    assert exec_call["argv"] == ["-n", NAMESPACE, "exec", f"{JOB}-x7k2p", "-c", "runner", "--", "nvidia-smi", "-L"]
    (delete,) = run.kubectl("delete")
    assert run.calls.index(exec_call) < run.calls.index(delete)


def test_runner_leaves_github_only_after_its_job_is_deleted(healthy):
    run, _ = healthy

    (delete,) = run.kubectl("delete")
    assert delete["argv"] == ["-n", NAMESPACE, "delete", "job", JOB, "--ignore-not-found", "--wait=false"]
    after = [at for at in job_lists(run) if at > delete["at"]]
    assert len(after) == 2  # offline once, then gone


def test_one_pulumi_call_reads_every_output(healthy):
    run, _ = healthy

    assert [call["argv"] for call in run.calls if call["tool"] == "pulumi"] == [
        ["stack", "output", "--json", "--show-secrets"]
    ]


def test_kubectl_uses_the_operator_kubeconfig_from_a_private_file_that_is_removed(healthy):
    run, tmp_path = healthy

    kubectl_calls = [call for call in run.calls if call["tool"] == "kubectl"]
    assert kubectl_calls
    for call in kubectl_calls:
        assert call["kubeconfig_text"] == KUBECONFIG_TEXT
        assert call["kubeconfig_mode"] == 0o600
        if call["argv"][:2] != ["get", "node"]:  # nodes have no namespace
            assert call["argv"][:2] == ["-n", NAMESPACE]
    assert not Path(kubectl_calls[0]["kubeconfig"]).exists()
    assert list((tmp_path / "tmp").iterdir()) == [], "the private temp folder must be removed"
    (rollout,) = run.kubectl("rollout")
    assert rollout["argv"] == ["-n", NAMESPACE, "rollout", "status", "deployment/base-runner", "--timeout=5s"]


def test_github_gets_the_token_in_a_header(healthy):
    run, _ = healthy

    requests = [request for request in run.github_requests if request.path in (RUNNERS_PATH, RELEASE_PATH)]
    assert len(requests) >= 4 and {r.path for r in requests} == {RUNNERS_PATH, RELEASE_PATH}
    for request in requests:
        assert request.method == "GET"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        assert request.headers["x-github-api-version"] == "2022-11-28"


def test_gpu_runner_jobs_are_started_and_stopped_as_the_service_account_of_ci_rolebinding(healthy):
    run, _ = healthy

    assert_started_and_stopped_as(run, CI_ACCOUNT)
    assert run.line("PASS  GPU runner jobs").endswith(
        f"created {JOB} in namespace {NAMESPACE} as {CI_ACCOUNT} (CI: the ServiceAccount of RoleBinding ci-runner-launcher)")


def test_gpu_runner_template_is_read_from_the_cluster_not_from_the_stack_output(healthy):
    run, _ = healthy

    (manifest,) = run.created_manifests()
    assert "stale" not in manifest
    assert yaml.safe_load(manifest)["metadata"]["name"] == JOB


def test_gpu_runner_jobs_are_started_as_the_google_service_account_of_a_user_subject(google_ci_and_foreign_runners):
    run = google_ci_and_foreign_runners

    assert run.returncode == 0, run.output
    assert_started_and_stopped_as(run, CI_GOOGLE)
    assert f"as {CI_GOOGLE} (CI: the User of RoleBinding ci-runner-launcher)" in run.line("PASS  GPU runner jobs")
    assert_jobs_deleted(run)


def test_runners_this_stack_did_not_register_but_that_could_take_its_jobs_are_warned_about(
        google_ci_and_foreign_runners):
    run = google_ci_and_foreign_runners

    assert run.returncode == 0, run.output
    assert "All checks passed." in run.stdout
    warned = re.findall(r"^WARN  foreign runner \((.*?)\):", run.stdout, re.MULTILINE)
    assert warned == ["tutorial-runner", "old-laptop", "gpu-runner-5-1"]  # not our own, not build-box
    assert run.line("WARN  foreign runner (tutorial-runner)") == (
        "WARN  foreign runner (tutorial-runner): labels self-hosted, Linux, X64, base-runner (id 41, online); "
        "this stack did not register it, yet it carries base-runner")
    assert run.line("WARN  foreign runner (old-laptop)").endswith(
        "and it has only default labels: it takes any job that asks for self-hosted")
    assert run.line("WARN  foreign runner (gpu-runner-5-1)").endswith("yet it carries gpu-runner-6")
    hints = [line.strip() for line in run.stdout.splitlines() if "the tutorial's, say" in line]
    assert len(hints) == 3
    assert hints[0] == ("hint: such a runner (the tutorial's, say) can take this stack's jobs: remove it in o/r's "
                        "Settings > Actions > Runners, or gh api -X DELETE repos/o/r/actions/runners/41")
    assert hints[1].endswith("repos/o/r/actions/runners/42") and hints[2].endswith("repos/o/r/actions/runners/43")


def test_refused_impersonation_fails_with_the_operator_rights_hint_and_starts_no_job(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(kubectl__ci=ci_access(impersonation="refused")))

    assert run.returncode == 1
    failure = run.line("FAIL  CI identity")
    assert f"you may not act as {CI_ACCOUNT} (ServiceAccount of RoleBinding ci-runner-launcher)" in failure
    assert 'cannot impersonate resource "serviceaccounts"' in failure
    assert "roles/container.admin" in run.output and "verb impersonate on serviceaccounts" in run.output
    assert [call_kind(c) for c in run.calls if c["as"]] == ["get configmap"]  # refused, nothing else tried as CI
    assert run.kubectl("create") == [] and run.kubectl("delete") == []
    assert "1 check(s) failed: CI identity" in run.stdout
    assert run.line("PASS  base runner online")  # the other checks still ran


def test_missing_ci_rolebinding_fails_with_the_pulumi_up_hint_and_starts_no_job(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(kubectl__ci=ci_access(binding=False)))

    assert run.returncode == 1
    assert f"RoleBinding ci-runner-launcher not found in namespace {NAMESPACE}" in run.line("FAIL  CI identity")
    assert "the RoleBinding that gives CI its rights is missing: run pulumi up" in run.output
    assert all(c["as"] is None for c in run.calls if c["tool"] == "kubectl")
    assert run.kubectl("create") == []


def test_jobs_ci_may_not_delete_fail_and_are_then_deleted_with_the_operators_rights(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(kubectl__ci=ci_access(denied=("delete",))))

    assert run.returncode == 1
    assert f"kubectl delete job {JOB} as {CI_ACCOUNT} failed" in run.line("FAIL  GPU runner jobs deleted")
    deletes = run.kubectl("delete")
    assert [(c["as"], c["exit"]) for c in deletes] == [(CI_ACCOUNT, 1), (CI_ACCOUNT, 1), (None, 0)]
    assert f"{CI_ACCOUNT} could not delete job(s) {JOB} in namespace {NAMESPACE}; deleted them with your own rights" \
        in run.output
    assert_jobs_deleted(run)


def test_runner_with_an_extra_label_fails(tmp_path, tools):
    runner = gpu_runner(labels=["self-hosted", "Linux", "X64", f"gpu-runner-{RUN_ID}", "gpu"])
    run = smoke(tmp_path, tools, scenario(runner))

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert f"expected gpu-runner-{RUN_ID} alone (besides self-hosted, Linux, X64)" in failure
    assert "runner-broker" in run.output
    assert run.line(f"PASS  GPU ({JOB})")  # the pod runs: the GPU is still looked for
    assert_jobs_deleted(run)


def test_runner_with_only_the_default_labels_fails(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(labels=["self-hosted", "Linux", "X64"])))

    assert run.returncode == 1
    assert "registered with labels self-hosted, Linux, X64;" in run.line(f"FAIL  GPU runner online ({JOB})")


def test_runner_never_online_fails_with_the_broker_hint(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(pods=["running"], states=["absent"])), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert "not online after 1s" in failure and f"no runner named {JOB} is registered in o/r" in failure
    assert f"kubectl -n {NAMESPACE}-system logs deploy/runner-broker" in run.output
    assert f"kubectl -n {NAMESPACE} logs {JOB}-x7k2p" in run.output
    assert "its runner never registered" in run.line(f"SKIP  GPU runner removed ({JOB})")
    assert run.table("GPU runner cold start")[JOB][-1] == "-"
    assert_jobs_deleted(run)


def test_runner_registered_but_offline_says_so(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(pods=["running"], states=["offline"])), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    assert "not online after 1s: registered in o/r but offline" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert run.line(f"PASS  GPU runner removed ({JOB})")


def test_gpu_pool_that_never_scales_up_fails_with_a_quota_hint(tmp_path, tools):
    runner = gpu_runner(pods=["pending"], states=["absent"])
    runner["events"].append({
        "reason": "NotTriggerScaleUp", "lastTimestamp": stamp(runner["t0"] + 20),
        "message": "pod didn't trigger scale-up: 1 max node group size reached",
        "involvedObject": {"kind": "Pod", "name": runner["pod_name"]},
    })
    run = smoke(tmp_path, tools, scenario(runner), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner online ({JOB})")
    assert "Insufficient nvidia.com/gpu" in failure and "max node group size reached" in failure
    assert "quota" in run.output and "accelerator-types" in run.output
    assert run.kubectl("exec") == []
    assert run.line(f"SKIP  GPU ({JOB})")
    assert_jobs_deleted(run)


def test_job_without_a_pod_points_at_the_namespace_gpu_quota(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(pods=["none"], states=["absent"])), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    assert "no pod yet" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert f"describe job {JOB}" in run.output and "quota" in run.output
    assert run.table("GPU runner cold start")[JOB] == ["-"] * 7


def test_image_pull_failure_gets_the_pull_token_hint(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(pods=["pulling"], states=["absent"])), **SHORT_GPU_WAIT)

    assert run.returncode == 1
    assert "ImagePullBackOff" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert "registryPullToken" in run.output
    assert_jobs_deleted(run)


def test_pod_that_ends_before_its_runner_is_online_fails_without_waiting(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(pods=["failed"], states=["absent"])),
                SMOKE_GPU_TIMEOUT_SECONDS="600", SMOKE_POLL_SECONDS="1")

    assert run.returncode == 1
    assert "its pod ended (Failed: Error (exit 3))" in run.line(f"FAIL  GPU runner online ({JOB})")
    assert "logs deploy/runner-broker" in run.output
    assert run.seconds < 10
    assert_jobs_deleted(run)


def test_no_gpu_in_nvidia_smi_output_fails(tmp_path, tools):
    no_gpu = {"stdout": "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", "exit": 9}
    run = smoke(tmp_path, tools, scenario(gpu_runner(exec_reply=no_gpu)))

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU ({JOB})")
    assert "printed no 'GPU 0:' line" in failure and "couldn't communicate" in failure
    assert "gpuDriverVersion" in run.output and "nvidia-gpu-device-plugin" in run.output
    assert run.line(f"PASS  GPU runner online ({JOB})")
    assert "1 check(s) failed: GPU (gpu-runner-9000-1)" in run.stdout
    assert_jobs_deleted(run)


def test_runner_that_stays_in_github_after_its_job_is_deleted_fails(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(gpu_runner(leaves_after=None)),
                SMOKE_DEREGISTER_TIMEOUT_SECONDS="1", SMOKE_POLL_SECONDS="0.2")

    assert run.returncode == 1
    failure = run.line(f"FAIL  GPU runner removed ({JOB})")
    assert "still registered in o/r 1s after its Job was deleted" in failure and failure.endswith("(offline)")
    assert "logs deploy/runner-broker" in run.output and "Settings > Actions > Runners" in run.output


def test_three_runners_start_at_once_and_get_one_row_each(tmp_path, tools):
    runners = [
        gpu_runner(RUN_ID),
        gpu_runner(RUN_ID + 1, warm_node=True, cached_image=True, pods=["running"], states=["offline", "online"]),
        gpu_runner(RUN_ID + 2, states=["absent", "absent", "absent", "online"]),
    ]
    run = smoke(tmp_path, tools, scenario(*runners), SMOKE_GPU_RUNNERS="3")

    jobs = [f"gpu-runner-{RUN_ID + i}-1" for i in range(3)]
    assert run.returncode == 0, run.output
    creates = run.kubectl("create")
    assert [yaml.safe_load(c["stdin"])["metadata"]["name"] for c in creates] == jobs
    # All three are created before the first poll.
    first_poll = run.calls.index(next(c for c in run.calls if "pods" in c["argv"]))
    assert max(run.calls.index(c) for c in creates) < first_poll
    for job in jobs:
        assert run.line(f"PASS  GPU runner online ({job})")
        assert run.line(f"PASS  GPU ({job})")
        assert run.line(f"PASS  GPU runner removed ({job})")
    assert f"created {' '.join(jobs)} in namespace {NAMESPACE}" in run.line("PASS  GPU runner jobs")
    table = run.table("GPU runner cold start")
    assert set(table) == {"", *jobs}
    assert table[jobs[0]][:6] == ["1", "3", "95", "97", "128", "130"]
    # A node that was already up: no scale-up, node ready before the Job; a cached image.
    assert table[jobs[1]][:6] == ["1", "-", "-3000", "97", "128*", "130"]
    assert "* the image was already present (image streaming or a cached image)" in run.stdout
    assert "negative: before the Job was created (the node was already up)" in run.stdout
    assert_jobs_deleted(run, *jobs)
    assert len(run.kubectl("delete")) == 1  # one call deletes them all


def test_older_runner_version_warns_without_failing(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(release=Reply(200, {"tag_name": "v2.337.0"})))

    assert run.returncode == 0, run.output
    warning = run.line("WARN  runner version")
    assert "the image has runner 2.336.0, GitHub's latest is 2.337.0" in warning
    assert "cold start then downloads and installs the update" in warning
    assert "ARG RUNNER_VERSION and ARG RUNNER_SHA256" in run.output
    assert "All checks passed." in run.stdout


def test_current_runner_version_of_the_real_dockerfile_passes(tmp_path, tools):
    dockerfile = (ROOT / "runner_image" / "Dockerfile").read_text()
    (ours,) = re.findall(r"^ARG RUNNER_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    run = smoke(tmp_path, tools, scenario(release=Reply(200, {"tag_name": f"v{ours}"})), cwd=ROOT)

    assert run.returncode == 0, run.output
    assert f"the image has runner {ours}, GitHub's latest release is {ours}" in run.line("PASS  runner version")
    assert "WARN" not in run.output


def test_failed_release_lookup_warns_without_failing(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(release=Reply(503, {"message": "unavailable"})))

    assert run.returncode == 0, run.output
    assert "could not read GitHub's latest runner release (HTTP 503" in run.line("WARN  runner version")
    assert "releases/latest" in run.output


def test_missing_dockerfile_warns_without_failing(tmp_path, tools):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = smoke(tmp_path, tools, scenario(), cwd=elsewhere)

    assert run.returncode == 0, run.output
    assert "no ARG RUNNER_VERSION=x.y.z in" in run.line("WARN  runner version")
    assert "from the project folder" in run.output
    assert RELEASE_PATH not in [request.path for request in run.github_requests]


def test_follow_node_prints_the_billed_minutes_once_the_node_is_gone(tmp_path, tools):
    runner = gpu_runner(node_gone_after=3, node_age_seconds=630)
    run = smoke(tmp_path, tools, scenario(runner), SMOKE_FOLLOW_NODE="1")

    assert run.returncode == 0, run.output
    node = runner["node_name"]
    node_calls = [c["argv"] for c in run.calls if c["argv"][:3] == ["get", "node", node]]
    assert node_calls[0] == ["get", "node", node, "-o", "json"]  # read for the table, before the Job goes
    assert node_calls[1:] == [["get", "node", node, "-o", "name"]] * 3  # followed until NotFound
    (delete,) = run.kubectl("delete")
    follows = [c for c in run.calls if c["argv"][:3] == ["get", "node", node]][1:]
    assert all(c["at"] > delete["at"] for c in follows)
    table = run.table("GPU node billing")
    assert table[""] == ["created", "removed", "billed", "idle", "after", "its", "runner"]
    created, removed, billed, unit, idle = table[node]
    assert created == runner["node"]["node"]["metadata"]["creationTimestamp"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", removed)
    removed_epoch = time.mktime(time.strptime(removed, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    created_epoch = time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert (billed, unit) == (str(math.ceil((removed_epoch - created_epoch) / 60)), "min")
    assert billed == "11"  # 630 s and a few: 11 started minutes
    assert re.fullmatch(r"\d+s", idle) and int(idle[:-1]) <= 10


def test_follow_node_that_stays_warns_after_the_node_timeout(tmp_path, tools):
    runner = gpu_runner(node_gone_after=None, node_age_seconds=100)
    run = smoke(tmp_path, tools, scenario(runner), SMOKE_FOLLOW_NODE="1", SMOKE_NODE_TIMEOUT_SECONDS="1",
                SMOKE_POLL_SECONDS="0.2")

    assert run.returncode == 0, run.output
    warning = run.line(f"WARN  GPU node removed ({runner['node_name']})")
    assert "still in the cluster 1s after its runner ended" in warning
    assert "gpuMinNodes or gpuWarmRunners" in run.output
    created, *rest = run.table("GPU node billing")[runner["node_name"]]
    assert created == runner["node"]["node"]["metadata"]["creationTimestamp"]
    assert rest[:2] == ["still", "there"] and rest[2] in (">=2", ">=3") and rest[3] == "min"  # 100 s and more
    assert re.fullmatch(r">=\d+s", rest[4])


def test_refused_create_fails_and_the_jobs_created_are_still_deleted(tmp_path, tools):
    refused = {"exit": 1, "stderr": 'Error from server (Forbidden): jobs "x" is forbidden: exceeded quota\n'}
    the_scenario = scenario(gpu_runner(RUN_ID), gpu_runner(RUN_ID + 1),
                            kubectl__create=[{"stdout": "job.batch/created\n"}, refused])
    run = smoke(tmp_path, tools, the_scenario, SMOKE_GPU_RUNNERS="2")

    assert run.returncode == 1
    second = f"gpu-runner-{RUN_ID + 1}-1"
    assert f"kubectl create {second} as {CI_ACCOUNT} was refused" in run.line("FAIL  GPU runner jobs")
    assert "exceeded quota" in run.output
    assert run.line(f"PASS  GPU runner online ({JOB})")  # the one that was created is still checked
    assert set(run.table("GPU runner cold start")) == {"", JOB}
    assert_jobs_deleted(run, JOB, second)
    # The checks delete the Job they ran; the exit trap deletes the one whose create failed.
    assert [call["argv"][4:-2] for call in run.kubectl("delete")] == [[JOB], [second]]


def test_interrupted_run_still_deletes_the_jobs(tmp_path, tools):
    runners = [gpu_runner(RUN_ID, pods=["pending"], states=["absent"]),
               gpu_runner(RUN_ID + 1, pods=["pending"], states=["absent"])]
    with FakeGitHub() as github:
        env = environment(tmp_path, tools, github, scenario(*runners), SMOKE_GPU_RUNNERS="2",
                          SMOKE_GPU_TIMEOUT_SECONDS="600", SMOKE_POLL_SECONDS="0.1")
        log = Path(env["STUB_LOG"])
        process = subprocess.Popen([str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=project_folder(tmp_path))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and '"pods"' not in (log.read_text() if log.exists() else ""):
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
        run = Run(subprocess.CompletedProcess([], process.returncode, stdout, stderr), log, github)

    assert run.returncode == 143
    assert_jobs_deleted(run, JOB, f"gpu-runner-{RUN_ID + 1}-1")


def test_base_runner_offline_fails_with_the_runner_hint(tmp_path, tools):
    offline = Reply(
        200,
        {
            "total_count": 1,
            "runners": [{"name": "base-runner-x", "status": "offline", "labels": [{"name": "base-runner"}]}],
        },
    )
    run = smoke(tmp_path, tools, scenario(runners=offline))

    assert run.returncode == 1
    failure = run.line("FAIL  base runner online")
    assert "base-runner-x offline" in failure
    assert "logs deploy/base-runner" in run.output and "PAT" in run.output
    assert "logs deploy/runner-broker" in run.output
    assert "1 check(s) failed: base runner online" in run.stdout
    assert run.line(f"PASS  GPU runner online ({JOB})")
    assert_jobs_deleted(run)
    assert_token_kept_secret(run)


def test_a_foreign_runner_with_our_label_is_not_taken_for_our_base_runner(tmp_path, tools):
    runners = Reply(200, {"total_count": 2, "runners": [
        {"id": 1, "name": "base-runner-x", "status": "offline", "labels": [{"name": "base-runner"}]},
        {"id": 41, "name": "tutorial-runner", "status": "online", "labels": [{"name": "base-runner"}]},
    ]})
    run = smoke(tmp_path, tools, scenario(runners=runners))

    assert run.returncode == 1
    assert "base-runner-x offline" in run.line("FAIL  base runner online")
    assert run.line("WARN  foreign runner (tutorial-runner)")


def test_refused_token_fails_once_and_the_gpu_runner_is_checked_in_the_cluster(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(runners=Reply(401, {"message": "Bad credentials"})))

    assert run.returncode == 1
    assert "401" in run.line("FAIL  base runner online")
    assert "gh auth token" in run.output
    assert "GitHub refused the token" in run.line(f"SKIP  GPU runner online ({JOB})")
    assert run.line(f"PASS  GPU ({JOB})")
    assert "1 check(s) failed: base runner online" in run.stdout
    assert len(job_lists(run)) == 1
    assert_token_kept_secret(run)


def test_missing_token_checks_the_gpu_runner_in_the_cluster_only(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(), GITHUB_TOKEN=None)

    assert run.returncode == 1
    assert "GITHUB_TOKEN is not set" in run.line("FAIL  base runner online")
    assert "GITHUB_TOKEN is not set" in run.line(f"SKIP  GPU runner online ({JOB})")
    assert run.line(f"PASS  GPU ({JOB})")
    assert run.line(f"SKIP  GPU runner removed ({JOB})")
    assert [request.path for request in run.github_requests] == [RELEASE_PATH]
    assert "authorization" not in run.github_requests[0].headers
    assert_jobs_deleted(run)


def test_repository_comes_from_pulumi_config_when_not_in_env(tmp_path, tools):
    run = smoke(tmp_path, tools, scenario(), GITHUB_REPOSITORY=None)

    assert run.returncode == 0, run.output
    assert ["config", "get", "githubRepository"] in [call["argv"] for call in run.calls]
    assert {request.path for request in run.github_requests} == {RUNNERS_PATH, RELEASE_PATH}


def test_deployment_not_available_fails_and_the_other_checks_still_run(tmp_path, tools):
    stuck = {"exit": 1, "stderr": "error: timed out waiting for the condition\n"}
    run = smoke(tmp_path, tools, scenario(kubectl__rollout=stuck))

    assert run.returncode == 1
    assert "timed out waiting" in run.line("FAIL  base runner deployment")
    assert "logs deploy/base-runner" in run.output
    assert run.line("PASS  base runner online")
    assert run.line(f"PASS  GPU ({JOB})")


def test_without_stack_outputs_nothing_else_runs(tmp_path, tools):
    broken = {"exit": 255, "stderr": "error: no stack selected\n"}
    run = smoke(tmp_path, tools, scenario(pulumi__stack_output=broken))

    assert run.returncode == 1
    assert "no stack selected" in run.line("FAIL  stack outputs")
    assert "pulumi stack select" in run.output
    assert [call["tool"] for call in run.calls] == ["pulumi"]


def test_missing_outputs_are_named(tmp_path, tools):
    partial = {"stdout": json.dumps({"namespace": NAMESPACE, "clusterName": "gpu-runners"})}
    run = smoke(tmp_path, tools, scenario(pulumi__stack_output=partial))

    assert run.returncode == 1
    assert "missing: clusterRunnerImage kubeconfig" in run.line("FAIL  stack outputs")
    assert [call["tool"] for call in run.calls] == ["pulumi"]
